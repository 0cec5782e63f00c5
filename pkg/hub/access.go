package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sync/errgroup"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
)

// This file is the hub's side of pkg/access: who may use a room, and the
// calls that create private rooms, change their members, start direct
// conversations and list a user's conversations. The store is
// Config.Access; the rules live there, the hub maps them to *Error values
// for the edges, records users' conversations (Touch) and tells users on
// their personal channels (publishNotice).
//
// No decision is cached: a public room without a log may become private
// at any moment on another node, and a removed member must lose access at
// once, so every check asks the store (one Redis round trip; none for a
// personal channel).

// Conversation-list bounds of Conversations.
const (
	defaultConversations = 100
	// conversationReads is how many rooms' positions and records one
	// Conversations call reads at once.
	conversationReads = 8
)

// MayUse returns nil if user may subscribe to, read and post in room, and
// otherwise a *Error: KindForbidden with a message that names the room's
// kind but never its members, KindInvalid for an invalid name, or
// KindUnavailable when the access store cannot be reached (retry).
//
// Join and Subscribe call it for every room a stream asks for, Hub.History
// and Hub.Publish for the REST and unary calls. room and user are
// normalised here (NormalizeRoom, NormalizeUser); an empty user is an
// anonymous reader (an open-mode read that named nobody), who may use
// public rooms only. A public room costs one store round trip (none with
// access.Memory); a personal channel none.
func (h *Hub) MayUse(ctx context.Context, room, user string) error {
	room, err := NormalizeRoom(room)
	if err != nil {
		return err
	}
	if user != "" {
		if user, err = NormalizeUser(user); err != nil {
			return err
		}
	}
	_, err = h.mayUse(ctx, room, user)
	return err
}

// MayPost is MayUse for a send: it also refuses posts to personal
// channels, on which only the server publishes (KIND_INVITE). The stream
// edge calls it for a send that names its room; Hub.Publish calls it for
// every REST and unary send.
func (h *Hub) MayPost(ctx context.Context, room, user string) error {
	room, err := NormalizeRoom(room)
	if err != nil {
		return err
	}
	if user, err = NormalizeUser(user); err != nil {
		return err
	}
	return h.mayPost(ctx, room, user)
}

// mayPost is MayPost on normalised names.
func (h *Hub) mayPost(ctx context.Context, room, user string) error {
	if access.KindOfName(room) == access.Personal {
		return errorf(KindForbidden, "room %q is a personal channel: only the server posts to it", room)
	}
	_, err := h.mayUse(ctx, room, user)
	return err
}

// mayUse is MayUse on normalised names; it returns the store's decision
// too. An empty user may use public rooms only.
func (h *Hub) mayUse(ctx context.Context, room, user string) (access.Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	d, err := h.cfg.Access.Check(ctx, room, user)
	if err != nil {
		return d, &Error{Kind: KindUnavailable, Msg: fmt.Sprintf("access to room %q cannot be checked; retry", room), Err: err}
	}
	if d.Member && (user != "" || d.Kind == access.Public) {
		return d, nil
	}
	return d, refusal(room, user, d.Kind)
}

// refusal is the KindForbidden error of a user who may not use room of
// kind k. It says what the room is and never who is in it.
func refusal(room, user string, k access.Kind) *Error {
	if user == "" {
		return errorf(KindForbidden, "room %q is not public: name the user reading it (only its members may)", room)
	}
	switch k {
	case access.Direct:
		return errorf(KindForbidden, "room %q is a direct conversation of two other users", room)
	case access.Personal:
		return errorf(KindForbidden, "room %q is another user's personal channel", room)
	default:
		return errorf(KindForbidden, "room %q is private: only its members may use it", room)
	}
}

// names normalises a room and the users of an access call.
func names(room string, users ...*string) (string, error) {
	room, err := NormalizeRoom(room)
	if err != nil {
		return "", err
	}
	return room, normalizeUsers(users...)
}

// normalizeUsers normalises each user in place.
func normalizeUsers(users ...*string) error {
	for _, u := range users {
		n, err := NormalizeUser(*u)
		if err != nil {
			return err
		}
		*u = n
	}
	return nil
}

