package hub

import (
	"context"
	"errors"
	"fmt"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
)

// typingCommand is the text a seed client sends to say it is typing; it has
// no way to set Kind.
const typingCommand = "/me is typing…"

// Publish sends a client's message to the session's room and waits for
// the bus's answer: chat messages are stored and delivered to everyone
// else in the room, typing events only delivered. The message's user and
// room are the session's; its ts is the server's clock. A session that
// asked for events gets an acknowledgement carrying the message's id.
// Publish is PublishAsync followed by the wait: its answer is queued in
// order with those of the session's earlier PublishAsync calls.
//
// Errors are *Error values fit for the client. On KindUnavailable the message
// may or may not have been stored; a retry with the same client_id is safe.
func (s *Session) Publish(ctx context.Context, in *api.Message) error {
	answer := make(chan error, 1)
	if err := s.PublishAsync(ctx, in, func(err error) *api.Error {
		answer <- err
		return nil
	}); err != nil {
		return err
	}
	return <-answer
}

// prepare runs the checks of a client's send (kind, size, client id, rate)
// and builds the record to publish.
func (s *Session) prepare(ctx context.Context, in *api.Message) (*api.Message, *history.Effect, error) {
	h := s.hub
	kind := in.GetKind()
	if kind == api.Kind_KIND_MESSAGE && (in.GetText() == typingCommand || in.GetText() == "/me is typing...") {
		kind = api.Kind_KIND_TYPING
	}
	switch {
	case kind == api.Kind_KIND_MESSAGE, kind == api.Kind_KIND_TYPING:
	case isStateEvent(kind) && s.events:
		if err := validateEvent(in, h.cfg.MaxTextBytes); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, errorf(KindInvalid, "kind %s cannot be sent by a client", kind)
	}
	if err := validateText(in.GetText(), h.cfg.MaxTextBytes); err != nil {
		return nil, nil, err
	}
	if err := validateClientID(in.GetClientId()); err != nil {
		return nil, nil, err
	}
	if kind == api.Kind_KIND_MESSAGE && in.GetText() == "" {
		return nil, nil, errorf(KindInvalid, "text is empty")
	}
	b, err := s.sendSub(in.GetRoom())
	if err != nil {
		return nil, nil, err
	}
	if err := s.allow(ctx); err != nil {
		return nil, nil, err
	}
	var eff *history.Effect
	if isStateEvent(kind) {
		if eff, err = h.eventEffect(ctx, b.room.name, s.user, in); err != nil {
			return nil, nil, err
		}
	}
	if !b.touched {
		// The room becomes one of the user's conversations (once per
		// subscription: not a store write per message).
		b.touched = true
		if err := h.touch(ctx, s.user, b.room.name); err != nil {
			s.log.Debug("conversation not recorded", "room", b.room.name, "err", err)
		}
	}
	m := &api.Message{
		User:     s.user,
		Text:     in.GetText(),
		Ts:       h.cfg.Now().UnixMilli(),
		Room:     b.room.name,
		Kind:     kind,
		ClientId: in.GetClientId(),
	}
	switch {
	case kind == api.Kind_KIND_TYPING:
		m.Text = ""
		m.ClientId = ""
	case eff != nil:
		m.TargetSeq = eff.Target
		m.Text = eff.Text
		m.Reacted = eff.Op == history.OpReact // the toggle's "off" twin is made at submit
	}
	return m, eff, nil
}

// abuseLimit is how many sends in a row may be refused for rate before the
// session is closed: a client that ignores the retry hint is abusive.
const abuseLimit = 100

// allow applies the user's send rate limit. Typing events count too: they
// cost the same fan-out.
func (s *Session) allow(ctx context.Context) error {
	h := s.hub
	d, err := h.cfg.SendLimiter.Allow(ctx, s.user, h.cfg.Now())
	if err != nil {
		return &Error{Kind: KindUnavailable, Msg: "message not sent: the rate limiter is unavailable; retry", Err: err}
	}
	if !d.Allowed {
		s.mu.Lock()
		s.rejected++
		abusive := s.rejected >= abuseLimit
		s.mu.Unlock()
		if abusive {
			s.Close(CloseAbuse)
			return ErrClosed
		}
		return h.rateLimited(d.RetryAfter)
	}
	s.mu.Lock()
	s.rejected = 0
	s.mu.Unlock()
	return nil
}

// rateLimited is the refusal of a send over the limit, retry from now.
func (h *Hub) rateLimited(retry time.Duration) error {
	ms := retry.Milliseconds() + 1
	return &Error{Kind: KindRateLimited, RetryAfterMs: ms,
		Msg: fmt.Sprintf("rate limit: at most %g messages per second (burst %d); retry in %d ms", h.cfg.SendRate, h.cfg.SendBurst, ms)}
}

