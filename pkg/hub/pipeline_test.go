package hub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"example.com/chat/api"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/pubsub"
)

// slowBroker is a Memory bus whose stored publishes (Submit) are answered
// only when the test releases them: it holds every publish the hub has
// handed over and not yet been answered for, as a remote bus does during
// its round trip. Publish (events, REST) goes straight to Memory.
type slowBroker struct {
	*pubsub.Memory
	mu       sync.Mutex
	held     []heldPub
	next     int          // index of the next submit
	maxHeld  int          // most publishes held at once
	fail     map[int]bool // submits (by index) answered with an error, not stored
	reversed bool         // release answers the newest first (stores in order)
	changed  chan struct{}
}

type heldPub struct {
	i    int
	ctx  context.Context
	room string
	data []byte
	opts pubsub.PublishOptions
	p    *pubsub.Pending
}

func newSlowBroker(log *history.Memory) *slowBroker {
	return &slowBroker{Memory: pubsub.NewMemory(log), fail: map[int]bool{}, changed: make(chan struct{}, 1)}
}

var _ pubsub.Submitter = (*slowBroker)(nil)

func (b *slowBroker) Submit(ctx context.Context, room string, data []byte, opts pubsub.PublishOptions) *pubsub.Pending {
	p := pubsub.NewPending(room)
	b.mu.Lock()
	b.held = append(b.held, heldPub{i: b.next, ctx: ctx, room: room, data: data, opts: opts, p: p})
	b.next++
	b.maxHeld = max(b.maxHeld, len(b.held))
	b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return p
}

// waitHeld waits until n publishes are held.
func (b *slowBroker) waitHeld(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		b.mu.Lock()
		got := len(b.held)
		b.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-b.changed:
		case <-deadline:
			t.Fatalf("%d publishes held, want %d", got, n)
		}
	}
}

// release stores the n oldest held publishes in submit order (or fails
// those chosen) and answers them.
func (b *slowBroker) release(t *testing.T, n int) {
	t.Helper()
	b.mu.Lock()
	out := b.held[:n:n]
	b.held = b.held[n:]
	b.mu.Unlock()
	type answer struct {
		p   *pubsub.Pending
		res pubsub.PublishResult
		err error
	}
	answers := make([]answer, 0, n)
	for _, h := range out {
		if b.fail[h.i] {
			answers = append(answers, answer{h.p, pubsub.PublishResult{}, fmt.Errorf("test: %w", pubsub.ErrUnavailable)})
			continue
		}
		res, err := b.Memory.Publish(h.ctx, h.room, h.data, h.opts)
		answers = append(answers, answer{h.p, res, err})
	}
	for i := range answers {
		a := answers[i]
		if b.reversed {
			a = answers[len(answers)-1-i]
		}
		a.p.Complete(a.res, a.err)
	}
}

func (b *slowBroker) maxHeldSoFar() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.maxHeld
}

// pipelineHub is a hub on a slowBroker, with its metrics on reg.
func pipelineHub(t *testing.T, inflight int) (*env, *slowBroker, *prometheus.Registry) {
	t.Helper()
	var b *slowBroker
	reg := prometheus.NewRegistry()
	e := newHub(t, func(c *hub.Config) {
		b = newSlowBroker(c.History.(*history.Memory))
		c.Broker = b
		c.MaxInflightSends = inflight
		c.Registerer = reg
	})
	return e, b, reg
}

// gauge reads the value of the unlabelled gauge name from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// nextAnswer returns the next ack or error frame.
func (f *fakeTransport) nextAnswer(t *testing.T) *api.Message {
	t.Helper()
	for {
		if m := f.next(t); m.GetKind() == api.Kind_KIND_ACK || m.GetKind() == api.Kind_KIND_ERROR {
			return m
		}
	}
}

// outcomes records what done was told, in call order.
type outcomes struct {
	mu   sync.Mutex
	list []string
}

func (o *outcomes) done(id string) func(error) *api.Error {
	return func(err error) *api.Error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if err != nil {
			o.list = append(o.list, id+":err")
			return &api.Error{Code: 14, Message: "retry " + id}
		}
		o.list = append(o.list, id+":ok")
		return nil
	}
}

func (o *outcomes) get() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.list...)
}

