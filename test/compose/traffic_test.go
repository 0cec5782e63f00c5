//go:build compose

package compose_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
)

// pacedSender is chattest.Sender at a steady pace: one send every
// `every`, each waiting for its ack (across reconnects and Unavailable
// retries) before the next, so a check's traffic stays inside the
// nodes' history cap (100) whatever the fault.
type pacedSender struct {
	m    *chattest.Member
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	acks []*api.Message
	err  error
}

func startPaced(m *chattest.Member, prefix string, every time.Duration) *pacedSender {
	s := &pacedSender{m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			text := fmt.Sprintf("%s-%04d", prefix, i)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			ack, err := s.m.Send(ctx, text)
			cancel()
			s.mu.Lock()
			if err != nil {
				s.err = fmt.Errorf("%s: send %q: %w", s.m.User, text, err)
			} else {
				s.acks = append(s.acks, &api.Message{User: s.m.User, Text: text, Seq: ack.GetSeq(), Epoch: ack.GetEpoch()})
			}
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s
}

// halt stops the sender after its current send (up to 60 s) and returns
// its acks.
func (s *pacedSender) halt(t *testing.T) []*api.Message {
	t.Helper()
	close(s.stop)
	select {
	case <-s.done:
	case <-time.After(65 * time.Second):
		t.Fatalf("%s: sender did not stop", s.m.User)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		t.Error(s.err)
	}
	return s.acks
}

func (s *pacedSender) acked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acks)
}

// traffic is a check's senders.
type traffic struct {
	senders []*pacedSender
}

func startTraffic(members []*chattest.Member, prefix string, every time.Duration) *traffic {
	tr := &traffic{}
	for _, m := range members {
		tr.senders = append(tr.senders, startPaced(m, prefix+"-"+m.User, every))
	}
	return tr
}

// outcome is what a check's traffic came to.
type outcome struct {
	acked, lost, duplicated int
}

