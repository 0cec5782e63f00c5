package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPairTracker(t *testing.T) {
	type verdict struct{ fresh, late bool }
	var (
		inOrder = verdict{true, false}
		late    = verdict{true, true}
		dup     = verdict{false, false}
	)
	cases := []struct {
		name        string
		firstWindow uint64
		seq         []uint64
		want        []verdict
	}{
		{"in order", 0, []uint64{0, 1, 2, 3}, []verdict{inOrder, inOrder, inOrder, inOrder}},
		{"starts mid-stream in warm-up", 5, []uint64{2, 3, 4, 5}, []verdict{inOrder, inOrder, inOrder, inOrder}},
		{"duplicate", 0, []uint64{0, 1, 1, 2, 0}, []verdict{inOrder, inOrder, dup, inOrder, dup}},
		{"swap", 0, []uint64{0, 2, 1, 3}, []verdict{inOrder, inOrder, late, inOrder}},
		{"swap then dup of the late one", 0, []uint64{0, 2, 1, 1}, []verdict{inOrder, inOrder, late, dup}},
		{"gap filled from the middle", 0, []uint64{0, 5, 3, 1, 4, 2, 3}, []verdict{inOrder, inOrder, late, late, late, late, dup}},
		{"first sighting after window start leaves a gap", 10, []uint64{12, 10, 11, 10}, []verdict{inOrder, late, late, dup}},
		{"warm-up gaps are not remembered", 10, []uint64{1, 4, 2, 12, 11}, []verdict{inOrder, inOrder, dup, inOrder, late}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var tr pairTracker
			for i, s := range c.seq {
				fresh, lt := tr.observe(s, c.firstWindow)
				if got := (verdict{fresh, lt}); got != c.want[i] {
					t.Errorf("message %d (counter %d): got %+v, want %+v", i, s, got, c.want[i])
				}
			}
		})
	}
}

func TestPairTrackerShuffled(t *testing.T) {
	// Any permutation of 0..n-1 with some repeats: every counter is fresh
	// exactly once, repeats are duplicates, and fresh arrivals below the
	// running maximum are exactly the late ones.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		n := 1 + rng.IntN(200)
		seq := rng.Perm(n)
		for range rng.IntN(20) {
			seq = slices.Insert(seq, rng.IntN(len(seq)+1), rng.IntN(n))
		}
		var tr pairTracker
		seen := map[int]bool{}
		hi := -1
		for _, s := range seq {
			fresh, late := tr.observe(uint64(s), 0)
			if fresh == seen[s] {
				t.Fatalf("%v: counter %d fresh=%v, seen before=%v", seq, s, fresh, seen[s])
			}
			if fresh && late != (s < hi) {
				t.Fatalf("%v: counter %d late=%v with max so far %d", seq, s, late, hi)
			}
			seen[s] = true
			hi = max(hi, s)
		}
		if len(tr.gaps) != 0 {
			t.Fatalf("%v: gaps left %v", seq, tr.gaps)
		}
	}
}

