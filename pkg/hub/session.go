package hub

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"example.com/chat/api"
)

// Transport is a session's connection to its client, implemented by the
// edges (pkg/rpc, pkg/ws).
type Transport interface {
	// Write writes frames to the client, in order. Only the session's writer
	// goroutine calls it, never concurrently. ctx is the session's context:
	// it is cancelled when the session closes without a flush, and Write must
	// then return promptly.
	Write(ctx context.Context, frames []*Frame) error
	// Close ends the connection, telling the client reason where the wire
	// allows. The writer goroutine calls it exactly once, after its last
	// Write.
	Close(reason CloseReason)
}

// JoinOptions are what a client asks for when it joins.
type JoinOptions struct {
	// User is the client's user name (authenticated or claimed).
	User string
	// Room to join; empty means DefaultRoom.
	Room string
	// Transport names the edge ("grpc", "ws") for logs and metrics.
	Transport string
	// Events asks for events (join, leave, typing, acks, errors) and not only
	// chat messages. Seed clients cannot tell events apart, so they get none.
	Events bool
	// History is how many recent messages to replay; zero means the hub's
	// HistorySize, which also caps it.
	History int
	// NoHistory skips the replay entirely.
	NoHistory bool
	// AfterSeq and Epoch resume: replay everything after AfterSeq if the log
	// still holds it in that epoch.
	AfterSeq uint64
	Epoch    string

	// ClaimedUser is the user the client's first message named when User
	// comes from a token; a different name is refused (KindForbidden).
	ClaimedUser string
	// MayJoin, when set, says which rooms the client may join (from its
	// token: auth.Claims.MayJoin). Nil means every room (open mode).
	MayJoin func(room string) bool
	// Expires, when set, ends the session with CloseUnauthenticated at that
	// time (its token expires).
	Expires time.Time
	// Rooms are more rooms to subscribe to at once (Session.Subscribe),
	// each with its own options; Personal adds the user's personal
	// channel. Both need Events. A room that cannot be subscribed is told
	// in an error event naming it; the join still succeeds.
	Rooms    []SubOptions
	Personal bool
	// Changes also delivers edits, deletes and reactions (KIND_EDIT,
	// KIND_DELETE, KIND_REACTION) and deleted messages as tombstones;
	// without it the session sees messages only (see state.go). Needs
	// Events.
	Changes bool

	// Admission, when set, is the slot Admit reserved for this connection:
	// Join takes it over, or releases it if the join fails. Nil takes a new
	// slot.
	Admission *Admission
}

// Session is one client stream: one queue and one writer, and the rooms it
// receives (subscriptions, see sub): the room it joined (the primary, the
// only one of a seed client) and those it subscribed to since. Its methods
// are safe for concurrent use.
type Session struct {
	hub       *Hub
	id        uint64
	origin    string
	user      string
	primary   *sub // the room the stream joined; set by Join before any delivery
	transport string
	events    bool
	changes   bool                   // Events and JoinOptions.Changes
	mayJoin   func(room string) bool // the token's rooms claim; nil: every room
	t         Transport
	log       *slog.Logger
	rejected  int          // consecutive rate-limited sends; guarded by mu
	lastWrite atomic.Int64 // unix nanoseconds of the last write

	ctx    context.Context // done when the session stops writing
	cancel context.CancelFunc
	wake   chan struct{} // nudges a running writer
	// The writer's timers (write delay, idle wait); only the writer uses
	// them.
	delay     *time.Timer
	idle      *time.Timer
	idleArmed bool

	// slots holds one token per publish under way (PublishAsync to its
	// answer); its capacity is MaxInflightSends.
	slots chan struct{}

	mu         sync.Mutex
	answers    []*answer // answers to come, in order; answers[answered:] are due (pipeline.go)
	answered   int
	completing bool // a goroutine answers them (the completer)
	queue      []*Frame
	queued     int // bytes in queue
	replay     int // bytes of the join's replay in queue, allowed on top of MaxQueueBytes
	closing    bool
	inflight   int  // publishes under way; a draining writer waits for their acks
	urgent     bool // the queue holds an ack or error: write without delay
	reason     CloseReason
	started    bool     // Join is done: a writer may run
	writing    bool     // a writer goroutine runs (or the session has finished)
	spare      []*Frame // the writer's batch slice, kept between writers
	busy       bool     // the writer holds a batch: from taking it to noting whether more came during its write
	queuedAt   int64    // unix ns when the queue last went from empty to not: how long a woken writer took to run
	// subs are the rooms the session receives, the primary first (see
	// sub); each sub's own fields are guarded by mu too.
	subs []*sub
}

