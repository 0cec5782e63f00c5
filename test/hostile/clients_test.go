package hostile_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"

	"example.com/chat/api"
	"example.com/chat/pkg/client"
)

// newRoom returns a room name of the test's own.
func newRoom() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return "h-" + hex.EncodeToString(b[:])
}

// checkChat is assertion (b): two legitimate clients (user names of their
// own, one per transport) join room on p, and each receives a message the
// other sends, within 10 s.
func checkChat(t testing.TB, p *proc, m mode, room string) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("legit chat on node %s checked in %v", p.id, time.Since(start).Round(time.Millisecond)) }()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	dial := func(user string, tr client.Transport, addr string) *client.Client {
		c, err := client.Dial(client.Config{Addrs: []string{addr}, Transport: tr, User: user, Room: room,
			Token: m.token(t, user), NoHistory: true, MaxBackoff: time.Second})
		if err != nil {
			t.Fatalf("legit client %s: %v", user, err)
		}
		return c
	}
	suffix := newRoom()[2:]
	a := dial("alice"+suffix, client.GRPC, p.GRPC)
	defer a.Close()
	b := dial("bob"+suffix, client.WebSocket, p.HTTP)
	defer b.Close()
	for _, c := range []*client.Client{a, b} {
		if err := c.WaitLive(ctx); err != nil {
			t.Fatalf("legit client of room %s did not go live on node %s: %v (node running: %v)", room, p.id, err, p.running())
		}
	}
	for i, pair := range [][2]*client.Client{{a, b}, {b, a}} {
		text := fmt.Sprintf("legit %d %s", i, suffix)
		if _, err := pair[0].Send(ctx, text); err != nil {
			t.Fatalf("legit send %q on node %s: %v", text, p.id, err)
		}
		if err := waitText(ctx, pair[1], text); err != nil {
			t.Fatalf("legit receive %q on node %s: %v", text, p.id, err)
		}
	}
}

func waitText(ctx context.Context, c *client.Client, text string) error {
	for {
		select {
		case m, ok := <-c.Messages():
			if !ok {
				return errors.New("client closed")
			}
			if m.GetKind() == api.Kind_KIND_MESSAGE && m.GetText() == text {
				return nil
			}
		case <-ctx.Done():
			return fmt.Errorf("not received: %w", ctx.Err())
		}
	}
}

// smallBufDialer dials with a 4 KiB receive buffer set before connect, so
// that a client that does not read stops the server's writes after a few
// KiB instead of the several MiB loopback autotuning would absorb.
var smallBufDialer = &net.Dialer{Timeout: 5 * time.Second, Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
	})
	if err != nil {
		return err
	}
	return serr
}}

// wsConn is a raw WebSocket client.
type wsConn struct {
	c *websocket.Conn
}

// dialWS opens a WebSocket to p's stream endpoint, with token (if any)
// as a bearer header; small sets the 4 KiB receive buffer. The
// connection is closed at cleanup. The response is returned for a refused
// upgrade.
func dialWS(ctx context.Context, t testing.TB, p *proc, token string, small bool) (*wsConn, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	if small {
		tr.DialContext = smallBufDialer.DialContext
	}
	c, resp, err := websocket.Dial(ctx, "ws://"+p.HTTP+"/v1/chat/stream", &websocket.DialOptions{
		HTTPHeader: h, HTTPClient: &http.Client{Transport: tr},
	})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &wsConn{c: c}, resp, nil
}

func (w *wsConn) sendRaw(ctx context.Context, frame string) error {
	return w.c.Write(ctx, websocket.MessageText, []byte(frame))
}

func (w *wsConn) send(ctx context.Context, m *api.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	return w.c.Write(ctx, websocket.MessageText, b)
}

// recv returns the next frame's bytes.
func (w *wsConn) recv(ctx context.Context) ([]byte, error) {
	_, b, err := w.c.Read(ctx)
	return b, err
}

// waitLive reads frames until KIND_LIVE, failing on an error frame.
func (w *wsConn) waitLive(ctx context.Context) error {
	for range 100000 {
		b, err := w.recv(ctx)
		if err != nil {
			return err
		}
		m := new(api.Message)
		if err := protojson.Unmarshal(b, m); err != nil {
			return fmt.Errorf("frame %.200q: %w", b, err)
		}
		if m.GetError() != nil && m.GetKind() != api.Kind_KIND_ERROR {
			return fmt.Errorf("error frame: %.300s", b)
		}
		if m.GetKind() == api.Kind_KIND_LIVE {
			return nil
		}
	}
	return errors.New("no KIND_LIVE in 100000 frames")
}

// readUntilClosed reads (and discards) frames until the connection ends
// or d passes; it returns the error that ended it, nil when still open.
func (w *wsConn) readUntilClosed(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for range 1000000 {
		if _, _, err := w.c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	return nil
}

// closeDesc describes how a WebSocket read ended: its close code and
// reason, or the transport error.
func closeDesc(err error) string {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("close %d %q", int(ce.Code), ce.Reason)
	}
	return fmt.Sprintf("no close frame (%v)", err)
}

// grpcConn opens a gRPC client connection to p (closed at cleanup); opts
// come after the defaults.
func grpcConn(t testing.TB, p *proc, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(p.GRPC, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// withToken adds token (if any) to ctx's outgoing metadata.
func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// seedHistory stores n messages of size bytes of control characters
// (each expands to 6 bytes in JSON) in room, through gRPC Send.
func seedHistory(t testing.TB, p *proc, m mode, room string, n, size int) {
	t.Helper()
	cc := grpcConn(t, p)
	chat := api.NewChatClient(cc)
	text := strings.Repeat("\x01\x02\x1b", size/3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = withToken(ctx, m.token(t, "seeder"))
	for i := range n {
		if _, err := chat.Send(ctx, &api.SendRequest{Room: room, Message: &api.Message{User: "seeder", Text: fmt.Sprint(i) + text}}); err != nil {
			t.Fatalf("seed history message %d: %v", i, err)
		}
	}
}