// TestObserve feeds a fake delivery sequence through one subscriber's
// accounting: warm-up messages, a lost one, a duplicate, a reordered pair
// and a foreign text.
func TestObserve(t *testing.T) {
	cfg := &config{pubs: 2, rooms: 1, roomsPerConn: 1, roomPrefix: "bench", subs: 1, rate: 10, batch: 1, warmup: time.Second, duration: time.Second}
	p := newPlan(cfg, time.Unix(1000, 0))
	// Publisher 0 ticks at t0 + k*100ms, publisher 1 50ms later: each has
	// 10 messages in the window, counters 10..19.
	for pub := range 2 {
		if got := p.first(pub); got != 10 {
			t.Fatalf("first window counter of publisher %d = %d, want 10", pub, got)
		}
		if got := p.firstCounterAt(pub, p.winEnd); got != 20 {
			t.Fatalf("publisher %d's window ends before counter %d, want 20", pub, got)
		}
	}
	s := newSubStats(p, 0)
	var seq uint64
	deliver := func(pub int, ctr uint64) {
		seq++
		at := p.intended(pub, ctr)
		observe(s, p, string(appendText(nil, pub, ctr, at, 40)), "bench0", seq, at+2_000_000) // 2 ms later
	}
	for c := uint64(8); c < 20; c++ { // 8, 9: warm-up
		switch c {
		case 13: // publisher 0's 13 is lost
		case 15: // and its 15 comes after 16
			deliver(0, 16)
		case 16:
			deliver(0, 15)
		default:
			deliver(0, c)
		}
		deliver(1, c)
	}
	deliver(1, 11)                                                // duplicate
	observe(s, p, "hello", "", 0, time.Now().UnixNano())          // foreign
	observe(s, p, "7:1:1:", "", 0, time.Now().UnixNano())         // no such publisher
	observe(s, p, "1:30:1:", "", seq+5, p.winEnd+1_000_000)       // after the window: ignored, but a seq gap
	observe(s, p, "1:31:1:", "bench1", seq+6, p.winEnd+1_000_000) // tagged with another room

	if got := s.inWin.Load(); got != 19 {
		t.Errorf("delivered %d, want 19", got)
	}
	if s.duplicated != 1 || s.reordered != 1 || s.foreign != 2 || s.seqGaps != 1 || s.wrongRoom != 1 {
		t.Errorf("duplicated %d, reordered %d, foreign %d, seq gaps %d, wrong room %d; want 1, 1, 2, 1, 1", s.duplicated, s.reordered, s.foreign, s.seqGaps, s.wrongRoom)
	}
	if s.recv.Load() != 25 {
		t.Errorf("received %d benchmark messages, want 25", s.recv.Load())
	}
	if n := s.hist.TotalCount(); n != 19 || s.hist.ValueAtQuantile(50) < 1990 || s.hist.ValueAtQuantile(50) > 2010 {
		t.Errorf("latency histogram: %d values, p50 %dµs; want 19 values of 2000µs", n, s.hist.ValueAtQuantile(50))
	}
	tot := mergeSubs([]*subStats{s, newSubStats(p, 0)})
	if tot.delivered != 19 || tot.duplicated != 1 || tot.hist.TotalCount() != 19 {
		t.Errorf("merged: %+v", tot)
	}
}

func TestPlanSchedule(t *testing.T) {
	cfg := &config{pubs: 3, rooms: 1, roomsPerConn: 1, rate: 1000, batch: 4, warmup: 1500 * time.Millisecond, duration: 2 * time.Second}
	p := newPlan(cfg, time.Now())
	for pub := range cfg.pubs {
		first := p.first(pub)
		if first%4 != 0 || p.intended(pub, first) < p.winStart || (first > 0 && p.intended(pub, first-1) >= p.winStart) {
			t.Errorf("publisher %d: first window counter %d is not the first at or after the window start", pub, first)
		}
		if p.intended(pub, first) != p.intended(pub, first+3) || p.intended(pub, first+4)-p.intended(pub, first) != int64(4*time.Millisecond) {
			t.Errorf("publisher %d: a batch of 4 should share a tick, ticks 4 ms apart", pub)
		}
		end := p.firstCounterAt(pub, p.winEnd)
		if n := end - first; n != 2000 {
			t.Errorf("publisher %d: %d messages in the window, want 2000", pub, n)
		}
	}
}

func TestCoarseHist(t *testing.T) {
	prev := -1
	for us := int64(0); us < 1<<22; us += 1 + us/7 {
		i := coarseIndex(us)
		if i < prev || us > coarseUpper(i) || (i > 0 && us <= coarseUpper(i-1)) {
			t.Fatalf("value %d in bucket %d [%d, %d]", us, i, coarseUpper(i-1)+1, coarseUpper(i))
		}
		prev = i
	}
	var counts [coarseBuckets]uint64
	if _, ok := coarseQuantile(&counts, 0.99); ok {
		t.Error("quantile of nothing")
	}
	for us := int64(1); us <= 1000; us++ {
		counts[coarseIndex(us)]++
	}
	p99, _ := coarseQuantile(&counts, 0.99)
	if p99 < 990 || p99 > 1250 {
		t.Errorf("p99 of 1..1000 = %d, want about 990", p99)
	}
}

