package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"google.golang.org/grpc"

	"example.com/chat/api"
)

// lateAfter is how far behind its schedule a send may start before it
// counts as late.
const lateAfter = time.Millisecond

// plan is the run's fixed timeline, shared read-only by every goroutine.
type plan struct {
	cfg *config
	// t0 is when the publishers' schedules start; the window is
	// [winStart, winEnd) in Unix ns, by intended send time.
	t0               time.Time
	winStart, winEnd int64
	interval         time.Duration // between one publisher's ticks
	// firstWindow is, by publisher, its first counter in the window. With
	// -flood it is only known once the publisher gets there (it sets it
	// before sending that counter); until then it is noWindow.
	firstWindow []atomic.Uint64
}

// noWindow is the first window counter of a -flood publisher that has
// not reached the window yet.
const noWindow = math.MaxUint64

// first returns publisher pub's first counter in the window.
func (p *plan) first(pub int) uint64 { return p.firstWindow[pub].Load() }

func newPlan(cfg *config, t0 time.Time) *plan {
	p := &plan{
		cfg:      cfg,
		t0:       t0,
		winStart: t0.Add(cfg.warmup).UnixNano(),
		winEnd:   t0.Add(cfg.warmup + cfg.duration).UnixNano(),
		interval: time.Duration(float64(time.Second) * float64(cfg.batch) / cfg.rate),
	}
	p.interval = max(p.interval, 1)
	p.firstWindow = make([]atomic.Uint64, cfg.pubs)
	for i := range p.firstWindow {
		if cfg.flood {
			p.firstWindow[i].Store(noWindow)
		} else {
			p.firstWindow[i].Store(p.firstCounterAt(i, p.winStart))
		}
	}
	return p
}

// offset staggers the publishers' ticks evenly over one interval, in the
// order of staggerRank: publishers of neighbouring rooms (the rooms a
// multi-room connection is in are consecutive) tick far apart, so such a
// connection's messages come spread over the interval rather than in one
// burst. The set of offsets is the same as in publisher order, so a room's
// (and a one-room run's) schedule is unchanged.
func (p *plan) offset(pub int) time.Duration {
	return time.Duration(int64(p.interval) * int64(staggerRank(pub, p.cfg.pubs)) / int64(p.cfg.pubs))
}

// staggerRank is publisher pub's place in the stagger, a permutation of
// [0, pubs): pub times the integer nearest pubs*0.618 that is coprime
// with pubs, mod pubs (consecutive publishers land about 0.38 or 0.62 of
// the interval apart, and never on one another).
func staggerRank(pub, pubs int) int {
	s := max(1, int(float64(pubs)*0.618+0.5))
	for gcd(s, pubs) != 1 {
		s++
	}
	return pub * s % pubs
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// intended is the Unix time (ns) at which publisher pub should send its
// message ctr.
func (p *plan) intended(pub int, ctr uint64) int64 {
	tick := int64(ctr / uint64(p.cfg.batch))
	return p.t0.UnixNano() + int64(p.offset(pub)) + tick*int64(p.interval)
}

// firstCounterAt is publisher pub's first counter intended at or after t.
func (p *plan) firstCounterAt(pub int, t int64) uint64 {
	d := t - p.t0.UnixNano() - int64(p.offset(pub))
	if d <= 0 {
		return 0
	}
	tick := (d + int64(p.interval) - 1) / int64(p.interval)
	return uint64(tick) * uint64(p.cfg.batch)
}

// sender sends one chat message text on a publisher's connection.
type sender interface {
	send(text []byte) error
	close()
}

// runPublisher sends publisher pub's schedule: every message intended
// before the window's end, each at its intended time or, when behind, as
// soon as possible. It gives up on the rest at hardStop.
func runPublisher(ctx context.Context, p *plan, pub int, s sender, st *pubStats, hardStop time.Time) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	buf := make([]byte, 0, p.cfg.size+64)
	for ctr := uint64(0); ; ctr++ {
		at := p.intended(pub, ctr)
		if at >= p.winEnd {
			return
		}
		now := time.Now()
		if wait := time.Duration(at - now.UnixNano()); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			now = time.Now()
		}
		lag, inWin := now.UnixNano()-at, at >= p.winStart
		if lag > int64(lateAfter) {
			if inWin {
				st.late++
				st.maxLateNS = max(st.maxLateNS, lag)
			}
			if now.After(hardStop) {
				// Hopelessly behind: give up on the rest of the window.
				end := p.firstCounterAt(pub, p.winEnd)
				if from := max(ctr, p.first(pub)); end > from {
					st.skipped += end - from
				}
				return
			}
		}
		if inWin {
			_ = st.lag.RecordValue(min(max(lag/1000, histMinUS), histMaxUS))
		}
		buf = appendText(buf[:0], pub, ctr, at, p.cfg.size)
		if !st.send(ctx, s, pub, buf, inWin) {
			return
		}
	}
}

