package main

import (
	"fmt"
	"math/bits"
	"sync/atomic"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms record microseconds from 1 µs to 60 s with 2
// significant digits: values are exact to within 1%, and each histogram
// is 20 KB, not the 140 KB of 3 digits. Per subscriber, that is what keeps
// recording cheap (a histogram per subscriber that fits in the CPU's
// caches; with 3 digits recording was 13% of the tool's CPU, mostly cache
// misses) and memory modest (200 MB for 10k subscribers).
const (
	histMinUS   = 1
	histMaxUS   = 60_000_000
	histSigFigs = 2
)

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(histMinUS, histMaxUS, histSigFigs)
}

// span is a half-open range [lo, hi) of publisher counters not yet seen.
type span struct{ lo, hi uint64 }

// maxGaps bounds the gaps one (subscriber, publisher) pair remembers; past
// it the oldest are forgotten, and a message from a forgotten gap that
// arrives after all is counted as a duplicate.
const maxGaps = 4096

// pairTracker follows one publisher's counters as seen by one subscriber:
// the next counter expected, and the gaps (counters skipped over) that may
// still be filled by late, reordered messages.
type pairTracker struct {
	next    uint64
	started bool
	gaps    []span
}

// observe records counter c. fresh is false for a counter already seen (a
// duplicate); late is true for a fresh counter that arrived after a higher
// one (reordered). firstWindow is the publisher's first counter inside the
// measured window: a first sighting above it opens a gap from there, so
// window messages missed before it count as lost, or as reordered if they
// arrive later.
func (t *pairTracker) observe(c, firstWindow uint64) (fresh, late bool) {
	if !t.started {
		t.started = true
		t.addGap(firstWindow, c)
		t.next = c + 1
		return true, false
	}
	switch {
	case c == t.next:
		t.next++
		return true, false
	case c > t.next:
		t.addGap(max(t.next, firstWindow), c)
		t.next = c + 1
		return true, false
	}
	for i := len(t.gaps) - 1; i >= 0; i-- {
		g := t.gaps[i]
		if c < g.lo || c >= g.hi {
			continue
		}
		switch {
		case g.lo == c && g.hi == c+1:
			t.gaps = append(t.gaps[:i], t.gaps[i+1:]...)
		case g.lo == c:
			t.gaps[i].lo++
		case g.hi == c+1:
			t.gaps[i].hi--
		default:
			t.gaps[i].hi = c
			t.gaps = append(t.gaps, span{})
			copy(t.gaps[i+2:], t.gaps[i+1:])
			t.gaps[i+1] = span{c + 1, g.hi}
		}
		return true, true
	}
	return false, false
}

func (t *pairTracker) addGap(lo, hi uint64) {
	if lo >= hi {
		return
	}
	if len(t.gaps) >= maxGaps {
		t.gaps = append(t.gaps[:0], t.gaps[1:]...)
	}
	t.gaps = append(t.gaps, span{lo, hi})
}

// coarseBuckets is the size of coarseHist: 4 buckets per power of two,
// enough for any latency in microseconds up to hours.
const coarseBuckets = 128

// coarseHist is a lock-free log-linear histogram (about 25% resolution),
// written by one goroutine and read by the progress printer at any time.
type coarseHist [coarseBuckets]atomic.Uint64

