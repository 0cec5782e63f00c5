package hostile_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
)

// TestLimits is attack 11: limits that could be walked around.
func TestLimits(t *testing.T) {
	t.Parallel()
	t.Run("send-budget-across-nodes", testSendBudgetAcrossNodes)
	t.Run("invalid-frames", testInvalidFrames)
	t.Run("conn-rate-per-ip", testConnRatePerIP)
	t.Run("join-leave-churn", testChurn)
}

// testSendBudgetAcrossNodes: one token spread over three nodes on one
// Redis gets the single-node budget (-send-rate 5 -send-burst 10). The
// send bucket used to be per user per node: three times the budget.
func testSendBudgetAcrossNodes(t *testing.T) {
	t.Parallel()
	const rate, burst = 5, 10
	rs := testutil.StartRedis(t)
	m := jwtRedis
	var ps []*proc
	for i := range 3 {
		ps = append(ps, startNode(t, nodeOpts{mode: m, redis: rs, id: fmt.Sprintf("budget-%d", i+1),
			args: []string{"-send-rate", fmt.Sprint(rate), "-send-burst", fmt.Sprint(burst)}}))
	}
	room := newRoom()
	tok := m.token(t, "spread")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var acks, refused atomic.Int64
	var wg sync.WaitGroup
	var first, last atomic.Int64 // unix nanos of the first and last send
	for i, p := range ps {
		cc := grpcConn(t, p)
		st, err := joinStream(ctx, t, cc, tok, "spread", room, true)
		if err != nil {
			t.Fatalf("stream on node %d: %v", i+1, err)
		}
		wg.Go(func() { // reader
			for {
				msg, err := st.Recv()
				if err != nil {
					return
				}
				switch {
				case msg.GetKind() == api.Kind_KIND_ACK:
					acks.Add(1)
				case msg.GetError() != nil:
					refused.Add(1)
				}
			}
		})
		wg.Go(func() { // sender: one every 40 ms for 3 s
			defer st.CloseSend()
			tk := time.NewTicker(40 * time.Millisecond)
			defer tk.Stop()
			for j := range 75 {
				now := time.Now().UnixNano()
				first.CompareAndSwap(0, now)
				last.Store(now)
				if err := st.Send(&api.Message{Text: fmt.Sprint("n", i, " m", j), ClientId: fmt.Sprint(i, "-", j)}); err != nil {
					return
				}
				<-tk.C
			}
		})
	}
	// Let the answers to the last sends arrive: the readers end when the
	// node ends the streams after CloseSend.
	wg.Wait()
	elapsed := time.Duration(last.Load() - first.Load())
	bound := burst + rate*elapsed.Seconds() + 3
	t.Logf("3 nodes, one token: %d sends accepted, %d refused, over %v; single-node budget %.1f", acks.Load(), refused.Load(), elapsed.Round(time.Millisecond), bound)
	if float64(acks.Load()) > bound {
		t.Errorf("one token over three nodes got %d sends accepted in %v; the single-node budget (burst %d + %d/s, +3 slack) is %.1f: the limit is per node",
			acks.Load(), elapsed.Round(time.Millisecond), burst, rate, bound)
	}
	for _, p := range ps {
		p.checkAlive(t)
	}
	checkChat(t, ps[0], m, room)
}