// storeError maps an access.Store error of op on room to a *Error.
// forbidden is the message for access.ErrForbidden.
func storeError(err error, room, forbidden string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, access.ErrForbidden):
		return &Error{Kind: KindForbidden, Msg: forbidden}
	case errors.Is(err, access.ErrNotFound):
		if access.KindOfName(room) == access.Direct {
			return errorf(KindInvalid, "room %q is a direct conversation: its members cannot change", room)
		}
		return errorf(KindInvalid, "room %q is not a private room (create it with CreateRoom first)", room)
	case errors.Is(err, access.ErrExists):
		return errorf(KindConflict, "room %q already exists (it has a member list or messages); choose another name", room)
	case errors.Is(err, access.ErrReserved):
		return errorf(KindInvalid, "room name %q is reserved: names starting with \"dm.\" or \"u.\" are direct conversations and personal channels", room)
	default:
		return &Error{Kind: KindUnavailable, Msg: fmt.Sprintf("room %q: the access store is unavailable; retry", room), Err: err}
	}
}

// CreateRoom makes room a private room owned by owner, its first member,
// and adds it to the owner's conversations. A room that exists (has a
// log or a record) is refused with KindConflict, a reserved name
// (access.DirectRoom, access.PersonalRoom) with KindInvalid. The edges
// call it with the caller's identity (the JWT subject) as owner.
func (h *Hub) CreateRoom(ctx context.Context, owner, room string) (*api.RoomInfo, error) {
	room, err := names(room, &owner)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	if err := h.cfg.Access.CreatePrivate(ctx, room, owner); err != nil {
		return nil, storeError(err, room, "")
	}
	if err := h.touch(ctx, owner, room); err != nil {
		return nil, err
	}
	return &api.RoomInfo{Room: room, Kind: access.Private.String(), Owner: owner, Members: []string{owner}}, nil
}

// AddMember adds member to the private room; only its owner (by) may. The
// room joins the member's conversations, and the member's sessions hear
// of it on their personal channel (KIND_INVITE, best effort: an offline
// member finds it in Conversations). Adding a member twice is harmless
// and invites again. It returns the room with its members.
func (h *Hub) AddMember(ctx context.Context, by, room, member string) (*api.RoomInfo, error) {
	room, err := names(room, &by, &member)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	if err := h.cfg.Access.AddMember(ctx, room, by, member); err != nil {
		return nil, storeError(err, room, fmt.Sprintf("only the owner of room %q may add members", room))
	}
	if err := h.touch(ctx, member, room); err != nil {
		return nil, err
	}
	if err := h.publishNotice(ctx, access.PersonalRoom(member), api.Kind_KIND_INVITE, by, room); err != nil {
		h.log.Debug("invite not published", "room", room, "err", err)
	}
	return h.roomInfo(ctx, room, access.Private, by)
}

// RemoveMember removes member from the private room; only its owner (by)
// may, and the owner cannot be removed. The room leaves the member's
// conversations, and an ephemeral KIND_UNSUBSCRIBED naming the member is
// published on the room itself: every node's fan-out ends that user's
// subscriptions to it. If that notice cannot be published the call fails
// with KindUnavailable although the member is removed: a retry (which is
// harmless) publishes it again.
func (h *Hub) RemoveMember(ctx context.Context, by, room, member string) (*api.RoomInfo, error) {
	room, err := names(room, &by, &member)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	if err := h.cfg.Access.RemoveMember(ctx, room, by, member); err != nil {
		return nil, storeError(err, room, fmt.Sprintf("only the owner of room %q may remove members, and the owner cannot be removed", room))
	}
	if err := h.publishNotice(ctx, room, api.Kind_KIND_UNSUBSCRIBED, member, "removed from the room by its owner"); err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: fmt.Sprintf("%s was removed from room %q, but their open streams could not be told; retry", member, room), Err: err}
	}
	return h.roomInfo(ctx, room, access.Private, by)
}

