package hub

import (
	"context"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/pubsub"
)

// Pipelined publishes.
//
// A stream's reader hands each message to the bus (PublishAsync) and goes
// on reading: the bus's answer arrives later, while the next messages are
// already on their way, so one sender's messages share round trips
// instead of waiting for each other's (the Redis brokers batch what is
// submitted meanwhile into one pipeline).
//
// Order. Everything that decides a message's place runs in the reader's
// goroutine: checks, rate limit, building the record, and the broker's
// Submit, whose order is the order of the log. The answers (an ack, an
// error event, or the edge's done callback) are queued in the same order:
// each session keeps a FIFO of answers to come (Session.answers), and one
// goroutine at a time (the completer) takes its head, waits for the bus if
// needed, and answers it. Error events about refusals before the bus
// (SendError) join the same FIFO, so they too come after the answers of
// the sends before them.
//
// The completer runs only while answers are due: the goroutine that finds
// the FIFO idle answers what is ready at once itself (an in-process broker
// answers in Submit: no goroutine per message), and starts a completer
// goroutine only for an answer that must be waited for; the completer
// exits when the FIFO is empty. The Hub's WaitGroup counts it.
//
// Bounds. At most MaxInflightSends publishes of one session are under way
// (from the start of PublishAsync to their answer); the reader waits for a
// free slot beyond, which holds the client back through its transport's
// flow control. Each waits for the bus for at most PublishTimeout.
//
// Close. Every publish under way counts in Session.inflight, so a
// draining writer waits for their answers (acks and error events of an
// orderly close are still written); a close without flush drops them.

// completion is one publish handed to the broker: wait returns its
// answer, mapped for the client as Hub.publish maps it.
type completion struct {
	h      *Hub
	m      *api.Message
	opts   pubsub.PublishOptions
	p      *pubsub.Pending // nil when refused before the broker (err)
	err    error
	ctx    context.Context // the publish's, within PublishTimeout
	cancel context.CancelFunc
	start  time.Time
}

// ready reports whether wait would not block.
func (c *completion) ready() bool {
	if c.p == nil {
		return true
	}
	select {
	case <-c.p.Done():
		return true
	default:
		return false
	}
}

// wait waits for the broker's answer, within the publish's timeout.
func (c *completion) wait() (pubsub.PublishResult, error) {
	if c.p == nil {
		return pubsub.PublishResult{}, c.err
	}
	res, err := c.p.Wait(c.ctx)
	c.cancel()
	return c.h.answered(c.m, c.opts, c.start, res, err)
}

// answer is one entry of a session's FIFO of answers: a publish's
// completion and what to do with its outcome, an error event to queue, or
// a barrier to signal.
type answer struct {
	c     *completion
	done  func(error) *api.Error
	frame *Frame        // an error event (SendError)
	mark  chan struct{} // closed when reached (WaitPublishes)
}

func (a *answer) ready() bool { return a.c == nil || a.c.ready() }

// PublishAsync sends a client's message to the session's room as Publish
// does, without waiting for the bus's answer: it returns once the message
// is handed to the bus, and done is called later with the outcome. The
// edges' readers call it for each message they read, so that a client's
// sends do not wait for each other's round trips.
//
// It first waits for one of the session's MaxInflightSends slots
// (back-pressure: a reader beyond the bound is held here, not refused),
// until ctx or the session ends (then ErrClosed). A refusal before the bus
// (closed session, invalid message, rate limit) is returned at once and
// done is not called. Otherwise it returns nil, and done is called exactly
// once: with nil once the bus stored (or broadcast) the message and its
// ack is queued (event sessions), or with the error (KindUnavailable: the
// message may or may not be stored; KindClosed). For an error, done
// returns the error event to queue for the client (the edge maps the
// error; nil queues none); the event carries the message's client_id.
//
// Order: messages of calls made one after the other (each returned before
// the next began) are stored in that order, and their acks, error events
// and done calls come in that order too, as do the error events of
// SendError calls made between them. If one fails, later ones may already
// be stored. done runs on the session's completer goroutine, or on the
// caller's when the answer is known at once; it must not block, nor call
// PublishAsync, Publish or SendError (it may call Close).
func (s *Session) PublishAsync(ctx context.Context, in *api.Message, done func(error) *api.Error) error {
	select {
	case s.slots <- struct{}{}:
	default:
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return ErrClosed
		case <-s.ctx.Done():
			return ErrClosed
		}
	}
	h := s.hub
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.slots
		return ErrClosed
	}
	s.inflight++
	// Added while the session is alive (its own count holds the group
	// above zero): Shutdown's Wait covers this publish.
	h.wg.Add(1)
	s.mu.Unlock()
	h.metrics.inflight.Inc()
	m, eff, err := s.prepare(ctx, in)
	if err != nil {
		s.settle()
		return err
	}
	s.push(&answer{c: h.submit(ctx, s.origin, m, eff), done: done})
	return nil
}

