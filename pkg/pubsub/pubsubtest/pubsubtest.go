// Package pubsubtest is the contract suite of pubsub.Broker and the
// history.Store reading what it stores. Every backend runs the same Run: the
// in-memory pair always, the Redis pair against a real redis-server.
package pubsubtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
)

// HistorySize is the per-room history cap the factory must configure.
const HistorySize = 40

// Resetter makes a backend lose room's log, as an expiry or a Redis restart
// without persistence would: for history.Memory its Reset, for Redis a DEL
// of the room's meta and log keys.
type Resetter func(t *testing.T, room string)

// Factory builds a fresh broker, its history store and its Resetter for one
// test, sharing no room with any other test, with HistorySize as the cap.
// It registers the cleanup of what it built; Close may also be called by
// the suite.
type Factory func(t *testing.T) (pubsub.Broker, history.Store, Resetter)

// env is one test's backends.
type env struct {
	t     *testing.T
	b     pubsub.Broker
	st    history.Store
	reset Resetter
	rec   *Recorder
	ctx   context.Context
}

func newEnv(t *testing.T, f Factory) *env {
	t.Helper()
	t.Parallel()
	b, st, reset := f(t)
	rec := NewRecorder()
	b.Register(rec)
	return &env{t: t, b: b, st: st, reset: reset, rec: rec, ctx: t.Context()}
}

func (e *env) publish(room, data string, opts pubsub.PublishOptions) pubsub.PublishResult {
	e.t.Helper()
	res, err := e.b.Publish(e.ctx, room, []byte(data), opts)
	if err != nil {
		e.t.Fatalf("Publish(%q, %q): %v", room, data, err)
	}
	return res
}

func (e *env) subscribe(room string) {
	e.t.Helper()
	if err := e.b.Subscribe(e.ctx, room); err != nil {
		e.t.Fatalf("Subscribe(%q): %v", room, err)
	}
}

func (e *env) recent(room string, limit int) history.Page {
	e.t.Helper()
	p, err := e.st.Recent(e.ctx, room, limit)
	if err != nil {
		e.t.Fatalf("Recent(%q, %d): %v", room, limit, err)
	}
	return p
}

func (e *env) since(room, epoch string, after uint64, limit int) history.Page {
	e.t.Helper()
	p, err := e.st.Since(e.ctx, room, epoch, after, limit)
	if err != nil {
		e.t.Fatalf("Since(%q, %q, %d, %d): %v", room, epoch, after, limit, err)
	}
	return p
}

// fill publishes n stored messages to room, data "m<seq>", and returns the
// epoch.
func (e *env) fill(room string, n int) string {
	e.t.Helper()
	var epoch string
	for i := range n {
		res := e.publish(room, fmt.Sprintf("m%d", i+1), pubsub.PublishOptions{})
		if res.Seq != uint64(i+1) {
			e.t.Fatalf("publish %d got seq %d", i+1, res.Seq)
		}
		epoch = res.Epoch
	}
	return epoch
}

// checkEntries fails unless page holds exactly the entries first..last,
// each with the data fill gives it.
func checkEntries(t *testing.T, what string, entries []history.Entry, first, last uint64) {
	t.Helper()
	var got []uint64
	for _, e := range entries {
		got = append(got, e.Seq)
	}
	want := []uint64{}
	for s := first; s <= last && first != 0; s++ {
		want = append(want, s)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: entries %v, want %v", what, got, want)
	}
	for _, e := range entries {
		if want := fmt.Sprintf("m%d", e.Seq); string(e.Data) != want {
			t.Fatalf("%s: entry %d holds %q, want %q", what, e.Seq, e.Data, want)
		}
	}
}