// Members describes a private room or a direct conversation: its kind,
// owner and sorted members. Only a member (user) may ask; a public room
// or a personal channel has no member list (KindInvalid).
func (h *Hub) Members(ctx context.Context, room, user string) (*api.RoomInfo, error) {
	room, err := names(room, &user)
	if err != nil {
		return nil, err
	}
	d, err := h.mayUse(ctx, room, user)
	if err != nil {
		return nil, err
	}
	if d.Kind != access.Private && d.Kind != access.Direct {
		return nil, errorf(KindInvalid, "room %q is %s: it has no member list", room, d.Kind)
	}
	return h.roomInfo(ctx, room, d.Kind, d.Owner)
}

// roomInfo reads room's members into a RoomInfo.
func (h *Hub) roomInfo(ctx context.Context, room string, k access.Kind, owner string) (*api.RoomInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	members, err := h.cfg.Access.Members(ctx, room)
	if err != nil {
		return nil, storeError(err, room, "")
	}
	return &api.RoomInfo{Room: room, Kind: k.String(), Owner: owner, Members: members}, nil
}

// Direct returns the direct conversation of user and peer
// (access.DirectRoom), starting it if it is new (created). Each call
// records it in both users' conversations, the most recent, so an
// offline peer finds it when they next connect; a new one is also
// announced on the peer's personal channel (KIND_INVITE from user, best
// effort). A user cannot talk to themselves (KindInvalid).
func (h *Hub) Direct(ctx context.Context, user, peer string) (room string, created bool, err error) {
	if err := normalizeUsers(&user, &peer); err != nil {
		return "", false, err
	}
	if user == peer {
		return "", false, errorf(KindInvalid, "a direct conversation needs another user than yourself")
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	room, created, err = h.cfg.Access.Direct(ctx, user, peer)
	if err != nil {
		return "", false, storeError(err, access.DirectRoom(user, peer), "")
	}
	// Both, on every call: a retry after a failed touch repairs the lists
	// (created is true only once).
	for _, u := range []string{user, peer} {
		if err := h.touch(ctx, u, room); err != nil {
			return "", false, err
		}
	}
	if created {
		if err := h.publishNotice(ctx, access.PersonalRoom(peer), api.Kind_KIND_INVITE, user, room); err != nil {
			h.log.Debug("invite not published", "room", room, "err", err)
		}
	}
	return room, created, nil
}

// Conversations returns up to limit of user's conversations (zero or less:
// 100; at most access.MaxConversations), the most recent first: the rooms
// they created, were added to, started a direct conversation in or posted
// in. Each carries its kind, its log's position (last_seq and epoch;
// zero and empty for a room without messages) and, for a direct
// conversation, the peer. Rooms the user may no longer use are left out.
func (h *Hub) Conversations(ctx context.Context, user string, limit int) ([]*api.Conversation, error) {
	user, err := NormalizeUser(user)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultConversations
	}
	limit = min(limit, access.MaxConversations)
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	rooms, err := h.cfg.Access.Conversations(ctx, user, limit)
	if err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: "conversations are unavailable; retry", Err: err}
	}
	// A round trip or two per room: a few at a time.
	out := make([]*api.Conversation, len(rooms))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(conversationReads)
	for i, room := range rooms {
		g.Go(func() error {
			c, err := h.conversation(gctx, room, user)
			out[i] = c
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: "conversations are unavailable; retry", Err: err}
	}
	kept := out[:0]
	for _, c := range out {
		if c != nil {
			kept = append(kept, c)
		}
	}
	if err := h.addUnread(ctx, user, kept); err != nil {
		return nil, &Error{Kind: KindUnavailable, Msg: "conversations are unavailable; retry", Err: err}
	}
	return kept, nil
}

