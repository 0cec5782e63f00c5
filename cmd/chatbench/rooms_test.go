package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRoomAssignment: every connection gets K distinct rooms, the rooms'
// subscription counts are what subsInRoom says and differ by one at most,
// every room has a subscriber once subs*K >= R, subRoomIndex inverts
// subRoom, and K = 1 is the one-room assignment (room i mod R).
func TestRoomAssignment(t *testing.T) {
	for _, c := range []struct{ subs, rooms, k int }{
		{1000, 100, 20}, {1000, 100, 1}, {7, 5, 1}, {3, 10, 4}, {10, 7, 3}, {100, 100, 100}, {1, 1, 1}, {5, 100, 20}, {13, 6, 6},
	} {
		t.Run(fmt.Sprintf("subs=%d,rooms=%d,k=%d", c.subs, c.rooms, c.k), func(t *testing.T) {
			cfg := &config{subs: c.subs, rooms: c.rooms, roomsPerConn: c.k}
			count := make([]int, c.rooms)
			for i := range c.subs {
				var got []int
				for j := range c.k {
					r := cfg.subRoom(i, j)
					if r < 0 || r >= c.rooms {
						t.Fatalf("connection %d: room %d out of range", i, r)
					}
					if idx := cfg.subRoomIndex(i, r); idx != j {
						t.Fatalf("connection %d: subRoomIndex(room %d) = %d, want %d", i, r, idx, j)
					}
					got = append(got, r)
					count[r]++
				}
				slices.Sort(got)
				if len(slices.Compact(got)) != c.k {
					t.Fatalf("connection %d: rooms %v are not %d distinct ones", i, got, c.k)
				}
				in := 0
				for r := range c.rooms {
					if cfg.subRoomIndex(i, r) >= 0 {
						in++
					}
				}
				if in != c.k {
					t.Fatalf("connection %d: subRoomIndex says it is in %d rooms, want %d", i, in, c.k)
				}
				if c.k == 1 && got[0] != i%c.rooms {
					t.Fatalf("connection %d: one room %d, want %d as before", i, got[0], i%c.rooms)
				}
			}
			for _, bad := range []int{-1, c.rooms} {
				if cfg.subRoomIndex(0, bad) != -1 {
					t.Errorf("subRoomIndex(0, %d) should be -1", bad)
				}
			}
			total := 0
			for r, n := range count {
				if n != cfg.subsInRoom(r) {
					t.Errorf("room %d: %d subscriptions, subsInRoom says %d", r, n, cfg.subsInRoom(r))
				}
				if c.subs*c.k >= c.rooms && n == 0 {
					t.Errorf("room %d has no subscriber", r)
				}
				total += n
			}
			if total != c.subs*c.k || slices.Max(count)-slices.Min(count) > 1 {
				t.Errorf("subscriptions by room %v: want %d in all, within one of each other", count, c.subs*c.k)
			}
		})
	}
}

// TestSpreadManyRoomsOverNodes: with 1000 connections in 20 of 100 rooms
// on three nodes, every room has subscribers on every node, each node gets
// a third of the connections, and with mix both transports reach every
// room.
func TestSpreadManyRoomsOverNodes(t *testing.T) {
	for _, tr := range []string{transportWS, transportMix} {
		t.Run(tr, func(t *testing.T) {
			cfg := &config{transport: tr, subs: 1000, rooms: 100, roomsPerConn: 20,
				wsAddrs: []string{"w0", "w1", "w2"}, grpcAddrs: []string{"g0", "g1", "g2"}}
			perAddr := map[string]int{}
			roomAddrs := make([]map[string]bool, cfg.rooms)
			for i := range cfg.subs {
				a := cfg.subAddr(i)
				perAddr[a]++
				for j := range cfg.roomsPerConn {
					r := cfg.subRoom(i, j)
					if roomAddrs[r] == nil {
						roomAddrs[r] = map[string]bool{}
					}
					roomAddrs[r][a] = true
				}
			}
			want := 3
			if tr == transportMix {
				want = 6
			}
			if len(perAddr) != want {
				t.Fatalf("connections by address %v: want %d addresses", perAddr, want)
			}
			for a, n := range perAddr {
				if share := float64(n) / float64(cfg.subs) * float64(want); share < 0.85 || share > 1.15 {
					t.Errorf("address %s has %d connections of %d: not its share", a, n, cfg.subs)
				}
			}
			for r, as := range roomAddrs {
				if len(as) != want {
					t.Errorf("room %d is on %d addresses %v, want %d", r, len(as), as, want)
				}
			}
		})
	}
}

