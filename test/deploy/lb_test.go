// Package deploy_test checks the deployment where no Docker engine runs:
// the compose file's HAProxy configuration, from Debian's haproxy, in front
// of three node processes on loopback, sharing a real redis-server.
package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startNode(t *testing.T, redisAddr string, extra ...string) node.Addrs {
	t.Helper()
	return testutil.StartNode(t, append([]string{"-redis-url", "redis://" + redisAddr + "/0", "-send-rate", "1000"}, extra...)...)
}

// renderHAProxy turns deploy/haproxy.cfg into a configuration for loopback
// nodes: the Docker DNS server-templates become one server line per node,
// the binds move to free ports, and the timeouts become timeout.
func renderHAProxy(t *testing.T, nodes []node.Addrs, httpPort, grpcPort int, timeout string) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	cfg = regexp.MustCompile(`(?ms)^resolvers docker.*?\n\n`).ReplaceAllString(cfg, "")
	cfg = regexp.MustCompile(`(?m)^\s*log stdout.*$`).ReplaceAllString(cfg, "")
	cfg = regexp.MustCompile(` init-addr \S+ resolvers docker`).ReplaceAllString(cfg, "")
	cfg = regexp.MustCompile(`(?m)^(\s*timeout (client|server|tunnel)\s+)\S+$`).ReplaceAllString(cfg, "${1}"+timeout)
	cfg = strings.Replace(cfg, "bind :8080", fmt.Sprintf("bind 127.0.0.1:%d", httpPort), 1)
	cfg = strings.Replace(cfg, "bind :50051 proto h2", fmt.Sprintf("bind 127.0.0.1:%d proto h2", grpcPort), 1)
	var httpServers, grpcServers strings.Builder
	for i, n := range nodes {
		_, hp, _ := net.SplitHostPort(n.HTTP)
		fmt.Fprintf(&httpServers, "    server n%d %s check\n", i+1, n.HTTP)
		fmt.Fprintf(&grpcServers, "    server n%d %s proto h2 check port %s\n", i+1, n.GRPC, hp)
	}
	cfg = strings.Replace(cfg, "    server-template node 1-20 node:8080 check\n", httpServers.String(), 1)
	cfg = strings.Replace(cfg, "    server-template node 1-20 node:50051 proto h2 check\n", grpcServers.String(), 1)
	if strings.Contains(cfg, "server-template") || strings.Contains(cfg, "resolvers") {
		t.Fatalf("rendering left Docker-only lines:\n%s", cfg)
	}
	return cfg
}

func startHAProxy(t *testing.T, cfg string, ports ...int) {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy not found: scripts/test.sh installs Debian's haproxy")
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy rejects the configuration: %v\n%s\n%s", err, out, cfg)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for _, p := range ports {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy not listening on %d", p)
			}
			time.Sleep(20 * time.Millisecond) // polling for the listener
		}
	}
}

func TestBalancerSpreadsAndKeepsIdleStreams(t *testing.T) {
	redis := testutil.StartRedis(t)
	// Node heartbeats (1 s) under the balancer's rendered timeouts (3 s).
	var nodes []node.Addrs
	for range 3 {
		nodes = append(nodes, startNode(t, redis.Addr(), "-ws-ping-interval", "1s", "-grpc-keepalive", "1s", "-heartbeat", "1s"))
	}
	httpPort, grpcPort := freePort(t), freePort(t)
	startHAProxy(t, renderHAProxy(t, nodes, httpPort, grpcPort, "3s"), httpPort, grpcPort)
	// Let the health checks run first (every second, down after two
	// failures): a backend whose checks fail (gRPC's, when they spoke
	// HTTP/2 to the HTTP/1.1 port) is DOWN by then and answers 503,
	// instead of passing while the first check is still pending.
	time.Sleep(3 * time.Second)

	// Wait until haproxy's health checks mark all nodes up: every node
	// ends up with clients only then. Three clients per transport.
	var clients []*client.Client
	for i := range 6 {
		tr, addr := client.GRPC, fmt.Sprintf("127.0.0.1:%d", grpcPort)
		if i%2 == 1 {
			tr, addr = client.WebSocket, fmt.Sprintf("127.0.0.1:%d", httpPort)
		}
		c, err := client.Dial(client.Config{Addrs: []string{addr}, Transport: tr, User: fmt.Sprint("u", i), Room: "lb", NoHistory: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.WaitLive(ctx); err != nil {
			t.Fatalf("client %d (%s) not live through the balancer: %v", i, tr, err)
		}
		cancel()
		clients = append(clients, c)
	}
	perNode := func() []float64 {
		var out []float64
		for _, n := range nodes {
			out = append(out, sessions(t, n.HTTP))
		}
		return out
	}
	counts := perNode()
	for i, c := range counts {
		if c == 0 {
			t.Fatalf("node %d got no client through the balancer: %v", i+1, counts)
		}
	}

	exchange := func(round string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		for i, c := range clients {
			if _, err := c.Send(ctx, fmt.Sprintf("%s from %d", round, i)); err != nil {
				t.Fatalf("%s: client %d send: %v", round, i, err)
			}
		}
		for i, c := range clients {
			got := map[string]bool{}
			for len(got) < len(clients)-1 {
				select {
				case m := <-c.Messages():
					if m.GetKind() == api.Kind_KIND_MESSAGE && strings.HasPrefix(m.GetText(), round) {
						got[m.GetText()] = true
					}
				case <-ctx.Done():
					t.Fatalf("%s: client %d got %v", round, i, got)
				}
			}
		}
	}
	exchange("first")
	// Idle for twice the balancer's timeout: only the heartbeats keep the
	// streams open. (Sleeping is the point here, not a synchronisation.)
	time.Sleep(6 * time.Second)
	exchange("second")
	for i, c := range clients {
		if c.Reconnects.Load() != 0 {
			t.Fatalf("client %d reconnected while idle: the balancer cut an idle stream", i)
		}
	}
}

// sessions returns the node's open session count from its metrics.
func sessions(t *testing.T, httpAddr string) float64 {
	t.Helper()
	resp, err := httpGet("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(resp, "\n") {
		if strings.HasPrefix(line, "chat_hub_sessions{") {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			total += v
		}
	}
	return total
}
