package hub

import (
	"context"
	"sync"
)

// Admission is a connection the node has accepted but whose client has not
// joined yet: it holds one of the node's MaxSessions slots, so that
// connections that never send their first message cannot starve the node,
// and it ends at the join deadline or when the hub shuts down.
//
// The edge that called Admit owns the Admission: it passes it to Join
// (JoinOptions.Admission), which takes its slot over whatever the outcome,
// or calls Release when the client leaves before joining. Its methods are
// safe for concurrent use.
type Admission struct {
	h      *Hub
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
}

// Admit reserves a slot for a connection that has not joined yet. It fails
// with KindLimit when the node holds MaxSessions connections (joined or
// not), and with KindClosed while the node drains.
//
// The Admission's Context is done once JoinTimeout has passed or the hub
// shuts down: the edge must then close the connection (and Release).
func (h *Hub) Admit() (*Admission, error) {
	if h.closed.Load() {
		return nil, &Error{Kind: KindClosed, Msg: "node is shutting down; reconnect"}
	}
	a := &Admission{h: h}
	a.ctx, a.cancel = context.WithTimeout(context.Background(), h.cfg.JoinTimeout)
	h.usersMu.Lock()
	defer h.usersMu.Unlock()
	if h.sessionN+len(h.admitted) >= h.cfg.MaxSessions {
		a.cancel()
		h.metrics.refused.Inc()
		return nil, errorf(KindLimit, "this node is full (%d connections); try another node", h.cfg.MaxSessions)
	}
	if h.closed.Load() {
		// Shutdown may have swept the admissions already: this one
		// would escape it.
		a.cancel()
		return nil, &Error{Kind: KindClosed, Msg: "node is shutting down; reconnect"}
	}
	h.admitted[a] = struct{}{}
	h.metrics.pending.Inc()
	return a, nil
}

// Context is done when the connection must be closed: the join deadline
// passed, or the hub is shutting down.
func (a *Admission) Context() context.Context { return a.ctx }

// Release frees the Admission's slot. Calls after the first, and calls
// after Join took the Admission, do nothing.
func (a *Admission) Release() {
	a.once.Do(func() {
		a.cancel()
		a.h.usersMu.Lock()
		delete(a.h.admitted, a)
		a.h.usersMu.Unlock()
		a.h.metrics.pending.Dec()
	})
}

// takeLocked hands a's slot to a joining session; h.usersMu must be held.
// It reports false when a was already released (its deadline passed, say),
// in which case the session needs a slot of its own.
func (a *Admission) takeLocked() bool {
	took := false
	a.once.Do(func() {
		took = true
		a.cancel()
		delete(a.h.admitted, a)
		a.h.metrics.pending.Dec()
	})
	return took
}

// cancelAdmissions ends every connection that has not joined yet; Shutdown
// calls it once the hub is closed to new joins.
func (h *Hub) cancelAdmissions() {
	h.usersMu.Lock()
	defer h.usersMu.Unlock()
	for a := range h.admitted {
		a.cancel()
	}
}
