package ratelimit

import (
	"sync"
	"time"
)

// Leases take a fast sender's checks off the Redis round trip. When a key
// spends what Redis granted it quickly, the next call asks Redis for more
// than one event at once (twice as many each time, up to maxLease and a
// sixteenth of the burst, so that what leases can leave unspent stays a
// small part of the budget: a burst under 32 gets no leases), and
// the node spends them locally for up to leaseTTL; a key whose lease
// expires unspent goes back to asking for one at a time. So a client
// that sends a message now and then is charged exactly its messages,
// while one flooding a pipelined stream costs Redis one call per lease
// instead of one per message, and its sends no longer wait on a limiter
// round trip each.
//
// A lease is charged to the shared budget when granted: the deployment
// never admits more than the limit. What a lease leaves unspent when it
// expires is lost, which only makes the limit stricter, by at most one
// lease per node per leaseTTL for a key that just stopped flooding.
const (
	maxLease = 32
	leaseTTL = 200 * time.Millisecond
	// maxLeaseKeys bounds the keys with a lease or a lease size; past it,
	// new keys ask for one event at a time.
	maxLeaseKeys = 1 << 16
)

type leases struct {
	max  int // the largest lease: min(maxLease, burst/16), at least 1
	mu   sync.Mutex
	keys map[string]*lease
}

type lease struct {
	left   int       // granted and not spent
	until  time.Time // when the grant expires
	next   int       // how many to ask for next time
	active time.Time // last use, for the sweep
}

// take spends one leased event of key if it holds one; else it returns
// how many to ask Redis for.
func (l *leases) take(key string, now time.Time) (want int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[key]
	if e == nil {
		return 1, false
	}
	e.active = now
	if e.left > 0 && now.Before(e.until) {
		e.left--
		return 0, true
	}
	if e.left > 0 {
		// Expired unspent: this key is not flooding; back to one at a time.
		e.left, e.next = 0, 1
	}
	return e.next, false
}

// grant records that Redis admitted extra events for key beyond the one
// being spent now, and sizes the next request: a key that asked for more
// than one, or spent its last lease within leaseTTL, floods, and asks for
// twice as many next time.
func (l *leases) grant(key string, now time.Time, extra int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = make(map[string]*lease)
	}
	e := l.keys[key]
	if e == nil {
		if len(l.keys) >= maxLeaseKeys {
			l.sweepLocked(now)
			if len(l.keys) >= maxLeaseKeys {
				return
			}
		}
		// A first call asks for one; a second within leaseTTL starts
		// leasing.
		l.keys[key] = &lease{next: 1, until: now.Add(leaseTTL), active: now}
		return
	}
	flooding := now.Before(e.until)
	e.left, e.until, e.active = extra, now.Add(leaseTTL), now
	switch {
	case flooding:
		e.next = max(1, min(2*e.next, l.max))
	default:
		e.next = 1
	}
}

// sweepLocked forgets keys idle for longer than a lease lives.
func (l *leases) sweepLocked(now time.Time) {
	for k, e := range l.keys {
		if now.Sub(e.active) > leaseTTL {
			delete(l.keys, k)
		}
	}
}
