package hub

import (
	"context"
	"sync"
	"time"
)

// busGate holds the node's stored publishes while the bus has lost its
// subscriptions, so that nothing this node's senders queued during an
// outage is stored before the node is subscribed again and knows where its
// rooms stand: stored earlier, a burst of them could pass a room's history
// cap before the node could read it back, and its clients would miss it.
//
// The broker closes the gate (HandleLost); HandleReconnect marks it due to
// open; the position checker opens it once it has checked every room's
// position (starting the backfills that are due and waiting, up to
// PublishTimeout, for them) and BusSettle has passed. A gate closed longer
// than maxGateHold opens by itself: a bus that never reports back must
// not silence the node for good (its publishes then fail or pass on their
// own).
//
// Its fields are guarded by mu, which is taken alone.
type busGate struct {
	mu     sync.Mutex
	down   bool
	since  time.Time     // when it closed
	open   chan struct{} // closed when the gate opens; nil while open
	due    bool          // HandleReconnect came since it closed
	losses uint64        // HandleLost calls: a pass opens only the closing it saw
}

// maxGateHold bounds how long the gate stays closed without the bus
// reporting back.
const maxGateHold = 30 * time.Second

// HandleLost implements pubsub.LostHandler: the gate closes.
func (h *Hub) HandleLost() {
	g := &h.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.losses++
	g.due = false
	if g.down {
		return
	}
	g.down, g.since, g.open = true, h.cfg.Now(), make(chan struct{})
	h.log.Warn("bus subscriptions lost; holding this node's publishes until it is back and the rooms are checked")
}

// reconnected records that the bus reported its subscriptions back: a
// closed gate waits for the next position pass.
func (g *busGate) reconnected() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.due = g.down
}

// takeDue returns, if the gate waits for a position pass, the loss count
// that pass answers.
func (g *busGate) takeDue() (uint64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.down || !g.due {
		return 0, false
	}
	g.due = false
	return g.losses, true
}

// reopen opens the gate unless the bus was lost again after the pass that
// answers losses began.
func (h *Hub) reopen(losses uint64) {
	g := &h.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.down || g.losses != losses {
		return
	}
	h.openLocked("rooms checked")
}

func (h *Hub) openLocked(why string) {
	g := &h.gate
	h.log.Info("bus back; publishes resume", "why", why, "held", h.cfg.Now().Sub(g.since).Round(time.Millisecond))
	g.down, g.due = false, false
	close(g.open)
	g.open = nil
}

// awaitBus waits while the gate is closed, until ctx ends.
func (h *Hub) awaitBus(ctx context.Context) error {
	g := &h.gate
	g.mu.Lock()
	if !g.down {
		g.mu.Unlock()
		return nil
	}
	if h.cfg.Now().Sub(g.since) > maxGateHold {
		h.openLocked("held too long without the bus reporting back")
		g.mu.Unlock()
		return nil
	}
	open := g.open
	g.mu.Unlock()
	h.metrics.publishesHeld.Inc()
	t := time.NewTimer(maxGateHold)
	defer t.Stop()
	select {
	case <-open:
		return nil
	case <-t.C:
		return nil // awaitBus's next caller opens it
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settleAndReopen ends a position pass that answers a reconnect: it waits
// (at most PublishTimeout) for the backfills the pass started, then
// BusSettle, then opens the gate. It runs on the position checker.
func (h *Hub) settleAndReopen(losses uint64, started []*room) {
	deadline := time.Now().Add(h.cfg.PublishTimeout)
	for _, r := range started {
		for {
			r.mu.Lock()
			busy := r.recovering
			r.mu.Unlock()
			if !busy || time.Now().After(deadline) {
				break
			}
			select {
			case <-h.bg.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	if h.cfg.BusSettle > 0 {
		select {
		case <-h.bg.Done():
			return
		case <-time.After(h.cfg.BusSettle):
		}
	}
	h.reopen(losses)
}
