package hub_test

import (
	"context"
	"fmt"
	"testing"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/pubsub"
)

// stateHub is a hub on the in-memory default with a log of 50 and replays
// of 10, and an access store (for read markers).
func stateHub(t *testing.T) *env {
	log := history.NewMemory(history.MemoryConfig{Size: 50})
	return newHub(t, func(c *hub.Config) {
		c.Broker, c.History, c.LogSize = pubsub.NewMemory(log), log, 50
		c.Access = access.NewMemory(nil)
	})
}

// The in-memory default (one node) keeps the rules the Redis tests check:
// only the author edits and deletes, a reaction toggles, events reach
// sessions with changes only (and their own sender), replays and pages
// show the present, a page reaches back past the replay.
func TestChatStateOnOneNode(t *testing.T) {
	t.Parallel()
	e := stateHub(t)
	ctx := context.Background()
	a, fa := e.join(t, hub.JoinOptions{User: "alice", Events: true, Changes: true}, false)
	b, fb := e.join(t, hub.JoinOptions{User: "bob", Events: true, Changes: true}, false)
	_, fc := e.join(t, hub.JoinOptions{User: "carol", Events: true}, false)
	for _, f := range []*fakeTransport{fa, fb, fc} {
		f.nextKind(t, api.Kind_KIND_LIVE)
	}
	for i := 1; i <= 20; i++ {
		if err := a.Publish(ctx, &api.Message{Text: fmt.Sprintf("m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	must(t, a.Publish(ctx, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 3, Text: "m3!"}))
	must(t, b.Publish(ctx, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 3, Text: "👍"}))
	must(t, b.Publish(ctx, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 3, Text: "👍"})) // off
	must(t, b.Publish(ctx, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 3, Text: "🎉"}))
	must(t, a.Publish(ctx, &api.Message{Kind: api.Kind_KIND_DELETE, TargetSeq: 4}))
	wantKind(t, b.Publish(ctx, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 5, Text: "x"}), hub.KindForbidden, []string{"author"})
	wantKind(t, b.Publish(ctx, &api.Message{Kind: api.Kind_KIND_DELETE, TargetSeq: 5}), hub.KindForbidden, []string{"author"})
	wantKind(t, a.Publish(ctx, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 4, Text: "x"}), hub.KindNotFound, []string{"deleted"})
	wantKind(t, a.Publish(ctx, &api.Message{Kind: api.Kind_KIND_EDIT, TargetSeq: 21, Text: "x"}), hub.KindInvalid, []string{"not a message"})
	wantKind(t, a.Publish(ctx, &api.Message{Kind: api.Kind_KIND_REACTION, TargetSeq: 1, Text: "two words"}), hub.KindInvalid, []string{"spaces"})
	wantKind(t, a.Publish(ctx, &api.Message{Kind: api.Kind_KIND_EDIT, Text: "x"}), hub.KindInvalid, []string{"target_seq"})

	// Live: bob sees the five events (his own too), carol none of them.
	var kinds []string
	for len(kinds) < 5 {
		m := fb.next(t)
		if m.GetSeq() > 20 && m.GetKind() != api.Kind_KIND_ACK {
			kinds = append(kinds, fmt.Sprintf("%d:%s", m.GetSeq(), m.GetKind()))
		}
	}
	if fmt.Sprint(kinds) != "[21:KIND_EDIT 22:KIND_REACTION 23:KIND_REACTION 24:KIND_REACTION 25:KIND_DELETE]" {
		t.Fatalf("bob's events: %v", kinds)
	}
	for range 20 {
		fc.nextKind(t, api.Kind_KIND_MESSAGE)
	}
	fc.none(t)

	// A replay shows the present; without changes, no tombstone.
	_, fd := e.join(t, hub.JoinOptions{User: "dave", Events: true, Changes: true, History: 10}, false)
	_, ff := e.join(t, hub.JoinOptions{User: "frank", Events: true, History: 10}, false)
	var dave, frank []*api.Message
	for m := fd.next(t); m.GetKind() != api.Kind_KIND_LIVE; m = fd.next(t) {
		dave = append(dave, m)
	}
	for m := ff.next(t); m.GetKind() != api.Kind_KIND_LIVE; m = ff.next(t) {
		frank = append(frank, m)
	}
	if len(dave) != 10 || dave[0].GetSeq() != 16 || len(frank) != 5 {
		t.Fatalf("replays of 10: dave %d from %d, frank %d (the five events left out)", len(dave), dave[0].GetSeq(), len(frank))
	}
	// The page back reaches what the replay did not.
	page, err := e.hub.History(ctx, hub.HistoryQuery{BeforeSeq: 6, Limit: 10})
	must(t, err)
	got := ""
	for _, m := range page.GetMessages() {
		r := ""
		for _, x := range m.GetReactions() {
			r += fmt.Sprintf("%s%d", x.GetEmoji(), x.GetCount())
		}
		got += fmt.Sprintf("%d:%q e=%v d=%v r=[%s] rev=%d;", m.GetSeq(), m.GetText(), m.GetEdited(), m.GetDeleted(), r, m.GetRev())
	}
	want := `1:"m1" e=false d=false r=[] rev=0;2:"m2" e=false d=false r=[] rev=0;3:"m3!" e=true d=false r=[🎉1] rev=24;4:"" e=false d=true r=[] rev=25;5:"m5" e=false d=false r=[] rev=0;`
	if got != want || !page.GetAtStart() || page.GetTruncated() || page.GetFirstSeq() != 1 || page.GetHeadSeq() != 25 {
		t.Fatalf("page before 6:\n%s\nwant\n%s\n%+v", got, want, page)
	}
	// The newest page leaves the events out but covers them.
	page, err = e.hub.History(ctx, hub.HistoryQuery{Limit: 10, NewestFirst: true})
	must(t, err)
	if n := len(page.GetMessages()); n != 5 || page.GetMessages()[0].GetSeq() != 20 || page.GetFirstSeq() != 16 || page.GetLastSeq() != 25 {
		t.Fatalf("newest page: %d messages from %d, first %d last %d", n, page.GetMessages()[0].GetSeq(), page.GetFirstSeq(), page.GetLastSeq())
	}
	// On the stream: KIND_PAGE.
	must(t, b.Control(ctx, &api.Message{Kind: api.Kind_KIND_PAGE, ClientId: "p1", History: &api.HistoryRequest{BeforeSeq: 3, Limit: 5}}))
	p := fb.nextKind(t, api.Kind_KIND_PAGE)
	if p.GetClientId() != "p1" || p.GetRoom() != hub.DefaultRoom || len(p.GetPage().GetMessages()) != 2 || !p.GetPage().GetAtStart() {
		t.Fatalf("stream page: %v", p)
	}
}

