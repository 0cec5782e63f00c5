package hostile_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
)

// smallWindows keeps gRPC flow control at its 64 KiB minimum (no BDP
// growth), so that a client that stops reading blocks the server's Send
// after 64 KiB.
var smallWindows = []grpc.DialOption{grpc.WithInitialWindowSize(64 << 10), grpc.WithInitialConnWindowSize(64 << 10)}

// joinStream opens a stream on cc and joins room as user with events; it
// waits for KIND_LIVE when live is set.
func joinStream(ctx context.Context, t testing.TB, cc *grpc.ClientConn, token, user, room string, live bool) (api.Chat_StreamClient, error) {
	t.Helper()
	st, err := api.NewChatClient(cc).Stream(withToken(ctx, token))
	if err != nil {
		return nil, err
	}
	if err := st.Send(&api.Message{User: user, Room: room, Join: &api.Join{Events: true, NoHistory: true}}); err != nil {
		return nil, err
	}
	if !live {
		return st, nil
	}
	for range 10000 {
		m, err := st.Recv()
		if err != nil {
			return nil, err
		}
		if m.GetKind() == api.Kind_KIND_LIVE {
			return st, nil
		}
	}
	return nil, errors.New("no KIND_LIVE")
}

// waitSlotFree polls, every 200 ms until bound, whether user may open a
// stream again (with -max-streams-per-user 1: whether the stuck one was
// released); it returns when, or the last refusal.
func waitSlotFree(t testing.TB, p *proc, token, user, room string, bound time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	var last error
	for time.Since(start) < bound {
		cc := grpcConn(t, p)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := joinStream(ctx, t, cc, token, user, room, true)
		cancel()
		cc.Close()
		if err == nil {
			return time.Since(start), nil
		}
		last = err
		time.Sleep(200 * time.Millisecond) // poll interval, bounded by bound
	}
	return time.Since(start), fmt.Errorf("still refused after %v: %w", bound, last)
}

// fillStuck sends n messages of 8 KB to room from a legit sender and
// checks that a legit receiver gets them all: the stuck stream's window
// (64 KiB) and socket fill, its queue stays under -max-queue-bytes.
func fillStuck(t testing.TB, p *proc, m mode, room string, n int) {
	t.Helper()
	cc := grpcConn(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rx, err := joinStream(ctx, t, cc, m.token(t, "receiver"), "receiver", room, true)
	if err != nil {
		t.Fatalf("legit receiver: %v", err)
	}
	chat := api.NewChatClient(cc)
	sctx := withToken(ctx, m.token(t, "sender"))
	text := strings.Repeat("s", 8000)
	for i := range n {
		if _, err := chat.Send(sctx, &api.SendRequest{Room: room, Message: &api.Message{User: "sender", Text: fmt.Sprint(i, text)}}); err != nil {
			t.Fatalf("legit send %d while a stream is stuck: %v", i, err)
		}
	}
	for got := 0; got < n; {
		msg, err := rx.Recv()
		if err != nil {
			t.Fatalf("legit receiver after %d of %d: %v", got, n, err)
		}
		if msg.GetKind() == api.Kind_KIND_MESSAGE {
			got++
		}
	}
}

// recvStatus reads st until it ends or d passes, and returns its status
// (nil when still open).
func recvStatus(st api.Chat_StreamClient, cancel context.CancelFunc, d time.Duration) error {
	res := make(chan error, 1)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				res <- err
				return
			}
		}
	}()
	select {
	case err := <-res:
		return err
	case <-time.After(d):
		cancel()
		<-res
		return nil
	}
}

// TestGRPCStopsReading is attack 4: a gRPC stream that stops reading
// while messages flow (under the queue limit, so the slow-consumer rule
// does not fire) used to hold its Send forever. Now -write-timeout (2 s
// here) cuts it, and its user's slot (-max-streams-per-user 1) is free.
func TestGRPCStopsReading(t *testing.T) {
	t.Parallel()
	for _, m := range []mode{openMemory, jwtRedis} {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testGRPCStopsReading(t, m)
		})
	}
}

