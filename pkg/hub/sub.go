package hub

import (
	"context"
	"fmt"

	"example.com/chat/api"
	"example.com/chat/pkg/history"
)

// sub is one room of a session: the session's place in the room's
// fan-out (room.members) and its own position in the room's log, so that
// each room of a multi-room stream has its own replay, KIND_LIVE,
// KIND_TRUNCATED and gap-free resume. A session holds its subs in
// Session.subs; a sub's fields are guarded by its session's mu, taken after
// the room's mu when the room fans out (room.mu, then Session.mu: the
// order of every delivery).
type sub struct {
	s    *Session
	room *room

	syncing      bool     // joining: stored frames wait in pending
	pending      []*Frame // stored frames that arrived while syncing
	pendingBytes int      // their size
	lastSeq      uint64   // newest stored id this sub has seen
	epoch        string   // epoch of lastSeq
	gone         bool     // unsubscribed: deliveries still on their way are dropped
	touched      bool     // the session sent here: the room is in the user's conversations
}

// SubOptions are what a client asks for when it subscribes to a room: as
// JoinOptions, for one room.
type SubOptions struct {
	Room      string
	History   int
	NoHistory bool
	AfterSeq  uint64
	Epoch     string
}

// subFor returns the session's live sub of room, or nil. s.mu must be held.
func (s *Session) subForLocked(room string) *sub {
	for _, b := range s.subs {
		if b.room.name == room && !b.gone {
			return b
		}
	}
	return nil
}

// Rooms returns the rooms the session receives, the primary first.
func (s *Session) Rooms() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.subs))
	for _, b := range s.subs {
		out = append(out, b.room.name)
	}
	return out
}

// Subscribe adds a room to the session: its replay (as a join's, by o),
// then KIND_LIVE naming it, then its live messages, all tagged with the
// room. Only sessions with events may (a seed client could not tell the
// rooms apart). It checks the room's name, the token's rooms claim, the
// room's access (private rooms and direct conversations: members only)
// and MaxSubscriptions. Errors are *Error values; the session goes on.
func (s *Session) Subscribe(ctx context.Context, o SubOptions) error {
	h := s.hub
	if !s.events {
		return errorf(KindInvalid, "subscribing to more rooms needs a stream that joined with events")
	}
	room, err := NormalizeRoom(o.Room)
	if err != nil {
		return err
	}
	if err := h.mayJoin(ctx, s.mayJoin, room, s.user); err != nil {
		return err
	}
	b := &sub{s: s, syncing: true}
	s.mu.Lock()
	switch {
	case s.closing:
		s.mu.Unlock()
		return ErrClosed
	case s.subForLocked(room) != nil:
		s.mu.Unlock()
		return errorf(KindInvalid, "already subscribed to room %q", room)
	case s.liveSubsLocked() >= h.cfg.MaxSubscriptions:
		s.mu.Unlock()
		return errorf(KindLimit, "a stream may receive at most %d rooms (-max-rooms-per-stream)", h.cfg.MaxSubscriptions)
	}
	s.mu.Unlock()
	if err := h.attach(ctx, b, room, JoinOptions{History: o.History, NoHistory: o.NoHistory, AfterSeq: o.AfterSeq, Epoch: o.Epoch}); err != nil {
		return err
	}
	first := h.presenceCount(b)
	h.presenceJoin(ctx, b, first)
	return nil
}

// liveSubsLocked counts the session's subscriptions. s.mu must be held.
func (s *Session) liveSubsLocked() int {
	n := 0
	for _, b := range s.subs {
		if !b.gone {
			n++
		}
	}
	return n
}

// Unsubscribe stops the session's deliveries of room and tells the client
// (KIND_UNSUBSCRIBED, with why). Unsubscribing a room the session does not
// receive is an error.
func (s *Session) Unsubscribe(room, why string) error {
	name, err := NormalizeRoom(room)
	if err != nil {
		return err
	}
	s.mu.Lock()
	b := s.subForLocked(name)
	if b == nil {
		s.mu.Unlock()
		return errorf(KindInvalid, "not subscribed to room %q", name)
	}
	b.gone = true
	b.pending, b.pendingBytes = nil, 0
	s.mu.Unlock()
	s.hub.presenceLeave(b)
	s.hub.release(b)
	s.mu.Lock()
	for i, x := range s.subs {
		if x == b {
			s.subs = append(s.subs[:i], s.subs[i+1:]...)
			break
		}
	}
	s.mu.Unlock()
	if s.events {
		s.send(NewFrame(&api.Message{Kind: api.Kind_KIND_UNSUBSCRIBED, Room: name, Text: why}))
	}
	return nil
}

