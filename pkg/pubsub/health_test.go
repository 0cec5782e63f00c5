package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/pubsub/pubsubtest"
)

// waitHealth polls b.Healthy until it matches want (nil, or an error
// wrapping ErrSubscriptionDown), and returns the last error.
func waitHealth(t *testing.T, b pubsub.HealthChecker, down bool, timeout time.Duration) error {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := b.Healthy()
		if down && errors.Is(err, pubsub.ErrSubscriptionDown) || !down && err == nil {
			return err
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: Healthy() = %v; want down %v", timeout, err, down)
		}
		time.Sleep(5 * time.Millisecond) // poll interval, bounded by deadline
	}
}

// killLoop kills the pub/sub connections of rdb's server every 5 ms until
// the returned stop is called.
func killLoop(rdb *redis.Client) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			_ = rdb.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err()
		}
	}()
	return func() { close(done); wg.Wait() }
}

// TestRedisHealthy: Healthy reports a subscription killed over and over
// (Redis still answers commands) and a stopped Redis (a stuck
// connection: nothing fails, nothing answers), and clears once the
// subscription is proven back.
func TestRedisHealthy(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	srv.RequireOwn()
	b, _ := newRedisBroker(t, newClient(t, srv)) // PingInterval 500 ms
	subscribeAll(t, b, pubsubtest.NewRecorder(), "r")
	waitHealth(t, b, false, 5*time.Second)

	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	stop := killLoop(rdb)
	err := waitHealth(t, b, true, 10*time.Second)
	stop()
	t.Logf("killed: %v", err)
	waitHealth(t, b, false, 10*time.Second)

	srv.Pause()
	start := time.Now()
	err = waitHealth(t, b, true, 10*time.Second)
	t.Logf("stopped: %v after %v", err, time.Since(start).Round(time.Millisecond))
	srv.Resume()
	waitHealth(t, b, false, 15*time.Second)
}

// TestRedisClusterHealthy: the same for a Cluster broker, whose shard
// connection to the room's master is killed over and over.
func TestRedisClusterHealthy(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	b, _ := newClusterBroker(t, newClusterClient(t, c))
	master := c.Masters()[0]
	on, _ := roomsOn(t, c, master, "h-", 1)
	subscribeAll(t, b, pubsubtest.NewRecorder(), on...)
	waitHealth(t, b, false, 5*time.Second)

	stop := killLoop(c.Client(master))
	err := waitHealth(t, b, true, 10*time.Second)
	stop()
	t.Logf("killed: %v", err)
	waitHealth(t, b, false, 10*time.Second)
	if err := b.Healthy(); err != nil {
		t.Fatal(fmt.Errorf("after recovery: %w", err))
	}
}