// Run runs the contract suite on the backends f builds.
func Run(t *testing.T, f Factory) {
	t.Run("SeqPerRoom", func(t *testing.T) {
		e := newEnv(t, f)
		var epoch string
		for i := 1; i <= 3; i++ {
			res := e.publish("a", "x", pubsub.PublishOptions{})
			if res.Seq != uint64(i) || res.Duplicate || res.Epoch == "" {
				t.Fatalf("publish %d: %+v", i, res)
			}
			if epoch != "" && res.Epoch != epoch {
				t.Fatalf("epoch changed from %q to %q", epoch, res.Epoch)
			}
			epoch = res.Epoch
		}
		if res := e.publish("b", "x", pubsub.PublishOptions{}); res.Seq != 1 {
			t.Fatalf("other room starts at %d, want 1", res.Seq)
		}
	})

	t.Run("Recent", func(t *testing.T) {
		e := newEnv(t, f)
		if p := e.recent("a", 10); len(p.Entries) != 0 || p.Position != (history.Position{}) || p.Truncated {
			t.Fatalf("empty room: %+v", p)
		}
		epoch := e.fill("a", 5)
		p := e.recent("a", 3)
		checkEntries(t, "Recent(3)", p.Entries, 3, 5)
		if p.Position != (history.Position{Epoch: epoch, Seq: 5}) {
			t.Fatalf("position %+v, want %s/5", p.Position, epoch)
		}
		checkEntries(t, "Recent(10)", e.recent("a", 10).Entries, 1, 5)
		if p := e.recent("a", 0); len(p.Entries) != 0 || p.Position.Seq != 5 {
			t.Fatalf("Recent(0): %+v", p)
		}
	})

	t.Run("CapTrims", func(t *testing.T) {
		e := newEnv(t, f)
		e.fill("a", HistorySize+5)
		checkEntries(t, "Recent(all)", e.recent("a", 1000).Entries, 6, HistorySize+5)
	})

	t.Run("Since", func(t *testing.T) {
		e := newEnv(t, f)
		epoch := e.fill("a", 10)
		for _, tc := range []struct {
			name         string
			epoch        string
			after        uint64
			limit        int
			first, last  uint64
			wantTruncate bool
		}{
			{"middle", epoch, 3, 4, 4, 7, false},
			{"to head", epoch, 3, 100, 4, 10, false},
			{"from start", epoch, 0, 100, 1, 10, false},
			{"any epoch", "", 8, 100, 9, 10, false},
			{"at head", epoch, 10, 5, 0, 0, false},
			{"past head: the log went back", epoch, 12, 5, 6, 10, true},
			{"zero limit", epoch, 3, 0, 0, 0, false},
			{"wrong epoch", "not-" + epoch, 3, 4, 7, 10, true},
		} {
			p := e.since("a", tc.epoch, tc.after, tc.limit)
			checkEntries(t, tc.name, p.Entries, tc.first, tc.last)
			if p.Truncated != tc.wantTruncate || p.Position != (history.Position{Epoch: epoch, Seq: 10}) {
				t.Fatalf("%s: truncated %v position %+v", tc.name, p.Truncated, p.Position)
			}
		}
		// Past the cap: entries 1..5 of HistorySize+5 are gone.
		e.fill("b", HistorySize+5)
		pb := e.since("b", "", 2, 3)
		checkEntries(t, "older than kept", pb.Entries, HistorySize+3, HistorySize+5)
		if !pb.Truncated {
			t.Fatalf("older than kept: not truncated")
		}
		pb = e.since("b", "", 5, 3) // 6 is the oldest kept: nothing missed
		checkEntries(t, "oldest kept", pb.Entries, 6, 8)
		if pb.Truncated {
			t.Fatalf("oldest kept: truncated")
		}
		if p := e.since("nothing", "", 0, 10); len(p.Entries) != 0 || p.Truncated {
			t.Fatalf("empty room: %+v", p)
		}
	})

	t.Run("Position", func(t *testing.T) {
		e := newEnv(t, f)
		if pos, err := e.st.Position(e.ctx, "a"); err != nil || pos != (history.Position{}) {
			t.Fatalf("empty room: %+v, %v", pos, err)
		}
		e.publish("a", "x", pubsub.PublishOptions{})
		res := e.publish("a", "y", pubsub.PublishOptions{})
		pos, err := e.st.Position(e.ctx, "a")
		if err != nil || pos != (history.Position{Epoch: res.Epoch, Seq: 2}) {
			t.Fatalf("position %+v, %v; want %s/2", pos, err, res.Epoch)
		}
	})

	t.Run("Idempotency", func(t *testing.T) {
		e := newEnv(t, f)
		e.subscribe("a")
		first := e.publish("a", "m1", pubsub.PublishOptions{IdempotencyKey: "alice:1"})
		again := e.publish("a", "m1", pubsub.PublishOptions{IdempotencyKey: "alice:1"})
		if first.Seq != 1 || first.Duplicate || !again.Duplicate || again.Seq != 1 || again.Epoch != first.Epoch {
			t.Fatalf("first %+v, retry %+v", first, again)
		}
		other := e.publish("a", "m2", pubsub.PublishOptions{IdempotencyKey: "bob:1"})
		if other.Seq != 2 || other.Duplicate {
			t.Fatalf("other key: %+v", other)
		}
		checkEntries(t, "stored", e.recent("a", 10).Entries, 1, 2)
		if env := e.rec.Next(t); env.Seq != 1 {
			t.Fatalf("first delivery %+v", env)
		}
		if env := e.rec.Next(t); env.Seq != 2 { // the retry was not delivered
			t.Fatalf("second delivery %+v, want seq 2", env)
		}
	})

	t.Run("Ephemeral", func(t *testing.T) {
		e := newEnv(t, f)
		e.subscribe("a")
		res := e.publish("a", "typing", pubsub.PublishOptions{Ephemeral: true, IdempotencyKey: "ignored"})
		if res != (pubsub.PublishResult{}) {
			t.Fatalf("ephemeral result %+v", res)
		}
		env := e.rec.Next(t)
		if env.Room != "a" || env.Seq != 0 || env.Epoch != "" || string(env.Data) != "typing" {
			t.Fatalf("ephemeral delivery %+v", env)
		}
		if p := e.recent("a", 10); len(p.Entries) != 0 || p.Position.Seq != 0 {
			t.Fatalf("ephemeral was stored: %+v", p)
		}
		if res := e.publish("a", "m1", pubsub.PublishOptions{}); res.Seq != 1 {
			t.Fatalf("stored publish after ephemeral got seq %d", res.Seq)
		}
	})

	t.Run("SubscribeThenPublish", func(t *testing.T) {
		e := newEnv(t, f)
		data := []byte("a:b:\x00\xff binary, with colons")
		e.subscribe("a")
		e.subscribe("a") // harmless
		res, err := e.b.Publish(e.ctx, "a", data, pubsub.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		env := e.rec.Next(t)
		if env.Room != "a" || env.Seq != res.Seq || env.Epoch != res.Epoch || !bytes.Equal(env.Data, data) {
			t.Fatalf("delivery %+v, want %+v with %q", env, res, data)
		}
		if p := e.recent("a", 1); len(p.Entries) != 1 || !bytes.Equal(p.Entries[0].Data, data) {
			t.Fatalf("stored %+v", p)
		}
		if got := e.rec.Pending(); len(got) != 0 {
			t.Fatalf("delivered twice: %+v", got)
		}
	})

	t.Run("Unsubscribe", func(t *testing.T) {
		e := newEnv(t, f)
		e.subscribe("a")
		e.subscribe("b")
		if err := e.b.Unsubscribe(e.ctx, "a"); err != nil {
			t.Fatal(err)
		}
		e.publish("a", "gone", pubsub.PublishOptions{})
		e.publish("b", "marker", pubsub.PublishOptions{})
		e.rec.NextIn(t, "b") // fails on a delivery of "a" before the marker
		e.subscribe("a")     // and back
		e.publish("a", "back", pubsub.PublishOptions{})
		if env := e.rec.NextIn(t, "a"); string(env.Data) != "back" || env.Seq != 2 {
			t.Fatalf("after resubscribe: %+v", env)
		}
	})

	t.Run("OrderUnderConcurrentPublishers", func(t *testing.T) {
		e := newEnv(t, f)
		e.subscribe("a")
		const publishers, each = 4, 200
		var wg sync.WaitGroup
		errs := make(chan error, publishers)
		for p := range publishers {
			wg.Go(func() {
				for i := range each {
					data := fmt.Sprintf("p%d-%d", p, i)
					if _, err := e.b.Publish(e.ctx, "a", []byte(data), pubsub.PublishOptions{}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		last := map[int]int{} // per publisher, its last index delivered
		for want := uint64(1); want <= publishers*each; want++ {
			env := e.rec.Next(t)
			if env.Seq != want {
				t.Fatalf("delivery %d has seq %d", want, env.Seq)
			}
			var p, i int
			if _, err := fmt.Sscanf(string(env.Data), "p%d-%d", &p, &i); err != nil {
				t.Fatalf("delivery %d: %q", want, env.Data)
			}
			if prev, ok := last[p]; ok && i != prev+1 || !ok && i != 0 {
				t.Fatalf("publisher %d: message %d delivered after %d", p, i, prev)
			}
			last[p] = i
		}
		// The log agrees with the delivery order.
		p := e.recent("a", HistorySize)
		if n := len(p.Entries); n != HistorySize || p.Entries[n-1].Seq != publishers*each {
			t.Fatalf("log tail %+v", p.Position)
		}
	})

	t.Run("SubmitOrder", func(t *testing.T) {
		// Many submits from one goroutine, answers waited for only at the
		// end, land in submit order: ids, deliveries and the log agree.
		// Ephemeral events and another room interleave.
		e := newEnv(t, f)
		sub, ok := e.b.(pubsub.Submitter)
		if !ok {
			t.Skip("the broker is not a Submitter")
		}
		e.subscribe("a")
		const n = 300
		pending := make([]*pubsub.Pending, 0, n)
		for i := range n {
			pending = append(pending, sub.Submit(e.ctx, "a", []byte(fmt.Sprintf("m%d", i+1)), pubsub.PublishOptions{}))
			switch i % 50 {
			case 10:
				sub.Submit(e.ctx, "a", []byte("typing"), pubsub.PublishOptions{Ephemeral: true})
			case 20:
				sub.Submit(e.ctx, "b", []byte("other"), pubsub.PublishOptions{})
			}
		}
		var epoch string
		for i, p := range pending {
			res, err := p.Wait(e.ctx)
			if err != nil {
				t.Fatalf("submit %d: %v", i+1, err)
			}
			if res.Seq != uint64(i+1) || res.Duplicate || (epoch != "" && res.Epoch != epoch) {
				t.Fatalf("submit %d answered %+v (epoch %q)", i+1, res, epoch)
			}
			epoch = res.Epoch
			select {
			case <-p.Done():
			default:
				t.Fatalf("submit %d: Done not closed after Wait answered", i+1)
			}
		}
		for want := uint64(1); want <= n; want++ {
			env := e.rec.NextIn(t, "a")
			for env.Seq == 0 { // the typing events
				env = e.rec.NextIn(t, "a")
			}
			if env.Seq != want || string(env.Data) != fmt.Sprintf("m%d", want) {
				t.Fatalf("delivery %d: %+v", want, env)
			}
		}
		checkEntries(t, "log", e.recent("a", HistorySize).Entries, n-HistorySize+1, n)
	})

	t.Run("SubmitWaitEndsWithContext", func(t *testing.T) {
		e := newEnv(t, f)
		sub, ok := e.b.(pubsub.Submitter)
		if !ok {
			t.Skip("the broker is not a Submitter")
		}
		p := sub.Submit(e.ctx, "a", []byte("m1"), pubsub.PublishOptions{})
		ctx, cancel := context.WithCancel(e.ctx)
		cancel()
		// Either answered already, or "may or may not be stored".
		if _, err := p.Wait(ctx); err != nil && !errors.Is(err, pubsub.ErrUnavailable) {
			t.Fatalf("Wait with an ended context: %v, want nil or ErrUnavailable", err)
		}
		if res, err := p.Wait(e.ctx); err != nil || res.Seq != 1 {
			t.Fatalf("Wait again: %+v, %v", res, err)
		}
	})

	t.Run("EpochChangesAfterLoss", func(t *testing.T) {
		e := newEnv(t, f)
		old := e.fill("a", 3)
		e.reset(t, "a")
		if pos, err := e.st.Position(e.ctx, "a"); err != nil || pos != (history.Position{}) {
			t.Fatalf("after reset: %+v, %v", pos, err)
		}
		res := e.publish("a", "m1", pubsub.PublishOptions{})
		if res.Seq != 1 || res.Epoch == "" || res.Epoch == old {
			t.Fatalf("after reset: %+v (old epoch %s)", res, old)
		}
		p := e.since("a", old, 3, 10)
		checkEntries(t, "since old epoch", p.Entries, 1, 1)
		if !p.Truncated || p.Position != (history.Position{Epoch: res.Epoch, Seq: 1}) {
			t.Fatalf("since old epoch: %+v", p)
		}
	})

	runState(t, f)

	t.Run("Closed", func(t *testing.T) {
		e := newEnv(t, f)
		if err := e.b.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.b.Publish(e.ctx, "a", []byte("x"), pubsub.PublishOptions{}); !errors.Is(err, pubsub.ErrClosed) {
			t.Fatalf("Publish after Close: %v", err)
		}
		if sub, ok := e.b.(pubsub.Submitter); ok {
			if _, err := sub.Submit(e.ctx, "a", []byte("x"), pubsub.PublishOptions{}).Wait(e.ctx); !errors.Is(err, pubsub.ErrClosed) {
				t.Fatalf("Submit after Close: %v", err)
			}
		}
		if err := e.b.Subscribe(e.ctx, "a"); !errors.Is(err, pubsub.ErrClosed) {
			t.Fatalf("Subscribe after Close: %v", err)
		}
	})
}