// TestObserveManyRooms feeds one connection in three of five rooms the
// messages of their publishers (two per room), interleaved across rooms,
// with each room's own sequence ids: a loss in one room, a duplicate and a
// reordered pair in another, a message of a room it is not in, messages
// tagged with the wrong room or none. Each is counted once, in its room,
// and the missing deliveries are placed.
func TestObserveManyRooms(t *testing.T) {
	cfg := &config{subs: 5, pubs: 10, rooms: 5, roomsPerConn: 3, roomPrefix: "r", rate: 10, batch: 1, warmup: time.Second, duration: time.Second}
	p := newPlan(cfg, time.Unix(1000, 0)) // window counters 10..19 for every publisher
	// Connection 4's rooms: 12, 13, 14 mod 5 = 2, 3, 4.
	const id = 4
	if got := []int{cfg.subRoom(id, 0), cfg.subRoom(id, 1), cfg.subRoom(id, 2)}; !slices.Equal(got, []int{2, 3, 4}) {
		t.Fatalf("connection %d's rooms %v, want [2 3 4]", id, got)
	}
	s := newSubStats(p, id)
	if len(s.pairs) != 6 {
		t.Fatalf("%d trackers, want 6 (two publishers in each of three rooms)", len(s.pairs))
	}
	seq := map[int]uint64{}
	deliverAs := func(pub int, ctr uint64, room string) {
		r := pub % cfg.rooms
		seq[r]++
		at := p.intended(pub, ctr)
		observe(s, p, appendText(nil, pub, ctr, at, 40), []byte(room), seq[r], at+3_000_000)
	}
	deliver := func(pub int, ctr uint64) { deliverAs(pub, ctr, cfg.room(pub%cfg.rooms)) }
	// Publishers of rooms 2, 3, 4: 2 and 7, 3 and 8, 4 and 9.
	for c := uint64(8); c < 20; c++ { // 8, 9: warm-up
		for _, pub := range []int{2, 3, 4, 7, 8, 9} {
			switch {
			case pub == 3 && c == 12: // lost in room 3
				seq[3]++ // the room's seq moves on: one gap
			case pub == 9 && c == 14:
				deliver(9, 15)
			case pub == 9 && c == 15:
				deliver(9, 14) // reordered in room 4
			default:
				deliver(pub, c)
			}
		}
	}
	deliver(7, 11) // duplicate in room 2 (its room's seq moves on, in order)
	if s.wrongRoom != 0 {
		t.Fatalf("wrong room %d before any was sent", s.wrongRoom)
	}
	at := p.intended(1, 15)
	observe(s, p, string(appendText(nil, 1, 15, at, 40)), "r1", 99, at) // room 1: not subscribed
	observe(s, p, string(appendText(nil, 2, 15, at, 40)), "r3", 99, at) // publisher 2 is in room 2
	observe(s, p, string(appendText(nil, 2, 15, at, 40)), "", 99, at)   // a multi-room stream must tag
	observe(s, p, string(appendText(nil, 2, 15, at, 40)), "r02", 99, at)

	// 6 publishers x 10 window messages, less the lost one.
	if got := s.inWin.Load(); got != 59 {
		t.Errorf("delivered %d, want 59", got)
	}
	if s.duplicated != 1 || s.reordered != 1 || s.wrongRoom != 4 || s.foreign != 0 {
		t.Errorf("duplicated %d, reordered %d, wrong room %d, foreign %d; want 1, 1, 4, 0", s.duplicated, s.reordered, s.wrongRoom, s.foreign)
	}
	// The rooms' seqs interleave without a gap, but for room 3's loss.
	if s.seqGaps != 1 {
		t.Errorf("seq gaps %d, want 1 (room 3's lost message)", s.seqGaps)
	}

	// Every publisher sent its window and had it acknowledged: the one
	// missing delivery is placed in room 3 as a real loss.
	pubs := make([]*pubStats, cfg.pubs)
	for i := range pubs {
		pubs[i] = newPubStats(0)
		pubs[i].sentWindow = 10
		for range 20 {
			pubs[i].answer(false)
		}
	}
	// The other connections see nothing: their missing deliveries count
	// too, by their own rooms.
	subs := []*subStats{s}
	for i := range 4 {
		subs = append(subs, newSubStats(p, i))
	}
	a := accountSends(p, subs, pubs)
	// Rooms have 3 subscriptions each (5 x 3 / 5): 10 publishers x 10
	// messages x 3, less the 59 connection 4 received.
	if want := uint64(10*10*3 - 59); a.missingAcked != want || a.missingUnacked != 0 {
		t.Errorf("missing acked %d, unacked %d; want %d, 0", a.missingAcked, a.missingUnacked, want)
	}
	var expected uint64
	for i, st := range pubs {
		expected += st.sentWindow * uint64(cfg.subsInRoom(i%cfg.rooms))
	}
	r := buildResult(cfg, p, 0, subs, pubs, expected)
	if r.Expected != 300 || r.Delivered != 59 || r.Lost != 241 || r.WrongRoom != 4 || r.SeqGaps != 1 || r.Subscriptions != 15 || r.RoomsPerConn != 3 {
		t.Errorf("result: expected %d, delivered %d, lost %d, wrong room %d, seq gaps %d, subscriptions %d, rooms per conn %d",
			r.Expected, r.Delivered, r.Lost, r.WrongRoom, r.SeqGaps, r.Subscriptions, r.RoomsPerConn)
	}
	var text strings.Builder
	if err := r.write(&text, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"rooms=5 (3 per subscriber, 15 subscriptions)", "wrong room 4"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, text.String())
		}
	}
}

