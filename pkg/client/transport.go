package client

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
)

func (c *Client) connect(ctx context.Context, addr string) (conn, error) {
	if c.cfg.Transport == WebSocket {
		return c.dialWS(ctx, addr)
	}
	return c.dialGRPC(ctx, addr)
}

type grpcConn struct {
	cc     *grpc.ClientConn
	stream grpc.BidiStreamingClient[api.Message, api.Message]
	cancel context.CancelFunc
	sendMu chan struct{}
}

func (c *Client) dialGRPC(ctx context.Context, addr string) (conn, error) {
	creds := insecure.NewCredentials()
	if c.cfg.TLS != nil {
		creds = credentials.NewTLS(c.cfg.TLS)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		// HTTP/2 pings on a connection that has been idle for Keepalive,
		// which is dropped if the answer is not back in KeepaliveTimeout.
		// grpc-go raises Time to at least 10 s, which the node's
		// enforcement policy (MinTime min(10 s, -grpc-keepalive),
		// PermitWithoutStream) accepts.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                c.cfg.Keepalive,
			Timeout:             c.cfg.KeepaliveTimeout,
			PermitWithoutStream: true,
		}))
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	sctx, cancel := context.WithCancel(ctx)
	if c.cfg.Token != "" {
		sctx = metadata.AppendToOutgoingContext(sctx, "authorization", "Bearer "+c.cfg.Token)
	}
	st, err := api.NewChatClient(cc).Stream(sctx)
	if err != nil {
		cancel()
		cc.Close()
		return nil, fmt.Errorf("client: stream %s: %w", addr, err)
	}
	return &grpcConn{cc: cc, stream: st, cancel: cancel, sendMu: make(chan struct{}, 1)}, nil
}

// send may be called from several goroutines; grpc-go allows one sender.
func (g *grpcConn) send(m *api.Message) error {
	g.sendMu <- struct{}{}
	defer func() { <-g.sendMu }()
	return g.stream.Send(m)
}
func (g *grpcConn) recv() (*api.Message, error) { return g.stream.Recv() }
func (g *grpcConn) close()                      { g.cancel(); g.cc.Close() }

// ping is a no-op: the connection has gRPC keepalive (dialGRPC).
func (g *grpcConn) ping(context.Context) error { return nil }

// The WebSocket subprotocols the client offers, in its order of
// preference: pkg/ws's SubprotocolProto, then the default framing
// (auth.Subprotocol). Packed protobuf, not ndjson: this client decodes
// into the generated api types, and protobuf is several times cheaper to
// decode than protojson, and smaller on the wire. A node that does not
// speak the packed mode selects chat.v1 (or nothing), and the connection
// is one JSON message per frame, as it always was.
const (
	wsPacked  = "chat.v1.proto"
	wsDefault = "chat.v1"
)

type wsConn struct {
	c      *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	// packed says the node selected wsPacked: it sends binary frames of
	// length-prefixed protobuf messages, and takes them.
	packed bool
	// rest is what recv has not yet decoded of the last binary frame;
	// only the reading goroutine uses it.
	rest []byte
}

func (c *Client) dialWS(ctx context.Context, addr string) (conn, error) {
	scheme := "ws"
	if c.cfg.TLS != nil {
		scheme = "wss"
	}
	opts := &websocket.DialOptions{HTTPHeader: http.Header{}, Subprotocols: []string{wsPacked, wsDefault}}
	if c.cfg.TLS != nil {
		opts.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: c.cfg.TLS}}
	}
	if c.cfg.Token != "" {
		opts.HTTPHeader.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	wc, resp, err := websocket.Dial(dctx, scheme+"://"+addr+"/v1/chat/stream", opts)
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			return nil, &httpRefusal{status: resp.Status, err: fmt.Errorf("client: dial %s: %w", addr, err)}
		}
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	wc.SetReadLimit(1 << 20)
	cctx, cancel := context.WithCancel(ctx)
	return &wsConn{c: wc, ctx: cctx, cancel: cancel, packed: strings.EqualFold(wc.Subprotocol(), wsPacked)}, nil
}

