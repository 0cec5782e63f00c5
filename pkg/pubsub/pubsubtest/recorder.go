package pubsubtest

import (
	"sync"
	"testing"
	"time"

	"example.com/chat/pkg/pubsub"
)

// WaitTimeout bounds every wait of the suite for a delivery or a reconnect.
const WaitTimeout = 10 * time.Second

// Recorder is a pubsub.Handler and pubsub.LostHandler that keeps every
// delivery, loss and reconnect for a test to wait on. It never blocks the
// broker's receive loop.
type Recorder struct {
	mu         sync.Mutex
	msgs       []pubsub.Envelope
	reconnects int
	notices    []string      // "lost" and "reconnect", in call order
	signal     chan struct{} // capacity 1: "something changed"
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{signal: make(chan struct{}, 1)}
}

// HandleMessage implements pubsub.Handler.
func (r *Recorder) HandleMessage(env pubsub.Envelope) {
	r.mu.Lock()
	r.msgs = append(r.msgs, env)
	r.mu.Unlock()
	r.notify()
}

// HandleReconnect implements pubsub.Handler.
func (r *Recorder) HandleReconnect() {
	r.mu.Lock()
	r.reconnects++
	r.notices = append(r.notices, "reconnect")
	r.mu.Unlock()
	r.notify()
}

// HandleLost implements pubsub.LostHandler.
func (r *Recorder) HandleLost() {
	r.mu.Lock()
	r.notices = append(r.notices, "lost")
	r.mu.Unlock()
	r.notify()
}

// Notices returns the HandleLost ("lost") and HandleReconnect
// ("reconnect") calls so far, in call order.
func (r *Recorder) Notices() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.notices...)
}

func (r *Recorder) notify() {
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// Reconnects returns how many times HandleReconnect was called.
func (r *Recorder) Reconnects() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reconnects
}

// Next removes and returns the oldest delivery, waiting up to WaitTimeout
// for one; it fails t when none comes.
func (r *Recorder) Next(t testing.TB) pubsub.Envelope {
	t.Helper()
	var env pubsub.Envelope
	r.waitFor(t, "a delivery", func() bool {
		if len(r.msgs) == 0 {
			return false
		}
		env = r.msgs[0]
		r.msgs = r.msgs[1:]
		return true
	})
	return env
}

// NextIn returns the oldest delivery of room, waiting for one, after
// checking that every delivery before it is of one of the rooms in skip
// (dropping those). It lets a test prove that nothing else was delivered
// before a marker message.
func (r *Recorder) NextIn(t testing.TB, room string, skip ...string) pubsub.Envelope {
	t.Helper()
	for {
		env := r.Next(t)
		if env.Room == room {
			return env
		}
		ok := false
		for _, s := range skip {
			ok = ok || env.Room == s
		}
		if !ok {
			t.Fatalf("unexpected delivery before the one of %q: %+v", room, env)
		}
	}
}

// Pending returns the deliveries not yet taken, without waiting.
func (r *Recorder) Pending() []pubsub.Envelope {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pubsub.Envelope(nil), r.msgs...)
}

// WaitReconnects waits until HandleReconnect was called at least n times.
func (r *Recorder) WaitReconnects(t testing.TB, n int) {
	t.Helper()
	r.waitFor(t, "a reconnect", func() bool { return r.reconnects >= n })
}

// WaitLost waits until HandleLost was called at least n times.
func (r *Recorder) WaitLost(t testing.TB, n int) {
	t.Helper()
	r.waitFor(t, "a loss", func() bool {
		lost := 0
		for _, n := range r.notices {
			if n == "lost" {
				lost++
			}
		}
		return lost >= n
	})
}

// waitFor waits until cond, evaluated with r.mu held, holds.
func (r *Recorder) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timer := time.NewTimer(WaitTimeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.signal:
		case <-timer.C:
			t.Fatalf("no %s within %v", what, WaitTimeout)
		}
	}
}
