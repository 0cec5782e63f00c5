// Command chatbench is the chat cluster's load tool, for capacity planning.
//
// It opens -subs subscriber and -pubs publisher connections (WebSocket,
// gRPC, or a mix) spread round-robin over the node addresses given, in
// -rooms rooms. Publishers send -rate msg/s each on a fixed schedule;
// every text carries the publisher's id, a per-publisher counter and the
// message's intended send time ("<pubID>:<counter>:<unixNano>:<padding>"),
// so subscribers measure latency from the intended time (no coordinated
// omission) and count lost, duplicated and reordered messages per
// (subscriber, publisher) pair. Only messages intended inside the measured
// window (after -warmup, for -duration) count. It prints a progress line per
// second on stderr and a summary (or -json) on stdout, with the servers' CPU
// per 100k deliveries and RSS when given their -pids.
//
// With -rooms-per-conn K, each subscriber connection receives K of the
// rooms on its one stream (Join.rooms; connection i takes rooms
// (i*K + j) mod -rooms), and counts as open once each of them sent
// KIND_LIVE; a message in room r is expected once by every connection in
// r, and its room tag is checked.
//
// -ws-client picks the WebSocket subscribers' client: fast (gobwas/ws, a
// zero-allocation reader that scans the JSON) loads the nodes at the least
// client CPU; std (coder/websocket, every message decoded into an
// api.Message) costs what a standard client pays, reported as client CPU
// per 100k deliveries. -ws-framing picks the subprotocol they ask for
// (json, or the packed chat.v1.ndjson and chat.v1.proto), and a node that
// selects another fails the run.
//
// With -flood, publishers send back to back instead, as fast as their
// stream takes (-max-unacked bounds the sends waiting for an answer), and
// the summary's acks/s is what a stream gets.
//
// With -idle N it holds N idle connections (in -rooms-per-conn rooms each)
// and reports the servers' memory per connection and per subscription:
// RSS from -pids, the live heap after a GC from -pprof-addrs.
//
// Run the nodes with a high per-user send rate, or the limiter is what gets
// measured:
//
//	node -grpc-addr 127.0.0.1:50051 -http-addr 127.0.0.1:8080 -send-rate 100000
//	chatbench -ws-addrs 127.0.0.1:8080 -grpc-addrs 127.0.0.1:50051 \
//	    -subs 1000 -pubs 10 -rooms 10 -rate 100 -duration 30s -pids $(pgrep -d, -x node)
//
// chatbench talks only to the addresses given and stops by itself, within
// the connection timeout + warm-up + duration + drain (at most 10 s).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The tool's live heap is small and its allocation rate high (gRPC
	// receives): collect less often, for less CPU taken from the servers.
	debug.SetGCPercent(400)
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run runs the tool with args (without the program name): the summary goes
// to stdout, usage and progress to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	if cfg.quiet {
		stderr = io.Discard
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("chatbench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("chatbench: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.idle > 0 {
		return runIdle(ctx, &cfg, stdout, stderr)
	}
	return runLoad(ctx, &cfg, stdout, stderr)
}

// subConn is one subscriber connection of either transport.
type subConn interface {
	// run reads until the connection ends, accounting for each message in
	// st (p nil: idle, nothing expected); the error says why it ended.
	run(st *subStats, p *plan) error
	close()
}

// subSet is the subscriber connections opened, by index (nil where opening
// failed), and the gRPC client connections they use.
type subSet struct {
	conns []subConn
	ccs   []*grpc.ClientConn
	errs  []error
}

func (s *subSet) close() {
	for _, c := range s.conns {
		if c != nil {
			c.close()
		}
	}
}

func (s *subSet) closeClients() {
	for _, cc := range s.ccs {
		cc.Close()
	}
}

