package hub_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"example.com/chat/api"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/pubsub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTransport records written frames on a channel. block, when set, makes
// Write wait until the session's context ends (a client that never reads).
type fakeTransport struct {
	frames chan *api.Message
	block  bool
	closed chan hub.CloseReason
}

func newFake(block bool) *fakeTransport {
	return &fakeTransport{frames: make(chan *api.Message, 10000), block: block, closed: make(chan hub.CloseReason, 1)}
}

func (f *fakeTransport) Write(ctx context.Context, frames []*hub.Frame) error {
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	for _, fr := range frames {
		f.frames <- fr.Message()
	}
	return nil
}

func (f *fakeTransport) Close(r hub.CloseReason) { f.closed <- r }

// next returns the next frame, failing after a deadline.
func (f *fakeTransport) next(t *testing.T) *api.Message {
	t.Helper()
	select {
	case m := <-f.frames:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a frame")
		return nil
	}
}

// nextKind skips frames until one of kind k.
func (f *fakeTransport) nextKind(t *testing.T, k api.Kind) *api.Message {
	t.Helper()
	for {
		if m := f.next(t); m.GetKind() == k {
			return m
		}
	}
}

func (f *fakeTransport) none(t *testing.T) {
	t.Helper()
	select {
	case m := <-f.frames:
		t.Fatalf("unexpected frame %v", m)
	default:
	}
}

type env struct {
	hub *hub.Hub
	log *history.Memory
}

func newHub(t testing.TB, mod func(*hub.Config)) *env {
	t.Helper()
	log := history.NewMemory(history.MemoryConfig{Size: 10})
	cfg := hub.Config{Broker: pubsub.NewMemory(log), History: log, HistorySize: 10, SendRate: 1e6}
	if mod != nil {
		mod(&cfg)
	}
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return &env{hub: h, log: log}
}

func (e *env) join(t testing.TB, o hub.JoinOptions, block bool) (*hub.Session, *fakeTransport) {
	t.Helper()
	ft := newFake(block)
	if o.Transport == "" {
		o.Transport = "test"
	}
	s, err := e.hub.Join(context.Background(), ft, o)
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	return s, ft
}

