package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/ratelimit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// group returns n Limiters that share one budget per key under l: n nodes
// of one deployment.
type group func(t *testing.T, l ratelimit.Limit, n int) []ratelimit.Limiter

// slow is a rate at which nothing refills within a test.
const slow = 1.0 / 60

// runContract is the behaviour every Limiter must have, run on each
// implementation. Time is the real clock: Redis judges by its own.
func runContract(t *testing.T, newGroup group) {
	t.Run("BurstThenRefusal", func(t *testing.T) {
		t.Parallel()
		l := newGroup(t, ratelimit.Limit{Rate: slow, Burst: 5}, 1)[0]
		for i := range 5 {
			if d := allow(t, l, "u"); !d.Allowed {
				t.Fatalf("send %d refused (%v), want the burst of 5 admitted", i, d.RetryAfter)
			}
		}
		d := allow(t, l, "u")
		if d.Allowed || d.RetryAfter <= 50*time.Second || d.RetryAfter > 60*time.Second {
			t.Fatalf("sixth send: %+v, want refused with a retry of about 60 s", d)
		}
	})
	t.Run("Refill", func(t *testing.T) {
		t.Parallel()
		l := newGroup(t, ratelimit.Limit{Rate: 20, Burst: 1}, 1)[0]
		if d := allow(t, l, "u"); !d.Allowed {
			t.Fatalf("first send refused: %+v", d)
		}
		d := allow(t, l, "u")
		if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 50*time.Millisecond {
			t.Fatalf("second send at once: %+v, want refused with a retry within 50 ms", d)
		}
		// Refused attempts charge nothing: the bucket refills in one
		// interval however many are made meanwhile.
		refused := time.Now()
		deadline := refused.Add(5 * time.Second)
		for !allow(t, l, "u").Allowed {
			if time.Now().After(deadline) {
				t.Fatal("the bucket did not refill within 5 s")
			}
			time.Sleep(time.Millisecond) // poll interval, bounded by deadline
		}
		if waited := time.Since(refused); waited < d.RetryAfter/2 || waited > time.Second {
			t.Fatalf("refilled after %v, want about %v", waited, d.RetryAfter)
		}
	})
	t.Run("KeysIndependent", func(t *testing.T) {
		t.Parallel()
		l := newGroup(t, ratelimit.Limit{Rate: slow, Burst: 1}, 1)[0]
		if !allow(t, l, "a").Allowed || allow(t, l, "a").Allowed {
			t.Fatal("a: want one send admitted, then refused")
		}
		if !allow(t, l, "b").Allowed {
			t.Fatal("b refused: its budget is its own")
		}
	})
	t.Run("SharedBudget", func(t *testing.T) {
		t.Parallel()
		// Three nodes, 30 concurrent sends of one user spread over them:
		// exactly the burst passes.
		ls := newGroup(t, ratelimit.Limit{Rate: slow, Burst: 10}, 3)
		var admitted atomic.Int64
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Go(func() {
				if allow(t, ls[i%3], "spread").Allowed {
					admitted.Add(1)
				}
			})
		}
		wg.Wait()
		if n := admitted.Load(); n != 10 {
			t.Fatalf("%d of 30 sends over 3 limiters admitted, want exactly the burst, 10", n)
		}
	})
	t.Run("DefaultBurst", func(t *testing.T) {
		t.Parallel()
		l := newGroup(t, ratelimit.Limit{Rate: 0.25}, 1)[0]
		if got := l.Limit(); got.Burst != 1 || got.Rate != 0.25 {
			t.Fatalf("Limit() = %+v, want burst 1 (twice the rate, at least 1)", got)
		}
	})
}

func allow(t *testing.T, l ratelimit.Limiter, key string) ratelimit.Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := l.Allow(ctx, key, time.Now())
	if err != nil {
		t.Errorf("Allow(%q): %v", key, err)
	}
	return d
}

func newMemory(t *testing.T, l ratelimit.Limit, n int) []ratelimit.Limiter {
	t.Helper()
	m, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: l})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]ratelimit.Limiter, n)
	for i := range out {
		out[i] = m // one process: one map
	}
	return out
}

func TestMemory(t *testing.T) {
	t.Parallel()
	runContract(t, newMemory)
}

// newRedisGroup returns n Redis limiters on their own clients of the
// Redis that dial reaches, under a prefix of the test's own.
func newRedisGroup(dial func(t *testing.T) redis.UniversalClient) group {
	return func(t *testing.T, l ratelimit.Limit, n int) []ratelimit.Limiter {
		t.Helper()
		prefix := testutil.UniquePrefix(t)
		out := make([]ratelimit.Limiter, n)
		for i := range out {
			r, err := ratelimit.NewRedis(ratelimit.RedisConfig{Client: dial(t), Prefix: prefix, Limit: l})
			if err != nil {
				t.Fatal(err)
			}
			out[i] = r
		}
		return out
	}
}

func redisClient(srv *testutil.RedisServer) func(t *testing.T) redis.UniversalClient {
	return func(t *testing.T) redis.UniversalClient {
		c := redis.NewClient(&redis.Options{
			Addr:          srv.Addr(),
			DialTimeout:   time.Second,
			ReadTimeout:   2 * time.Second,
			WriteTimeout:  2 * time.Second,
			MaxRetries:    1,
			DialerRetries: 1,
		})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
}

func TestRedis(t *testing.T) {
	t.Parallel()
	runContract(t, newRedisGroup(redisClient(testutil.StartRedis(t))))
}

func TestRedisCluster(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	runContract(t, newRedisGroup(func(t *testing.T) redis.UniversalClient {
		cc := redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:         c.Addrs(),
			DialTimeout:   time.Second,
			ReadTimeout:   2 * time.Second,
			WriteTimeout:  2 * time.Second,
			MaxRetries:    1,
			DialerRetries: 1,
		})
		t.Cleanup(func() { _ = cc.Close() })
		return cc
	}))
}
