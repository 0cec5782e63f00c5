package deploy_test

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeShape checks what the deployment relies on: a scalable node
// service (no published ports), Redis with persistence and no eviction, a
// balancer publishing both ports where the environment says, and
// monitoring behind a profile.
func TestComposeShape(t *testing.T) {
	b, err := os.ReadFile("../../deploy/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Image       string
			Build       any
			Ports       []string
			Command     []string
			Volumes     []string
			Environment map[string]string
			Profiles    []string
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("compose file is not YAML: %v", err)
	}
	node, ok := f.Services["node"]
	if !ok || node.Build == nil {
		t.Fatal("no buildable node service")
	}
	if len(node.Ports) != 0 {
		t.Fatalf("node publishes ports %v: it could not scale", node.Ports)
	}
	if !strings.HasPrefix(node.Environment["CHAT_REDIS_URL"], "redis://redis:") {
		t.Fatalf("node does not use the redis service: %v", node.Environment)
	}
	if _, ok := f.Services["redis"]; !ok {
		t.Fatal("no redis service")
	}
	lb := f.Services["lb"]
	// Ports from the environment: an override file cannot move them (both
	// compose versions add an override's ports to the file's).
	for _, p := range []string{"${CHAT_HTTP_PORT:-8080}:8080", "${CHAT_GRPC_PORT:-50051}:50051"} {
		if !slices.Contains(lb.Ports, p) {
			t.Fatalf("load balancer does not publish %s: %v", p, lb.Ports)
		}
	}
	redis := f.Services["redis"]
	for _, want := range []string{"--appendonly", "--maxmemory", "noeviction"} {
		if !slices.Contains(redis.Command, want) {
			t.Fatalf("redis command %v lacks %s: history must persist and never be evicted", redis.Command, want)
		}
	}
	if !slices.ContainsFunc(redis.Volumes, func(v string) bool { return strings.HasSuffix(v, ":/data") }) {
		t.Fatalf("redis keeps no volume at /data: %v", redis.Volumes)
	}
	for _, s := range []string{"prometheus", "grafana"} {
		if !slices.Contains(f.Services[s].Profiles, "monitoring") {
			t.Fatalf("%s is not behind the monitoring profile", s)
		}
	}
}

// TestComposeConfig asks docker compose itself, where it is installed.
func TestComposeConfig(t *testing.T) {
	if exec.Command("docker", "compose", "version").Run() != nil {
		t.Skip("docker compose not available here: `docker compose config` check skipped (TestComposeShape checks the file's shape)")
	}
	out, err := exec.Command("docker", "compose", "-f", "../../deploy/docker-compose.yml", "config", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("docker compose config: %v\n%s", err, out)
	}
}