// addUnread fills each conversation's read marker and unread count: one
// read of the user's markers, then one pipeline of one small script per
// room (history.Summarizer), which also refreshes the positions.
func (h *Hub) addUnread(ctx context.Context, user string, cs []*api.Conversation) error {
	if len(cs) == 0 {
		return nil
	}
	rooms := make([]string, len(cs))
	for i, c := range cs {
		rooms[i] = c.Room
	}
	marks, err := h.cfg.Access.Marks(ctx, user, rooms)
	if err != nil {
		return fmt.Errorf("hub: read markers: %w", err)
	}
	reads := make([]history.Read, len(cs))
	for i, c := range cs {
		mk := marks[c.Room]
		reads[i] = history.Read{Room: c.Room, Epoch: mk.Epoch, Seq: mk.Seq}
	}
	sums, err := h.summaries(ctx, reads)
	if err != nil {
		return fmt.Errorf("hub: unread counts: %w", err)
	}
	for i, c := range cs {
		c.LastSeq, c.Epoch = sums[i].Position.Seq, sums[i].Position.Epoch
		c.Unread = int32(sums[i].Unread)
		if mk := marks[c.Room]; mk.Epoch == c.Epoch {
			c.ReadSeq = mk.Seq
		}
	}
	return nil
}

// conversation reads room's entry in user's list: nil if the user may not
// use it (any more) or it is a personal channel.
func (h *Hub) conversation(ctx context.Context, room, user string) (*api.Conversation, error) {
	if _, err := NormalizeRoom(room); err != nil || access.KindOfName(room) == access.Personal {
		return nil, nil
	}
	c := &api.Conversation{Room: room}
	if access.KindOfName(room) == access.Direct {
		members, err := h.cfg.Access.Members(ctx, room)
		switch {
		case errors.Is(err, access.ErrNotFound):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("hub: members of %q: %w", room, err)
		}
		if len(members) != 2 || !slices.Contains(members, user) {
			return nil, nil // not theirs
		}
		c.Kind = access.Direct.String()
		c.Peer = members[0]
		if c.Peer == user {
			c.Peer = members[1]
		}
	} else {
		d, err := h.cfg.Access.Check(ctx, room, user)
		if err != nil {
			return nil, fmt.Errorf("hub: check %q: %w", room, err)
		}
		if !d.Member {
			return nil, nil
		}
		c.Kind = d.Kind.String()
	}
	return c, nil // addUnread fills the position
}

// touch records room as one of user's conversations, now; a personal
// channel is never one.
func (h *Hub) touch(ctx context.Context, user, room string) error {
	if access.KindOfName(room) == access.Personal {
		return nil
	}
	if err := h.cfg.Access.Touch(ctx, user, room, h.cfg.Now().UnixMilli()); err != nil {
		return &Error{Kind: KindUnavailable, Msg: fmt.Sprintf("room %q could not be added to the conversations of %s; retry", room, user), Err: err}
	}
	return nil
}

// publishNotice publishes an ephemeral server event on room: kind, user
// and text as given, the server's ts, no origin (every session with
// events on every node receives it, as with join and leave events). The
// hub sends KIND_INVITE on a personal channel (user: who invites, text:
// the room waiting) and KIND_UNSUBSCRIBED on a room a member was removed
// from (user: the removed member); the fan-out acts on them. It waits
// for the bus's answer, within PublishTimeout, and returns a
// KindUnavailable *Error if the bus refused.
func (h *Hub) publishNotice(ctx context.Context, room string, kind api.Kind, user, text string) error {
	if h.closed.Load() {
		return errShuttingDown
	}
	return h.publishRecord(ctx, room, &api.Message{User: user, Room: room, Kind: kind, Text: text, Ts: h.cfg.Now().UnixMilli()})
}

// publishRecord is publishNotice of a notice m made by the caller (as
// KIND_READ, which also carries a seq and an epoch).
func (h *Hub) publishRecord(ctx context.Context, room string, m *api.Message) error {
	if h.closed.Load() {
		return errShuttingDown
	}
	data, err := encodeRecord("", m)
	if err != nil {
		return errorf(KindInvalid, "notice cannot be encoded")
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	if _, err := h.cfg.Broker.Publish(ctx, room, data, pubsub.PublishOptions{Ephemeral: true}); err != nil {
		return &Error{Kind: KindUnavailable, Msg: fmt.Sprintf("notice to room %q not sent: the message bus did not answer; retry", room), Err: err}
	}
	return nil
}