func TestSpreadOverNodesAndRooms(t *testing.T) {
	cfg := &config{transport: transportMix, pubTransport: transportGRPC, subs: 40, pubs: 4, rooms: 2, roomsPerConn: 1,
		wsAddrs: []string{"w0", "w1"}, grpcAddrs: []string{"g0", "g1"}}
	type key struct{ room, addr string }
	perRoomAddr := map[key]int{}
	for i := range cfg.subs {
		perRoomAddr[key{cfg.room(i % cfg.rooms), cfg.subAddr(i)}]++
	}
	// 2 rooms x 4 addresses, 5 each.
	if len(perRoomAddr) != 8 {
		t.Errorf("subscribers by room and address: %v", perRoomAddr)
	}
	for k, n := range perRoomAddr {
		if n != 5 {
			t.Errorf("%v has %d subscribers, want 5", k, n)
		}
	}
	pubs := map[key]int{}
	for p := range cfg.pubs {
		pubs[key{cfg.room(p % cfg.rooms), cfg.pubAddr(p)}]++
	}
	if len(pubs) != 4 {
		t.Errorf("publishers by room and address: %v", pubs)
	}
	if cfg.subsInRoom(0)+cfg.subsInRoom(1) != 40 || cfg.pubsInRoom(1) != 2 {
		t.Error("room counts")
	}
}

// TestAccountSends: what publishers were told of their sends splits the
// missing deliveries into real losses (acknowledged, not delivered) and
// messages never acknowledged (the publisher closed before the node
// answered: never stored, or unknown) or rejected. The run used to call
// all of them lost.
func TestAccountSends(t *testing.T) {
	cfg := &config{pubs: 2, rooms: 1, roomsPerConn: 1, subs: 2, rate: 10, batch: 1, warmup: time.Second, duration: time.Second}
	p := newPlan(cfg, time.Unix(1000, 0)) // window counters 10..19 for both
	pubs := []*pubStats{newPubStats(0), newPubStats(0)}
	// Publisher 0 sent its whole window; the node answered 0..16, 12 with
	// an error; 17..19 were never answered.
	pubs[0].sentWindow = 10
	for c := range uint64(17) {
		pubs[0].answer(c == 12)
	}
	// Publisher 1 fell behind and sent 10..15 only, all acknowledged.
	pubs[1].sentWindow = 6
	for range 16 {
		pubs[1].answer(false)
	}
	a, b := newSubStats(p, 0), newSubStats(p, 0)
	deliver := func(s *subStats, pub int, ctrs ...uint64) {
		for _, c := range ctrs {
			at := p.intended(pub, c)
			observe(s, p, string(appendText(nil, pub, c, at, 40)), "", 0, at+1_000_000)
		}
	}
	// a misses 0's 12 (rejected), 14 (acknowledged: lost), 18 and 19
	// (never answered); it has 17, stored although its ack never came.
	deliver(a, 0, 10, 11, 13, 15, 16, 17)
	deliver(a, 1, 10, 11, 12, 13, 14, 15)
	// b has nothing of publisher 0, and misses 1's 12 (lost).
	deliver(b, 1, 10, 11, 13, 14, 15)

	got := accountSends(p, []*subStats{a, b}, pubs)
	want := sendAccount{acked: 6 + 6, unacked: 3, rejected: 1, missingAcked: 1 + 6 + 1, missingUnacked: 2 + 3, missingRejected: 1 + 1}
	if got != want {
		t.Fatalf("accountSends = %+v, want %+v", got, want)
	}
	r := buildResult(cfg, p, 0, []*subStats{a, b}, pubs, (10+6)*2)
	if r.Expected != 32 || r.Delivered != 17 || r.Missing != 15 || r.Lost != 8 || r.LostUnacked != 5 || r.LostRejected != 2 {
		t.Errorf("result: expected %d, delivered %d, missing %d, lost %d, lost unacked %d, lost rejected %d; want 32, 17, 15, 8, 5, 2",
			r.Expected, r.Delivered, r.Missing, r.Lost, r.LostUnacked, r.LostRejected)
	}
	var text strings.Builder
	if err := r.write(&text, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "missing 15: lost 8 (acked, not delivered), of unacked sends 5") {
		t.Errorf("report does not split the missing deliveries:\n%s", text.String())
	}
	var js strings.Builder
	if err := r.write(&js, true); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{`"lost": 8`, `"lost_unacked": 5`, `"lost_rejected": 2`, `"acked": 12`, `"unacked": 3`, `"missing": 15`} {
		if !strings.Contains(js.String(), f) {
			t.Errorf("-json output lacks %s:\n%s", f, js.String())
		}
	}
}