// runFlood sends publisher pub's messages back to back until the window
// ends (-flood): each text carries its actual send time as its intended
// one, and at most cfg.maxUnacked sends wait for an answer at once (0: as
// many as the transport takes). It gives up waiting for answers at
// hardStop.
func runFlood(ctx context.Context, p *plan, pub int, s sender, st *pubStats, hardStop time.Time) {
	buf := make([]byte, 0, p.cfg.size+64)
	var stop <-chan time.Time
	if st.credits != nil {
		t := time.NewTimer(time.Until(hardStop))
		defer t.Stop()
		stop = t.C
	}
	for ctr := uint64(0); ; ctr++ {
		if st.credits != nil {
			select {
			case st.credits <- struct{}{}:
			case <-ctx.Done():
				return
			case <-stop:
				return // answers stopped coming
			}
		}
		at := time.Now().UnixNano()
		if at >= p.winEnd {
			return
		}
		inWin := at >= p.winStart
		if inWin && p.first(pub) == noWindow {
			p.firstWindow[pub].Store(ctr)
		}
		buf = appendText(buf[:0], pub, ctr, at, p.cfg.size)
		if !st.send(ctx, s, pub, buf, inWin) {
			return
		}
	}
}

// send sends one text of publisher pub and counts it; false (with st.err
// set unless ctx ended) ends the publisher.
func (st *pubStats) send(ctx context.Context, s sender, pub int, text []byte, inWin bool) bool {
	if err := s.send(text); err != nil {
		if ctx.Err() == nil {
			st.err = fmt.Errorf("publisher %d: send: %w", pub, err)
		}
		return false
	}
	st.sent.Add(1)
	if inWin {
		st.sentWindow++
	}
	return true
}

func pubUser(pub int) string { return "bench-p" + strconv.Itoa(pub) }

// pubJoin is a publisher's join options: live messages only, with events,
// for an acknowledgement (or an error) per send.
func pubJoin() *api.Join { return &api.Join{NoHistory: true, Events: true} }

// grpcPub publishes over its own gRPC connection and drains what the room
// sends back.
type grpcPub struct {
	cc     *grpc.ClientConn
	stream grpc.BidiStreamingClient[api.Message, api.Message]
	cancel context.CancelFunc
	done   chan struct{}
}

func dialGRPCPub(ctx context.Context, cfg *config, pub int, st *pubStats) (*grpcPub, error) {
	cc, err := newGRPCConn(cfg.pubAddr(pub))
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(withToken(context.Background(), cfg.token))
	stream, err := openStream(ctx, sctx, cc, pubUser(pub), cfg.room(pub%cfg.rooms), pubJoin())
	if err != nil {
		cancel()
		cc.Close()
		return nil, fmt.Errorf("publisher %d: %w", pub, err)
	}
	g := &grpcPub{cc: cc, stream: stream, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(g.done)
		var m api.Message
		for {
			if err := stream.RecvMsg(&m); err != nil {
				if sctx.Err() == nil {
					st.recvErr = fmt.Errorf("publisher %d: receive: %w", pub, err)
				}
				return
			}
			switch m.GetKind() {
			case api.Kind_KIND_ACK:
				st.answer(false)
			case api.Kind_KIND_ERROR:
				st.answer(true)
			default:
				st.drained.Add(1)
			}
		}
	}()
	return g, nil
}

func (g *grpcPub) send(text []byte) error {
	return g.stream.Send(&api.Message{Text: string(text)})
}

func (g *grpcPub) close() {
	g.cancel()
	<-g.done
	g.cc.Close()
}

// wsPub publishes over a WebSocket connection and drains what the room
// sends back.
type wsPub struct {
	conn net.Conn
	mu   sync.Mutex // serializes writes: sends and pongs
	done chan struct{}
	stop chan struct{}
}

func dialWSPub(ctx context.Context, cfg *config, pub int, st *pubStats) (*wsPub, error) {
	conn, br, _, err := dialWS(ctx, cfg.pubAddr(pub), cfg.token, "")
	if err != nil {
		return nil, fmt.Errorf("publisher %d: %w", pub, err)
	}
	w := &wsPub{conn: conn, done: make(chan struct{}), stop: make(chan struct{})}
	if err := w.write(joinFrame(pubUser(pub), cfg.room(pub%cfg.rooms), pubJoin())); err != nil {
		conn.Close()
		return nil, fmt.Errorf("publisher %d: join: %w", pub, err)
	}
	r := newFrameReader(conn, br, 16<<10)
	go func() {
		defer close(w.done)
		err := r.each(w.write, func(b []byte) {
			// Benchmark texts hold digits, colons and letters only, so
			// a quoted kind is the frame's own.
			switch {
			case bytes.Contains(b, []byte(`"KIND_ACK"`)):
				st.answer(false)
			case bytes.Contains(b, []byte(`"KIND_ERROR"`)):
				st.answer(true)
			default:
				st.drained.Add(1)
			}
		})
		select {
		case <-w.stop:
		default:
			st.recvErr = fmt.Errorf("publisher %d: receive: %w", pub, err)
		}
	}()
	return w, nil
}

func (w *wsPub) write(f ws.Frame) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return ws.WriteFrame(w.conn, ws.MaskFrameInPlace(f))
}

func (w *wsPub) send(text []byte) error {
	b := make([]byte, 0, len(text)+12)
	b = append(b, `{"text":"`...)
	b = append(b, text...)
	b = append(b, `"}`...)
	return w.write(ws.NewTextFrame(b))
}

func (w *wsPub) close() {
	close(w.stop)
	closeWS(w.conn, &w.mu)
	<-w.done
}