func coarseIndex(us int64) int {
	if us < 4 {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 1
	i := 4 + (e-2)*4 + int((uint64(us)>>(e-2))&3)
	return min(i, coarseBuckets-1)
}

// coarseUpper is the largest value in bucket i.
func coarseUpper(i int) int64 {
	if i < 4 {
		return int64(i)
	}
	e, sub := (i-4)/4+2, int64((i-4)%4)
	return (5+sub)<<(e-2) - 1
}

// coarseQuantile returns an upper bound of quantile q of counts, and false
// when there are none.
func coarseQuantile(counts *[coarseBuckets]uint64, q float64) (int64, bool) {
	var n uint64
	for _, c := range counts {
		n += c
	}
	if n == 0 {
		return 0, false
	}
	target := uint64(q*float64(n) + 0.5)
	target = max(target, 1)
	var cum uint64
	for i, c := range counts {
		cum += c
		if cum >= target {
			return coarseUpper(i), true
		}
	}
	return coarseUpper(coarseBuckets - 1), true
}

// subStats is one subscriber's view of the run. Only the subscriber's
// goroutine writes it; the atomics may be read at any time, the rest once
// the goroutine is done.
type subStats struct {
	id    int           // the subscriber's index: its rooms follow (config.subRoom)
	recv  atomic.Uint64 // benchmark messages received, warm-up included
	inWin atomic.Uint64 // distinct window messages received
	hist  *hdrhistogram.Histogram
	// coarse mirrors hist, readable live, for the progress line.
	coarse coarseHist

	duplicated, reordered, foreign, seqGaps uint64
	// wrongRoom counts benchmark messages of a room the subscriber is not
	// in, or whose room tag is not their publisher's room.
	wrongRoom     uint64
	frames, reads uint64   // WebSocket frames and read calls (fast client only), for frames/read
	msgs          uint64   // WebSocket messages: more than frames when packed
	lastSeq       []uint64 // by room index (config.subRoom's j)
	// pairs holds a tracker per publisher of the subscriber's rooms: room
	// j's publishers m = 0, 1, ... (publisher subRoom(id, j) + m*rooms) at
	// pairs[pairOff[j]+m].
	pairs   []pairTracker
	pairOff []int
	err     error // why the connection ended early, if it did
}

func newSubStats(p *plan, id int) *subStats {
	cfg := p.cfg
	s := &subStats{id: id, hist: newHist(), lastSeq: make([]uint64, cfg.roomsPerConn), pairOff: make([]int, cfg.roomsPerConn)}
	n := 0
	for j := range cfg.roomsPerConn {
		s.pairOff[j] = n
		n += cfg.pubsInRoom(cfg.subRoom(id, j))
	}
	s.pairs = make([]pairTracker, n)
	return s
}

// observe accounts for one delivered chat message with text t, room tag
// room (as delivered; empty if none) and room sequence id seq (0 if none),
// received at now (Unix ns).
func observe[T string | []byte](s *subStats, p *plan, t T, room T, seq uint64, now int64) {
	if p == nil { // idle: nothing expected
		s.foreign++
		return
	}
	cfg := p.cfg
	pub, ctr, intended, ok := parseText(t)
	if !ok || pub >= cfg.pubs {
		s.foreign++
		return
	}
	r := pub % cfg.rooms
	j := cfg.subRoomIndex(s.id, r)
	// A multi-room stream must name each message's room; a one-room
	// stream's tag is checked when present.
	tagged := len(room) > 0 || cfg.roomsPerConn > 1
	if j < 0 || tagged && !isRoom(room, cfg.roomPrefix, r) {
		s.wrongRoom++
		return
	}
	s.recv.Add(1)
	if seq != 0 {
		if last := s.lastSeq[j]; last != 0 && seq != last+1 {
			s.seqGaps++
		}
		s.lastSeq[j] = seq
	}
	fresh, late := s.pairs[s.pairOff[j]+pub/cfg.rooms].observe(ctr, p.first(pub))
	if intended < p.winStart || intended >= p.winEnd {
		return // warm-up
	}
	if !fresh {
		s.duplicated++
		return
	}
	if late {
		s.reordered++
	}
	s.inWin.Add(1)
	us := (now - intended) / 1000
	us = min(max(us, histMinUS), histMaxUS)
	s.coarse[coarseIndex(us)].Add(1)
	// us is within the histogram's range, so RecordValue cannot fail.
	_ = s.hist.RecordValue(us)
}

// isRoom reports whether name is room r's name: prefix followed by r in
// decimal, without leading zeros.
func isRoom[T string | []byte](name T, prefix string, r int) bool {
	if len(name) <= len(prefix) {
		return false
	}
	for i := range len(prefix) {
		if name[i] != prefix[i] {
			return false
		}
	}
	digits := name[len(prefix):]
	if len(digits) > 1 && digits[0] == '0' {
		return false
	}
	v := 0
	for i := range len(digits) {
		c := digits[i]
		if c < '0' || c > '9' || v > r {
			return false
		}
		v = v*10 + int(c-'0')
	}
	return v == r
}

// fail records why the subscriber's connection ended early.
func (s *subStats) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

// pubStats is one publisher's account. sent is read live by the progress
// printer; the rest once the publisher is done.
type pubStats struct {
	sent       atomic.Uint64 // messages sent, warm-up included
	drained    atomic.Uint64 // room messages received and discarded
	sentWindow uint64        // messages sent whose intended time is in the window
	late       uint64        // window sends that started more than lateAfter behind schedule
	maxLateNS  int64
	skipped    uint64                  // window messages never sent: the publisher fell too far behind
	lag        *hdrhistogram.Histogram // window sends: µs from intended to actual send start
	err        error                   // why sending stopped early (the sending goroutine's)
	recvErr    error                   // why draining stopped early (the draining goroutine's)

	// answers counts the node's answers to this publisher's sends (an
	// ack, or an error): a stream's sends are answered in order, so
	// answer i is for counter i, and the counters from answers on were
	// sent but never answered before the publisher closed (not stored,
	// or stored with the ack lost: unknown). rejected lists the counters
	// answered with an error, which were not stored. The draining
	// goroutine writes them; they are read once the publisher is closed.
	answers  uint64
	rejected []uint64
	// acks counts acknowledgements as they come, read live at the
	// window's edges (acks per second).
	acks atomic.Uint64
	// answered counts every answer (acks and errors), read live by the
	// drain.
	answered atomic.Uint64
	// credits, with -flood -max-unacked, holds a token per send not yet
	// answered: the sender puts one before each send, an answer takes one.
	credits chan struct{}
}

func newPubStats(maxUnacked int) *pubStats {
	p := &pubStats{lag: newHist()}
	if maxUnacked > 0 {
		p.credits = make(chan struct{}, maxUnacked)
	}
	return p
}

// answer records the answer to the next unanswered send.
func (p *pubStats) answer(isErr bool) {
	if isErr {
		p.rejected = append(p.rejected, p.answers)
	} else {
		p.acks.Add(1)
	}
	p.answers++
	p.answered.Add(1)
	if p.credits != nil {
		select {
		case <-p.credits:
		default:
		}
	}
}

// window is the publisher's range of window counters it sent: sends are
// in counter order, so they are [first, first+sentWindow).
func (p *pubStats) window(first uint64) span { return span{first, first + p.sentWindow} }

// classify splits the counters of sp by what this publisher was told:
// acked (stored), unacked (no answer before it closed) and rejected.
func (p *pubStats) classify(sp span) (acked, unacked, rejected uint64) {
	if sp.lo >= sp.hi {
		return 0, 0, 0
	}
	answered := span{sp.lo, min(sp.hi, max(p.answers, sp.lo))}
	unacked = sp.hi - answered.hi
	for _, c := range p.rejected {
		if c >= answered.lo && c < answered.hi {
			rejected++
		}
	}
	return answered.hi - answered.lo - rejected, unacked, rejected
}

// sendAccount is what the publishers were told of their window sends, and
// how the deliveries that never arrived split by it.
type sendAccount struct {
	acked, unacked, rejected uint64 // window messages
	// Deliveries missing, by what the publisher was told of the message.
	missingAcked, missingUnacked, missingRejected uint64
}

// accountSends classifies every window message each publisher sent, and
// every delivery of one that a subscriber of its room did not receive
// (the tracker's gaps and its tail): a missing acknowledged message is a
// real loss; a missing unacknowledged one was perhaps never stored.
func accountSends(p *plan, subs []*subStats, pubs []*pubStats) sendAccount {
	var a sendAccount
	for i, st := range pubs {
		k, u, r := st.classify(st.window(p.first(i)))
		a.acked, a.unacked, a.rejected = a.acked+k, a.unacked+u, a.rejected+r
	}
	add := func(st *pubStats, sp span) {
		k, u, r := st.classify(sp)
		a.missingAcked, a.missingUnacked, a.missingRejected = a.missingAcked+k, a.missingUnacked+u, a.missingRejected+r
	}
	for _, s := range subs {
		for j, off := range s.pairOff {
			r := p.cfg.subRoom(s.id, j)
			for m := range p.cfg.pubsInRoom(r) {
				pub := r + m*p.cfg.rooms
				st, t := pubs[pub], &s.pairs[off+m]
				win := st.window(p.first(pub))
				if !t.started {
					add(st, win)
					continue
				}
				for _, g := range t.gaps {
					add(st, span{max(g.lo, win.lo), min(g.hi, win.hi)})
				}
				add(st, span{max(t.next, win.lo), win.hi})
			}
		}
	}
	return a
}

// totals sums what every subscriber saw.
type totals struct {
	delivered, duplicated, reordered, foreign, seqGaps, wrongRoom uint64
	wsFrames, wsReads, wsMsgs                                     uint64
	errors                                                        int
	firstErr                                                      error
	hist                                                          *hdrhistogram.Histogram
}

func mergeSubs(subs []*subStats) totals {
	t := totals{hist: newHist()}
	for _, s := range subs {
		t.delivered += s.inWin.Load()
		t.duplicated += s.duplicated
		t.reordered += s.reordered
		t.foreign += s.foreign
		t.seqGaps += s.seqGaps
		t.wrongRoom += s.wrongRoom
		t.wsFrames += s.frames
		t.wsReads += s.reads
		t.wsMsgs += s.msgs
		if s.err != nil {
			t.errors++
			if t.firstErr == nil {
				t.firstErr = s.err
			}
		}
		t.hist.Merge(s.hist)
	}
	return t
}

// progressSnapshot sums the live counters for the progress line.
func progressSnapshot(subs []*subStats, pubs []*pubStats) (sent, recv uint64, p99us int64, ok bool) {
	var counts [coarseBuckets]uint64
	for _, s := range subs {
		recv += s.recv.Load()
		for i := range s.coarse {
			counts[i] += s.coarse[i].Load()
		}
	}
	for _, p := range pubs {
		sent += p.sent.Load()
	}
	p99us, ok = coarseQuantile(&counts, 0.99)
	return sent, recv, p99us, ok
}

func fmtUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%.2fs", us/1e6)
	case us >= 1e3:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.0fµs", us)
}
