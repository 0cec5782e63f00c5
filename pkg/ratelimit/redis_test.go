package ratelimit_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	chattest "example.com/chat/internal/testutil"
	"example.com/chat/pkg/ratelimit"
)

func newRedis(t *testing.T, c redis.UniversalClient, cfg ratelimit.RedisConfig) *ratelimit.Redis {
	t.Helper()
	cfg.Client = c
	if cfg.Prefix == "" {
		cfg.Prefix = chattest.UniquePrefix(t)
	}
	r, err := ratelimit.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func decisions(r *ratelimit.Redis, by, result string) int {
	return int(testutil.ToFloat64(ratelimit.Decisions(r).WithLabelValues(by, result)))
}

func TestRedisKeysExpire(t *testing.T) {
	t.Parallel()
	c := redisClient(chattest.StartRedis(t))(t)
	// Burst 4 at 2 per second: a full bucket is 2 s away after the burst.
	r := newRedis(t, c, ratelimit.RedisConfig{Limit: ratelimit.Limit{Rate: 2, Burst: 4}})
	ctx := context.Background()
	for range 4 {
		if d, err := r.Allow(ctx, "u", time.Now()); err != nil || !d.Allowed {
			t.Fatalf("Allow: %+v, %v", d, err)
		}
	}
	key := r.Key("u")
	if !strings.Contains(key, "{u}") {
		t.Fatalf("key %q has no hash tag {u}", key)
	}
	ttl, err := c.PTTL(ctx, key).Result()
	if err != nil || ttl <= 1500*time.Millisecond || ttl > 2*time.Second {
		t.Fatalf("PTTL %s = %v, %v; want about 2 s, the time until the bucket is full", key, ttl, err)
	}
}

func TestRedisJudgesByItsOwnClock(t *testing.T) {
	t.Parallel()
	c := redisClient(chattest.StartRedis(t))(t)
	prefix := chattest.UniquePrefix(t)
	l := ratelimit.Limit{Rate: slow, Burst: 2}
	// Two nodes whose clocks are an hour apart either way share one budget:
	// Redis decides on TIME.
	behind := newRedis(t, c, ratelimit.RedisConfig{Prefix: prefix, Limit: l})
	ahead := newRedis(t, c, ratelimit.RedisConfig{Prefix: prefix, Limit: l})
	ctx := context.Background()
	n := 0
	for range 3 {
		for _, x := range []struct {
			r   *ratelimit.Redis
			off time.Duration
		}{{behind, -time.Hour}, {ahead, time.Hour}} {
			d, err := x.r.Allow(ctx, "u", time.Now().Add(x.off))
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed {
				n++
			}
		}
	}
	if n != 2 {
		t.Fatalf("%d sends admitted across skewed nodes, want the burst, 2", n)
	}
}

func TestRedisRefusalIsCachedLocally(t *testing.T) {
	t.Parallel()
	c := redisClient(chattest.StartRedis(t))(t)
	prefix := chattest.UniquePrefix(t)
	l := ratelimit.Limit{Rate: slow, Burst: 1}
	r := newRedis(t, c, ratelimit.RedisConfig{Prefix: prefix, Limit: l})
	other := newRedis(t, c, ratelimit.RedisConfig{Prefix: prefix, Limit: l})
	ctx := context.Background()
	// Another node spends the budget; this one learns it from Redis once,
	// then refuses without asking again until the retry hint.
	if d, _ := other.Allow(ctx, "u", time.Now()); !d.Allowed {
		t.Fatal("first send refused")
	}
	for i := range 20 {
		d, err := r.Allow(ctx, "u", time.Now())
		if err != nil || d.Allowed || d.RetryAfter <= 50*time.Second {
			t.Fatalf("attempt %d: %+v, %v; want refused for about a minute", i, d, err)
		}
	}
	if got, local := decisions(r, "redis", "refused"), decisions(r, "local", "refused"); got != 1 || local != 19 {
		t.Fatalf("refusals by redis %d, by the local pre-check %d; want 1 and 19", got, local)
	}
	// Its own admissions fill its local bucket: at the burst it refuses
	// without a round trip.
	if d, _ := r.Allow(ctx, "v", time.Now()); !d.Allowed {
		t.Fatal("v refused")
	}
	if d, _ := r.Allow(ctx, "v", time.Now()); d.Allowed {
		t.Fatal("v admitted past its burst")
	}
	if local := decisions(r, "local", "refused"); local != 20 {
		t.Fatalf("local refusals %d, want 20: the second v needs no round trip", local)
	}
}

func TestRedisFailsOpenToTheLocalBucket(t *testing.T) {
	t.Parallel()
	srv := chattest.StartRedis(t)
	srv.RequireOwn()
	c := redisClient(srv)(t)
	var logs syncBuffer
	r := newRedis(t, c, ratelimit.RedisConfig{
		Limit:         ratelimit.Limit{Rate: slow, Burst: 3},
		RetryInterval: time.Second,
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx := context.Background()
	now := time.Now()
	if d, err := r.Allow(ctx, "u", now); err != nil || !d.Allowed {
		t.Fatalf("with Redis up: %+v, %v", d, err)
	}
	srv.Stop()
	// Redis is gone: the node's own bucket, charged with the one send
	// Redis admitted, still allows the rest of the burst, then refuses.
	var got []bool
	for range 4 {
		d, err := r.Allow(ctx, "u", now)
		if err != nil {
			t.Fatalf("Allow with Redis down: %v, want a local decision", err)
		}
		got = append(got, d.Allowed)
	}
	if want := []bool{true, true, false, false}; !slices.Equal(got, want) {
		t.Fatalf("with Redis down: admitted %v, want %v", got, want)
	}
	if n := int(testutil.ToFloat64(ratelimit.Errors(r))); n != 1 {
		t.Fatalf("redis errors %d, want 1: within RetryInterval Redis is not asked again", n)
	}
	if n := decisions(r, "fallback", "allowed"); n != 2 {
		t.Fatalf("fallback admissions %d, want 2", n)
	}
	if s := logs.String(); strings.Count(s, "redis unavailable") != 1 {
		t.Fatalf("log %q: want one warning for the outage", s)
	}

	// Back up (empty): after RetryInterval, Redis decides again.
	srv.Restart()
	later := now.Add(2 * time.Second)
	if d, err := r.Allow(ctx, "w", later); err != nil || !d.Allowed {
		t.Fatalf("after the restart: %+v, %v", d, err)
	}
	if n := decisions(r, "redis", "allowed"); n != 2 {
		t.Fatalf("redis admissions %d, want 2 (one before, one after the outage)", n)
	}
	if s := logs.String(); !strings.Contains(s, "redis answers again") {
		t.Fatalf("log %q: want the end of the outage", s)
	}
}

func TestRedisCancelledContext(t *testing.T) {
	t.Parallel()
	c := redisClient(chattest.StartRedis(t))(t)
	r := newRedis(t, c, ratelimit.RedisConfig{Limit: ratelimit.Limit{Rate: slow, Burst: 3}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if d, err := r.Allow(ctx, "u", time.Now()); err == nil || d.Allowed {
		t.Fatalf("Allow with a cancelled ctx: %+v, %v; want an error and no decision", d, err)
	}
	if n := int(testutil.ToFloat64(ratelimit.Errors(r))); n != 0 {
		t.Fatalf("redis errors %d: a caller's cancel is not an outage", n)
	}
}

func TestNewRedisNeedsAClientAndARate(t *testing.T) {
	t.Parallel()
	if _, err := ratelimit.NewRedis(ratelimit.RedisConfig{Limit: ratelimit.Limit{Rate: 1}}); err == nil {
		t.Fatal("NewRedis without a client: no error")
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := ratelimit.NewRedis(ratelimit.RedisConfig{Client: c}); err == nil {
		t.Fatal("NewRedis without a rate: no error")
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRedisClockStepBack(t *testing.T) {
	t.Parallel()
	c := redisClient(chattest.StartRedis(t))(t)
	r := newRedis(t, c, ratelimit.RedisConfig{Limit: ratelimit.Limit{Rate: 20, Burst: 1}})
	ctx := context.Background()
	// A TAT an hour ahead of the server's clock, as a clock stepping back
	// an hour leaves: the key is refused for one interval, not an hour.
	now, err := c.Time(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, r.Key("u"), now.Add(time.Hour).UnixMicro(), 2*time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	d, err := r.Allow(ctx, "u", time.Now())
	if err != nil || d.Allowed || d.RetryAfter > 50*time.Millisecond {
		t.Fatalf("after the step: %+v, %v; want refused for at most 50 ms", d, err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !allow(t, r, "u").Allowed {
		if time.Now().After(deadline) {
			t.Fatal("still refused 2 s after the step")
		}
		time.Sleep(5 * time.Millisecond) // poll interval, bounded by deadline
	}
}
