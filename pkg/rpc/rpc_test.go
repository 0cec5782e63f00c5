package rpc_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"example.com/chat/api"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/rpc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newServer runs the Chat service on a bufconn listener and returns a client.
func newServer(t *testing.T, mod func(*hub.Config)) api.ChatClient {
	t.Helper()
	cc, _ := serve(t, mod)
	return api.NewChatClient(cc)
}

// serve is newServer with gRPC server options, that returns the client
// connection and the hub.
func serve(t testing.TB, mod func(*hub.Config), opts ...grpc.ServerOption) (*grpc.ClientConn, *hub.Hub) {
	t.Helper()
	return serveWith(t, mod, opts, nil)
}

// serveWith is serve with the client connection's dial options too.
func serveWith(t testing.TB, mod func(*hub.Config), opts []grpc.ServerOption, dialOpts []grpc.DialOption) (*grpc.ClientConn, *hub.Hub) {
	t.Helper()
	log := history.NewMemory(history.MemoryConfig{Size: 100})
	cfg := hub.Config{Broker: pubsub.NewMemory(log), History: log, SendRate: 1e6}
	if mod != nil {
		mod(&cfg)
	}
	h, err := hub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(append(opts, grpc.ForceServerCodecV2(rpc.Codec{}))...)
	rpc.New(rpc.Config{Hub: h}).Register(gs)
	go gs.Serve(lis)
	cc, err := grpc.NewClient("passthrough:///bufnet", append(dialOpts,
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Shutdown(ctx)
		gs.Stop()
	})
	return cc, h
}

type stream = grpc.BidiStreamingClient[api.Message, api.Message]

func open(t testing.TB, c api.ChatClient, first *api.Message) stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := c.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(first); err != nil {
		t.Fatal(err)
	}
	if first.GetJoin().GetEvents() {
		// Wait until the join is complete and live.
		for {
			m := recv(t, s)
			if m.GetKind() == api.Kind_KIND_LIVE {
				break
			}
		}
	}
	return s
}

func recv(t testing.TB, s stream) *api.Message {
	t.Helper()
	type res struct {
		m   *api.Message
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := s.Recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("recv: %v", r.err)
		}
		return r.m
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a message")
		return nil
	}
}

// recvErr waits for the stream to end and returns its status.
func recvErr(t testing.TB, s stream) error {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch := make(chan error, 1)
		go func() { _, err := s.Recv(); ch <- err }()
		select {
		case err := <-ch:
			if err != nil {
				return err
			}
		case <-deadline:
			t.Fatal("stream did not end")
		}
	}
}

func TestOneClientSendsAnotherReceives(t *testing.T) {
	t.Parallel()
	c := newServer(t, nil)
	b := open(t, c, &api.Message{User: "bob", Join: &api.Join{Events: true}})
	a := open(t, c, &api.Message{User: "alice", Join: &api.Join{Events: true}})
	recv(t, b) // alice's join event
	if err := a.Send(&api.Message{Text: "hello"}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, b)
	if m.GetText() != "hello" || m.GetUser() != "alice" || m.GetSeq() != 1 {
		t.Fatalf("got %v", m)
	}
	if ack := recv(t, a); ack.GetKind() != api.Kind_KIND_ACK || ack.GetSeq() != 1 {
		t.Fatalf("sender got %v, want its ack", ack)
	}
}

func TestFirstMessageTextIsDelivered(t *testing.T) {
	t.Parallel()
	c := newServer(t, nil)
	b := open(t, c, &api.Message{User: "bob"})
	a := open(t, c, &api.Message{User: "web", Text: "hi"})
	_ = a
	if m := recv(t, b); m.GetText() != "hi" || m.GetUser() != "web" {
		t.Fatalf("got %v", m)
	}
}

