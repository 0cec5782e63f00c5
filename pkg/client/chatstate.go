package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
)

// This file holds the client's side of chat state: edits, deletes and
// reactions (stored events sent like messages and acknowledged like
// them), history pages asked on the stream (KIND_PAGE), and read
// markers (MarkRead).
//
// With Config.Changes the stream receives the events (KIND_EDIT,
// KIND_DELETE, KIND_REACTION) on Messages, in the room's order, each
// with its own seq and the seq of the message it acts on (TargetSeq).
// Replays and pages show messages as they stand, with Rev the seq of the
// last event they show: a client applies an event to a message only if
// the event's seq is above the message's Rev, so nothing is applied
// twice. A reaction event says whether the user added (Reacted) or
// removed the emoji (Text); a client keeps a count per emoji.

// The events go out with the unary Send (see sendEvent), not on the
// stream. Refusals of an edit, a delete, a reaction or a page are gRPC status
// errors (status.Code finds them, wrapped): PermissionDenied for another
// user's message, NotFound for a message that is gone or deleted,
// InvalidArgument for a bad emoji or an empty edit.

// Edit changes the text of the user's own message seq in room (empty:
// the primary room) to text. It is sent and retried like Send, and
// returns the acknowledgement: the edit's own seq, and TargetSeq. While
// the client is not live, or the node is unavailable, it retries (with
// the same client id, so the edit is stored once) until ctx ends.
func (c *Client) Edit(ctx context.Context, room string, seq uint64, text string) (*api.Message, error) {
	ack, err := c.sendEvent(ctx, api.Kind_KIND_EDIT, room, seq, text)
	if err != nil {
		return nil, fmt.Errorf("client: edit #%d in %s: %w", seq, c.roomOr(room), err)
	}
	return ack, nil
}

// Delete deletes the user's own message seq in room (empty: the primary
// room); history then shows it as a tombstone. It returns the
// acknowledgement, as Edit.
func (c *Client) Delete(ctx context.Context, room string, seq uint64) (*api.Message, error) {
	ack, err := c.sendEvent(ctx, api.Kind_KIND_DELETE, room, seq, "")
	if err != nil {
		return nil, fmt.Errorf("client: delete #%d in %s: %w", seq, c.roomOr(room), err)
	}
	return ack, nil
}

// React toggles the user's reaction emoji on message seq in room (empty:
// the primary room): it reports true when the reaction was added, false
// when the user had it already and it was removed.
func (c *Client) React(ctx context.Context, room string, seq uint64, emoji string) (added bool, err error) {
	ack, err := c.sendEvent(ctx, api.Kind_KIND_REACTION, room, seq, emoji)
	if err != nil {
		return false, fmt.Errorf("client: react %q to #%d in %s: %w", emoji, seq, c.roomOr(room), err)
	}
	return ack.GetReacted(), nil
}

// sendEvent sends one edit, delete or reaction with the unary Send (REST
// on WebSocket) on the node the client is live on, with a client id so
// that a retry after Unavailable is stored once, and returns its ack. Not
// on the stream: the node ends a stream on a refused send, and a refusal
// here (another user's message) is an answer, not a broken connection.
// The stream receives the event like anyone's (with Config.Changes).
func (c *Client) sendEvent(ctx context.Context, kind api.Kind, room string, seq uint64, text string) (*api.Message, error) {
	if seq == 0 {
		return nil, status.Error(codes.InvalidArgument, "no message seq")
	}
	room = c.roomOr(room)
	m := &api.Message{User: c.cfg.User, Kind: kind, Room: room, TargetSeq: seq, Text: text,
		ClientId: c.idPrefix + strconv.FormatUint(c.nextID.Add(1), 10)}
	req := &api.SendRequest{Room: room, Message: m}
	backoff := c.cfg.MinBackoff
	for {
		ack := new(api.Message)
		err := c.unary(ctx,
			func(ctx context.Context, cl api.ChatClient) (err error) {
				ack, err = cl.Send(ctx, req)
				return err
			},
			http.MethodPost, "/v1/rooms/"+url.PathEscape(room)+"/messages", m, ack)
		if status.Code(err) != codes.Unavailable && !errors.Is(err, ErrNotConnected) {
			return ack, err
		}
		d := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		backoff = min(2*backoff, c.cfg.MaxBackoff)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-c.done:
			return nil, c.Err()
		}
	}
}

// roomOr is room, or the primary room when it is empty.
func (c *Client) roomOr(room string) string {
	if room == "" {
		return c.primaryRoom()
	}
	return room
}