// openSubs opens n subscriber connections, cfg.dialParallel at a time,
// within cfg.connTimeout. With failFast, the first failure stops it.
func openSubs(ctx context.Context, cfg *config, n, bufSize int, failFast bool, stderr io.Writer) (*subSet, error) {
	set := &subSet{conns: make([]subConn, n)}
	// gRPC subscribers share client connections, -grpc-streams-per-conn
	// each, grouped by address.
	ccOf := make([]*grpc.ClientConn, n)
	type group struct {
		cc *grpc.ClientConn
		n  int
	}
	current := map[string]*group{}
	for i := range n {
		if cfg.subTransport(i) != transportGRPC {
			continue
		}
		addr := cfg.subAddr(i)
		g := current[addr]
		if g == nil || g.n >= cfg.streamsPer {
			cc, err := newGRPCConn(addr)
			if err != nil {
				set.closeClients()
				return nil, err
			}
			g = &group{cc: cc}
			current[addr] = g
			set.ccs = append(set.ccs, cc)
		}
		ccOf[i] = g.cc
		g.n++
	}

	setup, cancel := context.WithTimeout(ctx, cfg.connTimeout)
	defer cancel()
	var opened atomic.Int64
	stopProgress := progressEvery(time.Second, func() {
		fmt.Fprintf(stderr, "connecting: %d/%d\n", opened.Load(), n)
	})
	defer stopProgress()
	g, gctx := errgroup.WithContext(setup)
	if !failFast {
		gctx = setup
	}
	g.SetLimit(cfg.dialParallel)
	var mu sync.Mutex
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			var c subConn
			var err error
			if ccOf[i] != nil {
				c, err = dialGRPCSub(gctx, cfg, i, ccOf[i])
			} else {
				c, err = dialWSClient(gctx, cfg, i, bufSize)
			}
			if err != nil {
				mu.Lock()
				set.errs = append(set.errs, err)
				mu.Unlock()
				if failFast {
					return err
				}
				return nil
			}
			set.conns[i] = c
			opened.Add(1)
			return nil
		})
	}
	err := g.Wait()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err == nil && failFast && setup.Err() != nil {
		err = fmt.Errorf("opening %d connections took over -connect-timeout %s", n, cfg.connTimeout)
	}
	if err != nil {
		set.close()
		set.closeClients()
		return nil, fmt.Errorf("chatbench: %w", err)
	}
	return set, nil
}