func TestIsRoom(t *testing.T) {
	for _, c := range []struct {
		name string
		r    int
		want bool
	}{
		{"bench0", 0, true}, {"bench17", 17, true}, {"bench17", 1, false}, {"bench1", 17, false},
		{"bench017", 17, false}, {"bench", 0, false}, {"", 0, false}, {"bench-1", 1, false},
		{"bonch1", 1, false}, {"bench1x", 1, false}, {"bench99999999999999999999999", 5, false},
	} {
		if got := isRoom(c.name, "bench", c.r); got != c.want {
			t.Errorf("isRoom(%q, %d) = %v, want %v", c.name, c.r, got, c.want)
		}
		if got := isRoom([]byte(c.name), "bench", c.r); got != c.want {
			t.Errorf("isRoom([]byte %q, %d) = %v, want %v", c.name, c.r, got, c.want)
		}
	}
}

func TestSubJoin(t *testing.T) {
	cfg := &config{rooms: 10, roomsPerConn: 3, roomPrefix: "b"}
	room, join := subJoin(cfg, 3) // positions 9, 10, 11: rooms 9, 0, 1
	if room != "b9" || !join.GetEvents() || !join.GetNoHistory() || len(join.GetRooms()) != 2 ||
		join.GetRooms()[0].GetRoom() != "b0" || join.GetRooms()[1].GetRoom() != "b1" || !join.GetRooms()[1].GetNoHistory() {
		t.Errorf("subJoin = %q, %v", room, join)
	}
	cfg.roomsPerConn = 1
	room, join = subJoin(cfg, 3)
	if room != "b3" || join.GetEvents() || len(join.GetRooms()) != 0 {
		t.Errorf("one-room subJoin = %q, %v; want b3 without events, as a seed client", room, join)
	}
}

// TestStaggerRank: the stagger is a permutation of the publishers, so a
// one-room schedule keeps its offsets, and the publishers of a connection's
// 20 consecutive rooms (of 100) tick at least 3% of the interval apart
// (in publisher order they would be 1% apart, 20 messages in one burst).
func TestStaggerRank(t *testing.T) {
	for _, pubs := range []int{1, 2, 3, 10, 64, 100, 101, 1000} {
		seen := make([]bool, pubs)
		for p := range pubs {
			r := staggerRank(p, pubs)
			if r < 0 || r >= pubs || seen[r] {
				t.Fatalf("pubs %d: rank %d of publisher %d is out of range or taken", pubs, r, p)
			}
			seen[r] = true
		}
	}
	cfg := &config{pubs: 100, rooms: 100, roomsPerConn: 20, rate: 0.5, batch: 1, duration: time.Second}
	p := newPlan(cfg, time.Unix(1000, 0))
	for first := range 100 {
		var offs []time.Duration
		for j := range 20 {
			offs = append(offs, p.offset((first+j)%100))
		}
		slices.Sort(offs)
		offs = append(offs, offs[0]+p.interval) // around the circle
		for k := 1; k < len(offs); k++ {
			if gap := offs[k] - offs[k-1]; gap < p.interval*3/100 {
				t.Fatalf("rooms %d..%d: publishers' offsets %v are %v apart", first, first+19, offs, gap)
			}
		}
	}
}
