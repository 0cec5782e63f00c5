package rpc_test

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
)

// FuzzGRPCEdge drives raw messages (any bytes, not only chat.Messages)
// through the real gRPC edge of a running hub and checks that whatever a
// client sends: the node survives (a panic anywhere fails the run), every
// message it answers is a chat.Message, the stream ends with a status that
// is not a server fault once the client closes its side, and two clients
// already in the room still send and receive.
//
// The input is up to three messages: n%4 of a, b, c are sent.
func FuzzGRPCEdge(f *testing.F) {
	enc := func(m *api.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	join := enc(&api.Message{User: "fz", Join: &api.Join{Events: true}})
	badUTF8 := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "\xff\xfe")
	for _, s := range []struct {
		n       uint8
		a, b, c []byte
	}{
		{1, enc(&api.Message{User: "fz", Text: "hi"}), nil, nil},
		{3, join, enc(&api.Message{Text: "hello", ClientId: "c"}), enc(&api.Message{Kind: api.Kind_KIND_TYPING})},
		{2, join, badUTF8, nil},
		{1, badUTF8, nil, nil},
		{1, []byte{0xff, 0xff, 0xff}, nil, nil},
		{2, join, enc(&api.Message{Kind: api.Kind_KIND_ACK, Text: "x"}), nil},
		{2, enc(&api.Message{User: "fz"}), enc(&api.Message{Text: strings.Repeat("x", 1025)}), nil},
		{1, enc(&api.Message{User: "fz", Room: strings.Repeat("r", 65)}), nil, nil},
		{1, enc(&api.Message{User: strings.Repeat("€", 1000)}), nil, nil},
		{1, enc(&api.Message{User: "fz", Join: &api.Join{AfterSeq: 1<<64 - 1, Epoch: "x", History: -5}}), nil, nil},
		{2, join, enc(&api.Message{Text: strings.Repeat("\x01", 300)}), nil},
		{1, protowire.AppendTag(nil, protowire.MaxValidNumber, protowire.BytesType), nil, nil},
		{0, nil, nil, nil},
		{3, nil, nil, nil},
	} {
		f.Add(s.n, s.a, s.b, s.c)
	}
	cc, _ := serve(f, func(c *hub.Config) { c.MaxTextBytes = 1024; c.JoinTimeout = 2 * time.Second })
	c := api.NewChatClient(cc)
	watcher := open(f, c, &api.Message{User: "watcher", Join: &api.Join{Events: true}})
	peer := open(f, c, &api.Message{User: "peer", Join: &api.Join{Events: true}})
	round := 0
	f.Fuzz(func(t *testing.T, n uint8, a, b, c []byte) {
		round++
		s := rawStream(t, cc)
		for _, m := range [][]byte{a, b, c}[:n%4] {
			if s.SendMsg(m) != nil {
				break // the stream ended
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			for {
				var b []byte
				if err := s.RecvMsg(&b); err != nil {
					done <- err
					return
				}
				if err := proto.Unmarshal(b, new(api.Message)); err != nil {
					done <- fmt.Errorf("answer is not a chat.Message: %w", err)
					return
				}
			}
		}()
		select {
		case err := <-done:
			if errors.Is(err, io.EOF) {
				break // status OK
			}
			switch status.Code(err) {
			case codes.Internal, codes.Unknown:
				t.Fatalf("stream ended with a server fault: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the stream did not end after the client closed its side")
		}

		// The room still works both ways.
		text := fmt.Sprintf("check-%d", round)
		if err := peer.Send(&api.Message{Text: text, ClientId: text}); err != nil {
			t.Fatal(err)
		}
		for {
			if m := recv(t, peer); m.GetKind() == api.Kind_KIND_ACK && m.GetClientId() == text {
				break
			}
		}
		for {
			if m := recv(t, watcher); m.GetText() == text && m.GetUser() == "peer" {
				break
			}
		}
	})
}