// progressEvery calls f every d until the returned stop is called.
func progressEvery(d time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// openPubs opens the publishers' connections.
func openPubs(ctx context.Context, cfg *config, stats []*pubStats) ([]sender, error) {
	setup, cancel := context.WithTimeout(ctx, cfg.connTimeout)
	defer cancel()
	pubs := make([]sender, cfg.pubs)
	g, gctx := errgroup.WithContext(setup)
	g.SetLimit(cfg.dialParallel)
	for p := range cfg.pubs {
		g.Go(func() error {
			var err error
			if cfg.pubTransport == transportWS {
				pubs[p], err = dialWSPub(gctx, cfg, p, stats[p])
			} else {
				pubs[p], err = dialGRPCPub(gctx, cfg, p, stats[p])
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		for _, s := range pubs {
			if s != nil {
				s.close()
			}
		}
		return nil, fmt.Errorf("chatbench: %w", err)
	}
	return pubs, nil
}

// runLoad runs the traffic benchmark.
func runLoad(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	start := time.Now()
	subs, err := openSubs(ctx, cfg, cfg.subs, 16<<10, true, stderr)
	if err != nil {
		return err
	}
	defer subs.closeClients()
	pstats := make([]*pubStats, cfg.pubs)
	for i := range pstats {
		pstats[i] = newPubStats(cfg.maxUnacked)
	}
	pubs, err := openPubs(ctx, cfg, pstats)
	if err != nil {
		subs.close()
		return err
	}
	connectTime := time.Since(start)

	p := newPlan(cfg, time.Now().Add(100*time.Millisecond))
	sstats := make([]*subStats, cfg.subs)
	var stopping atomic.Bool
	var readers sync.WaitGroup
	for i, c := range subs.conns {
		sstats[i] = newSubStats(p, i)
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := c.run(sstats[i], p); !stopping.Load() {
				sstats[i].fail(err)
			}
		}()
	}
	// A reader that fails (slow consumer, server gone) is reported, not
	// fatal: the run goes on and counts what that subscriber lost.

	winStart, winEnd := time.Unix(0, p.winStart), time.Unix(0, p.winEnd)
	hardStop := winEnd.Add(cfg.drain / 2)
	pubCtx, cancelPubs := context.WithCancel(ctx)
	defer cancelPubs()
	var writers sync.WaitGroup
	pubsDone := make(chan struct{})
	for i, s := range pubs {
		writers.Add(1)
		go func() {
			defer writers.Done()
			if cfg.flood {
				runFlood(pubCtx, p, i, s, pstats[i], hardStop)
			} else {
				runPublisher(pubCtx, p, i, s, pstats[i], hardStop)
			}
		}()
	}
	go func() { writers.Wait(); close(pubsDone) }()

	// Server and client CPU are sampled at the window's edges.
	type edge struct {
		servers serverSample
		self    time.Duration
		acks    uint64 // acknowledgements received so far, all publishers
		load    []float64
		err     error
	}
	edges := make(chan edge, 2)
	go func() {
		for _, at := range []time.Time{winStart, winEnd} {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(at)):
			}
			s, err := sampleServers(cfg.pids)
			var acks uint64
			for _, st := range pstats {
				acks += st.acks.Load()
			}
			edges <- edge{s, selfCPU(), acks, loadAvg(), err}
		}
	}()

	var lastRecv uint64
	lastTick := time.Now()
	progress := func(phase string) {
		sent, recv, p99, ok := progressSnapshot(sstats, pstats)
		now := time.Now()
		rate := float64(recv-lastRecv) / now.Sub(lastTick).Seconds()
		lastRecv, lastTick = recv, now
		p99s := "-"
		if ok {
			p99s = "<" + fmtUS(float64(p99))
		}
		fmt.Fprintf(stderr, "%6.1fs %-7s sent=%d delivered/s=%.0f p99=%s\n", now.Sub(p.t0).Seconds(), phase, sent, rate, p99s)
	}
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	phase := func() string {
		if time.Now().Before(winStart) {
			return "warmup"
		}
		return "window"
	}
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-pubsDone:
			break wait
		case <-ticker.C:
			progress(phase())
		}
	}
	writers.Wait()

	var expected uint64
	for i, st := range pstats {
		expected += st.sentWindow * uint64(cfg.subsInRoom(i%cfg.rooms))
	}
	deadline := time.After(cfg.drain)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
drain:
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-deadline:
			break drain
		case <-ticker.C:
			progress("drain")
		case <-poll.C:
			var got uint64
			for _, s := range sstats {
				got += s.inWin.Load()
			}
			// And every send answered: a delivery can overtake its
			// sender's ack.
			answered := true
			for _, st := range pstats {
				answered = answered && st.answered.Load() >= st.sent.Load()
			}
			if got >= expected && answered {
				break drain
			}
		}
	}
	stopping.Store(true)
	for _, s := range pubs {
		s.close()
	}
	subs.close()
	readers.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("chatbench: interrupted: %w", err)
	}
	var win [2]edge
	for i := range win {
		win[i] = <-edges
		if win[i].err != nil {
			return fmt.Errorf("chatbench: %w", win[i].err)
		}
	}
	r := buildResult(cfg, p, connectTime, sstats, pstats, expected)
	r.addCPU(cfg, win[0].servers, win[1].servers, win[1].self-win[0].self)
	r.AcksPerSec = float64(win[1].acks-win[0].acks) / cfg.duration.Seconds()
	r.LoadAvg = win[1].load
	return r.write(stdout, cfg.jsonOut)
}
