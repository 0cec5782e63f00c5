package node_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

func getWith(t *testing.T, url, authz string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(timeout(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return doReq(t, req)
}

func doReq(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestMetricsToken: with -metrics-token, /metrics answers only a request
// carrying it as a bearer token.
func TestMetricsToken(t *testing.T) {
	t.Parallel()
	const tok = "scrape-me-0123456789"
	a := start(t, "-metrics-token", tok)
	url := "http://" + a.HTTP + "/metrics"
	for _, tc := range []struct {
		authz string
		want  int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{"Bearer " + tok + "x", http.StatusUnauthorized},
		{"Basic " + tok, http.StatusUnauthorized},
		{"Bearer " + tok, http.StatusOK},
		{"bearer " + tok, http.StatusOK},
	} {
		code, body := getWith(t, url, tc.authz)
		if code != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.authz, code, tc.want)
		}
		if code == http.StatusOK && !strings.Contains(body, "chat_hub_messages_published_total") {
			t.Errorf("Authorization %q: no metrics (%d bytes)", tc.authz, len(body))
		}
		if code != http.StatusOK && strings.Contains(body, "chat_hub") {
			t.Errorf("Authorization %q: metrics leaked", tc.authz)
		}
	}
	if code, _ := get(t, "http://"+a.HTTP+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz needs no token, got %d", code)
	}
}

// TestMetricsAddr: with -metrics-addr, /metrics is served there only.
func TestMetricsAddr(t *testing.T) {
	t.Parallel()
	a := start(t, "-metrics-addr", "127.0.0.1:0")
	if a.Metrics == "" {
		t.Fatal("no metrics address reported")
	}
	if code, body := get(t, "http://"+a.HTTP+"/metrics"); code == http.StatusOK || strings.Contains(body, "chat_hub") {
		t.Fatalf("/metrics still on -http-addr: %d", code)
	}
	if code, body := get(t, "http://"+a.Metrics+"/metrics"); code != http.StatusOK || !strings.Contains(body, "chat_hub_messages_published_total") {
		t.Fatalf("metrics listener: %d, %d bytes", code, len(body))
	}
	for _, p := range []string{"/", "/healthz", "/v1/rooms/lobby/messages"} {
		if code, _ := get(t, "http://"+a.Metrics+p); code != http.StatusNotFound {
			t.Errorf("metrics listener serves %s: %d", p, code)
		}
	}
	if code, _ := get(t, "http://"+a.HTTP+"/healthz"); code != http.StatusOK {
		t.Error("/healthz gone from -http-addr")
	}
}

// evalCalls returns how many scripts the Redis at addr has run.
func evalCalls(t *testing.T, rc *redis.Client) int {
	t.Helper()
	info, err := rc.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || (name != "cmdstat_evalsha" && name != "cmdstat_eval") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		c, err := strconv.Atoi(calls)
		if err != nil {
			t.Fatalf("commandstats line %q", line)
		}
		n += c
	}
	return n
}

// TestScrapeCheap: 100 scrapes of a Redis-backed node cost a bounded
// number of Redis calls, not one script each.
func TestScrapeCheap(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	rs.RequireOwn() // counts every script the server runs
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rc.Close()
	a := start(t, "-redis-url", "redis://"+rs.Addr()+"/0")
	if code, _ := get(t, "http://"+a.HTTP+"/metrics"); code != http.StatusOK {
		t.Fatal(code)
	}
	before, began := evalCalls(t, rc), time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 25 {
				if code, _ := getWith(t, "http://"+a.HTTP+"/metrics", ""); code != http.StatusOK {
					t.Error(code)
				}
			}
		})
	}
	wg.Wait()
	// One read per TTL (the scrapes take longer on a loaded machine), and
	// presence heartbeats run a script now and then too: allow a few.
	elapsed := time.Since(began)
	most := int(elapsed/node.ActiveUsersTTL) + 1 + 3
	if n := evalCalls(t, rc) - before; n > most {
		t.Fatalf("100 scrapes in %v ran %d Redis scripts, want at most %d", elapsed, n, most)
	}
}
