package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// The tests of this file make a room's log go back within its epoch, as a
// Redis failover to a replica that lagged does (history.Memory.Rewind): the
// ids of the lost messages are given to new ones. Before the hub detected
// it, every session that had seen the old ids dropped the new messages as
// duplicates, silently.

// regressed publishes n messages, makes the log go back to keep, and
// returns the epoch the receivers saw.
func regressed(t *testing.T, e *env, a *hub.Session, fb *fakeTransport, n int, keep uint64) string {
	t.Helper()
	for i := 1; i <= n; i++ {
		if err := a.Publish(context.Background(), &api.Message{Text: fmt.Sprint("old-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var epoch string
	for i := 1; i <= n; i++ {
		m := fb.nextKind(t, api.Kind_KIND_MESSAGE)
		epoch = m.GetEpoch()
	}
	e.log.Rewind(hub.DefaultRoom, keep)
	return epoch
}

// want reads frames until every text in texts came, and reports whether
// a KIND_TRUNCATED came first.
func waitTexts(t *testing.T, ft *fakeTransport, texts ...string) (truncated bool, epoch string) {
	t.Helper()
	missing := make(map[string]bool)
	for _, s := range texts {
		missing[s] = true
	}
	for len(missing) > 0 {
		m := ft.next(t)
		switch m.GetKind() {
		case api.Kind_KIND_TRUNCATED:
			truncated = true
		case api.Kind_KIND_MESSAGE:
			if missing[m.GetText()] {
				delete(missing, m.GetText())
				epoch = m.GetEpoch()
			}
		}
	}
	return truncated, epoch
}

func TestReusedIDsAreNotDroppedAsDuplicates(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.PositionCheckInterval = time.Hour })
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b", Events: true}, false)
	_, fc := e.join(t, hub.JoinOptions{User: "c"}, false) // a seed client: no events
	fb.nextKind(t, api.Kind_KIND_LIVE)
	old := regressed(t, e, a, fb, 8, 5)
	for range 8 {
		fc.nextKind(t, api.Kind_KIND_MESSAGE)
	}
	// Ids 6 and 7 again, with other messages: the live deliveries reveal it.
	for _, s := range []string{"new-6", "new-7"} {
		if err := a.Publish(context.Background(), &api.Message{Text: s}); err != nil {
			t.Fatal(err)
		}
	}
	truncated, epoch := waitTexts(t, fb, "new-6", "new-7")
	if !truncated {
		t.Error("the event client was not told of the regression")
	}
	if epoch == old || epoch == "" {
		t.Errorf("the new messages came in epoch %q, want a new one (old %q)", epoch, old)
	}
	waitTexts(t, fc, "new-6", "new-7") // the seed client gets them too
	pos, err := e.log.Position(context.Background(), hub.DefaultRoom)
	if err != nil || pos.Epoch != epoch || pos.Seq != 7 {
		t.Fatalf("log at %+v (%v), want epoch %q seq 7", pos, err, epoch)
	}
	// Later messages flow on in the new epoch.
	if err := a.Publish(context.Background(), &api.Message{Text: "after"}); err != nil {
		t.Fatal(err)
	}
	if m := fb.nextKind(t, api.Kind_KIND_MESSAGE); m.GetText() != "after" || m.GetSeq() != 8 || m.GetEpoch() != epoch {
		t.Fatalf("got %v", m)
	}
}

func TestPositionCheckFindsALogThatWentBack(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.PositionCheckInterval = 20 * time.Millisecond })
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b", Events: true}, false)
	fb.nextKind(t, api.Kind_KIND_LIVE)
	old := regressed(t, e, a, fb, 6, 3)
	// Nothing is published: the position check alone finds it.
	if m := fb.nextKind(t, api.Kind_KIND_TRUNCATED); m.GetEpoch() == old {
		t.Fatalf("truncated notice names the old epoch: %v", m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pos, err := e.log.Position(context.Background(), hub.DefaultRoom)
		if err != nil {
			t.Fatal(err)
		}
		if pos.Epoch != old {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the room's epoch was not moved on")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Publish(context.Background(), &api.Message{Text: "new-4"}); err != nil {
		t.Fatal(err)
	}
	if _, epoch := waitTexts(t, fb, "new-4"); epoch == old {
		t.Fatalf("new-4 came in the old epoch")
	}
}

func TestResumeBeyondTheLogIsTruncated(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.PositionCheckInterval = time.Hour })
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b", Events: true}, false)
	fb.nextKind(t, api.Kind_KIND_LIVE)
	old := regressed(t, e, a, fb, 6, 3)
	// A client of another node saw up to 6 and resumes here.
	_, fr := e.join(t, hub.JoinOptions{User: "r", Events: true, AfterSeq: 6, Epoch: old}, false)
	if m := fr.next(t); m.GetKind() != api.Kind_KIND_TRUNCATED {
		t.Fatalf("want a truncated notice first, got %v", m)
	}
	// The room then finds the regression, and the resumed client gets the
	// new messages like everyone.
	for _, s := range []string{"new-4", "new-5", "new-6", "new-7"} {
		if err := a.Publish(context.Background(), &api.Message{Text: s}); err != nil {
			t.Fatal(err)
		}
	}
	waitTexts(t, fb, "new-4", "new-5", "new-6", "new-7")
	waitTexts(t, fr, "new-4", "new-5", "new-6", "new-7")
}

func TestStaleEpochDeliveriesDoNotFlipTheRoomBack(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.PositionCheckInterval = time.Hour })
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b", Events: true}, false)
	fb.nextKind(t, api.Kind_KIND_LIVE)
	regressed(t, e, a, fb, 4, 2)
	if err := a.Publish(context.Background(), &api.Message{Text: "new-3"}); err != nil {
		t.Fatal(err)
	}
	_, epoch := waitTexts(t, fb, "new-3")
	for i := range 20 {
		if err := a.Publish(context.Background(), &api.Message{Text: fmt.Sprint("n", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		m := fb.nextKind(t, api.Kind_KIND_MESSAGE)
		if m.GetText() != fmt.Sprint("n", i) || m.GetEpoch() != epoch {
			t.Fatalf("message %d: got %v, want n%d in epoch %s", i, m, i, epoch)
		}
	}
}
