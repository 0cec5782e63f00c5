package hub_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/hub"
)

// wantKind fails unless err is a *hub.Error of kind k whose message
// contains every one of want and none of hide (member names that must
// not leak).
func wantKind(t *testing.T, err error, k hub.ErrorKind, want []string, hide ...string) {
	t.Helper()
	e := hub.AsError(err)
	if e == nil || e.Kind != k {
		t.Fatalf("got %v; want a hub error of kind %d", err, k)
	}
	for _, w := range want {
		if !strings.Contains(e.Msg, w) {
			t.Fatalf("message %q does not say %q", e.Msg, w)
		}
	}
	for _, h := range hide {
		if strings.Contains(e.Msg, h) {
			t.Fatalf("message %q leaks %q", e.Msg, h)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ticking is a clock that moves one millisecond per reading, so that
// every Touch has a time of its own.
func ticking() func() time.Time {
	var ms atomic.Int64
	ms.Store(time.Now().UnixMilli())
	return func() time.Time { return time.UnixMilli(ms.Add(1)) }
}

// failingAccess is a Store whose every call fails as Redis down would.
type failingAccess struct{ access.Store }

var errDown = errors.Join(access.ErrUnavailable, errors.New("connection refused"))

func (failingAccess) Check(context.Context, string, string) (access.Decision, error) {
	return access.Decision{}, errDown
}

func (failingAccess) Touch(context.Context, string, string, int64) error { return errDown }

func TestMayUseEachKind(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	ctx := context.Background()
	h := e.hub
	if _, err := h.CreateRoom(ctx, "alice", "team"); err != nil {
		t.Fatal(err)
	}
	dm, created, err := h.Direct(ctx, "alice", "bob")
	if err != nil || !created || dm != access.DirectRoom("alice", "bob") {
		t.Fatalf("Direct = %q, %v, %v", dm, created, err)
	}
	for _, tc := range []struct {
		room, user string
		ok         bool
		want       string
	}{
		{"general", "mallory", true, ""},
		{"general", "", true, ""},
		{"team", "alice", true, ""},
		{"team", "mallory", false, `room "team" is private: only its members may use it`},
		{"team", "", false, "name the user"},
		{dm, "alice", true, ""},
		{dm, "bob", true, ""},
		{dm, "mallory", false, "is a direct conversation of two other users"},
		{dm, "", false, "name the user"},
		{access.DirectRoom("carol", "dave"), "carol", false, "direct conversation"}, // not started: nobody's yet
		{access.PersonalRoom("bob"), "bob", true, ""},
		{access.PersonalRoom("bob"), "alice", false, "another user's personal channel"},
	} {
		err := h.MayUse(ctx, tc.room, tc.user)
		if tc.ok {
			if err != nil {
				t.Errorf("MayUse(%s, %q) = %v; want nil", tc.room, tc.user, err)
			}
			continue
		}
		wantKind(t, err, hub.KindForbidden, []string{tc.want}, "alice", "bob")
	}
	// Names are normalised: "Zoe\u0308" is "Zoë".
	_, _, err = h.Direct(ctx, "Zoë", "bob")
	must(t, err)
	must(t, h.MayUse(ctx, access.DirectRoom("Zoë", "bob"), "Zoe\u0308"))
	wantKind(t, h.MayUse(ctx, "bad room", "alice"), hub.KindInvalid, []string{"room name"})
	wantKind(t, h.MayUse(ctx, "general", " x"), hub.KindInvalid, []string{"user name"})

	// A store that cannot answer refuses with a retry, never lets through.
	down := newHub(t, func(c *hub.Config) { c.Access = failingAccess{access.NewMemory(nil)} })
	wantKind(t, down.hub.MayUse(ctx, "general", "alice"), hub.KindUnavailable, []string{"retry"})
}

func TestPrivateRoomRules(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	ctx := context.Background()
	h := e.hub

	info, err := h.CreateRoom(ctx, "alice", "team")
	if err != nil || info.GetOwner() != "alice" || info.GetKind() != "private" || !slices.Equal(info.GetMembers(), []string{"alice"}) {
		t.Fatalf("CreateRoom = %v, %v", info, err)
	}
	_, err = h.CreateRoom(ctx, "bob", "team")
	wantKind(t, err, hub.KindConflict, []string{`room "team" already exists`})
	// A public room with messages cannot be taken private.
	_, err = h.Publish(ctx, &api.Message{User: "carol", Room: "busy", Text: "hi"})
	must(t, err)
	_, err = h.CreateRoom(ctx, "mallory", "busy")
	wantKind(t, err, hub.KindConflict, []string{"already exists"})
	_, err = h.CreateRoom(ctx, "alice", access.DirectRoom("alice", "bob"))
	wantKind(t, err, hub.KindInvalid, []string{"reserved"})
	_, err = h.CreateRoom(ctx, "alice", access.PersonalRoom("bob"))
	wantKind(t, err, hub.KindInvalid, []string{"reserved"})

	// bob's personal channel hears the invitation.
	_, personal := e.join(t, hub.JoinOptions{User: "bob", Room: access.PersonalRoom("bob"), Events: true}, false)
	personal.nextKind(t, api.Kind_KIND_LIVE)

	_, err = h.AddMember(ctx, "bob", "team", "bob")
	wantKind(t, err, hub.KindForbidden, []string{`only the owner of room "team"`}, "alice")
	_, err = h.AddMember(ctx, "alice", "general", "bob")
	wantKind(t, err, hub.KindInvalid, []string{"not a private room"})
	dm, _, err := h.Direct(ctx, "alice", "carol")
	must(t, err)
	_, err = h.AddMember(ctx, "alice", dm, "bob")
	wantKind(t, err, hub.KindInvalid, []string{"direct conversation"})
	wantKind(t, h.MayUse(ctx, "team", "bob"), hub.KindForbidden, nil)

	info, err = h.AddMember(ctx, "alice", "team", "bob")
	if err != nil || !slices.Equal(info.GetMembers(), []string{"alice", "bob"}) || info.GetOwner() != "alice" {
		t.Fatalf("AddMember = %v, %v", info, err)
	}
	must(t, h.MayUse(ctx, "team", "bob"))
	inv := personal.nextKind(t, api.Kind_KIND_INVITE)
	if inv.GetUser() != "alice" || inv.GetRoom() != "team" {
		t.Fatalf("invite %v; want from alice naming team", inv)
	}
	if m, err := h.Members(ctx, "team", "bob"); err != nil || !slices.Equal(m.GetMembers(), []string{"alice", "bob"}) || m.GetOwner() != "alice" {
		t.Fatalf("Members = %v, %v", m, err)
	}
	_, err = h.Members(ctx, "team", "mallory")
	wantKind(t, err, hub.KindForbidden, nil, "alice", "bob")
	_, err = h.Members(ctx, "general", "mallory")
	wantKind(t, err, hub.KindInvalid, []string{"no member list"})
	if c, err := h.Conversations(ctx, "bob", 0); err != nil || len(c) != 1 || c[0].GetRoom() != "team" || c[0].GetKind() != "private" {
		t.Fatalf("bob's conversations = %v, %v; want team", c, err)
	}

	// Removal: a non-owner cannot, the owner cannot be removed, and the
	// room hears that bob is out.
	_, err = h.RemoveMember(ctx, "bob", "team", "alice")
	wantKind(t, err, hub.KindForbidden, []string{"only the owner"})
	_, err = h.RemoveMember(ctx, "alice", "team", "alice")
	wantKind(t, err, hub.KindForbidden, []string{"owner cannot be removed"})
	_, watch := e.join(t, hub.JoinOptions{User: "bob", Room: "team", Events: true}, false)
	watch.nextKind(t, api.Kind_KIND_LIVE)
	info, err = h.RemoveMember(ctx, "alice", "team", "bob")
	if err != nil || !slices.Equal(info.GetMembers(), []string{"alice"}) {
		t.Fatalf("RemoveMember = %v, %v", info, err)
	}
	// bob's stream stops receiving the room, and is told.
	if u := watch.nextKind(t, api.Kind_KIND_UNSUBSCRIBED); u.GetRoom() != "team" {
		t.Fatalf("unsubscribe notice %v; want team", u)
	}
	wantKind(t, h.MayUse(ctx, "team", "bob"), hub.KindForbidden, []string{"private"})
	if c, err := h.Conversations(ctx, "bob", 0); err != nil || len(c) != 0 {
		t.Fatalf("bob's conversations after removal = %v, %v; want none", c, err)
	}
}

func TestDirectAndConversations(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.Now = ticking() })
	ctx := context.Background()
	h := e.hub

	_, _, err := h.Direct(ctx, "alice", "alice")
	wantKind(t, err, hub.KindInvalid, []string{"another user"})
	_, personal := e.join(t, hub.JoinOptions{User: "bob", Room: access.PersonalRoom("bob"), Events: true}, false)
	personal.nextKind(t, api.Kind_KIND_LIVE)

	dm, created, err := h.Direct(ctx, "alice", "bob")
	if err != nil || !created {
		t.Fatalf("Direct = %q, %v, %v", dm, created, err)
	}
	if inv := personal.nextKind(t, api.Kind_KIND_INVITE); inv.GetUser() != "alice" || inv.GetRoom() != dm {
		t.Fatalf("invite %v; want from alice naming %s", inv, dm)
	}
	again, created, err := h.Direct(ctx, "bob", "alice")
	if err != nil || created || again != dm {
		t.Fatalf("second Direct = %q, %v, %v; want %q, not created", again, created, err, dm)
	}
	// Posting makes the rooms alice's, most recent first.
	for _, text := range []string{"one", "two"} {
		_, err := h.Publish(ctx, &api.Message{User: "alice", Room: dm, Text: text})
		must(t, err)
	}
	_, err = h.CreateRoom(ctx, "alice", "team")
	must(t, err)
	last, err := h.Publish(ctx, &api.Message{User: "alice", Room: "general", Text: "hello"})
	must(t, err)

	got, err := h.Conversations(ctx, "alice", 0)
	must(t, err)
	var rooms []string
	for _, c := range got {
		rooms = append(rooms, c.GetRoom())
	}
	if !slices.Equal(rooms, []string{"general", "team", dm}) {
		t.Fatalf("alice's conversations %v; want general, team, the dm", rooms)
	}
	if g := got[0]; g.GetKind() != "public" || g.GetLastSeq() != 1 || g.GetEpoch() != last.GetEpoch() || g.GetPeer() != "" {
		t.Fatalf("general: %v", g)
	}
	if tm := got[1]; tm.GetKind() != "private" || tm.GetLastSeq() != 0 || tm.GetEpoch() != "" {
		t.Fatalf("team (no messages): %v", tm)
	}
	d := got[2]
	pos, err := e.log.Position(ctx, dm)
	must(t, err)
	if d.GetKind() != "direct" || d.GetPeer() != "bob" || d.GetLastSeq() != 2 || d.GetEpoch() != pos.Epoch || pos.Epoch == "" {
		t.Fatalf("dm: %v; want direct with bob at seq 2 of %q", d, pos.Epoch)
	}
	// bob never posted, yet has the conversation (started with him).
	bobs, err := h.Conversations(ctx, "bob", 0)
	if err != nil || len(bobs) != 1 || bobs[0].GetPeer() != "alice" || bobs[0].GetLastSeq() != 2 {
		t.Fatalf("bob's conversations %v, %v; want the dm with alice at seq 2", bobs, err)
	}
	if two, _ := h.Conversations(ctx, "alice", 2); len(two) != 2 || two[1].GetRoom() != "team" {
		t.Fatalf("limit 2: %v", two)
	}
	// A room touched for a user who may not use it is not listed.
	must(t, h.Config().Access.Touch(ctx, "mallory", dm, time.Now().UnixMilli()))
	if c, err := h.Conversations(ctx, "mallory", 0); err != nil || len(c) != 0 {
		t.Fatalf("mallory lists %v, %v; want nothing", c, err)
	}
}

func TestHistoryAndPublishRefusals(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	ctx := context.Background()
	h := e.hub
	dm, _, err := h.Direct(ctx, "alice", "bob")
	must(t, err)
	if _, err := h.Publish(ctx, &api.Message{User: "bob", Room: dm, Text: "secret"}); err != nil {
		t.Fatal(err)
	}
	_, err = h.Publish(ctx, &api.Message{User: "mallory", Room: dm, Text: "let me in"})
	wantKind(t, err, hub.KindForbidden, []string{"direct conversation of two other users"}, "alice", "bob")
	_, err = h.Publish(ctx, &api.Message{User: "bob", Room: access.PersonalRoom("bob"), Text: "self"})
	wantKind(t, err, hub.KindForbidden, []string{"personal channel"})

	for _, user := range []string{"mallory", ""} {
		page, err := h.History(ctx, hub.HistoryQuery{Room: dm, User: user})
		wantKind(t, err, hub.KindForbidden, nil, "secret", "alice", "bob")
		if page != nil {
			t.Fatalf("History for %q returned %v", user, page)
		}
	}
	for _, user := range []string{"alice", "bob"} {
		page, err := h.History(ctx, hub.HistoryQuery{Room: dm, User: user})
		if err != nil || len(page.GetMessages()) != 1 || page.GetMessages()[0].GetText() != "secret" {
			t.Fatalf("History for %s = %v, %v", user, page, err)
		}
	}
	if _, err := h.History(ctx, hub.HistoryQuery{Room: "general"}); err != nil {
		t.Fatalf("public history without a user: %v", err)
	}

	// A removed member can no longer post or read.
	_, err = h.CreateRoom(ctx, "alice", "team")
	must(t, err)
	_, err = h.AddMember(ctx, "alice", "team", "bob")
	must(t, err)
	_, err = h.Publish(ctx, &api.Message{User: "bob", Room: "team", Text: "in"})
	must(t, err)
	_, err = h.RemoveMember(ctx, "alice", "team", "bob")
	must(t, err)
	_, err = h.Publish(ctx, &api.Message{User: "bob", Room: "team", Text: "out"})
	wantKind(t, err, hub.KindForbidden, []string{"private"})
	_, err = h.History(ctx, hub.HistoryQuery{Room: "team", User: "bob"})
	wantKind(t, err, hub.KindForbidden, []string{"private"})

	// The store down: refused, not let through.
	down := newHub(t, func(c *hub.Config) { c.Access = failingAccess{access.NewMemory(nil)} })
	_, err = down.hub.Publish(ctx, &api.Message{User: "bob", Room: "general", Text: "x"})
	wantKind(t, err, hub.KindUnavailable, []string{"retry"})
	_, err = down.hub.History(ctx, hub.HistoryQuery{Room: "general"})
	wantKind(t, err, hub.KindUnavailable, []string{"retry"})
}
