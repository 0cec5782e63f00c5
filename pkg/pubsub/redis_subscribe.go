package pubsub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The subscriber side of Redis.
//
// Confirmation. go-redis's Subscribe returns once SUBSCRIBE is written, not
// once Redis has processed it. Redis answers a connection's commands in
// order, so after writing SUBSCRIBE the caller writes PING with a token of
// its own and waits until the receive loop sees that token's PONG: by then
// the subscription is live on the connection the PONG came from. Should the
// connection be replaced in between, go-redis resubscribes the new one to
// every channel before any other command, so a PONG on it proves the same;
// a PING lost with the old connection is sent again.
//
// Reconnects. go-redis redials and resubscribes the connection by itself
// when a read or a write fails; messages published in between are lost. The
// loop learns of it from a failed read or ping, or from Redis confirming a
// subscription that was already confirmed (the resubscription of a
// connection replaced by a failed write elsewhere). It then pings a probe
// token; the probe's PONG proves every subscription is back, and only then
// is Handler.HandleReconnect called, once per outage.

// Subscribe implements Broker. It returns once Redis confirmed the
// subscription, or with an error wrapping ErrUnavailable when ctx ends first
// (the subscription is then rolled back). A room already confirmed returns
// at once. Concurrent Subscribe and Unsubscribe calls for one room end in the
// state of the last one made.
func (b *Redis) Subscribe(ctx context.Context, room string) error {
	channel := b.keys.Channel(room)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("pubsub: subscribe %q: %w", room, ErrClosed)
	}
	if s := b.subs[channel]; s != nil && s.confirmed {
		b.mu.Unlock()
		return nil
	}
	tok, done := b.addWaiterLocked()
	b.mu.Unlock()
	defer b.removeWaiter(tok)

	s, err := b.writeSubscribe(ctx, channel, room)
	if err == nil {
		err = b.awaitPong(ctx, tok, done)
	}

	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	rollback := false
	if s != nil {
		s.pending--
		switch {
		case err == nil:
			s.confirmed = true
		case !s.confirmed && s.pending == 0 && b.subs[channel] == s:
			delete(b.subs, channel)
			rollback = true
		}
	}
	b.mu.Unlock()
	if rollback {
		// Keep go-redis from resubscribing the room on its next reconnect.
		// Its Unsubscribe forgets the channel even when the write fails.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = b.ps.Unsubscribe(uctx, channel)
		cancel()
	}
	if err != nil {
		return fmt.Errorf("pubsub: subscribe %q: %w", room, err)
	}
	return nil
}

// writeSubscribe registers the subscription and writes SUBSCRIBE, retrying
// until a write succeeds: a failed write may have made go-redis replace the
// connection with one that lacks the channel. It returns the subscription
// registered (nil if none was) and an error when ctx or Close ends it.
func (b *Redis) writeSubscribe(ctx context.Context, channel, room string) (*subscription, error) {
	var s *subscription
	for attempt := 1; ; attempt++ {
		b.opMu.Lock()
		b.mu.Lock()
		switch {
		case b.closed:
			b.mu.Unlock()
			b.opMu.Unlock()
			return s, ErrClosed
		case s == nil:
			s = b.subs[channel]
			if s == nil {
				s = &subscription{room: room}
				b.subs[channel] = s
			}
			s.pending++
		case b.subs[channel] != s:
			b.mu.Unlock()
			b.opMu.Unlock()
			return s, errors.New("unsubscribed while subscribing")
		}
		b.mu.Unlock()
		err := b.ps.Subscribe(ctx, channel)
		b.opMu.Unlock()
		if err == nil {
			return s, nil
		}
		if !b.wait(ctx, attempt) {
			return s, b.waitErr(ctx, err)
		}
	}
}

// awaitPong pings token until the receive loop reports its PONG.
func (b *Redis) awaitPong(ctx context.Context, tok string, done <-chan struct{}) error {
	ticker := time.NewTicker(b.cfg.PingInterval)
	defer ticker.Stop()
	var lastErr error
	for attempt := 1; ; {
		select {
		case <-done:
			return nil
		default:
		}
		b.mu.Lock()
		lost := b.lost
		b.mu.Unlock()
		if err := b.ps.Ping(ctx, tok); err != nil {
			lastErr = err
			if !b.wait(ctx, attempt) {
				return b.waitErr(ctx, lastErr)
			}
			attempt++
			continue
		}
		attempt = 1
		select {
		case <-done:
			return nil
		case <-lost: // that PING may have gone with the old connection
		case <-ticker.C: // a safety net: pinging again is harmless
		case <-ctx.Done():
			return b.waitErr(ctx, lastErr)
		case <-b.closing:
			return ErrClosed
		}
	}
}

// waitErr explains why a wait ended: Close, or ctx with the last I/O error.
func (b *Redis) waitErr(ctx context.Context, ioErr error) error {
	select {
	case <-b.closing:
		return ErrClosed
	default:
	}
	if ioErr == nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
	return fmt.Errorf("%w: %w (last error: %w)", ErrUnavailable, ctx.Err(), ioErr)
}