// Publish sends m (already validated, with user, room and ts set) on behalf
// of a stream-less client, as the REST route does. It returns the message as
// stored, with its id. The user must be allowed to post in the room
// (MayPost: a member of a private room or direct conversation, never a
// personal channel), and the room then becomes one of the user's
// conversations (access.Store.Touch; a failure there is logged, the
// message is stored).
func (h *Hub) Publish(ctx context.Context, m *api.Message) (*api.Message, error) {
	user, err := NormalizeUser(m.GetUser())
	if err != nil {
		return nil, err
	}
	room, err := NormalizeRoom(m.GetRoom())
	if err != nil {
		return nil, err
	}
	kind := m.GetKind()
	switch {
	case kind == api.Kind_KIND_MESSAGE:
		if m.GetText() == "" {
			return nil, errorf(KindInvalid, "text is empty")
		}
	case isStateEvent(kind):
		if err := validateEvent(m, h.cfg.MaxTextBytes); err != nil {
			return nil, err
		}
	default:
		return nil, errorf(KindInvalid, "kind %s cannot be sent this way", kind)
	}
	if err := validateText(m.GetText(), h.cfg.MaxTextBytes); err != nil {
		return nil, err
	}
	if err := validateClientID(m.GetClientId()); err != nil {
		return nil, err
	}
	d, err := h.cfg.SendLimiter.Allow(ctx, user, h.cfg.Now())
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: "message not sent: the rate limiter is unavailable; retry", Err: err}
	}
	if !d.Allowed {
		return nil, h.rateLimited(d.RetryAfter)
	}
	// After the rate limit: refused posts cost the sender too.
	if err := h.mayPost(ctx, room, user); err != nil {
		return nil, err
	}
	out := &api.Message{User: user, Text: m.GetText(), Ts: h.cfg.Now().UnixMilli(), Room: room, ClientId: m.GetClientId()}
	var eff *history.Effect
	if isStateEvent(kind) {
		if eff, err = h.eventEffect(ctx, room, user, m); err != nil {
			return nil, err
		}
		out.Kind, out.TargetSeq, out.Text, out.Reacted = kind, eff.Target, eff.Text, eff.Op == history.OpReact
	}
	res, err := h.publish(ctx, "", out, eff)
	if err != nil {
		return nil, err
	}
	out.Seq, out.Epoch = res.Seq, res.Epoch
	if eff != nil && eff.Op == history.OpReact {
		out.Reacted = res.Reacted
	}
	tctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	if err := h.touch(tctx, user, room); err != nil {
		h.log.Warn("conversation not recorded", "room", room, "user", user, "err", err)
	}
	return out, nil
}