func TestHistoryOnJoinAndRooms(t *testing.T) {
	t.Parallel()
	c := newServer(t, nil)
	a := open(t, c, &api.Message{User: "alice", Room: "dev", Join: &api.Join{Events: true}})
	for i := range 3 {
		if err := a.Send(&api.Message{Text: fmt.Sprint("m", i)}); err != nil {
			t.Fatal(err)
		}
		recv(t, a) // ack
	}
	other := open(t, c, &api.Message{User: "carol", Room: "ops", Join: &api.Join{Events: true}})
	b, err := c.Stream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer b.CloseSend()
	if err := b.Send(&api.Message{User: "bob", Room: "dev"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if m := recv(t, b); m.GetText() != fmt.Sprint("m", i) || m.GetSeq() != uint64(i+1) {
			t.Fatalf("history %d: %v", i, m)
		}
	}
	// Nothing from dev reached ops.
	if err := other.Send(&api.Message{Text: "ops only"}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, other); m.GetKind() != api.Kind_KIND_ACK {
		t.Fatalf("ops got %v", m)
	}
	resp, err := c.History(context.Background(), &api.HistoryRequest{Room: "dev", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetMessages()) != 2 || resp.GetMessages()[1].GetText() != "m2" {
		t.Fatalf("history rpc: %v", resp)
	}
}

func TestUnarySend(t *testing.T) {
	t.Parallel()
	c := newServer(t, nil)
	b := open(t, c, &api.Message{User: "bob"})
	out, err := c.Send(context.Background(), &api.SendRequest{Room: "general", Message: &api.Message{User: "rest", Text: "via rest"}})
	if err != nil {
		t.Fatal(err)
	}
	if out.GetSeq() != 1 {
		t.Fatalf("send returned %v", out)
	}
	if m := recv(t, b); m.GetText() != "via rest" || m.GetUser() != "rest" {
		t.Fatalf("got %v", m)
	}
	_, err = c.Send(context.Background(), &api.SendRequest{Room: "bad room", Message: &api.Message{User: "x", Text: "y"}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad room: %v", err)
	}
}

func TestBadInputEndsStreamWithClearStatus(t *testing.T) {
	t.Parallel()
	c := newServer(t, nil)
	watcher := open(t, c, &api.Message{User: "watcher"})
	for _, tc := range []struct {
		name  string
		first *api.Message
		next  *api.Message
		code  codes.Code
		want  string
	}{
		{"empty user", &api.Message{}, nil, codes.InvalidArgument, "user name is empty"},
		{"long user", &api.Message{User: strings.Repeat("x", 65)}, nil, codes.InvalidArgument, "longer than 64"},
		{"control char", &api.Message{User: "a\nb"}, nil, codes.InvalidArgument, "control character"},
		{"bad room", &api.Message{User: "a", Room: "a/b"}, nil, codes.InvalidArgument, "room name"},
		{"text too long", &api.Message{User: "a"}, &api.Message{Text: strings.Repeat("x", 16<<10+1)}, codes.ResourceExhausted, "16384 bytes"},
		{"empty text", &api.Message{User: "a"}, &api.Message{}, codes.InvalidArgument, "text is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := c.Stream(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Send(tc.first); err != nil {
				t.Fatal(err)
			}
			if tc.next != nil {
				if err := s.Send(tc.next); err != nil {
					t.Fatal(err)
				}
			}
			err = recvErr(t, s)
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.want)
			}
		})
	}
	// Nothing invalid reached anyone.
	ok := open(t, c, &api.Message{User: "ok"})
	if err := ok.Send(&api.Message{Text: "valid"}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, watcher); m.GetText() != "valid" {
		t.Fatalf("watcher got %v", m)
	}
}

func TestSlowGRPCConsumerIsCut(t *testing.T) {
	t.Parallel()
	c := newServer(t, func(c *hub.Config) { c.MaxQueueBytes = 32 << 10 })
	slow := open(t, c, &api.Message{User: "slow"})
	fast := open(t, c, &api.Message{User: "fast"})
	pub := open(t, c, &api.Message{User: "pub"})
	text := strings.Repeat("x", 1000)
	// Enough to fill the HTTP/2 windows and the queue of a client that
	// never reads; the fast one reads along.
	for i := range 3000 {
		if err := pub.Send(&api.Message{Text: text}); err != nil {
			t.Fatal(err)
		}
		if m := recv(t, fast); m.GetSeq() != uint64(i+1) {
			t.Fatalf("fast got %v", m.GetSeq())
		}
	}
	err := recvErr(t, slow)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "slow consumer") {
		t.Fatalf("slow client ended with %v", err)
	}
}