// User returns the session's user name.
func (s *Session) User() string { return s.user }

// Room returns the room the session joined (its primary room).
func (s *Session) Room() string { return s.primary.room.name }

// Context is done once the session has stopped writing: right away for a
// slow or broken client, after flushing the queue for an orderly close. An
// edge whose handler must return to release its connection (gRPC) waits on
// it.
func (s *Session) Context() context.Context { return s.ctx }

// Reason returns why the session closed; meaningful once Context is done.
func (s *Session) Reason() CloseReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Close ends the session with reason. For reasons that flush (normal,
// shutdown, ...) queued frames are written first. Only the first call counts.
func (s *Session) Close(reason CloseReason) {
	s.mu.Lock()
	first := s.closeLocked(reason)
	s.mu.Unlock()
	if first {
		s.afterClose(reason)
	}
}

// closeLocked marks the session closing; s.mu must be held. It reports
// whether this was the first close, in which case the caller must call
// afterClose once the lock is released.
func (s *Session) closeLocked(reason CloseReason) bool {
	if s.closing {
		return false
	}
	s.closing = true
	s.reason = reason
	return true
}

func (s *Session) afterClose(reason CloseReason) {
	if !reason.flushes() {
		// No flush for a peer that cannot take it: cancelling unblocks a
		// stuck Write and lets the gRPC handler return.
		s.cancel()
	} else {
		// An orderly close flushes, but never for longer than FlushTimeout:
		// a peer that stopped reading would otherwise pin the session, its
		// writer and its user's slot (a stuck gRPC Send waits for ever).
		// Then it ends as a write error, which the edges cut at once.
		t := time.AfterFunc(s.hub.cfg.FlushTimeout, func() {
			s.mu.Lock()
			if s.ctx.Err() != nil {
				s.mu.Unlock()
				return // flushed just in time
			}
			s.reason = CloseWriteError
			s.mu.Unlock()
			s.hub.warn(s.log, "flush timed out; cutting the connection", "reason", reason.String())
			s.cancel()
		})
		context.AfterFunc(s.ctx, func() { t.Stop() })
	}
	s.mu.Lock()
	s.wakeLocked()
	s.mu.Unlock()
	s.hub.metrics.disconnect(reason)
	if reason == CloseSlowConsumer {
		s.hub.warn(s.log, "closing slow consumer", "reason", reason.String())
	} else {
		s.log.Debug("session closing", "reason", reason.String())
	}
}

// wakeLocked makes a writer look at the session: it starts one when none
// runs, or nudges the one that does. s.mu must be held.
//
// The writer runs only while there is something to write or the session is
// closing, and exits when the queue is empty: an idle session holds no
// goroutine (a goroutine's stack is most of an idle connection's memory).
func (s *Session) wakeLocked() {
	if !s.started {
		return // Join starts the first writer
	}
	if !s.writing {
		s.writing = true
		go s.writeLoop()
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// enqueueLocked appends f to the queue, or closes the session as a slow
// consumer when the queue is over its byte limit. s.mu must be held. It
// returns true when the caller must call afterClose(CloseSlowConsumer).
func (s *Session) enqueueLocked(f *Frame) (closed bool) {
	return s.enqueueFrameLocked(f, false)
}

// enqueueFrameLocked is enqueueLocked; own frames (acks and errors for the
// session's own sends) are still queued while an orderly close drains, so
// that every message the client sent before the close is answered.
func (s *Session) enqueueFrameLocked(f *Frame, own bool) (closed bool) {
	if s.closing && !(own && s.reason.flushes() && s.ctx.Err() == nil) {
		return false
	}
	n := f.size
	if s.queued+n > s.hub.cfg.MaxQueueBytes+s.replay {
		s.queue = nil
		s.queued = 0
		return s.closeLocked(CloseSlowConsumer)
	}
	if len(s.queue) == 0 {
		s.queuedAt = time.Now().UnixNano()
	}
	s.queue = append(s.queue, f)
	s.queued += n
	if own && !s.urgent {
		// The client is waiting for this answer: no write delay, and
		// wake a writer that is already waiting one out.
		s.urgent = true
		s.wakeLocked()
	} else if len(s.queue) == 1 {
		s.wakeLocked()
	}
	return false
}

// send queues an event for this session only.
func (s *Session) send(f *Frame) {
	s.mu.Lock()
	slow := s.enqueueLocked(f)
	s.mu.Unlock()
	if slow {
		s.afterClose(CloseSlowConsumer)
	}
}

// sendOwn queues an ack or error about the session's own send.
func (s *Session) sendOwn(f *Frame) {
	s.mu.Lock()
	slow := s.enqueueFrameLocked(f, true)
	s.mu.Unlock()
	if slow {
		s.afterClose(CloseSlowConsumer)
	}
}

// start lets writers run once Join is done, and starts the first one if
// the join queued frames (the replay) or the session already closes.
func (s *Session) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = true
	// The join's replay waited for the join, not for a writer: the first
	// writer is not late for it.
	s.queuedAt = time.Now().UnixNano()
	if len(s.queue) > 0 || s.closing || s.ctx.Err() != nil {
		s.wakeLocked()
	}
}

// writeLoop is the session's writer: it drains the queue in batches, so a
// client that fell behind catches up with few system calls, and returns
// once the queue is empty (wakeLocked starts the next one). The writer that
// finds the session closed and flushed finishes it.
func (s *Session) writeLoop() {
	batch := s.takeSpare()
	idle := false // the queue stayed empty for WriterIdle
	// coalesce is the writer's current wait after a write before the
	// next: zero while the client keeps up, so a frame to a client that
	// is not behind leaves at once; it grows while the session is behind
	// (writes find frames that came during them, or frames waited for
	// the writer to run: see nextCoalesce and firstCoalesce), up to
	// WriteDelay, and shrinks with each write that finds neither.
	var coalesce time.Duration
	for {
		s.mu.Lock()
		if len(s.queue) == 0 && (!s.closing || s.inflight > 0) && s.ctx.Err() == nil {
			// coalesce is kept while the writer waits: it is a wait after
			// the last write, so a frame that comes later than that is
			// written at once anyway, and one that comes sooner to a
			// session that was behind joins the next batch.
			if !idle {
				// Wait a while for more: a busy client keeps its
				// writer rather than start one per frame.
				s.mu.Unlock()
				idle = s.waitIdle()
				continue
			}
			// Nothing to do: exit under the lock, so that the next frame
			// (or close, or answer a draining writer waits for) starts a
			// new writer.
			s.stopDelay() // under the lock: the next writer may use it
			s.writing = false
			if cap(batch) <= maxSpareFrames {
				s.spare = batch[:0]
			}
			s.mu.Unlock()
			return
		}
		idle = false
		closing, urgent := s.closing, s.urgent
		s.mu.Unlock()
		// Adaptive coalescing: while frames keep arriving during writes
		// (the client, or this node, is behind), wait up to coalesce
		// after the last write, so that the backlog leaves in few system
		// calls; a client that keeps up is written to at once, so its
		// latency follows the load, not a fixed delay. Acks never wait: a
		// sender waiting for one would be slowed to one send per delay.
		var until int64 // the end of the coalescing wait, unix ns; 0: none
		if d := coalesce; d > 0 && !closing && !urgent {
			end := s.lastWrite.Load() + int64(d)
			if wait := time.Duration(end - time.Now().UnixNano()); wait > 0 {
				until = end
				s.setDelay(wait)
			wait:
				for {
					select {
					case <-s.delay.C:
						break wait
					case <-s.ctx.Done():
						break wait
					case <-s.wake:
						// More frames, an ack or a close: those must not
						// wait.
						s.mu.Lock()
						c := s.closing || s.urgent
						s.mu.Unlock()
						if c {
							s.delay.Stop()
							break wait
						}
					}
				}
			}
		}
		s.mu.Lock()
		batch, s.queue = s.queue, batch[:0]
		s.queued, s.replay, s.urgent = 0, 0, false
		closing = s.closing
		s.busy = len(batch) > 0
		// late: the frames waited for this writer to run, beyond its own
		// coalescing wait, longer than its first wait would be: the node
		// is behind (its cores are busy), so this session is too.
		late := len(batch) > 0 && time.Now().UnixNano()-max(s.queuedAt, until) > int64(firstCoalesce(s.hub.cfg.WriteDelay))
		s.mu.Unlock()

		if s.ctx.Err() != nil {
			break
		}
		if len(batch) > 0 {
			if err := s.t.Write(s.ctx, batch); err != nil {
				s.log.Debug("write failed", "err", err)
				s.Close(CloseWriteError)
				break
			}
			s.lastWrite.Store(time.Now().UnixNano())
			s.hub.metrics.delivered.Add(float64(len(batch)))
			s.observeLag(batch)
			clear(batch)
			s.mu.Lock()
			behind := len(s.queue) > 0
			s.busy = false
			s.mu.Unlock()
			coalesce = nextCoalesce(coalesce, behind, late, s.hub.cfg.WriteDelay)
		}
		if closing {
			s.mu.Lock()
			done := len(s.queue) == 0 && s.inflight == 0
			s.mu.Unlock()
			if done {
				break
			}
		}
	}
	s.stopDelay()
	// This writer finishes the session; writing stays true so that no
	// other starts.
	// Free the user's stream slot before the client can learn the stream
	// ended: a client at its limit may reconnect at once.
	s.hub.removeUser(s)
	s.cancel()
	s.t.Close(s.Reason())
	s.hub.leave(s)
	s.hub.wg.Done()
}

// nextCoalesce is the writer's coalescing delay after a write, from cur,
// the last one. It is a wait after a write, not before each: a frame that
// comes later than that is written at once whatever it is.
//
//   - late (the batch's frames waited for the writer to run longer than
//     firstCoalesce: every core of the node is busy) gives limit at once: the
//     node saves its CPU as a fixed delay would, in fewer, larger writes,
//     which is what frees the cores.
//   - behind (the write found frames that came during it: the client, or
//     its link, is slower than its traffic) gives a 32nd of limit (1.5 ms
//     of the default 50 ms) the first time, then twice the last, up to
//     limit.
//   - neither takes a 16th off, down to zero below a 32nd of limit: a
//     session that caught up is soon written to at once again, but one
//     that keeps falling behind does not swing between one write per
//     frame, which puts it behind again, and the longest wait.
//
// A zero limit never waits.
func nextCoalesce(cur time.Duration, behind, late bool, limit time.Duration) time.Duration {
	switch {
	case limit <= 0:
		return 0
	case late:
		return limit
	case behind && cur == 0:
		return firstCoalesce(limit)
	case behind:
		return min(2*cur, limit)
	}
	if next := cur - cur/16; next >= limit/32 {
		return next
	}
	return 0
}

// firstCoalesce is the first coalescing wait of a session behind (a 32nd
// of limit), and also how long frames may wait for their writer to run
// before the session counts as late. A woken writer runs within
// microseconds on a node with a free core; it waits longer when every
// core is busy writing, and writing fewer, larger batches is then what
// frees them.
func firstCoalesce(limit time.Duration) time.Duration { return max(limit/32, time.Microsecond) }

// maxSpareFrames bounds the batch slice an idle session keeps for its next
// writer: a burst's big slice is dropped.
const maxSpareFrames = 64

func (s *Session) takeSpare() []*Frame {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.spare
	s.spare = nil
	return b
}

// setDelay arms the writer's timer to fire after d.
func (s *Session) setDelay(d time.Duration) {
	if s.delay == nil {
		s.delay = time.NewTimer(d)
	} else {
		s.delay.Reset(d)
	}
}

// waitIdle waits until the writer is woken (a frame, a close, an answer
// a draining writer waits for) or the session's context ends, or until
// nothing was written for WriterIdle; it reports the latter. The idle timer
// stays armed across waits (resetting it on every wait would cost a busy
// writer a timer update per frame): when it fires early, it is re-armed.
func (s *Session) waitIdle() bool {
	idle := s.hub.cfg.WriterIdle
	if !s.idleArmed {
		if s.idle == nil {
			s.idle = time.NewTimer(idle)
		} else {
			s.idle.Reset(idle)
		}
		s.idleArmed = true
	}
	select {
	case <-s.wake:
		return false
	case <-s.ctx.Done():
		return false
	case <-s.idle.C:
		s.idleArmed = false
		return time.Since(time.Unix(0, s.lastWrite.Load())) >= idle
	}
}

// stopDelay stops the writer's timers, so that a finished writer leaves no
// timer behind.
func (s *Session) stopDelay() {
	if s.delay != nil {
		s.delay.Stop()
	}
	if s.idle != nil {
		s.idle.Stop()
		s.idleArmed = false
	}
}

// observeLag records how long live messages took from their server
// timestamp to leaving this node: once per batch, for its oldest live
// message (the batch's worst), which keeps the histogram off the per-frame
// path.
func (s *Session) observeLag(batch []*Frame) {
	for _, f := range batch {
		if !f.replay && f.msg.Kind == api.Kind_KIND_MESSAGE && f.msg.Ts > 0 {
			s.hub.metrics.fanoutLag.Observe(float64(s.hub.cfg.Now().UnixMilli()-f.msg.Ts) / 1000)
			return
		}
	}
}
