package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/history"
)

// Chat state: edits, deletes and reactions are stored events that name the
// message they act on (target_seq). They take the room's next seq and go
// through the same publish, fan-out, replay and backfill as messages, so
// every client applies them in one order and a resume misses none. The
// store applies each one to its message's State in the publish's atomic
// step (history.Effect), so history pages and replays show the current
// message: edited text, tombstones, reaction counts, and rev, the seq of the
// last event the message shows. Streams receive the events only when they
// joined with Join.changes; the others (a seed client among them) see
// messages only: replays show the edited text, and deleted messages are
// left out.

// isStateEvent reports whether k is an edit, delete or reaction.
func isStateEvent(k api.Kind) bool {
	return k == api.Kind_KIND_EDIT || k == api.Kind_KIND_DELETE || k == api.Kind_KIND_REACTION
}

// maxEmojiBytes bounds a reaction's text: one emoji (with its modifiers
// and joiners) or a short token.
const maxEmojiBytes = 32

// validateEvent checks the fields of a client's edit, delete or reaction.
func validateEvent(m *api.Message, maxText int) error {
	if m.GetTargetSeq() == 0 {
		return errorf(KindInvalid, "%s needs target_seq, the seq of the message it acts on", m.GetKind())
	}
	switch m.GetKind() {
	case api.Kind_KIND_EDIT:
		if err := validateText(m.GetText(), maxText); err != nil {
			return err
		}
		if m.GetText() == "" {
			return errorf(KindInvalid, "an edit's text is empty: delete the message instead")
		}
	case api.Kind_KIND_REACTION:
		t := m.GetText()
		if t == "" || len(t) > maxEmojiBytes || !utf8.ValidString(t) {
			return errorf(KindInvalid, "a reaction is one emoji or a short token of at most %d bytes", maxEmojiBytes)
		}
		for _, r := range t {
			if r <= ' ' || r == 0x7f || isInvisible(r) {
				return errorf(KindInvalid, "a reaction has no spaces or control characters")
			}
		}
	}
	return nil
}

// isInvisible reports format and separator characters that would make two
// reactions look alike; zero-width joiners inside an emoji sequence are
// allowed.
func isInvisible(r rune) bool {
	switch r {
	case '\u200d', '\ufe0f', '\ufe0e': // ZWJ and variation selectors build emoji
		return false
	}
	return r == '\u00a0' || r >= '\u2000' && r <= '\u200f' || r >= '\u2028' && r <= '\u202f' || r == '\ufeff'
}

// eventEffect checks that user may act on the message m.TargetSeq of room
// (it must be a message still in the log; only its author edits or deletes
// it; a deleted one takes nothing more) and returns the store's Effect.
// The author of a seq never changes within an epoch, so this read need not
// be atomic with the publish: the publish checks the epoch and the
// tombstone again in its own step.
func (h *Hub) eventEffect(ctx context.Context, room, user string, m *api.Message) (*history.Effect, error) {
	rctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	target := m.GetTargetSeq()
	page, err := h.cfg.History.Before(rctx, room, "", target+1, 1)
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: "the message cannot be read; retry", Err: err}
	}
	if len(page.Entries) != 1 || page.Entries[0].Seq != target {
		return nil, errorf(KindNotFound, "message %d of room %q is not in its history", target, room)
	}
	e := page.Entries[0]
	_, orig, err := decodeRecord(e.Data)
	if err != nil || orig.GetKind() != api.Kind_KIND_MESSAGE {
		return nil, errorf(KindInvalid, "seq %d of room %q is not a message", target, room)
	}
	if e.State != nil && e.State.Deleted {
		return nil, errorf(KindNotFound, "message %d of room %q was deleted", target, room)
	}
	eff := &history.Effect{Target: target, Epoch: page.Position.Epoch, Text: m.GetText()}
	switch m.GetKind() {
	case api.Kind_KIND_EDIT, api.Kind_KIND_DELETE:
		if orig.GetUser() != user {
			return nil, errorf(KindForbidden, "only the author of message %d may %s it", target, verb(m.GetKind()))
		}
		eff.Op = history.OpEdit
		if m.GetKind() == api.Kind_KIND_DELETE {
			eff.Op, eff.Text = history.OpDelete, ""
		}
	case api.Kind_KIND_REACTION:
		eff.Op, eff.User = history.OpReact, user
	}
	return eff, nil
}

