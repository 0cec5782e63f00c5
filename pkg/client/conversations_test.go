package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/client"
)

// holdProxy forwards TCP connections to a node's HTTP listener, but holds
// what the node sends after its HTTP response head (the WebSocket
// upgrade) until release is closed: a client behind it has sent its join,
// the node has taken it, and the client is not live yet.
type holdProxy struct {
	addr    string
	release chan struct{}
}

func startHoldProxy(t *testing.T, target string) *holdProxy {
	t.Helper()
	p := &holdProxy{release: make(chan struct{})}
	p.addr = startProxy(t, target, func(up, down net.Conn) {
		_, _ = io.Copy(up, down)
	}, func(down, up net.Conn) {
		// The response head passes; the frames after it wait.
		var head []byte
		buf := make([]byte, 4096)
		for {
			n, err := up.Read(buf)
			head = append(head, buf[:n]...)
			if err != nil {
				return
			}
			if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
				if _, err := down.Write(head[:i+4]); err != nil {
					return
				}
				head = head[i+4:]
				break
			}
		}
		<-p.release
		if _, err := down.Write(head); err != nil {
			return
		}
		_, _ = io.Copy(down, up)
	})
	return p
}

// present waits until the node at grpcAddr lists user in room.
func present(t *testing.T, grpcAddr, room, user string) {
	t.Helper()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := api.NewChatClient(cc).Presence(ctx, &api.PresenceRequest{Room: room})
		cancel()
		if err == nil && slices.Contains(r.GetUsers(), user) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never present in %s: %v %v", user, room, r, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the node
	}
}

// waitMessage returns the next chat message c receives in room with text.
func waitMessage(t *testing.T, c *client.Client, room, text string, within time.Duration) *api.Message {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatalf("client closed before %q in %s: %v", text, room, c.Err())
			}
			if m.GetKind() == api.Kind_KIND_MESSAGE && m.GetRoom() == room && m.GetText() == text {
				return m
			}
		case <-timeout:
			t.Fatalf("no %q in %s within %v", text, room, within)
		}
	}
}

// TestSubscribeWhileJoining: a room subscribed after the join went out
// and before the connection is live is subscribed on that connection,
// not only on the next one. It used to be remembered for the next
// connection only: the stream never received it until a reconnect.
func TestSubscribeWhileJoining(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t)
	p := startHoldProxy(t, a.HTTP)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(client.Config{Addrs: []string{p.addr}, Transport: client.WebSocket, User: "alice", Room: "first", NoHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	present(t, a.GRPC, "first", "alice") // the node took the join
	if addr := c.Addr(); addr != "" {
		t.Fatalf("the client is live on %s already: the proxy did not hold the node's answer", addr)
	}
	if err := c.Subscribe("second"); err != nil {
		t.Fatal(err)
	}
	close(p.release)
	if err := c.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	if rooms := c.Rooms(); !slices.Equal(rooms, []string{"first", "second"}) {
		t.Errorf("Rooms() = %v, want [first second]", rooms)
	}
	present(t, a.GRPC, "second", "alice")
	sender, err := client.Dial(client.Config{Addrs: []string{a.GRPC}, User: "bob", Room: "second", NoHistory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	if _, err := sender.Send(ctx, "hello second"); err != nil {
		t.Fatal(err)
	}
	waitMessage(t, c, "second", "hello second", 10*time.Second)
	if n := c.Reconnects.Load(); n != 0 {
		t.Errorf("%d reconnects; the room must come on the first connection", n)
	}
}

// nextKind returns the next message of kind that c receives, in room
// unless room is empty.
func nextKind(t *testing.T, c *client.Client, kind api.Kind, room string, within time.Duration) *api.Message {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				t.Fatalf("client closed before a %v: %v", kind, c.Err())
			}
			if m.GetKind() == kind && (room == "" || m.GetRoom() == room) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %v within %v", kind, within)
		}
	}
}

