package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Limiter decides, per key, whether one more event may pass.
type Limiter interface {
	// Allow charges one event to key at now, if the key's budget has room
	// for it, and says whether it did. A refusal charges nothing and
	// carries RetryAfter (always positive). now is the caller's clock;
	// implementations with a clock of their own (Redis) may use theirs
	// instead, as long as one key is always judged by one clock.
	//
	// Allow returns an error only when it could decide nothing: the
	// Decision is then the zero value, and the caller chooses what to do
	// (the hub refuses the send as unavailable). Redis never returns one
	// for a Redis failure: it falls back to its local bucket.
	Allow(ctx context.Context, key string, now time.Time) (Decision, error)
	// Limit returns the limit applied to every key, with defaults filled in.
	Limit() Limit
}

// Limit is a rate plus a burst: what a token bucket of Burst tokens,
// refilled at Rate tokens per second, admits.
type Limit struct {
	// Rate is how many events per second a key may average; it must be
	// positive. math.Inf(1) admits everything.
	Rate float64
	// Burst is how many events a key may send at once, from a full bucket.
	// Zero means twice Rate, and at least 1.
	Burst int
}

// Decision is the answer to one Allow.
type Decision struct {
	// Allowed reports that the event passed and was charged.
	Allowed bool
	// RetryAfter, when refused, is how long until the same request would
	// pass if nothing else were charged to the key.
	RetryAfter time.Duration
}

// ErrInvalidLimit is returned by the constructors for a Limit without a
// positive rate.
var ErrInvalidLimit = errors.New("ratelimit: the rate must be positive")

// normalize fills in Burst's default and checks Rate.
func (l Limit) normalize() (Limit, error) {
	if !(l.Rate > 0) { // also NaN
		return l, fmt.Errorf("%w, got %v", ErrInvalidLimit, l.Rate)
	}
	if l.Burst <= 0 {
		l.Burst = max(1, int(min(2*l.Rate, math.MaxInt32)))
	}
	return l, nil
}

// gcra is a Limit in the units of the algorithm.
type gcra struct {
	interval  int64 // T, nanoseconds between events at the steady rate
	tolerance int64 // tau = Burst*T, nanoseconds
}

// maxTolerance caps tau so that TATs never overflow: a bucket that takes
// more than ten years to refill is as good as one that never does.
const maxTolerance = int64(10 * 365 * 24 * time.Hour)

func newGCRA(l Limit) gcra {
	t := 1e9 / l.Rate // nanoseconds; 0 for an infinite rate
	tau := t * float64(l.Burst)
	if tau > float64(maxTolerance) {
		tau = float64(maxTolerance)
		t = min(t, tau)
	}
	// A rate above 1e9 per second rounds to one event per nanosecond.
	iv := int64(math.Ceil(t))
	if l.Rate < math.Inf(1) {
		iv = max(iv, 1)
	}
	return gcra{interval: iv, tolerance: int64(tau)}
}

// check judges one event at now against tat (0: never seen): it returns
// the TAT after admitting it, or how long until it would pass.
func (g gcra) check(tat, now int64) (next int64, retry time.Duration, ok bool) {
	// A TAT past now+tau can only come from a clock stepping back: clamp,
	// so that the refusal is never longer than an empty bucket's.
	tat = min(max(tat, now), now+g.tolerance)
	next = tat + g.interval
	if allowAt := next - g.tolerance; allowAt > now {
		return tat, time.Duration(allowAt - now), false
	}
	return next, 0, true
}

// charge admits one event at now whatever the budget, down to an empty
// bucket: for the local bucket of Redis, which follows what Redis admitted.
func (g gcra) charge(tat, now int64) int64 {
	return min(max(tat, now)+g.interval, now+g.tolerance)
}