func verb(k api.Kind) string {
	if k == api.Kind_KIND_DELETE {
		return "delete"
	}
	return "edit"
}

// effectError maps the store's refusal of an event for its sender; nil if
// err is no such refusal.
func effectError(m *api.Message, err error) *Error {
	switch {
	case errors.Is(err, history.ErrTarget):
		return errorf(KindNotFound, "message %d of room %q is no longer in its history, or was deleted", m.GetTargetSeq(), m.GetRoom())
	case errors.Is(err, history.ErrTooManyReactions):
		return errorf(KindLimit, "message %d has %d different reactions already", m.GetTargetSeq(), history.MaxReactions)
	}
	return nil
}

// applyState returns the message of a stored entry as it stands: m with
// st applied (a copy; m is not modified), or nil when the message was
// deleted and the reader does not take tombstones.
func applyState(m *api.Message, st *history.State) *api.Message {
	if st == nil {
		return m
	}
	out := cloneMessage(m)
	out.Rev = st.Rev
	switch {
	case st.Deleted:
		out.Text, out.Deleted = "", true
		return out
	case st.Edited:
		out.Text, out.Edited = st.Text, true
	}
	if len(st.Reactions) > 0 {
		emoji := make([]string, 0, len(st.Reactions))
		for e := range st.Reactions {
			emoji = append(emoji, e)
		}
		slices.Sort(emoji)
		for _, e := range emoji {
			out.Reactions = append(out.Reactions, &api.Reaction{Emoji: e, Count: int32(st.Reactions[e])})
		}
	}
	return out
}

// cloneMessage copies the fields a stored message has (a shallow copy
// without the proto's internal state).
func cloneMessage(m *api.Message) *api.Message {
	return &api.Message{User: m.User, Text: m.Text, Ts: m.Ts, Room: m.Room, Seq: m.Seq, Kind: m.Kind,
		ClientId: m.ClientId, Epoch: m.Epoch, TargetSeq: m.TargetSeq, Reacted: m.Reacted}
}

// HistoryQuery is a history page request (REST, gRPC History, and a
// stream's KIND_PAGE).
type HistoryQuery struct {
	Room string
	// User is the reader: a public room needs none (empty); a private
	// room or a direct conversation is read by its members only. The edge
	// has checked that it is the caller.
	User string
	// Limit bounds the entries the page covers; zero or more than
	// HistorySize means HistorySize.
	Limit int
	// AfterSeq pages forward; BeforeSeq pages back (zero, with AfterSeq
	// zero: the newest page). Epoch is the cursor's.
	AfterSeq, BeforeSeq uint64
	Epoch               string
	// NewestFirst orders the page's messages newest first.
	NewestFirst bool
}