func TestOneSendsOtherReceives(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b"}, false)
	if err := a.Publish(context.Background(), &api.Message{Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	m := fb.next(t)
	if m.GetText() != "hello" || m.GetUser() != "a" || m.GetSeq() != 1 || m.GetRoom() != hub.DefaultRoom || m.GetTs() == 0 {
		t.Fatalf("got %v", m)
	}
}

func TestSenderGetsAckNotCopy(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a, fa := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	fa.nextKind(t, api.Kind_KIND_LIVE)
	if err := a.Publish(context.Background(), &api.Message{Text: "x", ClientId: "c1"}); err != nil {
		t.Fatal(err)
	}
	ack := fa.next(t)
	if ack.GetKind() != api.Kind_KIND_ACK || ack.GetSeq() != 1 || ack.GetClientId() != "c1" {
		t.Fatalf("want ack for seq 1, got %v", ack)
	}
	// A retry with the same client id is acknowledged with the same id and
	// not stored again.
	if err := a.Publish(context.Background(), &api.Message{Text: "x", ClientId: "c1"}); err != nil {
		t.Fatal(err)
	}
	if ack := fa.next(t); ack.GetSeq() != 1 {
		t.Fatalf("retry acked as %v", ack)
	}
	page, _ := e.log.Recent(context.Background(), hub.DefaultRoom, 10)
	if len(page.Entries) != 1 {
		t.Fatalf("stored %d entries, want 1", len(page.Entries))
	}
	fa.none(t)
}

func TestRoomsAreSeparate(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a, _ := e.join(t, hub.JoinOptions{User: "a", Room: "r1"}, false)
	_, f2 := e.join(t, hub.JoinOptions{User: "b", Room: "r2"}, false)
	_, f1 := e.join(t, hub.JoinOptions{User: "c", Room: "r1"}, false)
	if err := a.Publish(context.Background(), &api.Message{Text: "in r1"}); err != nil {
		t.Fatal(err)
	}
	if m := f1.next(t); m.GetText() != "in r1" {
		t.Fatalf("got %v", m)
	}
	f2.none(t)
}

func TestHistoryOnJoinThenLive(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	for i := range 15 {
		if err := a.Publish(context.Background(), &api.Message{Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// History keeps 10; a client asking for 3 gets the newest 3, oldest first.
	_, fb := e.join(t, hub.JoinOptions{User: "b", History: 3, Events: true}, false)
	for _, want := range []string{"12", "13", "14"} {
		if m := fb.next(t); m.GetText() != want {
			t.Fatalf("history: got %q want %q", m.GetText(), want)
		}
	}
	if m := fb.next(t); m.GetKind() != api.Kind_KIND_LIVE || m.GetSeq() != 15 {
		t.Fatalf("want live marker at 15, got %v", m)
	}
	if err := a.Publish(context.Background(), &api.Message{Text: "live"}); err != nil {
		t.Fatal(err)
	}
	if m := fb.nextKind(t, api.Kind_KIND_MESSAGE); m.GetText() != "live" || m.GetSeq() != 16 {
		t.Fatalf("got %v", m)
	}
}

func TestResume(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	for i := range 8 {
		if err := a.Publish(context.Background(), &api.Message{Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	page, _ := e.log.Recent(context.Background(), hub.DefaultRoom, 1)
	epoch := page.Position.Epoch

	t.Run("exact", func(t *testing.T) {
		_, fb := e.join(t, hub.JoinOptions{User: "b", AfterSeq: 5, Epoch: epoch, Events: true}, false)
		for _, want := range []uint64{6, 7, 8} {
			if m := fb.next(t); m.GetSeq() != want {
				t.Fatalf("got %v want seq %d", m, want)
			}
		}
		if m := fb.next(t); m.GetKind() != api.Kind_KIND_LIVE {
			t.Fatalf("got %v", m)
		}
	})
	t.Run("wrong epoch is truncated", func(t *testing.T) {
		_, fb := e.join(t, hub.JoinOptions{User: "b", AfterSeq: 5, Epoch: "other", Events: true}, false)
		if m := fb.next(t); m.GetKind() != api.Kind_KIND_TRUNCATED {
			t.Fatalf("want truncated notice, got %v", m)
		}
		if m := fb.next(t); m.GetSeq() != 1 {
			t.Fatalf("want the full history from 1, got %v", m)
		}
	})
}

func TestSeveralStreamsPerUser(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a1, f1 := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, f2 := e.join(t, hub.JoinOptions{User: "a"}, false)
	if err := a1.Publish(context.Background(), &api.Message{Text: "from phone"}); err != nil {
		t.Fatal(err)
	}
	if m := f2.next(t); m.GetText() != "from phone" {
		t.Fatalf("other device got %v", m)
	}
	f1.none(t)
	if n := e.hub.ActiveUsers(); n != 1 {
		t.Fatalf("active users %d, want 1", n)
	}
}

func TestSeedClientsGetNoEvents(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	_, seed := e.join(t, hub.JoinOptions{User: "seed"}, false)
	a, _ := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	if err := a.Publish(context.Background(), &api.Message{Kind: api.Kind_KIND_TYPING}); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(context.Background(), &api.Message{Text: "msg"}); err != nil {
		t.Fatal(err)
	}
	if m := seed.next(t); m.GetText() != "msg" || m.GetKind() != api.Kind_KIND_MESSAGE {
		t.Fatalf("seed client got %v first", m)
	}
}

func TestTypingIsNotStored(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b", Events: true, NoHistory: true}, false)
	fb.nextKind(t, api.Kind_KIND_LIVE)
	// The seed's typing command, sent as text.
	if err := a.Publish(context.Background(), &api.Message{Text: "/me is typing…"}); err != nil {
		t.Fatal(err)
	}
	m := fb.nextKind(t, api.Kind_KIND_TYPING)
	if m.GetUser() != "a" || m.GetSeq() != 0 {
		t.Fatalf("got %v", m)
	}
	page, _ := e.log.Recent(context.Background(), hub.DefaultRoom, 10)
	if len(page.Entries) != 0 || page.Position.Seq != 0 {
		t.Fatalf("typing was stored: %+v", page)
	}
}

func TestValidation(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.MaxTextBytes = 10 })
	for _, tc := range []struct {
		name string
		o    hub.JoinOptions
		kind hub.ErrorKind
	}{
		{"empty user", hub.JoinOptions{User: ""}, hub.KindInvalid},
		{"long user", hub.JoinOptions{User: string(make([]rune, 65))}, hub.KindInvalid},
		{"control char", hub.JoinOptions{User: "a\x07b"}, hub.KindInvalid},
		{"bad room", hub.JoinOptions{User: "a", Room: "no spaces"}, hub.KindInvalid},
		{"brace room", hub.JoinOptions{User: "a", Room: "{x}"}, hub.KindInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.hub.Join(context.Background(), newFake(false), tc.o)
			if e := hub.AsError(err); e == nil || e.Kind != tc.kind {
				t.Fatalf("got %v, want kind %v", err, tc.kind)
			}
		})
	}
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b"}, false)
	for _, tc := range []struct {
		name string
		m    *api.Message
		kind hub.ErrorKind
	}{
		{"too long", &api.Message{Text: "01234567890"}, hub.KindTooLarge},
		{"empty", &api.Message{}, hub.KindInvalid},
		{"server kind", &api.Message{Kind: api.Kind_KIND_ACK, Text: "x"}, hub.KindInvalid},
		{"long client id", &api.Message{Text: "x", ClientId: string(make([]byte, 200))}, hub.KindInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.Publish(context.Background(), tc.m)
			if e := hub.AsError(err); e == nil || e.Kind != tc.kind {
				t.Fatalf("got %v, want kind %v", err, tc.kind)
			}
		})
	}
	fb.none(t)
}

func TestSlowConsumerDoesNotSlowOthers(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.MaxQueueBytes = 64 << 10 })
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	slow, fslow := e.join(t, hub.JoinOptions{User: "slow"}, true)
	_, fb := e.join(t, hub.JoinOptions{User: "b"}, false)
	// The fast client keeps up (it reads each batch of 50 before the next
	// is sent); the slow one never reads and must be cut off, not wait.
	const n = 3000
	for i := range n {
		if err := a.Publish(context.Background(), &api.Message{Text: fmt.Sprintf("m%04d", i)}); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			for j := i - 49; j <= i; j++ {
				if m := fb.next(t); m.GetText() != fmt.Sprintf("m%04d", j) {
					t.Fatalf("fast client got %q at %d", m.GetText(), j)
				}
			}
		}
	}
	select {
	case r := <-fslow.closed:
		if r != hub.CloseSlowConsumer {
			t.Fatalf("slow client closed with %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slow client was not closed")
	}
	if slow.Reason() != hub.CloseSlowConsumer {
		t.Fatalf("reason %v", slow.Reason())
	}
}

func TestShutdownFlushesAndCloses(t *testing.T) {
	t.Parallel()
	log := history.NewMemory(history.MemoryConfig{})
	h, err := hub.New(hub.Config{Broker: pubsub.NewMemory(log), History: log})
	if err != nil {
		t.Fatal(err)
	}
	ft := newFake(false)
	s, err := h.Join(context.Background(), ft, hub.JoinOptions{User: "a", Transport: "t"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-ft.closed; r != hub.CloseShutdown {
		t.Fatalf("closed with %v", r)
	}
	<-s.Context().Done()
	_, err = h.Join(context.Background(), newFake(false), hub.JoinOptions{User: "b"})
	if e := hub.AsError(err); e == nil || e.Kind != hub.KindClosed {
		t.Fatalf("join after shutdown: %v", err)
	}
}

// lossyBroker drops chosen deliveries, as a Redis reconnect would.
type lossyBroker struct {
	pubsub.Broker
	mu   sync.Mutex
	drop map[uint64]bool
	h    pubsub.Handler
}

func (b *lossyBroker) Register(h pubsub.Handler) { b.h = h; b.Broker.Register(b) }
func (b *lossyBroker) HandleReconnect()          { b.h.HandleReconnect() }
func (b *lossyBroker) HandleMessage(env pubsub.Envelope) {
	b.mu.Lock()
	d := b.drop[env.Seq]
	b.mu.Unlock()
	if !d {
		b.h.HandleMessage(env)
	}
}

func TestGapIsFilledFromHistory(t *testing.T) {
	t.Parallel()
	log := history.NewMemory(history.MemoryConfig{})
	lb := &lossyBroker{Broker: pubsub.NewMemory(log), drop: map[uint64]bool{2: true, 3: true, 6: true}}
	h, err := hub.New(hub.Config{Broker: lb, History: log, PositionCheckInterval: 20 * time.Millisecond, SendRate: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(context.Background())
	a, err := h.Join(context.Background(), newFake(false), hub.JoinOptions{User: "a"})
	if err != nil {
		t.Fatal(err)
	}
	fb := newFake(false)
	if _, err := h.Join(context.Background(), fb, hub.JoinOptions{User: "b"}); err != nil {
		t.Fatal(err)
	}
	// 2 and 3 are lost and revealed by 4; 6 is a lost tail found by the
	// position check.
	for i := 1; i <= 6; i++ {
		if err := a.Publish(context.Background(), &api.Message{Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for want := uint64(1); want <= 6; want++ {
		if m := fb.next(t); m.GetSeq() != want {
			t.Fatalf("got seq %d want %d", m.GetSeq(), want)
		}
	}
	fb.none(t)
}

func TestEpochChange(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	a, _ := e.join(t, hub.JoinOptions{User: "a"}, false)
	_, fb := e.join(t, hub.JoinOptions{User: "b", Events: true}, false)
	fb.nextKind(t, api.Kind_KIND_LIVE)
	if err := a.Publish(context.Background(), &api.Message{Text: "old"}); err != nil {
		t.Fatal(err)
	}
	old := fb.nextKind(t, api.Kind_KIND_MESSAGE)
	e.log.Reset(hub.DefaultRoom) // the log is lost: ids restart in a new epoch
	if err := a.Publish(context.Background(), &api.Message{Text: "new"}); err != nil {
		t.Fatal(err)
	}
	if m := fb.next(t); m.GetKind() != api.Kind_KIND_TRUNCATED {
		t.Fatalf("want truncated notice, got %v", m)
	}
	m := fb.next(t)
	if m.GetText() != "new" || m.GetSeq() != 1 || m.GetEpoch() == old.GetEpoch() {
		t.Fatalf("got %v after epoch change", m)
	}
}

func TestManyConcurrentPublishersInOrder(t *testing.T) {
	t.Parallel()
	e := newHub(t, nil)
	_, fr := e.join(t, hub.JoinOptions{User: "reader"}, false)
	var wg sync.WaitGroup
	for p := range 4 {
		s, _ := e.join(t, hub.JoinOptions{User: fmt.Sprint("p", p)}, false)
		wg.Go(func() {
			for i := range 200 {
				if err := s.Publish(context.Background(), &api.Message{Text: fmt.Sprint(i)}); err != nil && !errors.Is(err, hub.ErrClosed) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for want := uint64(1); want <= 800; want++ {
		if m := fr.next(t); m.GetSeq() != want {
			t.Fatalf("got seq %d want %d", m.GetSeq(), want)
		}
	}
}

func TestPresenceWithoutFlicker(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.LeaveGrace = 200 * time.Millisecond })
	_, fw := e.join(t, hub.JoinOptions{User: "watcher", Events: true, NoHistory: true}, false)
	fw.nextKind(t, api.Kind_KIND_LIVE)
	a1, _ := e.join(t, hub.JoinOptions{User: "alice"}, false)
	if m := fw.next(t); m.GetKind() != api.Kind_KIND_JOIN || m.GetUser() != "alice" {
		t.Fatalf("want alice's join, got %v", m)
	}
	// A second device is not a second join.
	a2, _ := e.join(t, hub.JoinOptions{User: "alice"}, false)
	users, n, err := e.hub.Presence(context.Background(), "", 10)
	if err != nil || n != 2 || len(users) != 2 || users[0] != "alice" || users[1] != "watcher" {
		t.Fatalf("presence %v %d %v", users, n, err)
	}
	// Both devices drop and one comes back within the grace: no event.
	a1.Close(hub.CloseNormal)
	a2.Close(hub.CloseNormal)
	<-a1.Context().Done()
	<-a2.Context().Done()
	a3, _ := e.join(t, hub.JoinOptions{User: "alice"}, false)
	if err := a3.Publish(context.Background(), &api.Message{Text: "back"}); err != nil {
		t.Fatal(err)
	}
	if m := fw.next(t); m.GetText() != "back" {
		t.Fatalf("flicker: got %v before alice's message", m)
	}
	// Gone for longer than the grace: one leave.
	a3.Close(hub.CloseNormal)
	if m := fw.next(t); m.GetKind() != api.Kind_KIND_LEAVE || m.GetUser() != "alice" {
		t.Fatalf("want alice's leave, got %v", m)
	}
	if _, n, _ := e.hub.Presence(context.Background(), "", 0); n != 1 {
		t.Fatalf("count after leave %d", n)
	}
}

// batchTransport records the size and time of each Write; each Write
// takes cost, like a system call on a slow link.
type batchTransport struct {
	sizes chan int
	at    chan time.Time
	cost  time.Duration
}

func newBatchTransport(cost time.Duration) batchTransport {
	return batchTransport{sizes: make(chan int, 10000), at: make(chan time.Time, 10000), cost: cost}
}

func (b batchTransport) Write(_ context.Context, frames []*hub.Frame) error {
	time.Sleep(b.cost)
	b.sizes <- len(frames)
	b.at <- time.Now()
	return nil
}
func (batchTransport) Close(hub.CloseReason) {}

// A client that falls behind (its writes take long) gets the frames that
// came meanwhile in few writes.
func TestWriteDelayBatchesBusyClients(t *testing.T) {
	t.Parallel()
	e2 := newHub(t, func(c *hub.Config) { c.WriteDelay = 200 * time.Millisecond })
	p, _ := e2.join(t, hub.JoinOptions{User: "p"}, false)
	bt2 := newBatchTransport(30 * time.Millisecond)
	if _, err := e2.hub.Join(context.Background(), bt2, hub.JoinOptions{User: "q", NoHistory: true}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := p.Publish(context.Background(), &api.Message{Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	total, writes := 0, 0
	for total < 10 {
		select {
		case n := <-bt2.sizes:
			total += n
			writes++
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of 10 frames", total)
		}
	}
	if writes > 3 {
		t.Fatalf("10 frames in a burst took %d writes; want them batched", writes)
	}
}

// The first frame to a client that is not behind is written at once,
// however recently it was last written to: coalescing follows the load,
// not a fixed delay. (A fixed delay of an hour held the second frame for
// an hour.)
func TestFirstFrameToAnIdleClientIsWrittenAtOnce(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.WriteDelay = time.Hour })
	p, _ := e.join(t, hub.JoinOptions{User: "p"}, false)
	q, fq := e.join(t, hub.JoinOptions{User: "q", NoHistory: true}, false)
	for i := range 5 {
		if err := p.Publish(context.Background(), &api.Message{Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		if m := fq.next(t); m.GetText() != fmt.Sprint(i) {
			t.Fatalf("got %v", m)
		}
		// Idle again: the write is over. (A publish that lands while
		// the fake's Write is still returning finds the client behind,
		// and waits a 32nd of the delay: this test once did, under load.)
		for q.WriterBusy() {
			runtime.Gosched()
		}
	}
}

// The wait a frame may spend coalescing is bounded by WriteDelay: a client
// that stays behind is written to at least once per WriteDelay (plus a
// write), not starved while frames keep coming.
func TestCoalescingDelayIsBounded(t *testing.T) {
	t.Parallel()
	const delay = 100 * time.Millisecond
	e := newHub(t, func(c *hub.Config) { c.WriteDelay = delay })
	p, _ := e.join(t, hub.JoinOptions{User: "p"}, false)
	bt := newBatchTransport(5 * time.Millisecond)
	if _, err := e.hub.Join(context.Background(), bt, hub.JoinOptions{User: "q", NoHistory: true}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer stop()
	sent := 0
	for ctx.Err() == nil {
		if err := p.Publish(context.Background(), &api.Message{Text: "x"}); err != nil {
			t.Fatal(err)
		}
		sent++
		time.Sleep(200 * time.Microsecond)
	}
	var last time.Time
	worst, total, writes := time.Duration(0), 0, 0
	for total < sent {
		select {
		case n := <-bt.sizes:
			at := <-bt.at
			if !last.IsZero() && at.Sub(last) > worst {
				worst = at.Sub(last)
			}
			last = at
			total += n
			writes++
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of %d frames", total, sent)
		}
	}
	// Generous slack for a loaded machine: the rule is "bounded", and a
	// writer without the bound would grow its wait without end.
	if worst > 3*delay {
		t.Fatalf("%d frames in %d writes; the longest gap between writes was %v, want at most about %v", sent, writes, worst, delay)
	}
	if writes > sent/4 {
		t.Fatalf("%d frames in %d writes: a client behind was not batched", sent, writes)
	}
}

func TestAcksSkipTheWriteDelay(t *testing.T) {
	t.Parallel()
	e := newHub(t, func(c *hub.Config) { c.WriteDelay = time.Hour })
	a, fa := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	fa.nextKind(t, api.Kind_KIND_LIVE)
	// Each send is answered at once, though the client was just written to.
	for i := range 3 {
		if err := a.Publish(context.Background(), &api.Message{Text: fmt.Sprint(i), ClientId: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		if m := fa.next(t); m.GetKind() != api.Kind_KIND_ACK || m.GetClientId() != fmt.Sprint(i) {
			t.Fatalf("got %v", m)
		}
	}
}

// writers counts the goroutines running a session writer.
func writers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("hub.(*Session).writeLoop"))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Not parallel: it counts goroutines.
func TestIdleSessionsHoldNoWriter(t *testing.T) {
	e := newHub(t, func(c *hub.Config) { c.WriterIdle = 20 * time.Millisecond })
	const n = 50
	fts := make([]*fakeTransport, n)
	var a *hub.Session
	for i := range fts {
		s, ft := e.join(t, hub.JoinOptions{User: fmt.Sprintf("u%d", i), Events: true}, false)
		ft.nextKind(t, api.Kind_KIND_LIVE)
		fts[i] = ft
		if i == 0 {
			a = s
		}
	}
	idle := func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for writers() > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d session writers still run on idle sessions", writers())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	idle()
	// An idle session still gets what comes next, and goes idle again.
	for round := 1; round <= 3; round++ {
		if err := a.Publish(context.Background(), &api.Message{Text: fmt.Sprint(round)}); err != nil {
			t.Fatal(err)
		}
		for _, ft := range fts[1:] {
			if m := ft.nextKind(t, api.Kind_KIND_MESSAGE); m.GetText() != fmt.Sprint(round) || m.GetSeq() != uint64(round) {
				t.Fatalf("round %d: got %v", round, m)
			}
		}
		idle()
	}
}
