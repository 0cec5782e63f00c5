package hub

import (
	"context"
	"time"

	"example.com/chat/api"
)

// What the edges (pkg/rpc, pkg/ws) share: they translate their wire to
// these calls and back, and hold no policy of their own.

// Identity is who a stream's token says its client is (nil in open mode:
// the client names itself).
type Identity struct {
	User    string
	MayJoin func(room string) bool // the token's rooms claim
	Expires time.Time
}

// JoinFrom returns the options of a stream whose first message is first,
// on the edge named transport, for the client id identifies (nil: the
// user the message names).
func JoinFrom(first *api.Message, transport string, id *Identity) JoinOptions {
	j := first.GetJoin()
	o := JoinOptions{
		User:      first.GetUser(),
		Room:      first.GetRoom(),
		Transport: transport,
		Events:    j.GetEvents(),
		History:   int(j.GetHistory()),
		NoHistory: j.GetNoHistory(),
		AfterSeq:  j.GetAfterSeq(),
		Epoch:     j.GetEpoch(),
		Personal:  j.GetPersonal(),
		Changes:   j.GetChanges(),
	}
	for i, r := range j.GetRooms() {
		if i == maxJoinRooms {
			break // Subscribe enforces MaxSubscriptions; this bounds the work first
		}
		o.Rooms = append(o.Rooms, subOptions(r.GetRoom(), r.GetHistory(), r.GetNoHistory(), r.GetAfterSeq(), r.GetEpoch()))
	}
	if id != nil {
		o.User, o.ClaimedUser, o.MayJoin, o.Expires = id.User, first.GetUser(), id.MayJoin, id.Expires
	}
	return o
}

// Recoverable reports whether err, the failure of the send of m on a
// stream with events, is told in an error event while the stream goes on:
// a retryable failure (the bus unavailable, the rate limit), or the
// refusal of an edit, delete or reaction (its message gone, not the
// sender's, too many reactions), which says nothing bad of the stream.
// Other failures end a gRPC stream with their status. m may be nil for a
// failure the bus answered later (PublishAsync's done): only an event's
// publish is refused then with KindNotFound or KindLimit.
func Recoverable(m *api.Message, err error) bool {
	e := AsError(err)
	if e == nil {
		return false
	}
	switch e.Kind {
	case KindUnavailable, KindRateLimited, KindNotFound, KindLimit:
		return true
	case KindForbidden, KindInvalid:
		return isStateEvent(m.GetKind())
	}
	return false
}

// maxJoinRooms bounds the rooms one join message may list (a hostile
// client could list millions in one message of a few MB).
const maxJoinRooms = 1000

func subOptions(room string, history int32, noHistory bool, after uint64, epoch string) SubOptions {
	return SubOptions{Room: room, History: int(history), NoHistory: noHistory, AfterSeq: after, Epoch: epoch}
}

// IsControl reports whether m is a request to the stream (subscribe to or
// leave a room, mark a room read, ask for a history page: Session.Control)
// rather than a send.
func IsControl(m *api.Message) bool {
	switch m.GetKind() {
	case api.Kind_KIND_SUBSCRIBE, api.Kind_KIND_UNSUBSCRIBE, api.Kind_KIND_READ, api.Kind_KIND_PAGE:
		return true
	}
	return false
}

// Control handles a KIND_SUBSCRIBE (with the options in m.Join) or
// KIND_UNSUBSCRIBE of m.Room, a KIND_READ (MarkRead) or a KIND_PAGE (Page). An event session is told of a refusal by an
// error event naming the room and carrying m's client_id, and Control
// returns nil: the stream goes on. A session without events cannot be
// told, so Control returns the error, for the edge to end the stream as
// for an invalid send.
func (s *Session) Control(ctx context.Context, m *api.Message) error {
	var err error
	switch m.GetKind() {
	case api.Kind_KIND_SUBSCRIBE:
		j := m.GetJoin()
		err = s.Subscribe(ctx, subOptions(m.GetRoom(), j.GetHistory(), j.GetNoHistory(), j.GetAfterSeq(), j.GetEpoch()))
	case api.Kind_KIND_UNSUBSCRIBE:
		err = s.Unsubscribe(m.GetRoom(), "unsubscribed")
	case api.Kind_KIND_READ:
		return s.MarkRead(ctx, m)
	case api.Kind_KIND_PAGE:
		return s.Page(ctx, m)
	default:
		err = errorf(KindInvalid, "kind %s is not a subscription request", m.GetKind())
	}
	return s.tell(err, m.GetRoom(), m.GetClientId())
}

// tell reports the failure of a request about room to an event session
// (an error event naming the room and clientID) and returns nil, or
// returns err to the caller for a session that cannot be told.
func (s *Session) tell(err error, room, clientID string) error {
	if err == nil || !s.events || err == ErrClosed {
		return err
	}
	e := AsError(err)
	if e == nil {
		e = &Error{Kind: KindUnavailable, Msg: "internal error; retry", Err: err}
	}
	if _, nerr := NormalizeRoom(room); nerr != nil {
		room = "" // an invalid name is what the error is about
	}
	s.send(s.errorFrame(e.Proto(), clientID, room))
	return nil
}