func testGRPCStopsReading(t *testing.T, m mode) {
	p := startNode(t, nodeOpts{mode: m, args: []string{"-send-rate", "100000", "-write-timeout", "2s", "-max-streams-per-user", "1"}})
	room := newRoom()
	cc := grpcConn(t, p, smallWindows...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tok := m.token(t, "stuck")
	stuck, err := joinStream(ctx, t, cc, tok, "stuck", room, true)
	if err != nil {
		t.Fatalf("attacker join: %v", err)
	}
	fillStuck(t, p, m, room, 40) // 320 KB: over the window, under 1 MiB
	filled := time.Now()
	took, err := waitSlotFree(t, p, tok, "stuck", room, 2*time.Second+6*time.Second)
	if err != nil {
		t.Errorf("the stuck stream's user slot was not released within write timeout 2s + 6s: %v", err)
	} else {
		t.Logf("user slot free %v after the flow stopped", took.Round(time.Millisecond))
	}
	st := recvStatus(stuck, cancel, 5*time.Second)
	switch s, _ := status.FromError(st); {
	case st == nil:
		t.Errorf("stuck stream still open %v after it stopped reading", time.Since(filled).Round(time.Second))
	case s.Code() == codes.Canceled:
		t.Errorf("stuck stream not ended by the node: %v", st)
	default:
		t.Logf("stuck stream ended: %v", st)
	}
	p.checkAlive(t)
	checkChat(t, p, m, room)
}

// TestGRPCStopsReadingThenAbuses is attack 10: a stream that stops reading
// and then trips the rate limit (100 refused sends in a row) used to be
// closed by an orderly close that flushed without a deadline, pinning its
// stream, session and user slot until shutdown. Now the slot is free
// within -flush-timeout (1 s) + -write-timeout (2 s).
func TestGRPCStopsReadingThenAbuses(t *testing.T) {
	t.Parallel()
	m := openMemory
	p := startNode(t, nodeOpts{mode: m, args: []string{"-send-rate", "5", "-send-burst", "20",
		"-write-timeout", "2s", "-flush-timeout", "1s", "-max-streams-per-user", "1"}})
	room := newRoom()
	cc := grpcConn(t, p, smallWindows...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ab, err := joinStream(ctx, t, cc, "", "abuser", room, true)
	if err != nil {
		t.Fatalf("attacker join: %v", err)
	}
	fillStuck(t, p, m, room, 15) // 120 KB: over the window
	for i := range 150 {
		if err := ab.Send(&api.Message{Text: fmt.Sprint("flood ", i)}); err != nil {
			break // the node ended the stream
		}
	}
	took, err := waitSlotFree(t, p, "", "abuser", room, 3*time.Second+6*time.Second)
	if err != nil {
		t.Errorf("the abusive, non-reading stream's user slot was not released within flush 1s + write 2s + 6s: %v", err)
	} else {
		t.Logf("user slot free %v after the flood", took.Round(time.Millisecond))
	}
	p.checkAlive(t)
	checkChat(t, p, m, room)
}

// TestGRPCNeverJoined is attack 8: gRPC streams that never send a first
// message: 5000 on one TCP connection used to be accepted (no
// MaxConcurrentStreams) and held forever. Now -grpc-max-streams-per-conn
// (100 here) bounds them (advertised in SETTINGS, and a raw client that
// ignores it is refused with RST_STREAM REFUSED_STREAM) and -join-timeout
// (1 s) ends the accepted ones.
func TestGRPCNeverJoined(t *testing.T) {
	t.Parallel()
	const streams, limit = 5000, 100
	p := startNode(t, nodeOpts{mode: openMemory, args: []string{"-grpc-max-streams-per-conn", fmt.Sprint(limit), "-join-timeout", "1s"}})
	base := p.rss()
	w := p.watchRSS(t)
	h := dialH2(t, p)
	adv, err := h.maxStreams(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if adv == 0 || adv > limit {
		t.Errorf("the node advertises SETTINGS_MAX_CONCURRENT_STREAMS %d (0: unlimited); want at most %d", adv, limit)
	}
	block := streamHeaders(p.GRPC, 0)
	start := time.Now()
	sent := 0
	for i := range streams {
		if err := h.openStream(uint32(2*i+1), block); err != nil {
			t.Logf("after %d streams: %v", i, err)
			break
		}
		sent++
	}
	t.Logf("%d never-joined streams sent on one connection in %v", sent, time.Since(start).Round(time.Millisecond))
	// Every stream ends: refused at once, or at the join timeout.
	deadline := time.Now().Add(1*time.Second + 8*time.Second)
	var out map[string]int
	var goaway string
	for {
		out, goaway, err = h.outcomes()
		n := 0
		for _, c := range out {
			n += c
		}
		if n >= sent || err != nil || time.Now().After(deadline) {
			t.Logf("after %v: stream outcomes %v, GOAWAY %q, connection error %v", time.Since(start).Round(time.Millisecond), out, goaway, err)
			if n < sent && err == nil {
				t.Errorf("%d of %d never-joined streams still open %v after they were opened (-join-timeout 1s, -grpc-max-streams-per-conn %d)", sent-n, sent, time.Since(start).Round(time.Second), limit)
			}
			break
		}
		time.Sleep(100 * time.Millisecond) // poll interval, bounded by deadline
	}
	if out["refused"] == 0 && goaway == "" {
		t.Errorf("none of %d streams on one connection was refused (want REFUSED_STREAM past %d)", sent, limit)
	}
	peak := w.Peak()
	p.checkAlive(t)
	checkChat(t, p, openMemory, newRoom())
	checkRSS(t, fmt.Sprintf("with %d never-joined streams on one connection", sent), base, peak, 32*mib)
}

// TestGRPCHugeMetadata is attack 6: 15 MiB of gRPC metadata without a
// token (just under grpc-go's old 16 MiB default, so that the old node
// takes it in) used to be read, decoded and answered by the auth
// interceptor (Unauthenticated). Now -grpc-max-header-bytes refuses it at
// the transport (RST_STREAM, GOAWAY or a closed connection) without
// holding it. Four such connections at once, raw HTTP/2, as an attacker
// ignoring the server's SETTINGS would.
func TestGRPCHugeMetadata(t *testing.T) {
	t.Parallel()
	p := startNode(t, nodeOpts{mode: jwtMemory})
	block := streamHeaders(p.GRPC, 15<<20)
	base := p.rss()
	w := p.watchRSS(t)
	var wg sync.WaitGroup
	answers := make([]string, 4)
	for i := range answers {
		h := dialH2(t, p)
		wg.Go(func() {
			werr := h.openStream(1, block)
			deadline := time.Now().Add(20 * time.Second)
			for {
				out, goaway, err := h.outcomes()
				switch {
				case len(out) > 0:
					answers[i] = fmt.Sprint(out)
				case goaway != "":
					answers[i] = "GOAWAY " + goaway
				case err != nil:
					answers[i] = fmt.Sprintf("connection ended: %v (write: %v)", err, werr)
				case time.Now().After(deadline):
					answers[i] = "no answer within 20s"
				default:
					time.Sleep(50 * time.Millisecond) // poll interval, bounded by deadline
					continue
				}
				return
			}
		})
	}
	wg.Wait()
	peak := w.end()
	for i, a := range answers {
		t.Logf("connection %d: %s", i, a)
		if strings.Contains(a, "status") || strings.Contains(a, "no answer") {
			t.Errorf("connection %d: 15 MiB of metadata without a token: %s; want it refused at the transport (RST_STREAM/GOAWAY/close), not answered by the handler", i, a)
		}
	}
	p.checkAlive(t)
	checkRSS(t, "over four 15 MiB metadata blocks", base, peak, 24*mib)
	checkChat(t, p, jwtMemory, newRoom())
}
