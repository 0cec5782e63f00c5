package rpc_test

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/rpc"
)

// TestStatusTextsAreBounded: a refusal that quotes the client's input (a
// user name that does not match the token's, any length) is sent cut on a
// character boundary: a megabyte in the status would overflow the client's
// header limit and arrive as an unrelated error.
func TestStatusTextsAreBounded(t *testing.T) {
	t.Parallel()
	secret := []byte(strings.Repeat("s", 32))
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	cc, _ := serve(t, nil, grpc.ChainStreamInterceptor(v.StreamInterceptor()), grpc.ChainUnaryInterceptor(v.UnaryInterceptor()))
	c := api.NewChatClient(cc)
	tok, err := auth.Mint(secret, "alice", nil, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	name := "a" + strings.Repeat("€", 20000)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"stream", func() error {
			s, err := c.Stream(ctx)
			if err != nil {
				return err
			}
			if err := s.Send(&api.Message{User: name}); err != nil {
				return err
			}
			return recvErr(t, s)
		}},
		{"unary send", func() error {
			_, err := c.Send(ctx, &api.SendRequest{Room: "general", Message: &api.Message{User: name, Text: "x"}})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.PermissionDenied || len(msg) > rpc.MaxErrorText || !utf8.ValidString(msg) || !strings.HasPrefix(msg, `user "a€`) {
				t.Fatalf("got %v (%d bytes)", status.Code(err), len(msg))
			}
		})
	}
}