// send writes m as one frame: a binary frame holding it length-prefixed
// when packed, else its JSON.
func (w *wsConn) send(m *api.Message) error {
	typ, b := websocket.MessageText, []byte(nil)
	var err error
	if w.packed {
		n := proto.Size(m)
		typ, b = websocket.MessageBinary, binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+n), uint64(n))
		b, err = proto.MarshalOptions{}.MarshalAppend(b, m)
	} else {
		b, err = protojson.Marshal(m)
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	return w.c.Write(ctx, typ, b)
}

// recv returns the next message: the next of the last packed frame, or
// else of the next frame (a text frame is one JSON message).
func (w *wsConn) recv() (*api.Message, error) {
	m := new(api.Message)
	if len(w.rest) == 0 {
		typ, data, err := w.c.Read(w.ctx)
		if err != nil {
			return nil, err
		}
		if typ == websocket.MessageText {
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
				return nil, fmt.Errorf("client: bad frame: %w", err)
			}
			return serverError(m)
		}
		if len(data) == 0 {
			return nil, errors.New("client: bad frame: empty binary frame")
		}
		w.rest = data
	}
	n, k := binary.Uvarint(w.rest)
	if k <= 0 || n > uint64(len(w.rest)-k) {
		w.rest = nil
		return nil, errors.New("client: bad frame: broken length prefix")
	}
	b := w.rest[k : k+int(n)]
	if w.rest = w.rest[k+int(n):]; len(w.rest) == 0 {
		w.rest = nil // don't keep the frame
	}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("client: bad frame: %w", err)
	}
	return serverError(m)
}

// serverError returns m, or the error a bare error frame carries.
func serverError(m *api.Message) (*api.Message, error) {
	if m.Error != nil && m.Kind == api.Kind_KIND_MESSAGE {
		// A bare error frame ends the connection; its code is a
		// google.rpc code, as on gRPC (see permanent).
		return nil, fmt.Errorf("client: server error: %w", status.Error(codes.Code(m.Error.Code), m.Error.Message))
	}
	return m, nil
}

func (w *wsConn) close() { w.cancel(); w.c.CloseNow() }

// ping sends a WebSocket ping and waits for its pong (read by recv's
// loop, which always runs while the session does).
func (w *wsConn) ping(ctx context.Context) error { return w.c.Ping(ctx) }

// httpRefusal is a WebSocket upgrade answered 401 or 403: a token the node
// does not accept.
type httpRefusal struct {
	status string
	err    error
}

func (e *httpRefusal) Error() string { return e.err.Error() + " (" + e.status + ")" }
func (e *httpRefusal) Unwrap() error { return e.err }

// permanent returns err as a *PermanentError when no retry with the same
// configuration can succeed (see PermanentError), else nil. wasLive says
// whether the connection had gone live: an InvalidArgument or a 1008 close
// after that is about one message (too large, say), not the join.
func permanent(addr string, err error, wasLive bool) error {
	if err == nil {
		return nil
	}
	var hr *httpRefusal
	if errors.As(err, &hr) {
		return &PermanentError{Addr: addr, Err: err}
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unauthenticated, codes.PermissionDenied:
			return &PermanentError{Addr: addr, Err: err}
		case codes.InvalidArgument:
			if !wasLive {
				return &PermanentError{Addr: addr, Err: err}
			}
		}
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) && ce.Code == websocket.StatusPolicyViolation {
		// A refused join, or a token that expired; not a slow consumer
		// (a replay the client could not keep up with).
		if strings.HasPrefix(ce.Reason, "unauthenticated") || !wasLive && !strings.HasPrefix(ce.Reason, "slow consumer") {
			return &PermanentError{Addr: addr, Err: err}
		}
	}
	return nil
}
