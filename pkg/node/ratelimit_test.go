package node_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

// Three nodes on one Redis, sendRate 1 and burst 10: one user spreading its
// sends over the three must get the budget of one node, not three.
const (
	spreadRate  = 1.0
	spreadBurst = 10
)

// startSpreadNodes starts three nodes on the Redis of redisURL.
func startSpreadNodes(t *testing.T, redisURL string) []node.Addrs {
	t.Helper()
	var nodes []node.Addrs
	for i := range 3 {
		nodes = append(nodes, testutil.StartNode(t,
			"-redis-url", redisURL,
			"-node-id", fmt.Sprintf("rl-%d", i),
			"-send-rate", fmt.Sprint(spreadRate),
			"-send-burst", fmt.Sprint(spreadBurst)))
	}
	return nodes
}

// TestSendLimitHoldsAcrossNodes sends as one user over three nodes, through
// REST and through streams, on Redis and on Redis Cluster: in total, no
// more than one node's budget passes.
func TestSendLimitHoldsAcrossNodes(t *testing.T) {
	t.Parallel()
	for _, b := range []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"redis", func(t *testing.T) string { return "redis://" + testutil.StartRedis(t).Addr() + "/0" }},
		{"cluster", func(t *testing.T) string {
			return "redis-cluster://" + strings.Join(testutil.StartCluster(t, 3, 0).Addrs(), ",") + "?prefix=rl:"
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			nodes := startSpreadNodes(t, b.url(t))
			t.Run("rest", func(t *testing.T) { t.Parallel(); spreadREST(t, nodes) })
			t.Run("streams", func(t *testing.T) { t.Parallel(); spreadStreams(t, nodes) })
		})
	}
}

// budget is what one node admits over elapsed: the burst plus the refill.
func budget(elapsed time.Duration) int {
	return spreadBurst + int(math.Ceil(elapsed.Seconds()*spreadRate))
}

func spreadREST(t *testing.T, nodes []node.Addrs) {
	const user = "spreader"
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 3 * spreadBurst {
		a := nodes[i%len(nodes)]
		wg.Go(func() {
			code, body := post(t, "http://"+a.HTTP+"/v1/rooms/spread/messages", fmt.Sprintf(`{"user":%q,"text":"m%d"}`, user, i))
			switch {
			case code == http.StatusOK:
				admitted.Add(1)
			case code == http.StatusTooManyRequests && strings.Contains(body, "rate limit"):
				refused.Add(1)
			default:
				t.Errorf("POST %d: %d %s", i, code, body)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if n, max := int(admitted.Load()), budget(elapsed); n < spreadBurst || n > max {
		t.Fatalf("%d of %d sends over 3 nodes admitted in %v (%d refused); want %d..%d, one node's budget",
			n, 3*spreadBurst, elapsed, refused.Load(), spreadBurst, max)
	}
	// Redis decided, and the nodes say so.
	var decided bool
	for _, a := range nodes {
		_, metrics := get(t, "http://"+a.HTTP+"/metrics")
		decided = decided || strings.Contains(metrics, `chat_ratelimit_decisions_total{by="redis",result="refused"}`)
	}
	if !decided {
		t.Error(`no node reports chat_ratelimit_decisions_total{by="redis",result="refused"}`)
	}
}

func spreadStreams(t *testing.T, nodes []node.Addrs) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var streams []grpc.BidiStreamingClient[api.Message, api.Message]
	for _, a := range nodes {
		streams = append(streams, joinLive(ctx, t, grpcClient(t, a.GRPC), "streamer"))
	}
	// Each stream sends its share, then reads one answer (ack or error) per
	// send.
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i, gs := range streams {
		wg.Go(func() {
			for j := range spreadBurst {
				if err := gs.Send(&api.Message{Text: "x", ClientId: fmt.Sprintf("s%d-%d", i, j)}); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
			for answers := 0; answers < spreadBurst; {
				m, err := gs.Recv()
				if err != nil {
					t.Errorf("recv: %v", err)
					return
				}
				if !strings.HasPrefix(m.GetClientId(), fmt.Sprintf("s%d-", i)) {
					continue // another stream's message, or an event
				}
				switch m.GetKind() {
				case api.Kind_KIND_ACK:
					admitted.Add(1)
				case api.Kind_KIND_ERROR:
					if !strings.HasPrefix(m.GetError().GetMessage(), "rate limit") || m.GetError().GetRetryAfterMs() <= 0 {
						t.Errorf("error %v, want a rate limit with a retry hint", m)
					}
					refused.Add(1)
				default:
					continue
				}
				answers++
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if n, max := int(admitted.Load()), budget(elapsed); n < spreadBurst || n > max {
		t.Fatalf("%d of %d sends over 3 nodes admitted in %v (%d refused); want %d..%d, one node's budget",
			n, 3*spreadBurst, elapsed, refused.Load(), spreadBurst, max)
	}
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
