package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"example.com/chat/pkg/auth"
)

// fakeStream is the least of a grpc.ServerStream the stream interceptor
// needs: its context.
type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (f *fakeStream) Context() context.Context { return f.ctx }

// TestExpiredWithinLeewayRefusedEverywhere: a token past its exp is refused
// by Verify and by both interceptors (REST reaches the service through the
// unary one), however recent its expiry. The leeway is for clock skew on
// nbf, not a grace period after exp.
func TestExpiredWithinLeewayRefusedEverywhere(t *testing.T) {
	t.Parallel()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, secret, claims("alice", -5*time.Second), nil)
	if c, err := v.Verify(tok); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("Verify of a token expired 5 s ago: %+v, %v; want ErrExpired", c, err)
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
	called := false
	_, err = v.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/chat.Chat/Publish"}, func(context.Context, any) (any, error) {
		called = true
		return nil, nil
	})
	if status.Code(err) != codes.Unauthenticated || called {
		t.Fatalf("unary interceptor: handler called %v, err %v; want Unauthenticated", called, err)
	}
	err = v.StreamInterceptor()(nil, &fakeStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: "/chat.Chat/Stream"}, func(any, grpc.ServerStream) error {
		called = true
		return nil
	})
	if status.Code(err) != codes.Unauthenticated || called {
		t.Fatalf("stream interceptor: handler called %v, err %v; want Unauthenticated", called, err)
	}
}

// TestNotBeforeLeeway: a token whose nbf is a few seconds ahead (the
// issuer's clock runs fast) is accepted within the leeway, and refused
// beyond it.
func TestNotBeforeLeeway(t *testing.T) {
	t.Parallel()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret, Leeway: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		nbf  time.Duration
		ok   bool
	}{
		{"nbf 5 s ahead", 5 * time.Second, true},
		{"nbf a minute ahead", time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := claims("alice", time.Hour)
			c["nbf"] = time.Now().Add(tc.nbf).Unix()
			_, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, c, nil))
			if (err == nil) != tc.ok {
				t.Fatalf("Verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
