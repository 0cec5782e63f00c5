package hub_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// Tests of what an abusive client can hold: slots, bytes, time.

func TestAdmissionsCountAgainstMaxSessions(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.MaxSessions = 2 })
	a1, err := e.hub.Admit()
	if err != nil {
		t.Fatal(err)
	}
	a2, err := e.hub.Admit()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.hub.Admit(); hub.AsError(err) == nil || hub.AsError(err).Kind != hub.KindLimit {
		t.Fatalf("third admission on a node of 2: %v", err)
	}
	if _, err := e.hub.Join(context.Background(), newFake(false), hub.JoinOptions{User: "x"}); hub.AsError(err) == nil || hub.AsError(err).Kind != hub.KindLimit {
		t.Fatalf("join without admission on a full node: %v", err)
	}
	// Joining takes the admission's slot over: still full.
	s, err := e.hub.Join(context.Background(), newFake(false), hub.JoinOptions{User: "a", Admission: a1})
	if err != nil {
		t.Fatalf("join with admission: %v", err)
	}
	if _, err := e.hub.Admit(); err == nil {
		t.Fatal("admitted past the limit after a join")
	}
	// A released admission frees its slot, once.
	a2.Release()
	a2.Release()
	a3, err := e.hub.Admit()
	if err != nil {
		t.Fatalf("admit after release: %v", err)
	}
	if _, err := e.hub.Admit(); err == nil {
		t.Fatal("a double release freed two slots")
	}
	a3.Release()
	s.Close(hub.CloseNormal)
	<-s.Context().Done()
}

func TestAdmissionEndsAtJoinTimeoutAndOnShutdown(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.JoinTimeout = 50 * time.Millisecond })
	a, err := e.hub.Admit()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("admission outlived its join timeout")
	}
	a.Release()

	e2 := newHub(t, func(c *hub.Config) { c.JoinTimeout = time.Hour })
	b, err := e2.hub.Admit()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-b.Context().Done()
		b.Release()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e2.hub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Context().Err() == nil {
		t.Fatal("shutdown left a never-joined connection open")
	}
	if _, err := e2.hub.Admit(); hub.AsError(err) == nil || hub.AsError(err).Kind != hub.KindClosed {
		t.Fatalf("admit while draining: %v", err)
	}
}

// An orderly close (here the client ending its stream, as after a rate
// limit) flushes, but a peer that stopped reading cannot pin the session:
// after FlushTimeout it is cut.
func TestOrderlyCloseIsBoundedByFlushTimeout(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.FlushTimeout = 100 * time.Millisecond })
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	stuck, ft := e.join(t, hub.JoinOptions{User: "stuck"}, true)
	if err := a.Publish(context.Background(), &api.Message{Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	stuck.Close(hub.CloseNormal)
	select {
	case <-stuck.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a close with a stuck write never ended")
	}
	if r := <-ft.closed; r != hub.CloseWriteError {
		t.Fatalf("cut session closed with %v, want write_error", r)
	}
	// Its user's slot is free again.
	e.join(t, hub.JoinOptions{User: "stuck"}, false)
}

func TestFramesOfInvalidUTF8EncodeWithoutPanic(t *testing.T) {
	t.Parallel()
	for _, m := range []*api.Message{
		{Text: "x\xe2\x82"},
		{Error: &api.Error{Message: strings.Repeat("€", 80)[:200]}},
		{User: "\xff", Room: "r\xfe", Epoch: "\xc0"},
	} {
		f := hub.NewFrame(m)
		if j := f.JSON(); !utf8.Valid(j) || len(j) == 0 {
			t.Errorf("JSON of %v: %q", m, j)
		}
		if len(f.Proto()) == 0 {
			t.Errorf("Proto of %v is empty", m)
		}
	}
}

// The queue limit counts the frame's JSON length: control characters are 6 bytes
// each in JSON.
func TestQueueCountsEncodedBytes(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.MaxQueueBytes = 4000 })
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, slow := e.join(t, hub.JoinOptions{User: "slow", NoHistory: true}, true)
	if err := a.Publish(context.Background(), &api.Message{Text: strings.Repeat("\x01", 1000)}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-slow.closed:
		if r != hub.CloseSlowConsumer {
			t.Fatalf("closed with %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a 6000-byte frame fit a 4000-byte queue")
	}
}

