package rpc_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
)

// rawCodec sends []byte messages as they are, so that a test can send
// what no generated client would: bytes that are not a chat.Message.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// rawStream opens a Chat/Stream that sends and receives raw bytes.
func rawStream(t *testing.T, cc *grpc.ClientConn) grpc.ClientStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/chat.Chat/Stream", grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func marshal(t *testing.T, m *api.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestUndecodableMessagesEndTheStream: bytes that are not a chat.Message
// end the stream with InvalidArgument, before or after the join, like
// every other invalid input on gRPC (the first one ends the stream: a
// gRPC client is a program, which has no use for a budget of mistakes).
// They ended it with OK after the join, and Internal before.
func TestUndecodableMessagesEndTheStream(t *testing.T) {
	t.Parallel()
	cc, _ := serve(t, nil)
	c := api.NewChatClient(cc)
	watcher := open(t, c, &api.Message{User: "watcher", Room: "undecodable", Join: &api.Join{Events: true}})
	badUTF8 := protowire.AppendString(protowire.AppendTag(nil, 2, protowire.BytesType), "\xff\xfe")
	for _, tc := range []struct {
		name   string
		frames [][]byte
	}{
		{"garbage first", [][]byte{{0xff, 0xff, 0xff}}},
		{"invalid UTF-8 first", [][]byte{badUTF8}},
		{"garbage after join", [][]byte{marshal(t, &api.Message{User: "a", Room: "undecodable"}), {0xff, 0xff, 0xff}}},
		{"invalid UTF-8 after join", [][]byte{marshal(t, &api.Message{User: "b", Room: "undecodable", Join: &api.Join{Events: true}}), badUTF8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := rawStream(t, cc)
			for _, f := range tc.frames {
				if err := s.SendMsg(f); err != nil {
					t.Fatal(err)
				}
			}
			done := make(chan error, 1)
			go func() {
				for {
					var b []byte
					if err := s.RecvMsg(&b); err != nil {
						done <- err
						return
					}
				}
			}()
			err := <-done
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "not a valid chat.Message") {
				t.Fatalf("got %v", err)
			}
		})
	}
	// The watcher is unaffected.
	ok := open(t, c, &api.Message{User: "ok", Room: "undecodable"})
	if err := ok.Send(&api.Message{Text: "valid"}); err != nil {
		t.Fatal(err)
	}
	for {
		m := recv(t, watcher)
		if m.GetKind() == api.Kind_KIND_MESSAGE {
			if m.GetText() != "valid" {
				t.Fatalf("watcher got %v", m)
			}
			break
		}
	}
}