// History returns a page of a room's log for q: its messages in their
// current state (edits applied, deleted ones as tombstones, reactions),
// without the events themselves, bounded by MaxReplayBytes. A forward page
// (AfterSeq) that the bound cuts ends early (the client goes on from its
// last_seq); a backward or newest page keeps its newest messages and goes
// on from first_seq.
func (h *Hub) History(ctx context.Context, q HistoryQuery) (*api.HistoryResponse, error) {
	room, err := NormalizeRoom(q.Room)
	if err != nil {
		return nil, err
	}
	user := q.User
	if user != "" {
		if user, err = NormalizeUser(user); err != nil {
			return nil, err
		}
	}
	if _, err := h.mayUse(ctx, room, user); err != nil {
		return nil, err
	}
	if q.AfterSeq > 0 && q.BeforeSeq > 0 {
		return nil, errorf(KindInvalid, "a page has after_seq or before_seq, not both")
	}
	limit := q.Limit
	if limit <= 0 || limit > h.cfg.HistorySize {
		limit = h.cfg.HistorySize
	}
	rctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	var page history.Page
	if q.AfterSeq > 0 {
		page, err = h.cfg.History.Since(rctx, room, q.Epoch, q.AfterSeq, limit)
	} else {
		page, err = h.cfg.History.Before(rctx, room, q.Epoch, q.BeforeSeq, limit)
	}
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: "history is unavailable; retry", Err: err}
	}
	out := &api.HistoryResponse{Epoch: page.Position.Epoch, Truncated: page.Truncated, HeadSeq: page.Position.Seq}
	entries := page.Entries
	// A client that never reads the answer must not pin more than a
	// replay's worth of memory. The bound counts each message's JSON size (Frame.Size: control
	// characters grow 6-fold), computed without encoding.
	total, cut := 0, false
	add := func(e history.Entry) bool {
		_, m, err := decodeRecord(e.Data)
		if err != nil {
			h.log.Error("skipping malformed history entry", "room", room, "seq", e.Seq, "err", err)
			return true
		}
		if m.GetKind() == api.Kind_KIND_MESSAGE {
			m.Room, m.Seq, m.Epoch = room, e.Seq, page.Position.Epoch
			m = applyState(m, e.State)
			if total += frameSize(m); total > h.cfg.MaxReplayBytes && len(out.Messages) > 0 {
				cut = true
				return false
			}
			out.Messages = append(out.Messages, m)
		} // else an event: the messages it acted on show it
		if out.FirstSeq == 0 || e.Seq < out.FirstSeq {
			out.FirstSeq = e.Seq
		}
		out.LastSeq = max(out.LastSeq, e.Seq)
		return true
	}
	if q.AfterSeq > 0 && !page.Truncated {
		// Forward: a page the bound cuts ends early.
		for _, e := range entries {
			if !add(e) {
				break
			}
		}
		out.AtStart = page.Oldest != 0 && out.FirstSeq == page.Oldest
	} else {
		// Back, or the newest: the bound keeps the newest.
		for i := len(entries) - 1; i >= 0; i-- {
			if !add(entries[i]) {
				break
			}
		}
		slices.Reverse(out.Messages)
		out.AtStart = !cut && (len(entries) == 0 || entries[0].Seq == page.Oldest)
		// A page the byte bound cut has not reached the log's start:
		// the client goes on from first_seq, and hears of the start
		// when it reaches it.
		void := q.Epoch != "" && q.Epoch != page.Position.Epoch
		out.Truncated = page.Truncated && (!cut || void || q.AfterSeq > 0)
	}
	if q.NewestFirst {
		slices.Reverse(out.Messages)
	}
	return out, nil
}

// Page answers a stream's KIND_PAGE request for the session's user: the
// page (History) in a KIND_PAGE frame naming the room and echoing the
// request's client_id, or an error event. The room need not be
// subscribed; the user must be allowed to read it.
func (s *Session) Page(ctx context.Context, m *api.Message) error {
	q := m.GetHistory()
	room := q.GetRoom()
	if room == "" {
		room = m.GetRoom()
	}
	if s.mayJoin != nil && !s.mayJoin(mustRoom(room)) {
		return s.tell(errorf(KindForbidden, "the token does not allow room %q", room), room, m.GetClientId())
	}
	page, err := s.hub.History(ctx, HistoryQuery{Room: room, User: s.user, Limit: int(q.GetLimit()),
		AfterSeq: q.GetAfterSeq(), BeforeSeq: q.GetBeforeSeq(), Epoch: q.GetEpoch(), NewestFirst: q.GetNewestFirst()})
	if err != nil {
		return s.tell(err, room, m.GetClientId())
	}
	name, _ := NormalizeRoom(room)
	s.send(NewFrame(&api.Message{Kind: api.Kind_KIND_PAGE, Room: name, Epoch: page.Epoch, ClientId: clientIDOrEmpty(m.GetClientId()), Page: page}))
	return nil
}

