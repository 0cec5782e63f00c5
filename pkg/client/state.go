package client

import (
	"fmt"
	"time"

	"example.com/chat/api"
)

// StateKind is what a State reports.
type StateKind int

// The states a client goes through; see Config.OnState.
const (
	// Connecting: dialling State.Addr and joining.
	Connecting StateKind = iota
	// Live: joined on State.Addr, history replayed, messages flowing.
	Live
	// Reconnecting: the connection to State.Addr failed or could not be
	// made (State.Err says why); the next attempt is in State.Retry, on
	// the next address of the list.
	Reconnecting
	// Stopped: the client has stopped for good, by Close (State.Err nil)
	// or after a PermanentError (State.Err).
	Stopped
)

func (k StateKind) String() string {
	switch k {
	case Connecting:
		return "connecting"
	case Live:
		return "live"
	case Reconnecting:
		return "reconnecting"
	case Stopped:
		return "stopped"
	}
	return "unknown"
}

// State is one change of a client's connection state.
type State struct {
	Kind StateKind
	Addr string
	// Err is why the last connection ended (Reconnecting) or why the
	// client stopped (Stopped).
	Err error
	// Retry is how long until the next attempt (Reconnecting).
	Retry time.Duration
	// Failures counts the consecutive attempts that failed (Reconnecting);
	// it goes back to zero once a connection is live.
	Failures int
}

// PermanentError is a refusal that retrying with the same configuration
// cannot change: the node rejected the token (gRPC Unauthenticated,
// WebSocket 401: missing, malformed or expired), the token's user or rooms
// do not allow the join (PermissionDenied, 403), or the join itself was
// invalid before it went live (InvalidArgument: a bad user or room name;
// WebSocket close 1008 before live).
type PermanentError struct {
	Addr string
	Err  error
}

func (e *PermanentError) Error() string {
	return fmt.Sprintf("client: refused by %s: %v", e.Addr, e.Err)
}

func (e *PermanentError) Unwrap() error { return e.Err }

// Addr returns the address of the node the client is live on, or "" while
// it is not live.
func (c *Client) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return ""
	}
	return c.addr
}

// Done is closed when the client has stopped: after Close, or by itself on
// a PermanentError.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client stopped: nil while it runs, ErrClosed after
// Close, or a *PermanentError.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// state reports s to Config.OnState.
func (c *Client) state(s State) {
	if c.cfg.OnState != nil {
		c.cfg.OnState(s)
	}
}

// maxOwnAhead bounds Client.ownAhead; past it the set is dropped (a resume
// may then replay some of the client's own messages, as before).
const maxOwnAhead = 4096

// observe runs handle for m, received on l, then what handle does not
// track: whether m made l live (it reports it, and remembers l's address),
// and the client's own acknowledged messages in the primary room, which
// move the resume point. A node never sends a client its own messages, so
// without them the resume point stayed behind them, and every resume
// replayed them as if they were new. Only the session goroutine calls it.
func (c *Client) observe(l *link, m *api.Message) (wentLive bool) {
	c.mu.Lock()
	wasLive, epoch := c.conn == l, c.epoch
	c.mu.Unlock()
	c.handle(l, m)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == l && !wasLive {
		c.addr, wentLive = l.addr, true
	}
	if c.epoch != epoch || m.GetKind() == api.Kind_KIND_TRUNCATED && m.GetEpoch() != "" && m.GetEpoch() != c.epoch {
		clear(c.ownAhead) // another epoch: the seqs mean other messages
	}
	if r := m.GetRoom(); r != "" && r != c.cfg.Room && !(c.cfg.Room == "" && r == "general") {
		return wentLive // another room's: it has its own position
	}
	switch m.GetKind() {
	case api.Kind_KIND_ACK:
		c.ownAckLocked(m.GetEpoch(), m.GetSeq())
	case api.Kind_KIND_MESSAGE, api.Kind_KIND_LIVE, api.Kind_KIND_EDIT, api.Kind_KIND_DELETE, api.Kind_KIND_REACTION:
		c.advanceLocked()
	}
	return wentLive
}

// ownAckLocked counts an acknowledgement of the client's own message, seq
// in epoch, towards the resume point. c.mu must be held.
func (c *Client) ownAckLocked(epoch string, seq uint64) {
	if c.epoch == "" && c.lastSeq == 0 && epoch != "" {
		c.epoch = epoch // an empty room's first message: ours
	}
	if seq == 0 || epoch == "" || epoch != c.epoch || seq <= c.lastSeq {
		return // another epoch (not yet seen) or already behind us
	}
	if c.ownAhead == nil || len(c.ownAhead) >= maxOwnAhead {
		c.ownAhead = make(map[uint64]bool)
	}
	c.ownAhead[seq] = true
	c.advanceLocked()
}

// advanceLocked moves lastSeq over the client's own messages that follow
// it. c.mu must be held.
func (c *Client) advanceLocked() {
	if len(c.ownAhead) == 0 {
		return
	}
	for seq := range c.ownAhead {
		if seq <= c.lastSeq {
			delete(c.ownAhead, seq)
		}
	}
	for c.ownAhead[c.lastSeq+1] {
		delete(c.ownAhead, c.lastSeq+1)
		c.lastSeq++
	}
}