func TestPipelinedSendsAnsweredInOrder(t *testing.T) {
	// N sends are handed to the bus without waiting for each other; the
	// bus answers them newest first, and still the acks, and the done
	// calls, come in send order, with the ids the log gave. An error
	// event about a refusal after them comes after them.
	t.Parallel()
	const n = 20
	e, b, _ := pipelineHub(t, 32)
	b.reversed = true
	s, ft := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	ft.nextKind(t, api.Kind_KIND_LIVE)
	var o outcomes
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("c%d", i)
		if err := s.PublishAsync(context.Background(), &api.Message{Text: "m", ClientId: id}, o.done(id)); err != nil {
			t.Fatal(err)
		}
	}
	b.waitHeld(t, n) // all on their way at once
	s.SendError(&api.Error{Code: 3, Message: "refused"}, "late")
	ft.none(t) // nothing answered yet: the error waits behind the sends
	waited := make(chan []string, 1)
	go func() {
		if err := s.WaitPublishes(context.Background()); err != nil {
			t.Error(err)
		}
		waited <- o.get()
	}()
	b.release(t, n)
	for i := 1; i <= n; i++ {
		m := ft.nextAnswer(t)
		if m.GetKind() != api.Kind_KIND_ACK || m.GetClientId() != fmt.Sprintf("c%d", i) || m.GetSeq() != uint64(i) {
			t.Fatalf("answer %d: %v", i, m)
		}
	}
	if m := ft.nextAnswer(t); m.GetKind() != api.Kind_KIND_ERROR || m.GetClientId() != "late" {
		t.Fatalf("after the acks: %v, want the error event", m)
	}
	got := <-waited
	if len(got) != n {
		t.Fatalf("WaitPublishes returned with %d of %d sends answered", len(got), n)
	}
	for i, g := range got {
		if want := fmt.Sprintf("c%d:ok", i+1); g != want {
			t.Fatalf("done calls %v: #%d is %s, want %s", got, i, g, want)
		}
	}
	page, _ := e.log.Recent(context.Background(), hub.DefaultRoom, 100)
	for i, en := range page.Entries {
		if en.Seq != uint64(n-len(page.Entries)+i+1) {
			t.Fatalf("log %v", page.Entries)
		}
	}
}

func TestPipelinedSendsOnMemoryBroker(t *testing.T) {
	// On the in-process bus every answer is known in Submit: each send is
	// answered before PublishAsync returns, in order.
	t.Parallel()
	e := newHub(t, nil)
	s, ft := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	_, other := e.join(t, hub.JoinOptions{User: "b"}, false)
	ft.nextKind(t, api.Kind_KIND_LIVE)
	var o outcomes
	const n = 200
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("c%d", i)
		if err := s.PublishAsync(context.Background(), &api.Message{Text: id, ClientId: id}, o.done(id)); err != nil {
			t.Fatal(err)
		}
		if got := o.get(); len(got) != i || got[i-1] != id+":ok" {
			t.Fatalf("after send %d: done calls %v", i, got)
		}
	}
	for i := 1; i <= n; i++ {
		if m := ft.nextAnswer(t); m.GetSeq() != uint64(i) || m.GetClientId() != fmt.Sprintf("c%d", i) {
			t.Fatalf("ack %d: %v", i, m)
		}
		if m := other.next(t); m.GetText() != fmt.Sprintf("c%d", i) || m.GetSeq() != uint64(i) {
			t.Fatalf("delivery %d: %v", i, m)
		}
	}
}

func TestPipelineIsBounded(t *testing.T) {
	// With MaxInflightSends 4, a reader sending 20 messages has at most 4
	// on their way: the fifth call waits for an answer (back-pressure, no
	// error). The hub's gauge counts them and returns to zero.
	t.Parallel()
	const bound, n = 4, 20
	e, b, reg := pipelineHub(t, bound)
	s, ft := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	ft.nextKind(t, api.Kind_KIND_LIVE)
	var mu sync.Mutex
	returned := 0
	sent := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if err := s.PublishAsync(context.Background(), &api.Message{Text: "m", ClientId: fmt.Sprintf("c%d", i)}, nil); err != nil {
				sent <- err
				return
			}
			mu.Lock()
			returned++
			mu.Unlock()
		}
		sent <- nil
	}()
	for released := 0; released < n; released++ {
		b.waitHeld(t, min(bound, n-released))
		mu.Lock()
		r := returned
		mu.Unlock()
		if r > released+bound {
			t.Fatalf("%d calls returned with %d answered: over the bound %d", r, released, bound)
		}
		if got := gauge(t, reg, "chat_hub_inflight_publishes"); got > bound {
			t.Fatalf("gauge at %v, over the bound %d", got, bound)
		} else if released == 0 && got != bound {
			t.Fatalf("gauge at %v with the reader held, want %d", got, bound)
		}
		b.release(t, 1)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if m := ft.nextAnswer(t); m.GetSeq() != uint64(i) {
			t.Fatalf("ack %d: %v", i, m)
		}
	}
	if m := b.maxHeldSoFar(); m != bound {
		t.Fatalf("at most %d publishes held at once, want %d", m, bound)
	}
	if err := s.WaitPublishes(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The gauge drops just after the last answer is queued.
	deadline := time.Now().Add(5 * time.Second)
	for gauge(t, reg, "chat_hub_inflight_publishes") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("gauge does not return to zero")
		}
		time.Sleep(5 * time.Millisecond) // poll interval, bounded by deadline
	}
}

