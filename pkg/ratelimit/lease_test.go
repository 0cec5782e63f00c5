package ratelimit_test

import (
	"context"
	"testing"
	"time"

	chattest "example.com/chat/internal/testutil"
	"example.com/chat/pkg/ratelimit"
)

// TestFloodIsLeased: a key checked back to back asks Redis for leases of
// growing size, so most checks cost no round trip, and the shared budget
// still admits no more than the limit: two limiters (two nodes) flooding
// one key admit at most the burst plus what the rate refills.
func TestFloodIsLeased(t *testing.T) {
	t.Parallel()
	c := redisClient(chattest.StartRedis(t))(t)
	prefix := chattest.UniquePrefix(t)
	limit := ratelimit.Limit{Rate: 1000, Burst: 500}
	a := newRedis(t, c, ratelimit.RedisConfig{Prefix: prefix, Limit: limit})
	b := newRedis(t, c, ratelimit.RedisConfig{Prefix: prefix, Limit: limit})
	ctx := context.Background()
	start := time.Now()
	admitted := 0
	for i := range 4000 {
		r := a
		if i%2 == 1 {
			r = b
		}
		d, err := r.Allow(ctx, "flood", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			admitted++
		}
	}
	elapsed := time.Since(start)
	// What the budget allows over the run, with the clocks' slack of one
	// interval at each end.
	most := limit.Burst + int(elapsed.Seconds()*limit.Rate) + 2
	if admitted > most {
		t.Errorf("admitted %d in %v; the limit allows at most %d", admitted, elapsed, most)
	}
	calls := decisions(a, "redis", "allowed") + decisions(a, "redis", "refused") + decisions(b, "redis", "allowed") + decisions(b, "redis", "refused")
	leased := decisions(a, "lease", "allowed") + decisions(b, "lease", "allowed")
	t.Logf("admitted %d of 4000 in %v (at most %d); %d Redis calls, %d checks from leases", admitted, elapsed.Round(time.Millisecond), most, calls, leased)
	if leased == 0 || calls >= admitted {
		t.Errorf("%d Redis calls for %d admitted checks (%d leased): a flood still costs a round trip per check", calls, admitted, leased)
	}
}

// TestOccasionalSenderIsChargedExactly: checks spaced wider than a lease
// lives never ask for more than one event, so a key that sends now and
// then keeps its whole budget.
func TestOccasionalSenderIsChargedExactly(t *testing.T) {
	t.Parallel()
	c := redisClient(chattest.StartRedis(t))(t)
	// A budget that does not refill within the test: 3 events.
	r := newRedis(t, c, ratelimit.RedisConfig{Limit: ratelimit.Limit{Rate: 0.001, Burst: 3}})
	ctx := context.Background()
	for i := range 3 {
		if d, err := r.Allow(ctx, "slow", time.Now()); err != nil || !d.Allowed {
			t.Fatalf("check %d: %+v, %v; want allowed", i, d, err)
		}
		time.Sleep(300 * time.Millisecond) // past a lease's life
	}
	if d, _ := r.Allow(ctx, "slow", time.Now()); d.Allowed {
		t.Fatal("a fourth event passed a budget of 3")
	}
	if n := decisions(r, "lease", "allowed"); n != 0 {
		t.Fatalf("%d checks came from leases; want none for a slow sender", n)
	}
}