// stopAndCheck stops the senders, waits (up to 30 s) until every member
// holds every message the others had acknowledged, and counts, over all
// members, acknowledged messages missing (lost) and stored messages
// received twice (duplicated, over the member's whole recording).
func (tr *traffic) stopAndCheck(t *testing.T, members []*chattest.Member) outcome {
	t.Helper()
	type key struct {
		epoch string
		seq   uint64
	}
	var acks []*api.Message
	for _, s := range tr.senders {
		acks = append(acks, s.halt(t)...)
	}
	missing := func(m *chattest.Member) int {
		have := map[key]string{}
		for _, r := range m.Stored("") {
			have[key{r.GetEpoch(), r.GetSeq()}] = r.GetUser() + "\x00" + r.GetText()
		}
		joined := joinedAt(m)
		n := 0
		for _, a := range acks {
			if a.GetUser() == m.User {
				continue // a sender gets its acks, not its messages
			}
			if a.GetEpoch() == joined.GetEpoch() && a.GetSeq() <= joined.GetSeq() {
				continue // stored before m joined (without history)
			}
			if have[key{a.GetEpoch(), a.GetSeq()}] != a.GetUser()+"\x00"+a.GetText() {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(30 * time.Second)
	var o outcome
	for {
		o = outcome{acked: len(acks)}
		for _, m := range members {
			o.lost += missing(m)
		}
		if o.lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the recorders
	}
	for _, m := range members {
		seen := map[key]int{}
		var last key
		for _, r := range m.Stored("") {
			k := key{r.GetEpoch(), r.GetSeq()}
			if seen[k]++; seen[k] > 1 {
				o.duplicated++
			} else if k.epoch == last.epoch && k.seq < last.seq {
				t.Errorf("%s: seq %d after %d: out of order", m.User, k.seq, last.seq)
			}
			last = k
		}
	}
	return o
}

// joinedAt returns the KIND_LIVE that ended m's first join: its seq is
// the room's last before m was in it.
func joinedAt(m *chattest.Member) *api.Message {
	for _, r := range m.All() {
		if r.GetKind() == api.Kind_KIND_LIVE {
			return r
		}
	}
	return &api.Message{}
}

// watch samples members every 20 ms during a fault: when each one that
// reconnected was live again (from the watch's start), each reconnect's
// length (from the sample that saw the stream lost to the one that saw it
// live again), and the longest time any member went without a new stored
// message while traffic ran (its stall).
type watch struct {
	start   time.Time
	stop    chan struct{}
	done    chan struct{}
	members []*chattest.Member

	r0 map[*chattest.Member]int64 // reconnects when the watch began

	mu       sync.Mutex
	resumed  map[*chattest.Member]time.Duration
	gaps     []time.Duration // each reconnect, lost to live again
	maxStall time.Duration
	stallBy  string
}

func watchMembers(members []*chattest.Member) *watch {
	w := &watch{start: time.Now(), stop: make(chan struct{}), done: make(chan struct{}), members: members, resumed: map[*chattest.Member]time.Duration{}}
	r0 := map[*chattest.Member]int64{}
	w.r0 = r0
	live0 := map[*chattest.Member]int{}
	lastSeq := map[*chattest.Member]uint64{}
	lastMove := map[*chattest.Member]time.Time{}
	lastR, lastLive := map[*chattest.Member]int64{}, map[*chattest.Member]int{}
	downAt := map[*chattest.Member]time.Time{}
	for _, m := range members {
		r0[m] = m.Reconnects.Load()
		live0[m] = m.Count(api.Kind_KIND_LIVE)
		_, lastSeq[m] = m.Position()
		lastMove[m] = w.start
		lastR[m], lastLive[m] = r0[m], live0[m]
	}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			now := time.Now()
			w.mu.Lock()
			for _, m := range members {
				if _, seq := m.Position(); seq != lastSeq[m] {
					if d := now.Sub(lastMove[m]); d > w.maxStall {
						w.maxStall, w.stallBy = d, m.User
					}
					lastSeq[m], lastMove[m] = seq, now
				}
				r, live := m.Reconnects.Load(), m.Count(api.Kind_KIND_LIVE)
				if _, ok := w.resumed[m]; !ok && r > r0[m] && live > live0[m] {
					w.resumed[m] = now.Sub(w.start)
				}
				// The client counts a reconnect when its stream ends,
				// then goes live again on the next one.
				if r > lastR[m] && downAt[m].IsZero() {
					downAt[m] = now
				}
				if !downAt[m].IsZero() && live > lastLive[m] {
					w.gaps = append(w.gaps, now.Sub(downAt[m]))
					downAt[m] = time.Time{}
				}
				lastR[m], lastLive[m] = r, live
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// reconnected returns the members that reconnected since the watch began.
func (w *watch) reconnected() []*chattest.Member {
	var out []*chattest.Member
	for _, m := range w.members {
		if m.Reconnects.Load() > w.r0[m] {
			out = append(out, m)
		}
	}
	return out
}

// resumedAll reports whether every member in ms is live again.
func (w *watch) resumedAll(ms []*chattest.Member) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range ms {
		if _, ok := w.resumed[m]; !ok {
			return false
		}
	}
	return true
}

// watchResult is what a watch saw.
type watchResult struct {
	resumes []time.Duration // per member that reconnected: live again, from the watch's start; sorted
	gaps    []time.Duration // per reconnect: stream lost to live again; sorted
	stall   time.Duration   // the longest time a member got no new stored message
	stallBy string
}

// end stops the watch.
func (w *watch) end() watchResult {
	close(w.stop)
	<-w.done
	var r watchResult
	for _, d := range w.resumed {
		r.resumes = append(r.resumes, d)
	}
	sort.Slice(r.resumes, func(i, j int) bool { return r.resumes[i] < r.resumes[j] })
	r.gaps = append(r.gaps, w.gaps...)
	sort.Slice(r.gaps, func(i, j int) bool { return r.gaps[i] < r.gaps[j] })
	r.stall, r.stallBy = w.maxStall, w.stallBy
	return r
}

func maxDur(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[len(ds)-1]
}

// figures logs one check's figures on a line starting "figures" (go test
// -v prints them as they come).
func figures(t *testing.T, check string, format string, args ...any) {
	t.Helper()
	t.Logf("figures %-16s "+format, append([]any{check + ":"}, args...)...)
}
