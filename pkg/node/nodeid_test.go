package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

// runNode runs node.Run with the test's loopback defaults and args, and
// returns a channel receiving its addresses once it serves, a channel
// receiving Run's error, and the function that stops it.
func runNode(t *testing.T, args ...string) (<-chan node.Addrs, <-chan error, context.CancelFunc) {
	t.Helper()
	args = append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0", "-log-level", "warn"}, args...)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan node.Addrs, 1)
	done := make(chan error, 1)
	logs := new(testutil.SyncBuffer)
	go func() {
		done <- node.Run(ctx, args, func(string) string { return "" }, logs, func(a node.Addrs) { ready <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if t.Failed() {
			t.Logf("node %v log:\n%s", args, logs)
		}
	})
	return ready, done, cancel
}

// wantInUse expects Run to fail at start because id is taken.
func wantInUse(t *testing.T, id string, args ...string) {
	t.Helper()
	ready, done, _ := runNode(t, append(args, "-node-id", id)...)
	select {
	case <-ready:
		t.Fatalf("a second node with id %q started", id)
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), `node id "`+id+`" is in use by another running node`) {
			t.Fatalf("second node: %v, want the id in use", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("second node neither started nor failed")
	}
}

// TestNodeIDUnique: a node whose -node-id a running node holds in Redis
// fails at start; the id is free again once that node has stopped.
func TestNodeIDUnique(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	url := "redis://" + rs.Addr() + "/0"
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rc.Close()

	prefix := testutil.UniquePrefix(t) // ids of their own on a shared REDIS_ADDR
	id := prefix + "dup"
	ready, done, stop := runNode(t, "-redis-url", url, "-node-id", id)
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("first node: %v", err)
	}
	if n, err := rc.Exists(context.Background(), "chat:node:"+id).Result(); err != nil || n != 1 {
		t.Fatalf("chat:node:%s: %d %v, want the claim", id, n, err)
	}
	wantInUse(t, id, "-redis-url", url)

	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, _ := rc.Exists(context.Background(), "chat:node:"+id).Result(); n != 0 {
		t.Fatal("claim not released on shutdown")
	}
	again, doneAgain, _ := runNode(t, "-redis-url", url, "-node-id", id)
	select {
	case <-again:
	case err := <-doneAgain:
		t.Fatalf("restart with the released id: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("restart with the released id waited")
	}

	// No -node-id: random ids, no conflict.
	start(t, "-redis-url", url)
	start(t, "-redis-url", url)
}

// TestNodeIDUniqueCluster: the same on a Redis Cluster.
func TestNodeIDUniqueCluster(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	url := "redis-cluster://" + strings.Join(c.Addrs(), ",")
	start(t, "-redis-url", url, "-node-id", "n1")
	wantInUse(t, "n1", "-redis-url", url)
}
