package presence_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/presence"
)

// The cluster-wide set `<prefix>presence:users` must not outlive its
// members: once every user has left, or their node died, and no node
// refreshes it, it empties and the key expires within the presence TTL.
// It was pruned only by a refresh of a room with users, and had no TTL,
// so the members of a quiet cluster's dead nodes stayed forever.
func TestRedisUsersSetExpires(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	const ttl = 400 * time.Millisecond

	// waitGone polls (the expiry is clock-driven) until key is gone, and
	// fails if that takes longer than the TTL plus a margin.
	waitGone := func(t *testing.T, key string, since time.Time) {
		t.Helper()
		for {
			n, err := c.Exists(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				return
			}
			if time.Since(since) > ttl+time.Second {
				card, _ := c.ZCard(ctx, key).Result()
				pttl, _ := c.PTTL(ctx, key).Result()
				t.Fatalf("%s still holds %d members (ttl %v) %v after the last refresh; want it gone within %v", key, card, pttl, time.Since(since), ttl)
			}
			time.Sleep(20 * time.Millisecond) // polling a clock-driven expiry
		}
	}

	t.Run("all left", func(t *testing.T) {
		prefix := testutil.UniquePrefix(t)
		s := presence.NewRedis(c, prefix)
		for _, u := range []string{"alice", "bob"} {
			if _, err := s.Join(ctx, "r", u, "n1", ttl); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Refresh(ctx, "r", "n1", []string{"alice", "bob"}, ttl); err != nil {
			t.Fatal(err)
		}
		last := time.Now()
		for _, u := range []string{"alice", "bob"} {
			if _, err := s.Leave(ctx, "r", u, "n1"); err != nil {
				t.Fatal(err)
			}
		}
		// The node no longer refreshes anything: its rooms are empty.
		waitGone(t, prefix+"presence:users", last)
	})

	t.Run("node died", func(t *testing.T) {
		prefix := testutil.UniquePrefix(t)
		s := presence.NewRedis(c, prefix)
		if _, err := s.Join(ctx, "r", "carol", "dead", ttl); err != nil {
			t.Fatal(err)
		}
		waitGone(t, prefix+"presence:users", time.Now())
		waitGone(t, prefix+"{r}:presence", time.Now().Add(ttl)) // 2 × TTL, as before
	})

	t.Run("live node keeps it", func(t *testing.T) {
		prefix := testutil.UniquePrefix(t)
		s := presence.NewRedis(c, prefix)
		// erin's node refreshes with the long TTL; a draining node
		// refreshes dave's record with a short grace, which must not
		// shorten the key's life under erin.
		if _, err := s.Join(ctx, "a", "erin", "live", 10*ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, "b", "dave", "draining", ttl); err != nil {
			t.Fatal(err)
		}
		if err := s.Refresh(ctx, "b", "draining", []string{"dave"}, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * ttl)
		for time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // polling a clock-driven expiry
			if n, err := s.ActiveUsers(ctx); err != nil || n < 1 {
				t.Fatalf("active users %d (%v) while erin's record is live", n, err)
			}
		}
		if err := s.Refresh(ctx, "a", "live", []string{"erin"}, 10*ttl); err != nil {
			t.Fatal(err)
		}
		// dave's expired member is pruned by erin's node's refresh.
		if card, err := c.ZCard(ctx, prefix+"presence:users").Result(); err != nil || card != 1 {
			t.Fatalf("the set holds %d members (%v); want erin's only", card, err)
		}
	})
}
