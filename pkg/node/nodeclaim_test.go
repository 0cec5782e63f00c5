package node_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

func TestNodeClaim(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	rc := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := testutil.UniquePrefix(t)

	t.Run("a crashed holder's claim is waited out", func(t *testing.T) {
		c := node.NewNodeClaim(rc, prefix, "crashed")
		if err := rc.Set(ctx, c.Key(), "dead-node-token", 1500*time.Millisecond).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.Acquire(ctx); err != nil {
			t.Fatalf("acquire after the old claim expired: %v", err)
		}
		if v, _ := rc.Get(ctx, c.Key()).Result(); v != c.Token() {
			t.Fatalf("claim holds %q", v)
		}
	})
	t.Run("a claim without expiry is in use", func(t *testing.T) {
		c := node.NewNodeClaim(rc, prefix, "pinned")
		rc.Set(ctx, c.Key(), "someone", 0)
		if err := c.Acquire(ctx); !errors.Is(err, node.ErrNodeIDInUse) {
			t.Fatalf("acquire: %v", err)
		}
	})
	t.Run("keep stops on a takeover and re-claims a lost key", func(t *testing.T) {
		c := node.NewNodeClaim(rc, prefix, "kept")
		if err := c.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		kctx, kcancel := context.WithCancel(ctx)
		defer kcancel()
		done := make(chan error, 1)
		go func() { done <- c.Keep(kctx) }()
		// Lost (Redis restarted empty): re-claimed at the next refresh.
		rc.Del(ctx, c.Key())
		deadline := time.Now().Add(2 * node.NodeClaimTTL)
		for v, _ := rc.Get(ctx, c.Key()).Result(); v != c.Token(); v, _ = rc.Get(ctx, c.Key()).Result() {
			if time.Now().After(deadline) {
				t.Fatal("lost claim not taken again")
			}
			time.Sleep(50 * time.Millisecond) // polling Redis
		}
		rc.Set(ctx, c.Key(), "another-node", node.NodeClaimTTL)
		select {
		case err := <-done:
			if !errors.Is(err, node.ErrNodeIDInUse) {
				t.Fatalf("keep: %v", err)
			}
		case <-time.After(2 * node.NodeClaimTTL):
			t.Fatal("keep did not notice the takeover")
		}
		c.Release()
		if v, _ := rc.Get(ctx, c.Key()).Result(); v != "another-node" {
			t.Fatalf("release deleted another node's claim: %q", v)
		}
	})
}