func TestReplayIsBoundedInBytes(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.MaxReplayBytes = 3800 }) // three frames of 1000-byte text (each about 1200 bytes charged), not four
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	for i := range 10 {
		if err := a.Publish(context.Background(), &api.Message{Text: strings.Repeat(string(rune('a'+i)), 1000)}); err != nil {
			t.Fatal(err)
		}
	}
	_, f := e.join(t, hub.JoinOptions{User: "b", Events: true}, false)
	if m := f.next(t); m.GetKind() != api.Kind_KIND_TRUNCATED {
		t.Fatalf("first frame %v, want TRUNCATED", m.GetKind())
	}
	var got []string
	for {
		m := f.next(t)
		if m.GetKind() == api.Kind_KIND_LIVE {
			break
		}
		got = append(got, m.GetText()[:1])
	}
	if strings.Join(got, "") != "hij" {
		t.Fatalf("replayed %v, want the newest that fit: h i j", got)
	}
	// The newest page keeps its newest messages and says where to go on
	// (first_seq; not at the log's start).
	page, err := e.hub.History(context.Background(), hub.HistoryQuery{})
	msgs := page.GetMessages()
	if err != nil || page.GetAtStart() || page.GetTruncated() || len(msgs) != 3 || msgs[0].GetText()[:1] != "h" || page.GetFirstSeq() != msgs[0].GetSeq() {
		t.Fatalf("REST history: %d messages, %+v, err %v", len(msgs), page, err)
	}
	// Paging forward ends the page early instead of skipping.
	page, err = e.hub.History(context.Background(), hub.HistoryQuery{AfterSeq: 1})
	msgs = page.GetMessages()
	if err != nil || len(msgs) != 3 || msgs[0].GetSeq() != 2 || page.GetLastSeq() != 4 {
		t.Fatalf("forward page: %d messages, %+v, err %v", len(msgs), page, err)
	}
}

// Clients joining a room share its replay's frames instead of each
// decoding (and encoding) its own copy.
func TestReplayFramesAreShared(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	for range 3 {
		if err := a.Publish(context.Background(), &api.Message{Text: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	_, f1 := e.join(t, hub.JoinOptions{User: "b"}, false)
	_, f2 := e.join(t, hub.JoinOptions{User: "c"}, false)
	for i := range 3 {
		m1, m2 := f1.next(t), f2.next(t)
		if m1 != m2 {
			t.Fatalf("replay frame %d decoded twice (seq %d, %d)", i, m1.GetSeq(), m2.GetSeq())
		}
	}
}

// Join/leave churn with fresh names does not flood the room's watchers.
func TestPresenceEventsAreBudgeted(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.PresenceEventRate = 5; c.LeaveGrace = time.Millisecond })
	_, fw := e.join(t, hub.JoinOptions{User: "watcher", Events: true, NoHistory: true}, false)
	fw.nextKind(t, api.Kind_KIND_LIVE)
	start := time.Now()
	for i := range 200 {
		s, _ := e.join(t, hub.JoinOptions{User: "churn" + string(rune('A'+i%26)) + strings.Repeat("x", i/26)}, false)
		s.Close(hub.CloseNormal)
		<-s.Context().Done()
	}
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	if err := a.Publish(context.Background(), &api.Message{Text: "end"}); err != nil {
		t.Fatal(err)
	}
	events := 0
	for {
		m := fw.next(t)
		if m.GetText() == "end" {
			break
		}
		events++
	}
	budget := 11 + int(5*time.Since(start).Seconds()) + 1
	if events > budget {
		t.Fatalf("watcher got %d join/leave events, budget %d", events, budget)
	}
	if events == 0 {
		t.Fatal("watcher got no events at all")
	}
}