// Page asks the node the client is live on for a page of history (q: its
// room, empty for the primary room; limit; before_seq or after_seq with
// their epoch; newest_first) on the stream itself (KIND_PAGE), and
// returns the answer: messages as they stand (edited text, tombstones,
// reactions, Rev), oldest first unless asked otherwise, with the page's
// FirstSeq (the BeforeSeq of the page before it), AtStart and HeadSeq.
// The room need not be one of the client's rooms; the user must be
// allowed to read it. Pages never come through Messages. Page returns
// ErrNotConnected while the client is not live, and fails (retry) when
// the connection ends before the answer.
func (c *Client) Page(ctx context.Context, q *api.HistoryRequest) (*api.HistoryResponse, error) {
	q = &api.HistoryRequest{Room: c.roomOr(q.GetRoom()), Limit: q.GetLimit(), AfterSeq: q.GetAfterSeq(),
		BeforeSeq: q.GetBeforeSeq(), NewestFirst: q.GetNewestFirst(), Epoch: q.GetEpoch()}
	id := c.idPrefix + "p" + strconv.FormatUint(c.nextID.Add(1), 10)
	ch := make(chan *api.Message, 1)
	c.mu.Lock()
	l := c.conn
	if l == nil {
		c.mu.Unlock()
		return nil, ErrNotConnected
	}
	if c.pages == nil {
		c.pages = make(map[string]*pendingPage)
	}
	c.pages[id] = &pendingPage{on: l, done: ch}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pages, id)
		c.mu.Unlock()
	}()
	if err := l.send(&api.Message{Kind: api.Kind_KIND_PAGE, Room: q.Room, ClientId: id, History: q}); err != nil {
		return nil, fmt.Errorf("client: page of %s: %w", q.Room, err)
	}
	select {
	case m := <-ch:
		switch {
		case m == nil:
			return nil, fmt.Errorf("client: page of %s: %w", q.Room, errPageLost)
		case m.GetKind() == api.Kind_KIND_ERROR:
			return nil, fmt.Errorf("client: page of %s: %w", q.Room,
				status.Error(codes.Code(m.GetError().GetCode()), m.GetError().GetMessage()))
		}
		return m.GetPage(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, c.Err()
	}
}

// Before returns the page of up to limit messages of room just before
// beforeSeq of epoch, oldest first: scrollback. Zero beforeSeq means the
// newest page. Pass the answer's FirstSeq to get the page before it,
// until AtStart.
func (c *Client) Before(ctx context.Context, room string, beforeSeq uint64, epoch string, limit int) (*api.HistoryResponse, error) {
	if beforeSeq == 0 {
		epoch = ""
	}
	return c.Page(ctx, &api.HistoryRequest{Room: room, BeforeSeq: beforeSeq, Epoch: epoch, Limit: int32(limit)})
}

// errPageLost says a page's connection ended before its answer.
var errPageLost = errors.New("the connection ended before the answer; retry")

// pendingPage is a Page waiting for its answer on one connection.
type pendingPage struct {
	on   *link
	done chan *api.Message // the KIND_PAGE or KIND_ERROR answer; nil if the connection ended
}

// claimPage hands m to the Page it answers (a KIND_PAGE, or an error event
// with a page's client id) and reports whether it did: then m is not
// delivered on Messages.
func (c *Client) claimPage(m *api.Message) bool {
	k := m.GetKind()
	if k != api.Kind_KIND_PAGE && k != api.Kind_KIND_ERROR {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pages[m.GetClientId()]
	if p == nil {
		// A page nobody waits for any more (its ctx ended) is dropped too.
		return k == api.Kind_KIND_PAGE
	}
	delete(c.pages, m.GetClientId())
	p.done <- m
	return true
}

// failPagesLocked ends the Pages waiting on l, whose connection ended.
// c.mu must be held.
func (c *Client) failPagesLocked(l *link) {
	for id, p := range c.pages {
		if p.on == l {
			delete(c.pages, id)
			p.done <- nil
		}
	}
}

// MarkRead moves the user's read marker of room (empty: the primary
// room) forward to seq of epoch (never back; a seq past the room's
// newest is taken as the newest), on the node the client is live on. The
// node tells all the user's sessions on their personal channel (see
// Config.Personal: a KIND_READ with Room, Seq, Epoch and User). It returns the marker and what is still unread. An epoch that
// is not the room's is InvalidArgument: resume first. It returns
// ErrNotConnected while the client is not live.
func (c *Client) MarkRead(ctx context.Context, room, epoch string, seq uint64) (*api.MarkReadResponse, error) {
	room = c.roomOr(room)
	req := &api.MarkReadRequest{User: c.cfg.User, Room: room, Seq: seq, Epoch: epoch}
	r := new(api.MarkReadResponse)
	err := c.unary(ctx,
		func(ctx context.Context, cl api.ChatClient) (err error) {
			r, err = cl.MarkRead(ctx, req)
			return err
		},
		http.MethodPost, "/v1/rooms/"+url.PathEscape(room)+"/read", req, r)
	if err != nil {
		return nil, fmt.Errorf("client: mark %s read: %w", room, err)
	}
	return r, nil
}

// IsStateEvent reports whether m is an edit, a delete or a reaction: an
// event acting on message m.TargetSeq (see Config.Changes).
func IsStateEvent(m *api.Message) bool {
	switch m.GetKind() {
	case api.Kind_KIND_EDIT, api.Kind_KIND_DELETE, api.Kind_KIND_REACTION:
		return true
	}
	return false
}