func TestPipelinedErrorInTheMiddle(t *testing.T) {
	// The fifth of ten sends fails at the bus: exactly that client_id gets
	// the error event (and done its error), the sends after it are stored
	// and acknowledged, in order.
	t.Parallel()
	const n = 10
	e, b, _ := pipelineHub(t, 32)
	b.fail[4] = true
	s, ft := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	ft.nextKind(t, api.Kind_KIND_LIVE)
	var o outcomes
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("c%d", i)
		if err := s.PublishAsync(context.Background(), &api.Message{Text: "m", ClientId: id}, o.done(id)); err != nil {
			t.Fatal(err)
		}
	}
	b.waitHeld(t, n)
	b.release(t, n)
	seq := uint64(0)
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("c%d", i)
		m := ft.nextAnswer(t)
		if i == 5 {
			if m.GetKind() != api.Kind_KIND_ERROR || m.GetClientId() != id || m.GetError().GetMessage() != "retry "+id {
				t.Fatalf("answer %d: %v, want the error event for %s", i, m, id)
			}
			continue
		}
		seq++
		if m.GetKind() != api.Kind_KIND_ACK || m.GetClientId() != id || m.GetSeq() != seq {
			t.Fatalf("answer %d: %v, want the ack of %s at seq %d", i, m, id, seq)
		}
	}
	if err := s.WaitPublishes(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := o.get()
	for i, g := range got {
		want := fmt.Sprintf("c%d:ok", i+1)
		if i == 4 {
			want = "c5:err"
		}
		if g != want {
			t.Fatalf("done calls %v: #%d is %s, want %s", got, i, g, want)
		}
	}
	page, _ := e.log.Recent(context.Background(), hub.DefaultRoom, 100)
	if len(page.Entries) != n-1 {
		t.Fatalf("log holds %d messages, want %d", len(page.Entries), n-1)
	}
	// The synchronous Publish waits for its own answer, behind nothing.
	b.fail[n] = true
	errc := make(chan error, 1)
	go func() { errc <- s.Publish(context.Background(), &api.Message{Text: "m", ClientId: "sync"}) }()
	b.waitHeld(t, 1)
	b.release(t, 1)
	if err := <-errc; hub.AsError(err) == nil || hub.AsError(err).Kind != hub.KindUnavailable {
		t.Fatalf("Publish of a failing send: %v, want KindUnavailable", err)
	}
}

func TestCloseWaitsForInflightAnswers(t *testing.T) {
	// An orderly close while sends are on their way: the writer waits for
	// their answers and writes the acks before it closes the transport.
	t.Parallel()
	const n = 5
	e, b, _ := pipelineHub(t, 32)
	s, ft := e.join(t, hub.JoinOptions{User: "a", Events: true}, false)
	ft.nextKind(t, api.Kind_KIND_LIVE)
	for i := 1; i <= n; i++ {
		if err := s.PublishAsync(context.Background(), &api.Message{Text: "m", ClientId: fmt.Sprintf("c%d", i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	b.waitHeld(t, n)
	s.Close(hub.CloseNormal)
	if err := s.PublishAsync(context.Background(), &api.Message{Text: "late"}, nil); hub.AsError(err) == nil || hub.AsError(err).Kind != hub.KindClosed {
		t.Fatalf("send after Close: %v, want KindClosed", err)
	}
	select {
	case r := <-ft.closed:
		t.Fatalf("closed (%v) with %d answers outstanding", r, n)
	case <-time.After(50 * time.Millisecond): // a writer that did not wait would have closed by now
	}
	b.release(t, n)
	for i := 1; i <= n; i++ {
		if m := ft.nextAnswer(t); m.GetKind() != api.Kind_KIND_ACK || m.GetSeq() != uint64(i) {
			t.Fatalf("ack %d: %v", i, m)
		}
	}
	select {
	case r := <-ft.closed:
		if r != hub.CloseNormal {
			t.Fatalf("closed with %v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not closed after the answers")
	}
	<-s.Context().Done()
}

func TestShutdownWaitsForInflightAnswers(t *testing.T) {
	// Shutdown returns only once the sends on their way are answered.
	t.Parallel()
	log := history.NewMemory(history.MemoryConfig{Size: 10})
	b := newSlowBroker(log)
	h, err := hub.New(hub.Config{Broker: b, History: log, SendRate: 1e6})
	if err != nil {
		t.Fatal(err)
	}
	ft := newFake(false)
	s, err := h.Join(context.Background(), ft, hub.JoinOptions{User: "a", Events: true, Transport: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.PublishAsync(context.Background(), &api.Message{Text: "m", ClientId: fmt.Sprint(i)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	b.waitHeld(t, 3)
	done := make(chan error, 1)
	go func() { done <- h.Shutdown(context.Background()) }()
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with answers outstanding", err)
	case <-time.After(50 * time.Millisecond): // a Shutdown that did not wait would have returned
	}
	b.release(t, 3)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	acks := 0
	for len(ft.frames) > 0 {
		if m := <-ft.frames; m.GetKind() == api.Kind_KIND_ACK {
			acks++
		}
	}
	if acks != 3 {
		t.Fatalf("%d acks written before the shutdown close, want 3", acks)
	}
}