// mustRoom is the normalized room name, or the name as given when it is
// invalid (the call that uses it then refuses it).
func mustRoom(room string) string {
	if n, err := NormalizeRoom(room); err == nil {
		return n
	}
	return room
}

func clientIDOrEmpty(id string) string {
	if validateClientID(id) != nil {
		return ""
	}
	return id
}

// MarkRead moves user's read marker of room to seq of epoch (never back)
// and tells all the user's sessions on every node (KIND_READ on their
// personal channel). A seq past the room's newest is taken as the newest;
// an epoch that is not the room's is refused (the client's view is stale:
// it resumes first). It returns the marker and what is still unread.
func (h *Hub) MarkRead(ctx context.Context, user, room, epoch string, seq uint64) (*api.MarkReadResponse, error) {
	user, err := NormalizeUser(user)
	if err != nil {
		return nil, err
	}
	if room, err = NormalizeRoom(room); err != nil {
		return nil, err
	}
	if access.KindOfName(room) == access.Personal {
		return nil, errorf(KindInvalid, "a personal channel has no read marker")
	}
	if _, err := h.mayUse(ctx, room, user); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	pos, err := h.cfg.History.Position(ctx, room)
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: "history is unavailable; retry", Err: err}
	}
	if pos.Epoch == "" || epoch != pos.Epoch {
		return nil, errorf(KindInvalid, "epoch %q is not the room's (%q): resume the room, then mark it read", epoch, pos.Epoch)
	}
	seq = min(seq, pos.Seq)
	mk, err := h.cfg.Access.Mark(ctx, user, room, access.Marker{Epoch: epoch, Seq: seq})
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: "the read marker cannot be stored; retry", Err: err}
	}
	out := &api.MarkReadResponse{Room: room, Seq: mk.Seq, Epoch: mk.Epoch}
	if sum, err := h.summaries(ctx, []history.Read{{Room: room, Epoch: mk.Epoch, Seq: mk.Seq}}); err == nil {
		out.Unread = int32(sum[0].Unread)
	}
	n := &api.Message{Kind: api.Kind_KIND_READ, User: user, Room: access.PersonalRoom(user), Text: room,
		Seq: mk.Seq, Epoch: mk.Epoch, Ts: h.cfg.Now().UnixMilli()}
	if err := h.publishRecord(ctx, n.Room, n); err != nil {
		// The marker is stored: the other devices see it on their
		// next conversations call.
		h.log.Debug("read marker not pushed", "room", room, "err", err)
	}
	return out, nil
}

// MarkRead is the stream's KIND_READ: MarkRead for the session's user of
// m.Room up to m.Seq of m.Epoch. A refusal is an error event.
func (s *Session) MarkRead(ctx context.Context, m *api.Message) error {
	room := m.GetRoom()
	if s.mayJoin != nil && !s.mayJoin(mustRoom(room)) {
		return s.tell(errorf(KindForbidden, "the token does not allow room %q", room), room, m.GetClientId())
	}
	_, err := s.hub.MarkRead(ctx, s.user, room, m.GetEpoch(), m.GetSeq())
	return s.tell(err, room, m.GetClientId())
}

// summaries is the store's Summaries, or positions alone (nothing unread
// counted) when it has none.
func (h *Hub) summaries(ctx context.Context, reads []history.Read) ([]history.Summary, error) {
	if s, ok := h.cfg.History.(history.Summarizer); ok {
		return s.Summaries(ctx, reads)
	}
	out := make([]history.Summary, len(reads))
	for i, r := range reads {
		pos, err := h.cfg.History.Position(ctx, r.Room)
		if err != nil {
			return nil, fmt.Errorf("hub: position of %q: %w", r.Room, err)
		}
		out[i].Position = pos
	}
	return out, nil
}