// TestDirectAndConversations, against a JWT node, on both transports (the
// gRPC RPCs over the stream's connection, the REST routes on WebSocket):
// Direct names the pair's room and starts it once, inviting the peer on
// their personal channel; both can use it; Conversations lists it with
// its peer and position; talking to yourself is InvalidArgument; a third
// user's subscription is refused and dropped, and the stream goes on.
func TestDirectAndConversations(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t, "-jwt-secret", testSecret)
	for _, tc := range []struct {
		transport client.Transport
		addr      string
	}{{client.GRPC, a.GRPC}, {client.WebSocket, a.HTTP}} {
		t.Run(string(tc.transport), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			user := func(name string) string { return name + "-" + string(tc.transport) }
			alice, bob, carol := user("alice"), user("bob"), user("carol")
			connect := func(name string) *client.Client {
				tok, err := auth.Mint([]byte(testSecret), name, nil, time.Hour, "", "")
				if err != nil {
					t.Fatal(err)
				}
				c, err := client.Dial(client.Config{Addrs: []string{tc.addr}, Transport: tc.transport, User: name, Token: tok, Personal: true, NoHistory: true})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(c.Close)
				if err := c.WaitLive(ctx); err != nil {
					t.Fatal(err)
				}
				return c
			}
			ac, bc, cc := connect(alice), connect(bob), connect(carol)

			d, err := ac.Direct(ctx, bob)
			if err != nil {
				t.Fatal(err)
			}
			if want := access.DirectRoom(alice, bob); d.GetRoom() != want || !d.GetCreated() {
				t.Fatalf("Direct = %v, want %s, created", d, want)
			}
			room := d.GetRoom()
			inv := nextKind(t, bc, api.Kind_KIND_INVITE, "", 10*time.Second)
			if inv.GetRoom() != room || inv.GetUser() != alice {
				t.Fatalf("bob's invitation %v, want room %s from %s", inv, room, alice)
			}
			if again, err := bc.Direct(ctx, alice); err != nil || again.GetRoom() != room || again.GetCreated() {
				t.Fatalf("bob's Direct = %v, %v; want %s, not created", again, err, room)
			}
			for _, c := range []*client.Client{ac, bc} {
				if err := c.Subscribe(room); err != nil {
					t.Fatal(err)
				}
				nextKind(t, c, api.Kind_KIND_LIVE, room, 10*time.Second)
			}
			ack, err := ac.SendTo(ctx, room, "just us")
			if err != nil {
				t.Fatal(err)
			}
			waitMessage(t, bc, room, "just us", 10*time.Second)

			convs, err := ac.Conversations(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(convs, func(c *api.Conversation) bool { return c.GetRoom() == room })
			if i < 0 {
				t.Fatalf("alice's conversations %v lack %s", convs, room)
			}
			if c := convs[i]; c.GetKind() != "direct" || c.GetPeer() != bob || c.GetLastSeq() != ack.GetSeq() || c.GetEpoch() != ack.GetEpoch() {
				t.Fatalf("alice's conversation %v, want direct with %s at %s:%d", c, bob, ack.GetEpoch(), ack.GetSeq())
			}

			_, err = ac.Direct(ctx, alice)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Direct with yourself: %v, want InvalidArgument", err)
			}
			var se interface{ GRPCStatus() *status.Status }
			if !errors.As(err, &se) || !strings.Contains(se.GRPCStatus().Message(), "yourself") {
				t.Fatalf("Direct with yourself: %v, want the node's words", err)
			}

			if err := cc.Subscribe(room); err != nil {
				t.Fatal(err)
			}
			e := nextKind(t, cc, api.Kind_KIND_ERROR, "", 10*time.Second)
			if e.GetRoom() != room || codes.Code(e.GetError().GetCode()) != codes.PermissionDenied {
				t.Fatalf("carol's subscription answered %v, want PermissionDenied naming %s", e, room)
			}
			if rooms := cc.Rooms(); slices.Contains(rooms, room) {
				t.Fatalf("carol's Rooms() %v still hold the refused %s", rooms, room)
			}
			if convs, err := cc.Conversations(ctx, 0); err != nil || slices.ContainsFunc(convs, func(c *api.Conversation) bool { return c.GetRoom() == room }) {
				t.Fatalf("carol's conversations %v, %v; want no %s", convs, err, room)
			}
			// carol's stream goes on.
			if _, err := cc.Send(ctx, "still here"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestUnaryNeedsALiveConnection: Direct and Conversations say
// ErrNotConnected while the client is not live.
func TestUnaryNeedsALiveConnection(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	c, err := client.Dial(client.Config{Addrs: []string{dead}, User: "u"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Direct(ctx, "v"); !errors.Is(err, client.ErrNotConnected) {
		t.Errorf("Direct: %v, want ErrNotConnected", err)
	}
	if _, err := c.Conversations(ctx, 0); !errors.Is(err, client.ErrNotConnected) {
		t.Errorf("Conversations: %v, want ErrNotConnected", err)
	}
}