// attach subscribes b (a new sub of b.s) to room: the room takes it as a
// syncing member, its replay is read, and the sub is added to the
// session. It is Join's core for the primary room and Subscribe's for the
// others.
func (h *Hub) attach(ctx context.Context, b *sub, room string, o JoinOptions) error {
	r, err := h.acquire(ctx, room, b)
	if err != nil {
		return err
	}
	b.room = r
	frames, pos, truncated, err := h.replayPage(ctx, room, o)
	if err != nil {
		h.release(b)
		return err
	}
	why := ""
	if truncated {
		why = "resume point is no longer in history; here are the latest messages"
	}
	if frames, truncated = boundReplay(frames, h.cfg.MaxReplayBytes); truncated && why == "" {
		why = fmt.Sprintf("older messages were left out: a replay is limited to %d bytes; read them with the history API", h.cfg.MaxReplayBytes)
	}
	s := b.s
	s.mu.Lock()
	s.subs = append(s.subs, b)
	if s.primary == nil {
		s.primary = b
	}
	s.mu.Unlock()
	b.finishSync(frames, pos, why)
	return nil
}

// mayJoin applies the checks of a join or subscribe to room: the token's
// rooms claim (claims, nil in open mode), then the room's access.
func (h *Hub) mayJoin(ctx context.Context, claims func(string) bool, room, user string) error {
	if claims != nil && !claims(room) {
		return errorf(KindForbidden, "this token may not join room %q", room)
	}
	return h.MayUse(ctx, room, user)
}

// deliverStored offers a stored message to the sub. The session that sent
// it gets no copy but still counts the id, so that it sees no gap.
func (b *sub) deliverStored(f *Frame) {
	s := b.s
	s.mu.Lock()
	slow := b.deliverStoredLocked(f)
	s.mu.Unlock()
	if slow {
		s.afterClose(CloseSlowConsumer)
	}
}

func (b *sub) deliverStoredLocked(f *Frame) (slow bool) {
	s := b.s
	if b.gone {
		return false
	}
	if b.syncing {
		// Bounded like the queue these frames are bound for: a join that
		// cannot finish while a flood goes by is a slow consumer.
		n := f.size
		if b.pendingBytes+n > s.hub.cfg.MaxQueueBytes {
			b.pending, b.pendingBytes = nil, 0
			return s.closeLocked(CloseSlowConsumer)
		}
		b.pending = append(b.pending, f)
		b.pendingBytes += n
		return false
	}
	m := f.msg
	if m.Epoch != b.epoch {
		// The room's log was lost and restarted: ids begin again.
		old := b.epoch
		b.epoch, b.lastSeq = m.Epoch, 0
		if old != "" && s.events {
			if s.enqueueLocked(s.hub.truncatedFrame(b.room.name, m.Epoch, "the room's history was reset")) {
				return true
			}
		}
	}
	if m.Seq <= b.lastSeq {
		return false // seen already (history replay, backfill, or a re-delivery)
	}
	if b.lastSeq != 0 && m.Seq > b.lastSeq+1 && s.events {
		// The room could not fill this gap (it is older than the history
		// kept): say so rather than lose messages silently.
		if s.enqueueLocked(s.hub.truncatedFrame(b.room.name, m.Epoch, "messages were lost: they are older than the history kept")) {
			return true
		}
	}
	b.lastSeq = m.Seq
	if f.quiet && !s.changes {
		return false
	}
	if f.origin == s.origin && !f.event {
		return false // the sender has its ack
	}
	return s.enqueueLocked(f)
}

// finishSync ends the sub's join: it queues the history page read at
// position pos, then whatever arrived live meanwhile, deduplicated by id,
// then (for event sessions) KIND_LIVE naming the room. A non-empty
// truncated says why the replay misses messages the client asked for; an
// event client is told.
func (b *sub) finishSync(frames []*Frame, pos history.Position, truncated string) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	b.syncing = false
	b.epoch = pos.Epoch
	var slow bool
	if truncated != "" && s.events {
		slow = s.enqueueLocked(s.hub.truncatedFrame(b.room.name, pos.Epoch, truncated))
	}
	// The replay is as big as the history asks, whatever the client's
	// speed: it may exceed the queue limit (100 messages of 16 KiB do),
	// which must not cut the client as slow on every join. The allowance
	// ends when the writer takes the queue.
	for _, f := range frames {
		s.replay += f.size
	}
	for _, f := range frames {
		slow = slow || b.deliverStoredLocked(f)
	}
	// Everything up to the page's position is now seen: replayed, or
	// skipped on purpose (no history asked for, or a resume with nothing
	// new). Counting from zero instead would let a room still catching up
	// deliver ids the client already has, and put seq 0 in KIND_LIVE, from
	// which the client's next resume would replay the whole log.
	if b.epoch == pos.Epoch && b.lastSeq < pos.Seq {
		b.lastSeq = pos.Seq
	}
	pending := b.pending
	b.pending, b.pendingBytes = nil, 0
	for _, f := range pending {
		slow = slow || b.deliverStoredLocked(f)
	}
	if s.events && !slow {
		slow = s.enqueueLocked(NewFrame(&api.Message{Kind: api.Kind_KIND_LIVE, Room: b.room.name, Epoch: b.epoch, Seq: b.lastSeq}))
	}
	if slow {
		go s.afterClose(CloseSlowConsumer)
	}
}
