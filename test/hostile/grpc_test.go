package hostile_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
	m := openMemory
	p := startNode(t, nodeOpts{mode: m, args: []string{"-send-rate", "100000", "-write-timeout", "2s", "-max-streams-per-user", "1"}})
	room := newRoom()
	cc := grpcConn(t, p, smallWindows...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stuck, err := joinStream(ctx, t, cc, "", "stuck", room, true)
	if err != nil {
		t.Fatalf("attacker join: %v", err)
	}
	fillStuck(t, p, m, room, 40) // 320 KB: over the window, under 1 MiB
	filled := time.Now()
	took, err := waitSlotFree(t, p, "", "stuck", room, 2*time.Second+6*time.Second)
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
// (100 here) bounds them and -join-timeout (1 s) ends them.
func TestGRPCNeverJoined(t *testing.T) {
	t.Parallel()
	p := startNode(t, nodeOpts{mode: openMemory, args: []string{"-grpc-max-streams-per-conn", "100", "-join-timeout", "1s", "-max-streams", "100000"}})
	base := p.rss()
	w := p.watchRSS(t)
	cc := grpcConn(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	chat := api.NewChatClient(cc)
	var streams []api.Chat_StreamClient
	start := time.Now()
	for range 5000 {
		// A stream past the server's limit waits for quota: give each
		// 300 ms, then take the limit as reached.
		res := make(chan api.Chat_StreamClient, 1)
		go func() {
			st, err := chat.Stream(ctx)
			if err != nil {
				st = nil
			}
			res <- st
		}()
		var st api.Chat_StreamClient
		select {
		case st = <-res:
		case <-time.After(300 * time.Millisecond):
		}
		if st == nil || time.Since(start) > 10*time.Second {
			break
		}
		streams = append(streams, st)
	}
	t.Logf("%d never-joined streams opened on one connection in %v", len(streams), time.Since(start).Round(time.Millisecond))
	if len(streams) > 100 {
		t.Errorf("%d never-joined streams open on one TCP connection; want at most 100 (-grpc-max-streams-per-conn)", len(streams))
	}
	// The first one (open longest) is ended by the join timeout.
	if len(streams) > 0 {
		err := recvStatus(streams[0], cancel, 5*time.Second)
		if s, _ := status.FromError(err); err == nil || s.Code() == codes.Canceled {
			t.Errorf("never-joined stream still open %v after it started (-join-timeout 1s): %v", time.Since(start).Round(time.Second), err)
		} else {
			t.Logf("never-joined stream ended: %v", err)
		}
	}
	peak := w.Peak()
	p.checkAlive(t)
	checkChat(t, p, openMemory, newRoom())
	checkRSS(t, "with never-joined streams on one connection", base, peak, 32*mib)
	cancel()
}

// TestGRPCHugeMetadata is attack 6: 16 MiB of gRPC metadata without a
// token (just under grpc-go's old 16 MiB default, so that the old node
// takes it in) used to be read, decoded and answered by the handler's
// interceptor (Unauthenticated). Now -grpc-max-header-bytes refuses it
// at the transport (RST_STREAM or GOAWAY) without holding it. Four such
// connections at once, raw HTTP/2, as an attacker ignoring the server's
// SETTINGS would.
func TestGRPCHugeMetadata(t *testing.T) {
	t.Parallel()
	p := startNode(t, nodeOpts{mode: jwtMemory})
	base := p.rss()
	w := p.watchRSS(t)
	var wg sync.WaitGroup
	answers := make([]string, 4)
	for i := range answers {
		wg.Go(func() { answers[i] = hugeHeaders(t, p, 15<<20) })
	}
	wg.Wait()
	peak := w.end()
	for i, a := range answers {
		t.Logf("connection %d: %s", i, a)
		if strings.Contains(a, "grpc-status") {
			t.Errorf("connection %d: 15 MiB of metadata reached the handler and was answered %s; want it refused at the transport (RST_STREAM/GOAWAY)", i, a)
		}
	}
	p.checkAlive(t)
	checkRSS(t, "over four 15 MiB metadata blocks", base, peak, 24*mib)
	checkChat(t, p, jwtMemory, newRoom())
}

// hugeHeaders opens a raw HTTP/2 connection, sends a Stream call whose
// headers carry size bytes of metadata and no token, and describes the
// answer: "RST_STREAM <code>", "GOAWAY <code>", "grpc-status <n>" or the
// connection error.
func hugeHeaders(t testing.TB, p *proc, size int) string {
	c, err := net.DialTimeout("tcp", p.GRPC, 5*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/chat.Chat/Stream"},
		{":authority", p.GRPC}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	pad := strings.Repeat("p", 64<<10)
	for n := 0; n < size; n += len(pad) {
		_ = enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-pad-%d", n), Value: pad, Sensitive: true})
	}
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			return
		}
		fr := http2.NewFramer(c, nil)
		if fr.WriteSettings() != nil {
			return
		}
		b := block.Bytes()
		const chunk = 16 << 10
		for first := true; len(b) > 0; first = false {
			n := min(chunk, len(b))
			var err error
			if first {
				err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:n], EndHeaders: n == len(b)})
			} else {
				err = fr.WriteContinuation(1, n == len(b), b[:n])
			}
			if err != nil {
				return
			}
			b = b[n:]
		}
	}()
	defer func() { c.Close(); <-wdone }()
	fr := http2.NewFramer(io.Discard, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 32 << 20
	for range 1000 {
		f, err := fr.ReadFrame()
		if err != nil {
			return "connection ended: " + err.Error()
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			return "RST_STREAM " + f.ErrCode.String()
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String()
		case *http2.MetaHeadersFrame:
			if v := f.PseudoValue("status"); v != "" && v != "200" {
				return "HTTP " + v
			}
			for _, h := range f.RegularFields() {
				if h.Name == "grpc-status" {
					return "grpc-status " + h.Value + " " + f.PseudoValue("status")
				}
			}
		}
	}
	return "no answer in 1000 frames"
}
