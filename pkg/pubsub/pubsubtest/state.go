package pubsubtest

import (
	"errors"
	"fmt"
	"testing"

	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
)

// runState is the contract of scrollback (Before), events (edits, deletes,
// reactions, history.Effect) and unread counts (history.Summarizer).
func runState(t *testing.T, f Factory) {
	t.Run("Before", func(t *testing.T) {
		e := newEnv(t, f)
		epoch := e.fill("a", 15)
		before := func(ep string, seq uint64, limit int) history.Page {
			t.Helper()
			p, err := e.st.Before(e.ctx, "a", ep, seq, limit)
			if err != nil {
				t.Fatalf("Before(%d, %d): %v", seq, limit, err)
			}
			return p
		}
		p := before(epoch, 0, 5)
		checkEntries(t, "newest page", p.Entries, 11, 15)
		if p.Truncated || p.Oldest != 1 || p.Position.Seq != 15 {
			t.Fatalf("newest page: %+v", p)
		}
		checkEntries(t, "page before 11", before(epoch, 11, 5).Entries, 6, 10)
		p = before(epoch, 4, 5)
		checkEntries(t, "page before 4", p.Entries, 1, 3)
		if p.Truncated {
			t.Fatal("a page reaching seq 1 is not truncated")
		}
		checkEntries(t, "page before 1", before(epoch, 1, 5).Entries, 0, 0)
		checkEntries(t, "past the head", before(epoch, 99, 3).Entries, 13, 15)
		if p := before("other", 5, 2); !p.Truncated {
			t.Fatalf("another epoch's cursor: %+v", p)
		} else {
			checkEntries(t, "another epoch's cursor", p.Entries, 14, 15)
		}
		// Past the cap (HistorySize), the log's start is reported.
		e.fill2("a", 16, HistorySize+10)
		p = before(epoch, 15, 100)
		first := uint64(HistorySize+10) - HistorySize + 1
		checkEntries(t, "page at the log's start", p.Entries, first, 14)
		if !p.Truncated || p.Oldest != first {
			t.Fatalf("page at the log's start: truncated %v oldest %d, want true %d", p.Truncated, p.Oldest, first)
		}
	})

	t.Run("Effects", func(t *testing.T) {
		e := newEnv(t, f)
		e.subscribe("a")
		epoch := e.fill("a", 3)
		event := func(data string, eff history.Effect) (pubsub.PublishResult, error) {
			eff.Epoch = epoch
			return e.b.Publish(e.ctx, "a", []byte(data), pubsub.PublishOptions{Effect: &eff})
		}
		must := func(data string, eff history.Effect) pubsub.PublishResult {
			t.Helper()
			res, err := event(data, eff)
			if err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			return res
		}
		state := func(seq uint64) *history.State {
			t.Helper()
			p := e.since("a", epoch, seq-1, 1)
			if len(p.Entries) != 1 || p.Entries[0].Seq != seq {
				t.Fatalf("entry %d: %+v", seq, p.Entries)
			}
			return p.Entries[0].State
		}
		if st := state(1); st != nil {
			t.Fatalf("untouched message has state %+v", st)
		}
		if res := must("e4", history.Effect{Op: history.OpEdit, Target: 1, Text: "new"}); res.Seq != 4 {
			t.Fatalf("edit stored at %d", res.Seq)
		}
		if st := state(1); st == nil || !st.Edited || st.Text != "new" || st.Rev != 4 {
			t.Fatalf("after the edit: %+v", st)
		}
		r5 := must("on", history.Effect{Op: history.OpReact, Target: 2, Text: "👍", User: "u1", Off: []byte("off")})
		r6 := must("on", history.Effect{Op: history.OpReact, Target: 2, Text: "👍", User: "u2", Off: []byte("off")})
		r7 := must("on", history.Effect{Op: history.OpReact, Target: 2, Text: "👍", User: "u1", Off: []byte("off")})
		if !r5.Reacted || !r6.Reacted || r7.Reacted {
			t.Fatalf("toggles reacted %v %v %v, want true true false", r5.Reacted, r6.Reacted, r7.Reacted)
		}
		if st := state(2); st == nil || st.Reactions["👍"] != 1 || st.Rev != 7 || len(st.Reactions) != 1 {
			t.Fatalf("after three toggles: %+v", st)
		}
		// The removing toggle stored its Off data, live and in the log.
		if p := e.since("a", epoch, 6, 1); string(p.Entries[0].Data) != "off" {
			t.Fatalf("a removing toggle stored %q", p.Entries[0].Data)
		}
		for {
			env := e.rec.NextIn(t, "a")
			if env.Seq < 7 {
				continue
			}
			if env.Seq != 7 || string(env.Data) != "off" {
				t.Fatalf("a removing toggle delivered %d %q", env.Seq, env.Data)
			}
			break
		}
		must("d8", history.Effect{Op: history.OpDelete, Target: 2})
		if st := state(2); st == nil || !st.Deleted || st.Text != "" || len(st.Reactions) != 0 || st.Rev != 8 {
			t.Fatalf("after the delete: %+v", st)
		}
		for _, eff := range []history.Effect{
			{Op: history.OpEdit, Target: 2, Text: "x"},  // deleted
			{Op: history.OpEdit, Target: 0, Text: "x"},  // no such message
			{Op: history.OpEdit, Target: 99, Text: "x"}, // not yet
		} {
			if res, err := event("refused", eff); !errors.Is(err, history.ErrTarget) {
				t.Fatalf("event %+v: %+v, %v; want ErrTarget", eff, res, err)
			}
		}
		eff := history.Effect{Op: history.OpEdit, Target: 1, Text: "x", Epoch: "other"}
		if _, err := e.b.Publish(e.ctx, "a", []byte("x"), pubsub.PublishOptions{Effect: &eff}); !errors.Is(err, history.ErrTarget) {
			t.Fatalf("an event of another epoch: %v", err)
		}
		if pos, _ := e.st.Position(e.ctx, "a"); pos.Seq != 8 {
			t.Fatalf("refused events took ids: position %+v", pos)
		}
		// An idempotent retry of an event applies it once.
		key := pubsub.PublishOptions{IdempotencyKey: "k1", Effect: &history.Effect{Op: history.OpReact, Target: 1, Text: "🎉", User: "u", Epoch: epoch, Off: []byte("off")}}
		a, err1 := e.b.Publish(e.ctx, "a", []byte("on"), key)
		b, err2 := e.b.Publish(e.ctx, "a", []byte("on"), key)
		if err1 != nil || err2 != nil || !b.Duplicate || a.Seq != b.Seq {
			t.Fatalf("retried event: %+v %v, %+v %v", a, err1, b, err2)
		}
		if st := state(1); st.Reactions["🎉"] != 1 || !st.Edited {
			t.Fatalf("after a retried reaction: %+v", st)
		}
		// Distinct emoji are bounded.
		for i := range history.MaxReactions {
			must("on", history.Effect{Op: history.OpReact, Target: 3, Text: fmt.Sprintf("e%d", i), User: "u", Off: []byte("off")})
		}
		if _, err := event("on", history.Effect{Op: history.OpReact, Target: 3, Text: "one more", User: "u", Off: []byte("off")}); !errors.Is(err, history.ErrTooManyReactions) {
			t.Fatalf("reaction past MaxReactions: %v", err)
		}
		must("on", history.Effect{Op: history.OpReact, Target: 3, Text: "e0", User: "v", Off: []byte("off")})
	})

	t.Run("StateLeavesWithTheLog", func(t *testing.T) {
		e := newEnv(t, f)
		epoch := e.fill("a", 2)
		eff := history.Effect{Op: history.OpEdit, Target: 1, Text: "new", Epoch: epoch}
		if _, err := e.b.Publish(e.ctx, "a", []byte("edit"), pubsub.PublishOptions{Effect: &eff}); err != nil {
			t.Fatal(err)
		}
		e.fill2("a", 4, HistorySize+5)
		p := e.recent("a", HistorySize)
		for _, en := range p.Entries {
			if en.State != nil {
				t.Fatalf("entry %d has state %+v", en.Seq, en.State)
			}
		}
		// The events trimmed out of the log are not counted.
		if s, ok := e.st.(history.Summarizer); ok {
			sum, err := s.Summaries(e.ctx, []history.Read{{Room: "a"}})
			if err != nil || sum[0].Unread != HistorySize {
				t.Fatalf("unread of a log without events: %+v %v, want %d", sum, err, HistorySize)
			}
		}
		// A lost log's state is gone with it: the new epoch's message 1
		// does not inherit the old one's edit.
		epoch = e.fill("b", 1)
		eff = history.Effect{Op: history.OpEdit, Target: 1, Text: "new", Epoch: epoch}
		if _, err := e.b.Publish(e.ctx, "b", []byte("edit"), pubsub.PublishOptions{Effect: &eff}); err != nil {
			t.Fatal(err)
		}
		e.reset(t, "b")
		e.fill("b", 1)
		if p := e.recent("b", 1); len(p.Entries) != 1 || p.Entries[0].State != nil {
			t.Fatalf("a new epoch's message 1: %+v", p.Entries)
		}
	})

	t.Run("Unread", func(t *testing.T) {
		e := newEnv(t, f)
		s, ok := e.st.(history.Summarizer)
		if !ok {
			t.Skip("store has no Summaries")
		}
		epoch := e.fill("a", 10)
		for _, target := range []uint64{2, 8} { // events 11 and 12
			eff := history.Effect{Op: history.OpEdit, Target: target, Text: "x", Epoch: epoch}
			if _, err := e.b.Publish(e.ctx, "a", []byte("edit"), pubsub.PublishOptions{Effect: &eff}); err != nil {
				t.Fatal(err)
			}
		}
		e.fill2("a", 13, 14) // messages 13, 14
		reads := []history.Read{
			{Room: "a"},                        // nothing read: 12 messages
			{Room: "a", Epoch: epoch, Seq: 5},  // 6-10, 13, 14
			{Room: "a", Epoch: epoch, Seq: 11}, // 13, 14
			{Room: "a", Epoch: epoch, Seq: 14}, // none
			{Room: "a", Epoch: "old", Seq: 9},  // another epoch: all
			{Room: "none", Epoch: epoch, Seq: 3},
		}
		got, err := s.Summaries(e.ctx, reads)
		if err != nil {
			t.Fatal(err)
		}
		want := []int{12, 7, 2, 0, 12, 0}
		for i, w := range want {
			if got[i].Unread != w {
				t.Errorf("read %+v: unread %d, want %d", reads[i], got[i].Unread, w)
			}
		}
		if got[0].Position != (history.Position{Epoch: epoch, Seq: 14}) || got[5].Position != (history.Position{}) {
			t.Errorf("positions %+v", got)
		}
	})
}

// fill2 publishes stored messages from..to to room, data "m<seq>".
func (e *env) fill2(room string, from, to int) {
	e.t.Helper()
	for i := from; i <= to; i++ {
		if res := e.publish(room, fmt.Sprintf("m%d", i), pubsub.PublishOptions{}); res.Seq != uint64(i) {
			e.t.Fatalf("publish %d got seq %d", i, res.Seq)
		}
	}
}
