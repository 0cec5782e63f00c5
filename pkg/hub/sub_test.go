package hub_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// live reads frames until the KIND_LIVE of room.
func (f *fakeTransport) liveOf(t *testing.T, room string) *api.Message {
	t.Helper()
	for {
		m := f.next(t)
		if m.GetKind() == api.Kind_KIND_LIVE && m.GetRoom() == room {
			return m
		}
	}
}

// TestOneStreamManyRooms: one session receives three rooms, each with its
// own replay and KIND_LIVE, every message tagged with its room, and sends
// to each by naming it.
func TestOneStreamManyRooms(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	ctx := context.Background()
	other, _ := e.join(t, hub.JoinOptions{User: "o", Room: "r2"}, false)
	if err := other.Publish(ctx, &api.Message{Text: "before"}); err != nil {
		t.Fatal(err)
	}
	s, f := e.join(t, hub.JoinOptions{User: "a", Room: "r1", Events: true,
		Rooms: []hub.SubOptions{{Room: "r2"}, {Room: "r3", NoHistory: true}}}, false)
	f.liveOf(t, "r1")
	replay := f.next(t)
	if replay.GetRoom() != "r2" || replay.GetText() != "before" {
		t.Fatalf("want r2's replay, got %v", replay)
	}
	f.liveOf(t, "r2")
	f.liveOf(t, "r3")
	if got := s.Rooms(); len(got) != 3 || got[0] != "r1" {
		t.Fatalf("Rooms = %v", got)
	}
	if err := other.Publish(ctx, &api.Message{Text: "in r2"}); err != nil {
		t.Fatal(err)
	}
	if m := f.nextKind(t, api.Kind_KIND_MESSAGE); m.GetRoom() != "r2" || m.GetText() != "in r2" || m.GetSeq() != 2 {
		t.Fatalf("got %v", m)
	}
	for _, room := range []string{"r1", "r3", ""} {
		if err := s.Publish(ctx, &api.Message{Text: "to " + room, Room: room, ClientId: "c-" + room}); err != nil {
			t.Fatalf("send to %q: %v", room, err)
		}
		want := room
		if want == "" {
			want = "r1" // the primary room
		}
		if ack := f.nextKind(t, api.Kind_KIND_ACK); ack.GetRoom() != want {
			t.Fatalf("ack %v; want room %s", ack, want)
		}
	}
	err := s.Publish(ctx, &api.Message{Text: "x", Room: "elsewhere"})
	if he := hub.AsError(err); he == nil || he.Kind != hub.KindForbidden {
		t.Fatalf("send to a room not subscribed = %v; want KindForbidden", err)
	}
}

