//go:build compose

// Package compose_test runs the deployment users run, for real: the
// Dockerfile and deploy/docker-compose.yml, unchanged, under `docker
// compose` (v2) on a Docker engine, with `--scale node=3`, and drives it
// through the balancer's published ports with pkg/client clients over
// gRPC and WebSocket while it scales, loses a node, rolls, restarts Redis
// and cuts a node off from Redis. Each check prints its figures.
//
// It needs a Docker engine, Compose v2 and the base images; scripts/
// compose-test.sh installs or builds them (stand-ins where no registry is
// reachable) and runs it:
//
//	go test -tags compose -count=1 -v -timeout 30m ./test/compose
//
// The published ports come from the environment (CHAT_HTTP_PORT, ...),
// bound to 127.0.0.1 on free ports, so no override file is needed.
package compose_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

const composeFile = "../../deploy/docker-compose.yml"

// stack is one compose project of the deployment.
type stack struct {
	t        *testing.T
	project  string
	env      []string
	httpAddr string // the balancer's HTTP/WebSocket port, on loopback
	grpcAddr string // the balancer's gRPC port
	promAddr string // Prometheus (monitoring profile)
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newStack(t *testing.T) *stack {
	t.Helper()
	project := os.Getenv("CHAT_E2E_PROJECT")
	if project == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		project = "chate2e" + hex.EncodeToString(b[:])
	}
	s := &stack{t: t, project: project, httpAddr: freePort(t), grpcAddr: freePort(t), promAddr: freePort(t)}
	s.env = []string{
		"CHAT_HTTP_PORT=" + s.httpAddr, // "127.0.0.1:PORT": published on loopback only
		"CHAT_GRPC_PORT=" + s.grpcAddr,
		"CHAT_PROMETHEUS_PORT=" + s.promAddr,
		"CHAT_GRAFANA_PORT=" + freePort(t),
	}
	if os.Getenv("CHAT_BUILD_CA") == "" {
		// Behind a TLS-intercepting proxy the build needs the CAs this
		// machine trusts to reach the module proxy.
		if _, err := os.Stat("/etc/ssl/certs/ca-certificates.crt"); err == nil {
			s.env = append(s.env, "CHAT_BUILD_CA=/etc/ssl/certs/ca-certificates.crt")
		}
	}
	return s
}

// compose runs docker compose on the project, bounded by timeout.
func (s *stack) compose(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"compose", "-p", s.project, "-f", composeFile}, args...)...)
	cmd.Env = append(os.Environ(), s.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker compose %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (s *stack) mustCompose(timeout time.Duration, args ...string) string {
	s.t.Helper()
	out, err := s.compose(timeout, args...)
	if err != nil {
		s.t.Fatal(err)
	}
	return out
}

// docker runs the docker CLI, bounded by 60 s.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// down removes the project: containers, networks and volumes.
func (s *stack) down() {
	if s.t.Failed() {
		if out, err := s.compose(time.Minute, "--profile", "monitoring", "logs", "--no-color", "--tail", "40"); err == nil {
			s.t.Logf("logs:\n%s", out)
		}
	}
	if _, err := s.compose(3*time.Minute, "--profile", "monitoring", "down", "-v", "--remove-orphans", "-t", "10"); err != nil {
		s.t.Errorf("tear down: %v", err)
	}
}

// containers returns the running containers of service, by name, sorted.
func (s *stack) containers(service string) []string {
	s.t.Helper()
	out := s.mustCompose(time.Minute, "ps", "--format", "{{.Name}}", service)
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			names = append(names, l)
		}
	}
	sort.Strings(names)
	return names
}

// nodeMetrics reads a node replica's /metrics from inside the
// deployment's front network (from the balancer's container: the nodes
// publish no port), with bash's /dev/tcp.
func (s *stack) nodeMetrics(node string) (string, error) {
	lb := s.containers("lb")
	if len(lb) != 1 {
		return "", fmt.Errorf("want one lb container, have %v", lb)
	}
	const script = `exec 3<>/dev/tcp/$1/8080 && printf 'GET /metrics HTTP/1.0\r\nHost: node\r\n\r\n' >&3 && timeout 5 cat <&3`
	return docker("exec", lb[0], "bash", "-c", script, "bash", node)
}

// sessions returns a replica's open sessions (chat_hub_sessions, all
// transports).
func (s *stack) sessions(node string) (float64, error) {
	body, err := s.nodeMetrics(node)
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(body, "HTTP/1.0 200") && !strings.HasPrefix(body, "HTTP/1.1 200") {
		return 0, fmt.Errorf("%s: /metrics answered %.100q", node, body)
	}
	// A replica that never had a session has no chat_hub_sessions series.
	var total float64
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "chat_hub_sessions{") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			total += v
		}
	}
	return total, nil
}

// spread returns every running replica's session count.
func (s *stack) spread() (map[string]float64, error) {
	out := map[string]float64{}
	for _, n := range s.containers("node") {
		v, err := s.sessions(n)
		if err != nil {
			return nil, err
		}
		out[n] = v
	}
	return out, nil
}

func imageExists(ref string) bool {
	_, err := docker("image", "inspect", ref)
	return err == nil
}