// Unsubscribe implements Broker. Deliveries of room stop when it returns
// (the receive loop drops what is still in flight). A failed UNSUBSCRIBE
// write needs no retry: go-redis then replaces the connection with one
// subscribed to the remaining rooms only. So it returns nil, also after
// Close.
func (b *Redis) Unsubscribe(ctx context.Context, room string) error {
	channel := b.keys.Channel(room)
	b.opMu.Lock()
	defer b.opMu.Unlock()
	b.mu.Lock()
	_, ok := b.subs[channel]
	delete(b.subs, channel)
	closed := b.closed
	b.mu.Unlock()
	if !ok || closed {
		return nil
	}
	if err := b.ps.Unsubscribe(ctx, channel); err != nil {
		b.log.Debug("unsubscribe write failed; the connection is replaced without the room", "room", room, "err", err)
	}
	return nil
}

func (b *Redis) addWaiterLocked() (string, chan struct{}) {
	b.nextTok++
	tok := "chat-sub-" + strconv.FormatUint(b.nextTok, 10)
	done := make(chan struct{})
	b.waiters[tok] = done
	return tok, done
}

func (b *Redis) removeWaiter(tok string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.waiters, tok)
}

// receiveLoop reads the subscriber connection until Close. It calls the
// Handler inline and waits on nothing else than Redis and its backoff.
func (b *Redis) receiveLoop() {
	defer b.wg.Done()
	ctx := context.Background() // reads have deadlines; Close fails them
	var (
		lost     bool   // subscriptions may be gone: HandleReconnect is due
		probe    string // token of the PING proving they are back; "" if unsent
		pinged   bool   // a health PING is unanswered
		failures int    // consecutive failures, for the backoff
		probes   uint64
	)
	markLost := func(why string, err error) {
		pinged, probe = false, ""
		b.mu.Lock()
		close(b.lost) // wakes Subscribe calls whose PING may be gone
		b.lost = make(chan struct{})
		b.mu.Unlock()
		b.health.lost(why)
		if !lost { // log once per outage, not once per retry
			lost = true
			b.log.Warn("subscriber connection lost", "reason", why, "err", err)
			if lh, ok := b.getHandler().(LostHandler); ok {
				lh.HandleLost()
			}
		}
	}
	for {
		select {
		case <-b.closing:
			return
		default:
		}
		if failures > 0 && !b.wait(ctx, failures) {
			return
		}
		if lost && probe == "" {
			probes++
			tok := "chat-probe-" + strconv.FormatUint(probes, 10)
			if err := b.ps.Ping(ctx, tok); err != nil {
				failures++
				continue
			}
			probe = tok
		}

		var msg any
		var err error
		if pinged {
			// A read that times out under a context deadline (unlike
			// ReceiveTimeout's) makes go-redis drop the connection.
			rctx, cancel := context.WithTimeout(ctx, b.cfg.PingInterval)
			msg, err = b.ps.Receive(rctx)
			cancel()
		} else {
			msg, err = b.ps.ReceiveTimeout(ctx, b.cfg.PingInterval)
		}
		if err != nil {
			if b.isClosed() {
				return
			}
			if !pinged && isTimeout(err) {
				// Silence: make sure the connection is still alive.
				if err := b.ps.Ping(ctx); err != nil {
					markLost("ping failed", err)
					failures++
					continue
				}
				pinged = true
				continue
			}
			markLost("receive failed", err)
			failures++
			continue
		}
		failures, pinged = 0, false
		b.health.alive()

		switch m := msg.(type) {
		case *redis.Message:
			b.deliver(m)
		case *redis.Pong:
			if lost && probe != "" && m.Payload == probe {
				lost, probe = false, ""
				b.health.restored()
				b.log.Info("subscriber connection restored")
				if h := b.getHandler(); h != nil {
					h.HandleReconnect()
				}
				continue
			}
			b.mu.Lock()
			if done, ok := b.waiters[m.Payload]; ok {
				close(done)
				delete(b.waiters, m.Payload)
			}
			b.mu.Unlock()
		case *redis.Subscription:
			if m.Kind == "subscribe" && !lost && b.resubscribed(m.Channel) {
				markLost("resubscribed", nil)
			}
		}
	}
}

// resubscribed reports whether Redis confirmed a subscription that was
// already confirmed with nothing pending: only a new connection does that.
func (b *Redis) resubscribed(channel string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.subs[channel]
	return s != nil && s.confirmed && s.pending == 0
}

func (b *Redis) getHandler() Handler {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.handler
}

// deliver hands one message to the Handler, unless its room was
// unsubscribed meanwhile.
func (b *Redis) deliver(m *redis.Message) {
	b.mu.Lock()
	s, h := b.subs[m.Channel], b.handler
	b.mu.Unlock()
	if s == nil || h == nil {
		return
	}
	env, err := parsePayload(s.room, m.Payload)
	if err != nil {
		b.log.Error("dropped a malformed delivery", "room", s.room, "err", err)
		return
	}
	h.HandleMessage(env)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var _ Syncer = (*Redis)(nil)

// Sync implements Syncer: Redis answers a connection's commands in order,
// after the messages it already wrote to it, so the PONG of a token of
// our own comes after every delivery that was on its way.
func (b *Redis) Sync(ctx context.Context, room string) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("pubsub: sync %q: %w", room, ErrClosed)
	}
	tok, done := b.addWaiterLocked()
	b.mu.Unlock()
	defer b.removeWaiter(tok)
	if err := b.awaitPong(ctx, tok, done); err != nil {
		return fmt.Errorf("pubsub: sync %q: %w", room, err)
	}
	return nil
}