// WaitPublishes returns once every publish the session submitted before
// the call is answered (its done called, its ack or error event queued),
// or with ctx's error. The gRPC edge calls it when the client ends its
// side, so that a failure of its last sends still decides the stream's
// status.
func (s *Session) WaitPublishes(ctx context.Context) error {
	mark := make(chan struct{})
	s.push(&answer{mark: mark})
	select {
	case <-mark:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// settle ends one publish under way: its slot is freed, and a draining
// writer waiting for its answer looks again. The gauge drops before the
// slot is freed (and rises after one is taken), so that it never counts
// more publishes than there are slots: freed first, the next publish
// could count itself before this one was uncounted.
func (s *Session) settle() {
	s.mu.Lock()
	s.inflight--
	s.wakeLocked()
	s.mu.Unlock()
	s.hub.metrics.inflight.Dec()
	<-s.slots
	s.hub.wg.Done()
}

// push appends a to the session's answers. With no completer running, this
// goroutine answers what is ready itself, and starts a completer for the
// first answer that must be waited for.
func (s *Session) push(a *answer) {
	s.mu.Lock()
	s.answers = append(s.answers, a)
	if s.completing {
		s.mu.Unlock()
		return
	}
	s.completing = true
	s.mu.Unlock()
	if s.complete(false) {
		return
	}
	// The answer at the head holds a count of the Hub's group (only a
	// publish can be not ready), so this Add cannot race Shutdown's Wait.
	s.hub.wg.Add(1)
	go func() {
		defer s.hub.wg.Done()
		s.complete(true)
	}()
}

// complete answers the session's FIFO in order, the caller being its only
// completer (s.completing), until it is empty: then it clears completing
// and returns true. Without block it stops at the first answer that is not
// ready and returns false, staying the completer's owner for the caller to
// hand over.
func (s *Session) complete(block bool) bool {
	for {
		s.mu.Lock()
		if s.answered == len(s.answers) {
			s.completing = false
			// Keep the array for the next burst, unless a long one grew it.
			if cap(s.answers) > maxSpareAnswers {
				s.answers = nil
			}
			s.answers, s.answered = s.answers[:0], 0
			s.mu.Unlock()
			return true
		}
		a := s.answers[s.answered]
		if !block && !a.ready() {
			s.mu.Unlock()
			return false
		}
		s.answers[s.answered] = nil
		s.answered++
		s.mu.Unlock()
		s.finish(a)
	}
}

// maxSpareAnswers bounds the FIFO array an idle session keeps.
const maxSpareAnswers = 64

// finish answers a: queues its ack or error event, calls its done.
func (s *Session) finish(a *answer) {
	switch {
	case a.mark != nil:
		close(a.mark)
		return
	case a.frame != nil:
		s.sendOwn(a.frame)
		return
	}
	res, err := a.c.wait()
	m := a.c.m
	switch {
	case err == nil:
		if s.events && (m.Kind == api.Kind_KIND_MESSAGE || isStateEvent(m.Kind)) {
			s.sendOwn(NewFrame(&api.Message{
				Kind:      api.Kind_KIND_ACK,
				User:      s.user,
				Room:      m.Room,
				Ts:        m.Ts,
				Seq:       res.Seq,
				Epoch:     res.Epoch,
				ClientId:  m.ClientId,
				TargetSeq: m.TargetSeq,
				Reacted:   res.Reacted,
			}))
		}
		if a.done != nil {
			a.done(nil)
		}
	case a.done != nil:
		if e := a.done(err); e != nil {
			s.sendOwn(s.errorFrame(e, m.GetClientId(), m.GetRoom()))
		}
	}
	// The ack is queued before the publish stops counting: a draining
	// writer that sees none under way has it.
	s.settle()
}
