package pubsub

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// HealthChecker is implemented by the brokers whose deliveries can stop
// while Redis still answers commands: a dead or stuck subscription
// connection loses every delivery silently, so a node must not report
// ready while it lasts. The node's /readyz and gRPC health call Healthy
// about once a second; it never does I/O.
type HealthChecker interface {
	// Healthy returns nil while the broker's subscription connections are
	// live (for Redis: the connection answered a read or a PING within
	// the last few ping intervals, and no outage is pending), and an error
	// wrapping ErrSubscriptionDown saying why not otherwise.
	Healthy() error
}

// ErrSubscriptionDown reports that deliveries are not flowing: the
// subscription connection is lost, not yet restored, or silent.
var ErrSubscriptionDown = errors.New("pubsub: subscription connection down")

var (
	_ HealthChecker = (*Redis)(nil)
	_ HealthChecker = (*RedisCluster)(nil)
)

// subHealth is what a receive loop last proved about its connection.
type subHealth struct {
	mu        sync.Mutex
	lastAlive time.Time // the last successful read (message, PONG, confirmation)
	down      string    // why the subscriptions are lost; "" while they are live
	downSince time.Time
}

func newSubHealth() *subHealth { return &subHealth{lastAlive: time.Now()} }

// alive records a successful read.
func (h *subHealth) alive() {
	h.mu.Lock()
	h.lastAlive = time.Now()
	h.mu.Unlock()
}

// lost records that the subscriptions may be gone, until restored.
func (h *subHealth) lost(why string) {
	h.mu.Lock()
	if h.down == "" {
		h.down, h.downSince = why, time.Now()
	}
	h.mu.Unlock()
}

// restored records that a probe PING proved every subscription back.
func (h *subHealth) restored() {
	h.mu.Lock()
	h.down = ""
	h.lastAlive = time.Now()
	h.mu.Unlock()
}

// check returns nil if the connection is live and read from within
// maxSilence.
func (h *subHealth) check(maxSilence time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down != "" {
		return fmt.Errorf("%w: %s %v ago, not restored yet", ErrSubscriptionDown, h.down, time.Since(h.downSince).Round(time.Millisecond))
	}
	if d := time.Since(h.lastAlive); d > maxSilence {
		return fmt.Errorf("%w: no answer on it for %v", ErrSubscriptionDown, d.Round(time.Millisecond))
	}
	return nil
}

// maxSilence is how long a live subscription connection may go without a
// successful read: the receive loop pings after PingInterval of silence
// and waits as long again for the PONG; a second of slack covers a
// scheduler hiccup.
func maxSilence(pingInterval time.Duration) time.Duration { return 2*pingInterval + time.Second }

// Healthy implements HealthChecker.
func (b *Redis) Healthy() error {
	if b.isClosed() {
		return ErrClosed
	}
	return b.health.check(maxSilence(b.cfg.PingInterval))
}

// Healthy implements HealthChecker: every master connection holding rooms
// is live, and no room that lost its live subscription (a failover, a
// slot move) is still waiting to be subscribed again. Rooms being
// subscribed for the first time (a join in progress) do not count.
func (b *RedisCluster) Healthy() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	for s := range b.all {
		if s.lost && len(s.rooms) > 0 {
			return fmt.Errorf("%w: the subscription connection to %s is lost, not restored yet", ErrSubscriptionDown, s.addr)
		}
	}
	lost := 0
	for _, r := range b.rooms {
		if r.wanted && r.wasLive && !r.confirmed {
			lost++
		}
	}
	if lost > 0 {
		return fmt.Errorf("%w: %d rooms lost their subscription, not restored yet", ErrSubscriptionDown, lost)
	}
	return nil
}
