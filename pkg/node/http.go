package node

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/pkg/auth"
)

// streamPath is the WebSocket route: the only one that outlives a request.
const streamPath = "/v1/chat/stream"

// restGuard bounds every HTTP request but the WebSocket upgrade before the
// mux sees it: a read deadline for the body and a write deadline for the
// answer (per request, through http.ResponseController, because
// http.Server.ReadTimeout and WriteTimeout would also cut WebSockets), a
// body limit enforced while the gateway decodes, and, in JWT mode, the
// token of an API call checked before a byte of its body is read.
//
// Without it, four 50 MB POSTs without a token took a JWT node from 31 MB
// to 852 MB (the gateway decoded them, and only the gRPC interceptor
// behind it looked at the token), and a slow body or an unread answer held
// its connection and buffers forever.
type restGuard struct {
	next         http.Handler
	gw           *runtime.ServeMux // for its error shape
	verifier     *auth.Verifier    // nil: open mode
	readTimeout  time.Duration
	writeTimeout time.Duration
	maxBody      int64
}

func (g *restGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == streamPath {
		// The WebSocket handler bounds the upgrade and the connection
		// itself (join timeout, pings, per-write deadlines).
		g.next.ServeHTTP(w, r)
		return
	}
	rc := http.NewResponseController(w)
	now := time.Now()
	// Errors mean the writer cannot take deadlines (a test recorder):
	// nothing to bound then. Zero timeouts mean none.
	if g.readTimeout > 0 {
		_ = rc.SetReadDeadline(now.Add(g.readTimeout))
	}
	if g.writeTimeout > 0 {
		_ = rc.SetWriteDeadline(now.Add(g.writeTimeout))
	}

	hasBody := r.Body != nil && r.Body != http.NoBody
	if g.verifier != nil && strings.HasPrefix(r.URL.Path, "/v1/") {
		// The same verifier and carriers as the streams: the gRPC
		// interceptor behind the gateway checks again, this check only
		// keeps the body unread.
		if _, err := g.verifier.FromRequest(r); err != nil {
			if hasBody {
				w.Header().Set("Connection", "close") // do not drain the body either
			}
			g.fail(w, r, http.StatusUnauthorized, status.Error(codes.Unauthenticated, err.Error()))
			return
		}
	}
	if !hasBody {
		g.next.ServeHTTP(w, r)
		return
	}
	if r.ContentLength > g.maxBody {
		w.Header().Set("Connection", "close")
		g.tooLarge(w, r)
		return
	}
	lb := &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, g.maxBody)}
	r.Body = lb
	g.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), limitedBodyKey{}, lb)))
}

// fail answers with the gateway's JSON error shape ({"code", "message",
// "details"}) and HTTP status code.
func (g *restGuard) fail(w http.ResponseWriter, r *http.Request, code int, err error) {
	_, out := runtime.MarshalerForRequest(g.gw, r)
	runtime.DefaultHTTPErrorHandler(r.Context(), g.gw, out, w, r, &runtime.HTTPStatusError{HTTPStatus: code, Err: err})
}

func (g *restGuard) tooLarge(w http.ResponseWriter, r *http.Request) {
	g.fail(w, r, http.StatusRequestEntityTooLarge,
		status.Errorf(codes.InvalidArgument, "request body too large (limit %d bytes)", g.maxBody))
}

// errorHandler is the gateway's error handler: the default, except that a
// request whose body hit the limit while the gateway decoded it gets 413
// (the gateway itself reports every decode error as 400).
func (g *restGuard) errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if lb, ok := r.Context().Value(limitedBodyKey{}).(*limitedBody); ok && lb.tripped.Load() {
		g.tooLarge(w, r)
		return
	}
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, w, r, err)
}

// limitedBody is an http.MaxBytesReader that remembers it refused.
type limitedBody struct {
	io.ReadCloser
	tripped atomic.Bool
}

type limitedBodyKey struct{}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.tripped.Store(true)
	}
	return n, err
}

// withTimeouts returns the limits of a node's HTTP server: the header
// timeout, keep-alive idle timeout and header size for every connection
// (the per-request deadlines are restGuard's).
func withTimeouts(srv *http.Server, cfg Config) *http.Server {
	srv.ReadHeaderTimeout = cfg.HTTPReadHeaderTimeout
	srv.IdleTimeout = cfg.HTTPIdleTimeout
	srv.MaxHeaderBytes = cfg.MaxHeaderBytes
	return srv
}
