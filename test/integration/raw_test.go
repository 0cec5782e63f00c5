package integration_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"example.com/chat/api"
	"example.com/chat/pkg/client"
)

// raw is a bare stream (gRPC or WebSocket) for checking the protocol
// frame by frame.
type raw interface {
	Send(m *api.Message) error
	// Recv returns the next frame; a WebSocket error frame (the gateway's
	// shape, outside KIND_ERROR) is returned as an error.
	Recv() (*api.Message, error)
}

// dialRaw opens a stream to addr (the gRPC or the HTTP listener) that ends
// with ctx or at cleanup.
func dialRaw(t *testing.T, ctx context.Context, tr client.Transport, addr string) raw {
	t.Helper()
	if tr == client.WebSocket {
		c, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/chat/stream", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadLimit(1 << 20)
		t.Cleanup(func() { c.CloseNow() })
		return &wsRaw{ctx: ctx, c: c}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(func() { cancel(); cc.Close() })
	st, err := api.NewChatClient(cc).Stream(sctx)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type wsRaw struct {
	ctx context.Context
	c   *websocket.Conn
}

func (w *wsRaw) Send(m *api.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	return w.c.Write(w.ctx, websocket.MessageText, b)
}

func (w *wsRaw) Recv() (*api.Message, error) {
	_, data, err := w.c.Read(w.ctx)
	if err != nil {
		return nil, err
	}
	m := new(api.Message)
	if err := protojson.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("frame %s: %w", data, err)
	}
	if m.GetError() != nil && m.GetKind() == api.Kind_KIND_MESSAGE {
		return nil, fmt.Errorf("error frame: %s", data)
	}
	return m, nil
}

// significant are the kinds the tests check; the others (join, leave,
// typing, heartbeats, ...) are skipped.
var significant = []api.Kind{api.Kind_KIND_MESSAGE, api.Kind_KIND_ACK, api.Kind_KIND_ERROR, api.Kind_KIND_TRUNCATED, api.Kind_KIND_LIVE}

// recvReplay reads a fresh stream's replay: the stored messages before
// KIND_LIVE, whether KIND_TRUNCATED came, and the KIND_LIVE frame.
func recvReplay(t *testing.T, r raw) (msgs []*api.Message, truncated bool, live *api.Message) {
	t.Helper()
	for {
		m, err := r.Recv()
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		switch m.GetKind() {
		case api.Kind_KIND_MESSAGE:
			msgs = append(msgs, m)
		case api.Kind_KIND_TRUNCATED:
			if len(msgs) > 0 {
				t.Fatalf("KIND_TRUNCATED after %d replayed messages; want it first", len(msgs))
			}
			truncated = true
		case api.Kind_KIND_LIVE:
			return msgs, truncated, m
		default:
			if slices.Contains(significant, m.GetKind()) {
				t.Fatalf("unexpected frame during replay: %v", m)
			}
		}
	}
}

// recvNext returns the next frame of kind, skipping frames of the kinds
// in skip and insignificant ones; any other frame fails the test.
func recvNext(t *testing.T, r raw, kind api.Kind, skip ...api.Kind) *api.Message {
	t.Helper()
	for {
		m, err := r.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v", kind, err)
		}
		switch {
		case m.GetKind() == kind:
			return m
		case slices.Contains(significant, m.GetKind()) && !slices.Contains(skip, m.GetKind()):
			t.Fatalf("waiting for %s, got %v", kind, m)
		}
	}
}