// publish stores (or, for typing, only broadcasts) m and waits for the
// bus's answer: validate, encode, build the options, call the broker
// within PublishTimeout, map its error for the client. submit is the same
// without the wait.
func (h *Hub) publish(ctx context.Context, origin string, m *api.Message, eff *history.Effect) (pubsub.PublishResult, error) {
	if h.closed.Load() {
		return pubsub.PublishResult{}, errShuttingDown
	}
	data, opts, err := h.encodePublish(origin, m, eff)
	if err != nil {
		return pubsub.PublishResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	if err := h.gatePublish(ctx, opts); err != nil {
		return pubsub.PublishResult{}, err
	}
	start := h.cfg.Now()
	res, err := h.cfg.Broker.Publish(ctx, m.Room, data, opts)
	return h.answered(m, opts, start, res, err)
}

// gatePublish waits while the bus gate holds stored publishes (see
// busGate); the message is then not sent, and the error says so.
func (h *Hub) gatePublish(ctx context.Context, opts pubsub.PublishOptions) error {
	if opts.Ephemeral {
		return nil
	}
	if err := h.awaitBus(ctx); err != nil {
		h.metrics.publishErrors.Inc()
		return &Error{Kind: KindUnavailable, Msg: "message not sent: the node is reconnecting to the message bus; retry", Err: err}
	}
	return nil
}

// submit is publish without the wait: it hands m to the broker in the
// caller's goroutine (so the order of submit calls is the order of the
// log) and returns the completion that waits for the answer and maps it as
// publish does. A Broker that is not a pubsub.Submitter is called
// synchronously.
func (h *Hub) submit(ctx context.Context, origin string, m *api.Message, eff *history.Effect) *completion {
	if h.closed.Load() {
		return &completion{m: m, err: errShuttingDown}
	}
	data, opts, err := h.encodePublish(origin, m, eff)
	if err != nil {
		return &completion{m: m, err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	if err := h.gatePublish(ctx, opts); err != nil {
		cancel()
		return &completion{m: m, err: err}
	}
	c := &completion{h: h, m: m, opts: opts, ctx: ctx, cancel: cancel, start: h.cfg.Now()}
	if sub, ok := h.cfg.Broker.(pubsub.Submitter); ok {
		c.p = sub.Submit(ctx, m.Room, data, opts)
	} else {
		c.p = pubsub.Completed(h.cfg.Broker.Publish(ctx, m.Room, data, opts))
	}
	return c
}

// errShuttingDown refuses a publish once Shutdown began.
var errShuttingDown = &Error{Kind: KindClosed, Msg: "node is shutting down; message not sent, retry elsewhere"}

// encodePublish returns the record and the broker options of m's publish
// with effect eff (nil: a message or typing). A reaction toggle carries
// its "removed" twin in eff.Off, for the store to pick.
func (h *Hub) encodePublish(origin string, m *api.Message, eff *history.Effect) ([]byte, pubsub.PublishOptions, error) {
	data, err := encodeRecord(origin, m)
	if err != nil {
		return nil, pubsub.PublishOptions{}, errorf(KindInvalid, "message cannot be encoded")
	}
	opts := h.publishOptions(m)
	if eff != nil {
		if eff.Op == history.OpReact {
			off := cloneMessage(m)
			off.Reacted = false
			if eff.Off, err = encodeRecord(origin, off); err != nil {
				return nil, pubsub.PublishOptions{}, errorf(KindInvalid, "message cannot be encoded")
			}
		}
		opts.Effect = eff
	}
	return data, opts, nil
}

// publishOptions returns the broker options of m's publish.
func (h *Hub) publishOptions(m *api.Message) pubsub.PublishOptions {
	opts := pubsub.PublishOptions{Ephemeral: m.Kind == api.Kind_KIND_TYPING}
	switch {
	case opts.Ephemeral:
	case m.ClientId != "":
		opts.IdempotencyKey = m.User + "\x00" + m.ClientId
	case h.serverKeys:
		// No client id: this attempt gets a key of its own (a user name is
		// never empty, so it cannot meet a client's key). go-redis retries a
		// pipeline whose answer timed out, and both copies run; with the key
		// the second finds the first and answers its seq.
		opts.IdempotencyKey = "\x00" + randomID() + randomID()
		opts.IdempotencyTTL = max(30*time.Second, 2*h.cfg.PublishTimeout)
	}
	return opts
}

// answered counts the broker's answer to m's publish, begun at start, and
// maps its error for the client.
func (h *Hub) answered(m *api.Message, opts pubsub.PublishOptions, start time.Time, res pubsub.PublishResult, err error) (pubsub.PublishResult, error) {
	if err != nil {
		if e := effectError(m, err); e != nil {
			return res, e // refused, nothing stored
		}
		h.metrics.publishErrors.Inc()
		// The script may have run even though no answer came (a timeout, a
		// connection lost after the write): the sender must not be told it
		// was not stored.
		msg := "message may or may not be stored: the message bus did not answer; retry with the same client_id"
		switch {
		case errors.Is(err, pubsub.ErrNotReplicated):
			msg = "message may or may not be stored (not confirmed by enough Redis replicas); retry with the same client_id"
		case m.ClientId == "":
			msg = "message may or may not be stored: the message bus did not answer; a retry may store it twice (send a client_id to make retries safe)"
		}
		return res, &Error{Kind: KindUnavailable, Msg: msg, Err: err}
	}
	if !opts.Ephemeral {
		h.metrics.published.Inc()
		h.metrics.publishSeconds.Observe(h.cfg.Now().Sub(start).Seconds())
	}
	return res, nil
}

// SendError queues an error event for this session about the message with
// clientID, which is echoed only when it is a valid client id (an oversized
// one is what the error may be about). The edge decides who gets one: the
// WebSocket edge answers every client with an error frame (the seed's
// snippet only logs it), the gRPC edge only streams that asked for events
// and ends the others' streams instead. The event is queued after the
// answers of every publish the session submitted before the call, so a
// client hears about its sends in the order it made them.
func (s *Session) SendError(e *api.Error, clientID string) {
	s.push(&answer{frame: s.errorFrame(e, clientID, s.Room())})
}

// errorFrame is the error event e about the message with clientID, sent
// to room.
func (s *Session) errorFrame(e *api.Error, clientID, room string) *Frame {
	if validateClientID(clientID) != nil {
		clientID = ""
	}
	return NewFrame(&api.Message{Kind: api.Kind_KIND_ERROR, Room: room, ClientId: clientID, Error: e})
}

// sendSub returns the subscription a send to room goes to: the primary
// room for an empty name, and for a session without events whatever the
// name (a seed client's later messages stay in its room, as they always
// did). A session with events must be subscribed to the room it names.
func (s *Session) sendSub(room string) (*sub, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if room == "" || !s.events {
		if s.primary.gone {
			return nil, errorf(KindInvalid, "the stream left its first room: name the room of each message")
		}
		return s.primary, nil
	}
	name, err := NormalizeRoom(room)
	if err != nil {
		return nil, err
	}
	if access.KindOfName(name) == access.Personal {
		return nil, errorf(KindForbidden, "room %q is a personal channel: only the server posts there", name)
	}
	if b := s.subForLocked(name); b != nil {
		return b, nil
	}
	return nil, errorf(KindForbidden, "not subscribed to room %q: subscribe to it (KIND_SUBSCRIBE) before sending", name)
}
