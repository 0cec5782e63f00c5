package node_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"example.com/chat/internal/testutil"
)

// poll calls cond every 10 ms until it returns nil, or fails the test with
// its last error after timeout.
func poll(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// TestReadyzFollowsSubscription: while the node's pub/sub connection is
// killed over and over (CLIENT KILL TYPE pubsub, faster than the broker's
// 50 ms redial backoff), Redis still answers PING, yet every delivery is
// lost: /readyz says 503 with the reason and gRPC health NOT_SERVING.
// Once the kills stop, the subscription comes back and so does 200.
// Before the broker's health check, /readyz stayed 200 throughout.
func TestReadyzFollowsSubscription(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	rs.RequireOwn()
	a := start(t, "-redis-url", "redis://"+rs.Addr())
	readyz := func() (int, string) { return get(t, "http://"+a.HTTP+"/readyz") }
	poll(t, 10*time.Second, func() error {
		if code, body := readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q before any fault", code, body)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc := grpcClient(t, a.GRPC)
	joinLive(ctx, t, cc, "watcher") // the node subscribes to the room

	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			_ = rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Err()
		}
	}()
	var reason string
	poll(t, 15*time.Second, func() error {
		code, body := readyz()
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "subscription") {
			return fmt.Errorf("/readyz %d %q while the subscription is killed; want 503 naming the subscription", code, body)
		}
		reason = body
		return nil
	})
	poll(t, 15*time.Second, func() error {
		hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "chat.Chat"})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
			return fmt.Errorf("gRPC health %v (%v) while the subscription is killed; want NOT_SERVING", hr.GetStatus(), err)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	t.Logf("while killed: %q", strings.TrimSpace(reason))
	poll(t, 15*time.Second, func() error {
		if code, body := readyz(); code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q after the kills stopped", code, body)
		}
		hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "chat.Chat"})
		if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("gRPC health %v (%v) after the kills stopped", hr.GetStatus(), err)
		}
		return nil
	})
}