// TestSubscribeResumesEachRoom: a stream that reconnects with a resume
// point per room gets, in each, exactly what it missed.
func TestSubscribeResumesEachRoom(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	ctx := context.Background()
	pub, _ := e.join(t, hub.JoinOptions{User: "p", Room: "a", Events: true, Rooms: []hub.SubOptions{{Room: "b"}}}, false)
	for i := 1; i <= 4; i++ {
		for _, room := range []string{"a", "b"} {
			if err := pub.Publish(ctx, &api.Message{Room: room, Text: fmt.Sprint(room, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	epochA, _ := e.log.Position(ctx, "a")
	epochB, _ := e.log.Position(ctx, "b")
	s, f := e.join(t, hub.JoinOptions{User: "r", Room: "a", Events: true, AfterSeq: 3, Epoch: epochA.Epoch,
		Rooms: []hub.SubOptions{{Room: "b", AfterSeq: 1, Epoch: epochB.Epoch}}}, false)
	_ = s
	got := map[string][]string{}
	lives := 0
	for lives < 2 {
		m := f.next(t)
		switch m.GetKind() {
		case api.Kind_KIND_MESSAGE:
			got[m.GetRoom()] = append(got[m.GetRoom()], m.GetText())
		case api.Kind_KIND_LIVE:
			lives++
		case api.Kind_KIND_TRUNCATED:
			t.Fatalf("unexpected %v", m)
		}
	}
	if fmt.Sprint(got["a"]) != "[a4]" || fmt.Sprint(got["b"]) != "[b2 b3 b4]" {
		t.Fatalf("resumed %v; want a4 in a, b2..b4 in b", got)
	}
}

func TestSubscriptionRules(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.MaxSubscriptions = 2 })
	ctx := context.Background()
	s, f := e.join(t, hub.JoinOptions{User: "a", Room: "one", Events: true}, false)
	f.liveOf(t, "one")
	if err := s.Subscribe(ctx, hub.SubOptions{Room: "two"}); err != nil {
		t.Fatal(err)
	}
	f.liveOf(t, "two")
	for _, tc := range []struct {
		room string
		kind hub.ErrorKind
	}{{"three", hub.KindLimit}, {"two", hub.KindInvalid}, {"bad room!", hub.KindInvalid}} {
		err := s.Subscribe(ctx, hub.SubOptions{Room: tc.room})
		if he := hub.AsError(err); he == nil || he.Kind != tc.kind {
			t.Errorf("Subscribe(%q) = %v; want kind %v", tc.room, err, tc.kind)
		}
	}
	// Control tells an event client in an error event naming the room.
	if err := s.Control(ctx, &api.Message{Kind: api.Kind_KIND_SUBSCRIBE, Room: "three", ClientId: "k"}); err != nil {
		t.Fatal(err)
	}
	if m := f.nextKind(t, api.Kind_KIND_ERROR); m.GetRoom() != "three" || m.GetClientId() != "k" || m.GetError().GetCode() != 8 {
		t.Fatalf("error event %v; want room three, client id k, ResourceExhausted", m)
	}
	// Leaving a room frees a slot and stops its deliveries.
	if err := s.Control(ctx, &api.Message{Kind: api.Kind_KIND_UNSUBSCRIBE, Room: "two"}); err != nil {
		t.Fatal(err)
	}
	if m := f.nextKind(t, api.Kind_KIND_UNSUBSCRIBED); m.GetRoom() != "two" {
		t.Fatalf("got %v", m)
	}
	other, _ := e.join(t, hub.JoinOptions{User: "o", Room: "two"}, false)
	if err := other.Publish(ctx, &api.Message{Text: "unseen"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(ctx, hub.SubOptions{Room: "three", NoHistory: true}); err != nil {
		t.Fatal(err)
	}
	if m := f.next(t); m.GetKind() != api.Kind_KIND_LIVE || m.GetRoom() != "three" {
		t.Fatalf("after leaving two, got %v; want three's KIND_LIVE and nothing of two", m)
	}
	// A seed client cannot subscribe: it could not tell rooms apart.
	seed, _ := e.join(t, hub.JoinOptions{User: "s"}, false)
	if err := seed.Subscribe(ctx, hub.SubOptions{Room: "x"}); err == nil {
		t.Fatal("a session without events subscribed to a second room")
	}
	// A seed client's later messages stay in its room, whatever they name.
	if err := seed.Publish(ctx, &api.Message{Text: "hi", Room: "elsewhere"}); err != nil {
		t.Fatal(err)
	}
	if pos, _ := e.log.Position(ctx, hub.DefaultRoom); pos.Seq != 1 {
		t.Fatalf("general at %+v; want the seed's message there", pos)
	}
}

// TestPrivateRoomsOnTheStream: a private room refuses a non-member's join
// and subscribe; a member gets in.
func TestPrivateRoomsOnTheStream(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	ctx := context.Background()
	if err := e.hub.Config().Access.CreatePrivate(ctx, "team", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Join(ctx, newFake(false), hub.JoinOptions{User: "bob", Room: "team", Transport: "test"}); !errors.Is(err, hub.AsError(err)) || hub.AsError(err).Kind != hub.KindForbidden {
		t.Fatalf("bob joining team = %v; want KindForbidden", err)
	}
	bob, _ := e.join(t, hub.JoinOptions{User: "bob", Events: true}, false)
	if err := bob.Subscribe(ctx, hub.SubOptions{Room: "team"}); hub.AsError(err) == nil || hub.AsError(err).Kind != hub.KindForbidden {
		t.Fatalf("bob subscribing to team = %v; want KindForbidden", err)
	}
	alice, fa := e.join(t, hub.JoinOptions{User: "alice", Events: true, Rooms: []hub.SubOptions{{Room: "team"}}}, false)
	fa.liveOf(t, "team")
	if err := alice.Publish(ctx, &api.Message{Room: "team", Text: "secret"}); err != nil {
		t.Fatal(err)
	}
}