func TestReadMarkersOnOneNode(t *testing.T) {
	t.Parallel()
	e := stateHub(t)
	ctx := context.Background()
	_, fa := e.join(t, hub.JoinOptions{User: "ann", Events: true, Personal: true}, false)
	b, fb := e.join(t, hub.JoinOptions{User: "bob", Events: true, Changes: true}, false)
	fa.nextKind(t, api.Kind_KIND_LIVE)
	fb.nextKind(t, api.Kind_KIND_LIVE)
	dm, _, err := e.hub.Direct(ctx, "bob", "ann")
	must(t, err)
	must(t, b.Subscribe(ctx, hub.SubOptions{Room: dm}))
	for i := range 8 {
		must(t, b.Publish(ctx, &api.Message{Room: dm, Text: fmt.Sprint(i)}))
	}
	must(t, b.Publish(ctx, &api.Message{Room: dm, Kind: api.Kind_KIND_REACTION, TargetSeq: 1, Text: "👍"}))
	conv := func() *api.Conversation {
		t.Helper()
		cs, err := e.hub.Conversations(ctx, "ann", 0)
		must(t, err)
		for _, c := range cs {
			if c.GetRoom() == dm {
				return c
			}
		}
		t.Fatalf("ann's conversations lack %s: %v", dm, cs)
		return nil
	}
	if c := conv(); c.GetUnread() != 8 || c.GetReadSeq() != 0 || c.GetLastSeq() != 9 {
		t.Fatalf("before reading: %v", c)
	}
	epoch := conv().GetEpoch()
	r, err := e.hub.MarkRead(ctx, "ann", dm, epoch, 5)
	must(t, err)
	if r.GetSeq() != 5 || r.GetUnread() != 3 {
		t.Fatalf("MarkRead 5: %v", r)
	}
	if m := fa.nextKind(t, api.Kind_KIND_READ); m.GetRoom() != dm || m.GetSeq() != 5 || m.GetUser() != "ann" {
		t.Fatalf("pushed marker: %v", m)
	}
	if r, _ := e.hub.MarkRead(ctx, "ann", dm, epoch, 2); r.GetSeq() != 5 {
		t.Fatalf("a marker moved back: %v", r)
	}
	if r, _ := e.hub.MarkRead(ctx, "ann", dm, epoch, 99); r.GetSeq() != 9 || r.GetUnread() != 0 {
		t.Fatalf("a marker past the head: %v", r)
	}
	_, err = e.hub.MarkRead(ctx, "ann", dm, "other", 3)
	wantKind(t, err, hub.KindInvalid, []string{"epoch"})
	_, err = e.hub.MarkRead(ctx, "carol", dm, epoch, 3)
	wantKind(t, err, hub.KindForbidden, nil)
	if c := conv(); c.GetUnread() != 0 || c.GetReadSeq() != 9 {
		t.Fatalf("after reading: %v", c)
	}
}
