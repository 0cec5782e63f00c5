package client_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/pkg/client"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeNode is a gRPC chat node with scripted behaviour: it answers a join
// with KIND_LIVE (unless silent), sends a KIND_HEARTBEAT every beat (if
// set), and acknowledges sends only if ack.
type fakeNode struct {
	silent bool
	beat   time.Duration
	ack    bool
	hangUp bool // ends the stream right after KIND_LIVE

	mu   sync.Mutex
	got  []*api.Message // sends received
	seq  uint64
	addr string
	api.UnimplementedChatServer
}

func startFake(t *testing.T, n *fakeNode) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	api.RegisterChatServer(s, n)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	n.addr = lis.Addr().String()
	return n
}

func (n *fakeNode) Stream(st grpc.BidiStreamingServer[api.Message, api.Message]) error {
	if _, err := st.Recv(); err != nil { // the join
		return err
	}
	if n.silent {
		<-st.Context().Done()
		return nil
	}
	var sendMu sync.Mutex
	send := func(m *api.Message) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return st.Send(m)
	}
	if err := send(&api.Message{Kind: api.Kind_KIND_LIVE, Epoch: "e"}); err != nil {
		return err
	}
	if n.hangUp {
		return status.Error(codes.Unavailable, "going away")
	}
	if n.beat > 0 {
		t := time.NewTicker(n.beat)
		defer t.Stop()
		go func() {
			for {
				select {
				case <-st.Context().Done():
					return
				case <-t.C:
					_ = send(&api.Message{Kind: api.Kind_KIND_HEARTBEAT})
				}
			}
		}()
	}
	for {
		m, err := st.Recv()
		if err != nil {
			return nil
		}
		n.mu.Lock()
		n.got = append(n.got, m)
		n.seq++
		seq := n.seq
		n.mu.Unlock()
		if n.ack {
			if err := send(&api.Message{Kind: api.Kind_KIND_ACK, ClientId: m.GetClientId(), Seq: seq, Epoch: "e"}); err != nil {
				return nil
			}
		}
	}
}

func (n *fakeNode) received() []*api.Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*api.Message(nil), n.got...)
}

func dial(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	cfg.User, cfg.Room = "u", "r"
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	c, err := client.Dial(cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range c.Messages() {
		}
	}()
	t.Cleanup(c.Close)
	return c
}

// A node that accepts the stream and never answers (a frozen process: its
// kernel completes the handshake) is given up after HeartbeatTimeout, and
// the client goes live on the next address.
func TestSilentNodeIsLeft(t *testing.T) {
	t.Parallel()
	silent := startFake(t, &fakeNode{silent: true})
	live := startFake(t, &fakeNode{ack: true})
	c := dial(t, client.Config{Addrs: []string{silent.addr, live.addr}, HeartbeatTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.WaitLive(ctx); err != nil {
		t.Fatalf("not live on the second node: %v", err)
	}
	if n := c.Reconnects.Load(); n != 1 {
		t.Errorf("%d reconnects; want 1", n)
	}
}

// A node that ends the stream (a crash, a drain) is left at once: the
// connection's keepalive must not hold the session open.
func TestEndedStreamReconnects(t *testing.T) {
	t.Parallel()
	gone := startFake(t, &fakeNode{hangUp: true})
	live := startFake(t, &fakeNode{ack: true})
	c := dial(t, client.Config{Addrs: []string{gone.addr, live.addr}})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	deadline := time.Now().Add(5 * time.Second)
	for c.Reconnects.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect within 5 s of a stream that ended")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := c.WaitLive(ctx); err != nil {
		t.Fatalf("not live on the second node: %v", err)
	}
}

// A node that keeps the stream alive (heartbeats) but never acknowledges a
// send: after AckTimeout the connection is dropped, and the send is
// retried with the same client id on the next node, which acknowledges it.
func TestUnacknowledgedSendMovesOn(t *testing.T) {
	t.Parallel()
	mute := startFake(t, &fakeNode{beat: 50 * time.Millisecond})
	live := startFake(t, &fakeNode{ack: true})
	c := dial(t, client.Config{Addrs: []string{mute.addr, live.addr}, HeartbeatTimeout: time.Second, AckTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ack, err := c.Send(ctx, "hello")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("send took %v; want the ack timeout (300 ms) plus a reconnect", took)
	}
	first, second := mute.received(), live.received()
	if len(first) != 1 || len(second) != 1 {
		t.Fatalf("the nodes received %d and %d sends; want 1 each", len(first), len(second))
	}
	if id := first[0].GetClientId(); id == "" || id != second[0].GetClientId() || id != ack.GetClientId() {
		t.Errorf("client ids %q, %q, ack %q: want one id, retried", id, second[0].GetClientId(), ack.GetClientId())
	}
	if n := c.Reconnects.Load(); n != 1 {
		t.Errorf("%d reconnects; want 1", n)
	}
}

// A WebSocket peer that stops reading answers no ping: the client gives
// the connection up after KeepaliveTimeout, heartbeat watchdog or not.
func TestWebSocketPingTimeout(t *testing.T) {
	t.Parallel()
	stop := make(chan struct{})
	var accepted sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		accepted.Add(1)
		defer accepted.Done()
		// Never reads, so never answers a ping.
		<-stop
		wc.CloseNow()
	}))
	t.Cleanup(func() {
		close(stop)
		srv.Close()
	})
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := dial(t, client.Config{
		Addrs: []string{addr}, Transport: client.WebSocket, HeartbeatTimeout: -1,
		Keepalive: 100 * time.Millisecond, KeepaliveTimeout: 200 * time.Millisecond,
	})
	deadline := time.Now().Add(5 * time.Second)
	for c.Reconnects.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no reconnect within 5 s of a peer that answers no ping")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
}
