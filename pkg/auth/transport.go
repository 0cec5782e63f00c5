package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// SubprotocolPrefix marks a token carried in Sec-WebSocket-Protocol: a
// browser offers ["chat.v1", "bearer.<jwt>"] and the server selects chat.v1,
// never the token.
const SubprotocolPrefix = "bearer."

// Subprotocol is the WebSocket subprotocol of the default framing (one
// JSON message per frame), which the server selects when offered; pkg/ws
// defines the packed ones a client may offer instead.
const Subprotocol = "chat.v1"

// bearer extracts the token of an "Authorization: Bearer <t>" value.
func bearer(v string) string {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// FromRequest verifies the token of an HTTP request: the Authorization
// header, a "bearer.<jwt>" WebSocket subprotocol, or the access_token query
// parameter (in that order).
func (v *Verifier) FromRequest(r *http.Request) (*Claims, error) {
	if t := bearer(r.Header.Get("Authorization")); t != "" {
		return v.Verify(t)
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); strings.HasPrefix(p, SubprotocolPrefix) {
				return v.Verify(strings.TrimPrefix(p, SubprotocolPrefix))
			}
		}
	}
	return v.Verify(r.URL.Query().Get("access_token"))
}

func (v *Verifier) fromContext(ctx context.Context) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var tok string
	if vals := md.Get("authorization"); len(vals) > 0 {
		tok = bearer(vals[0])
	}
	c, err := v.Verify(tok)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return NewContext(ctx, c), nil
}

// UnaryInterceptor rejects calls without a valid token with Unauthenticated
// and puts the claims in the context of the others. Health checks pass
// unauthenticated, so load balancers can probe.
func (v *Verifier) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if public(info.FullMethod) {
			return h(ctx, req)
		}
		ctx, err := v.fromContext(ctx)
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor is UnaryInterceptor for streams.
func (v *Verifier) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if public(info.FullMethod) {
			return h(srv, ss)
		}
		ctx, err := v.fromContext(ss.Context())
		if err != nil {
			return err
		}
		return h(srv, &wrapped{ServerStream: ss, ctx: ctx})
	}
}

func public(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

type wrapped struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrapped) Context() context.Context { return w.ctx }

// IsAuthError reports whether err came from Verify.
func IsAuthError(err error) bool {
	for _, e := range []error{ErrMissing, ErrExpired, ErrSignature, ErrAlgorithm, ErrAudience, ErrIssuer, ErrMalformed, ErrInvalid} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
