package pubsub

import (
	"errors"
	"fmt"
	"time"
)

// HealthChecker is implemented by the brokers whose deliveries can stop
// while Redis still answers commands: a dead or stuck subscription
// connection loses every delivery silently, so a node must not report
// ready while it lasts. The node's /readyz and gRPC health call Healthy
// about once a second; it never does I/O.
type HealthChecker interface {
	// Healthy returns nil while the broker's subscription connections are
	// live (for Redis and RedisCluster: every connection holding rooms,
	// and the single Redis's one at all times, answered a read or a PING
	// within the last few ping intervals and is not lost, and no room
	// that lost its subscription waits to be subscribed again), and an
	// error wrapping ErrSubscriptionDown saying why not otherwise.
	Healthy() error
}

// ErrSubscriptionDown reports that deliveries are not flowing: the
// subscription connection is lost, not yet restored, or silent.
var ErrSubscriptionDown = errors.New("pubsub: subscription connection down")

var (
	_ HealthChecker = (*Redis)(nil)
	_ HealthChecker = (*RedisCluster)(nil)
)

// maxSilence is how long a live subscription connection may go without a
// successful read: the receive loop pings after PingInterval of silence
// and waits as long again for the PONG; a second of slack covers a
// scheduler hiccup.
func maxSilence(pingInterval time.Duration) time.Duration { return 2*pingInterval + time.Second }

// Healthy implements HealthChecker (see subscriber.healthy).
func (b *Redis) Healthy() error { return b.sub.healthy() }

// Healthy implements HealthChecker (see subscriber.healthy).
func (b *RedisCluster) Healthy() error { return b.sub.healthy() }

// healthy checks every shard that holds rooms (and the single Redis's
// pinned shard, rooms or not): not lost, and read from within maxSilence;
// then that no room that lost a live subscription (a reconnect, a
// failover, a slot move) still waits for its new one. Rooms subscribed
// for the first time (a join in progress) do not count. It never does
// I/O; a Handler may call it.
func (e *subscriber) healthy() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	limit := maxSilence(e.cfg.pingInterval)
	for s := range e.all {
		if len(s.rooms) == 0 && !s.pinned {
			continue
		}
		if s.lost {
			return fmt.Errorf("%w: the subscription connection to %s is lost (%s %v ago), not restored yet",
				ErrSubscriptionDown, s.addr, s.lostWhy, time.Since(s.lostSince).Round(time.Millisecond))
		}
		if d := time.Since(time.Unix(0, s.lastAlive.Load())); d > limit {
			return fmt.Errorf("%w: no answer on the subscription connection to %s for %v", ErrSubscriptionDown, s.addr, d.Round(time.Millisecond))
		}
	}
	lost := 0
	for _, r := range e.rooms {
		if r.wanted && r.wasLive && !r.confirmed {
			lost++
		}
	}
	if lost > 0 {
		return fmt.Errorf("%w: %d rooms lost their subscription, not restored yet", ErrSubscriptionDown, lost)
	}
	return nil
}
