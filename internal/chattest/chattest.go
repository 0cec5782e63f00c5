// Package chattest holds the helpers of the tests that run whole chat
// nodes (test/integration on a single Redis, test/cluster on a Redis
// Cluster): starting named nodes, clients that record every message they
// receive, background senders, and the checks of the cluster's promise
// that every stored message reaches every other member of its room
// exactly once, in sequence order.
//
// The fixtures below them (redis-server, Redis Cluster, in-process node)
// are in internal/testutil.
package chattest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

// Client backoff in tests: short, so that a reconnect or a retried send
// after an outage does not dominate the run time. Join uses them unless
// the config sets its own.
const (
	MinBackoff = 50 * time.Millisecond
	MaxBackoff = 500 * time.Millisecond
)

// Eventually polls cond every 10 ms until it returns nil, and fails the
// test with cond's last error once timeout has passed (NATS's checkFor).
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// StartNode runs a node in-process (testutil.StartNode) on the Redis at
// redisURL (redis:// or redis-cluster://), with node id id and the extra
// flags; it is drained and stopped at cleanup.
func StartNode(tb testing.TB, redisURL, id string, extra ...string) node.Addrs {
	tb.Helper()
	return testutil.StartNode(tb, append([]string{"-redis-url", redisURL, "-node-id", id}, extra...)...)
}

// Addrs lists the nodes' addresses for transport tr, in the order given:
// the first is a client's home node, the others where it fails over to.
func Addrs(tr client.Transport, nodes ...node.Addrs) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.GRPC
		if tr == client.WebSocket {
			out[i] = n.HTTP
		}
	}
	return out
}

// Rotate returns a copy of s starting at index i (modulo len(s)), then
// the elements before it: home node i, then the others.
func Rotate[T any](s []T, i int) []T {
	out := make([]T, 0, len(s))
	for k := range s {
		out = append(out, s[(i+k)%len(s)])
	}
	return out
}

// HTTPGet returns the status and body of a GET of url, bounded by 5 s.
func HTTPGet(url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		err = fmt.Errorf("GET %s: read body: %w", url, err)
	}
	return resp.StatusCode, string(b), err
}

// Metric returns the value of the series (name and labels exactly as
// exposed, e.g. `chat_hub_bus_reconnects_total`) on the /metrics of the
// node at httpAddr.
func Metric(httpAddr, series string) (float64, error) {
	url := "http://" + httpAddr + "/metrics"
	code, body, err := HTTPGet(url)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %d", url, code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: series %s: %w", url, series, err)
			}
			return f, nil
		}
	}
	return 0, fmt.Errorf("%s has no series %s", url, series)
}