// testInvalidFrames: a connection sending invalid frames is closed after
// -max-invalid-frames (3 here); they used to be answered forever.
func testInvalidFrames(t *testing.T) {
	t.Parallel()
	p := startNode(t, nodeOpts{mode: openMemory, args: []string{"-max-invalid-frames", "3"}})
	room := newRoom()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, _, err := dialWS(ctx, t, p, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.send(ctx, &api.Message{User: "garbler", Room: room, Join: &api.Join{Events: true}}); err != nil {
		t.Fatal(err)
	}
	if err := w.waitLive(ctx); err != nil {
		t.Fatalf("join: %v", err)
	}
	sent := 0
	for range 20 {
		if w.sendRaw(ctx, `{"text": not json`) != nil {
			break
		}
		sent++
	}
	err = w.readUntilClosed(3 * time.Second)
	switch code := websocket.CloseStatus(err); {
	case err == nil:
		t.Errorf("connection still open after %d invalid frames (-max-invalid-frames 3)", sent)
	case code != websocket.StatusPolicyViolation && code != websocket.StatusUnsupportedData:
		t.Errorf("after %d invalid frames the connection ended with %s; want close 1008 (policy violation)", sent, closeDesc(err))
	default:
		t.Logf("after %d invalid frames: %s", sent, closeDesc(err))
	}
	p.checkAlive(t)
	checkChat(t, p, openMemory, room)
}

// testConnRatePerIP: in open mode new connections per client IP are
// limited (-conn-rate-per-ip 5 -conn-burst-per-ip 10) on both listeners;
// they used to be unlimited.
func testConnRatePerIP(t *testing.T) {
	t.Parallel()
	const rate, burst, flood = 5, 10, 60
	p := startNode(t, nodeOpts{mode: openMemory, args: []string{"-conn-rate-per-ip", fmt.Sprint(rate), "-conn-burst-per-ip", fmt.Sprint(burst)}})
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	httpServed := func() error {
		resp, err := hc.Get("http://" + p.HTTP + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	}
	// grpcServed: the gRPC listener answers an HTTP/2 preface with its
	// SETTINGS frame, unless it refused the connection.
	grpcServed := func() error {
		c, err := net.DialTimeout("tcp", p.GRPC, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			return err
		}
		if err := http2.NewFramer(c, nil).WriteSettings(); err != nil {
			return err
		}
		var hdr [9]byte
		_, err = io.ReadFull(c, hdr[:])
		return err
	}
	for _, l := range []struct {
		name   string
		served func() error
	}{{"http", httpServed}, {"grpc", grpcServed}} {
		start := time.Now()
		ok, refused := 0, 0
		var lastRefusal error
		for i := 0; i < flood && time.Since(start) < 15*time.Second; i++ {
			if err := l.served(); err != nil {
				refused++
				lastRefusal = err
			} else {
				ok++
			}
		}
		elapsed := time.Since(start)
		bound := burst + rate*elapsed.Seconds() + 3
		t.Logf("%s: %d connections in %v: %d served, %d refused (last: %v); bound %.1f", l.name, ok+refused, elapsed.Round(time.Millisecond), ok, refused, lastRefusal, bound)
		if float64(ok) > bound {
			t.Errorf("%s: %d of %d new connections from one IP served in %v; want at most %.1f (burst %d + %d/s + 3)", l.name, ok, ok+refused, elapsed.Round(time.Millisecond), bound, burst, rate)
		}
		// The bucket refills: the node serves this IP again.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := l.served()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the node still refuses this IP 10s after the flood: %v", l.name, err)
			}
			time.Sleep(200 * time.Millisecond) // token refill, bounded by deadline
		}
	}
	p.checkAlive(t)
	checkChat(t, p, openMemory, newRoom())
}

// testChurn: join/leave churn with fresh names must not flood an observer:
// a room delivers at most -presence-event-rate join/leave events per second
// (bursts of twice that, plus one), whatever the churn; the rest are
// dropped and the presence API stays exact.
func testChurn(t *testing.T) {
	t.Parallel()
	const rate = 10
	p := startNode(t, nodeOpts{mode: openMemory, args: []string{"-conn-rate-per-ip", "0", "-leave-grace", "100ms", "-presence-event-rate", fmt.Sprint(rate)}})
	room := newRoom()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc := grpcConn(t, p)
	obs, err := joinStream(ctx, t, cc, "", "observer", room, true)
	if err != nil {
		t.Fatal(err)
	}
	var events atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := obs.Recv()
			if err != nil {
				return
			}
			if k := m.GetKind(); k == api.Kind_KIND_JOIN || k == api.Kind_KIND_LEAVE {
				events.Add(1)
			}
		}
	}()
	start := time.Now()
	for i := range 100 {
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := joinStream(sctx, t, cc, "", fmt.Sprint("churn-", i), room, true); err != nil {
			t.Logf("churner %d: %v", i, err)
		}
		scancel()
	}
	// The leaves of the last churners come after the grace.
	time.Sleep(300 * time.Millisecond)
	elapsed := time.Since(start)
	cancel()
	<-done
	n := events.Load()
	t.Logf("100 fresh joins in %v: the observer saw %d join/leave events (%.1f/s)", elapsed, n, float64(n)/elapsed.Seconds())
	if budget := int64(2*rate + 1 + rate*elapsed.Seconds() + 1); n > budget {
		t.Fatalf("the observer saw %d join/leave events in %v, over the room's budget of %d", n, elapsed, budget)
	}
	if n == 0 {
		t.Fatal("the observer saw no join/leave event at all")
	}
}
