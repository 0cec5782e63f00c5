package ws

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"example.com/chat/api"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/hub"
)

// Config configures a Handler. Hub is required.
type Config struct {
	// Hub receives the sessions.
	Hub *hub.Hub
	// Logger receives the handler's logs; nil discards them.
	Logger *slog.Logger
	// OriginPatterns are the extra origins (host patterns, as in
	// websocket.AcceptOptions) allowed to connect; the page's own origin is
	// always allowed.
	OriginPatterns []string
	// WriteTimeout bounds one batch of writes to a client, and each error
	// frame written before the join. Zero means the hub's WriteTimeout
	// (-write-timeout), the one knob for every edge; set it only to
	// override that for WebSocket clients.
	WriteTimeout time.Duration
	// PingInterval is how often an idle connection is pinged; a peer that
	// does not answer within another interval is closed. Zero means 30 s.
	PingInterval time.Duration
	// Verifier, when set, requires a valid token on the upgrade request
	// (Authorization header, "bearer.<jwt>" subprotocol, or access_token
	// query parameter); without one the answer is 401, before upgrading.
	// Nil means open mode: the first frame names the user.
	Verifier *auth.Verifier
}

// Handler serves WebSocket chat streams.
type Handler struct {
	cfg       Config
	log       *slog.Logger
	readLimit int64
}

// New returns a Handler.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = cfg.Hub.Config().WriteTimeout
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = 30 * time.Second
	}
	// A frame may hold a maximal text, JSON-escaped (up to 6 bytes per byte
	// for control characters), plus the other fields.
	limit := int64(cfg.Hub.Config().MaxTextBytes)*6 + 4096
	return &Handler{cfg: cfg, log: cfg.Logger, readLimit: limit}
}

var unmarshalOpts = protojson.UnmarshalOptions{DiscardUnknown: true}

// ServeHTTP upgrades the request and runs the session until either side
// ends it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var claims *auth.Claims
	if h.cfg.Verifier != nil {
		// The verifier refuses a token past its expiry, as for every
		// other call (no leeway on exp).
		c, err := h.cfg.Verifier.FromRequest(r)
		if err != nil {
			// The error names what is wrong (expired, bad signature, ...)
			// and nothing secret.
			w.Header().Set("WWW-Authenticate", `Bearer realm="chat"`)
			http.Error(w, hub.ClientText(err.Error(), hub.MaxErrorText), http.StatusUnauthorized)
			return
		}
		claims = c
	}
	// Admitted before upgrading: a full or draining node costs a refused
	// client one HTTP answer, not a WebSocket it would hold.
	adm, err := h.cfg.Hub.Admit()
	if err != nil {
		refuse(w, err)
		return
	}
	cw := &corkWriter{ResponseWriter: w}
	var protos []string
	if p := selectSubprotocol(r); p != "" {
		// Never the token: a browser carrying "bearer.<jwt>" also offers
		// chat.v1 (or a packed mode), which is what gets echoed.
		protos = []string{p}
	}
	c, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		OriginPatterns:  h.cfg.OriginPatterns,
		CompressionMode: websocket.CompressionDisabled,
		Subprotocols:    protos,
	})
	if err != nil {
		adm.Release()
		h.log.Debug("websocket upgrade refused", "err", err)
		return
	}
	c.SetReadLimit(h.readLimit)
	m, _ := modeOf(c.Subprotocol())
	// r.Context() must not be used after the upgrade: the connection is
	// hijacked. The session has its own context.
	conn := &conn{h: h, c: c, raw: cw.conn, mode: m, claims: claims, closed: make(chan struct{})}
	ctx := context.Background()
	if stop, ok := conn.join(ctx, adm); ok {
		// The rest of the connection's life is reading, on a goroutine
		// of its own: this one's stack has grown through the request, the
		// handshake and the join, and an idle connection would keep it.
		go conn.serve(ctx, stop)
	}
}

// conn is one WebSocket client; it implements hub.Transport.
type conn struct {
	h      *Handler
	c      *websocket.Conn
	raw    *rawConn
	mode   mode // the framing, by subprotocol
	claims *auth.Claims
	sess   *hub.Session
	// closed is closed once the session's writer has closed the
	// connection (Close): only then may run drop it.
	closed chan struct{}
	// invalid counts the frames the client sent that were malformed or
	// refused as invalid (in a packed frame, each such message); only the
	// reading goroutine uses it.
	invalid int
	// in splits the client's packed frames (packed modes only).
	in packedReader
}

// tooManyInvalid is the close reason of a connection that spent its
// invalid-frame budget.
const tooManyInvalid = "too many invalid frames"

// spendInvalid counts one invalid frame and reports whether that exhausts
// the connection's budget (hub.Config.MaxInvalidFrames): a client that
// keeps sending garbage must not keep the node busy answering it.
func (k *conn) spendInvalid() bool {
	k.invalid++
	return k.invalid >= k.h.cfg.Hub.Config().MaxInvalidFrames
}

// refuse answers an upgrade request the hub did not admit: 503 with a
// Retry-After, for a full node (try another) or a draining one (reconnect,
// the load balancer picks another).
func refuse(w http.ResponseWriter, err error) {
	retry := "5"
	if e := hub.AsError(err); e != nil && e.Kind == hub.KindClosed {
		retry = "1"
	}
	msg := "node unavailable"
	if e := hub.AsError(err); e != nil {
		msg = hub.ClientText(e.Msg, hub.MaxErrorText)
	}
	w.Header().Set("Retry-After", retry)
	http.Error(w, msg, http.StatusServiceUnavailable)
}

// join reads the first message within the admission's deadline, joins the
// hub, and sends the first message's text. When ok, serve must run next
// with stop; otherwise the connection is closed. The admission is released
// (or taken by the session) on every path.
func (k *conn) join(ctx context.Context, adm *hub.Admission) (stop func() bool, ok bool) {
	defer adm.Release()
	// Reads do not use the admission's context: coder/websocket drops a
	// connection whose read context ends, and the client would not learn
	// why. At the deadline (or on drain) the connection is closed with a
	// close frame instead, which ends the read.
	closed := make(chan struct{})
	stopDeadline := context.AfterFunc(adm.Context(), func() {
		defer close(closed)
		status, reason := websocket.StatusServiceRestart, "service restart: reconnect"
		if adm.Context().Err() == context.DeadlineExceeded {
			status = websocket.StatusPolicyViolation
			reason = truncateReason("join timeout: send the first message within " + k.h.cfg.Hub.Config().JoinTimeout.String())
		}
		k.c.Close(status, reason)
	})
	first, ok := k.readFirst(ctx)
	if !stopDeadline() {
		// The deadline passed (or the node drains) as the first frame
		// arrived: the close is under way; wait for it to end, so that
		// nothing of this connection outlives its handler.
		<-closed
		k.c.CloseNow()
		return nil, false
	}
	if !ok {
		k.c.CloseNow()
		return nil, false
	}
	var id *hub.Identity
	if c := k.claims; c != nil {
		id = &hub.Identity{User: c.User, MayJoin: c.MayJoin, Expires: c.Expires}
	}
	o := hub.JoinFrom(first, "ws", id)
	o.Admission = adm
	sess, err := k.h.cfg.Hub.Join(ctx, k, o)
	if err != nil {
		k.fail(ctx, err)
		k.c.CloseNow()
		return nil, false
	}
	k.sess = sess
	// A session closed without flush (slow consumer, dead peer) drops the
	// connection at once, which also ends a write stuck on it.
	stop = context.AfterFunc(sess.Context(), func() {
		if r := sess.Reason(); r == hub.CloseSlowConsumer || r == hub.CloseWriteError {
			k.c.CloseNow()
		}
	})
	if first.GetText() != "" || first.GetKind() == api.Kind_KIND_TYPING {
		if !k.publish(ctx, first) {
			k.finish(stop)
			return nil, false
		}
	}
	return stop, true
}

// serve reads the joined client's frames until either side ends the
// session.
func (k *conn) serve(ctx context.Context, stop func() bool) {
	k.startPinger(k.sess.Context())
	k.readLoop(ctx, k.sess)
	k.finish(stop)
}

// finish waits for the session's writer to close the connection, then
// releases it. Not sess.Context(): that ends just before the writer sends
// the close frame, which dropping the connection would race away.
func (k *conn) finish(stop func() bool) {
	<-k.closed
	stop()
	k.c.CloseNow()
}

// readFirst reads frames until one is a valid join message. Malformed
// frames are answered here directly: no session writer runs yet.
func (k *conn) readFirst(ctx context.Context) (*api.Message, bool) {
	for {
		m, bad, ok := k.readMessage(ctx)
		if bad != nil {
			k.writeError(ctx, codes.InvalidArgument, bad.Error(), 0)
			if k.spendInvalid() {
				k.c.Close(websocket.StatusPolicyViolation, tooManyInvalid)
				return nil, false
			}
			continue
		}
		if m != nil || !ok {
			return m, ok
		}
	}
}

// readMessage reads the client's next message: one frame in the default
// mode, the next message of a packed frame (reading one when none is left)
// in the others. It returns the decoding error of a malformed message (for
// the caller to answer), and ok false when the connection is done.
func (k *conn) readMessage(ctx context.Context) (m *api.Message, bad error, ok bool) {
	for {
		if k.in.more() {
			m, bad := k.in.next()
			if m == nil && bad == nil {
				continue // a blank line
			}
			return m, bad, true
		}
		typ, data, err := k.c.Read(ctx)
		if err != nil {
			return nil, nil, false
		}
		if k.mode != modeSingle {
			if err := k.in.start(typ, data); err != nil {
				return nil, err, true
			}
			continue
		}
		if typ != websocket.MessageText {
			k.c.Close(websocket.StatusUnsupportedData, "binary frames are not supported: send JSON text frames")
			return nil, nil, false
		}
		m, err = DecodeFrame(data)
		if err != nil {
			return nil, err, true
		}
		return m, nil, true
	}
}

// DecodeFrame parses a client's text frame: a chat.Message in protojson.
// Unknown fields are ignored, so newer clients work with older nodes. The
// error is fit to show the client.
func DecodeFrame(data []byte) (*api.Message, error) {
	m := new(api.Message)
	if err := unmarshalOpts.Unmarshal(data, m); err != nil {
		// The decoder's error may quote the input: cut it (on a
		// character boundary) and make it valid UTF-8.
		return nil, fmt.Errorf("frame is not a valid chat.Message in JSON: %s", hub.ClientText(err.Error(), 200))
	}
	return m, nil
}

func (k *conn) readLoop(ctx context.Context, sess *hub.Session) {
	for {
		// Reads use ctx, not the session's context: when a read's context
		// ends, coder/websocket drops the connection at once, and the
		// session's context ends just before its writer sends the close
		// frame (1008 token expired, 1012 restart, ...), which would then
		// be lost. The read ends when Close closes the connection.
		m, bad, ok := k.readMessage(ctx)
		if !ok {
			sess.Close(hub.CloseNormal)
			return
		}
		if bad != nil {
			// Through the session's queue, like every frame after the
			// join: the library itself writes only control frames from
			// now on (see corkWriter).
			sess.SendError(&api.Error{Code: int32(codes.InvalidArgument), Message: bad.Error()}, "")
			if k.spendInvalid() {
				sess.Close(hub.CloseInvalidInput)
				return
			}
			continue
		}
		if hub.IsControl(m) {
			if err := sess.Control(sess.Context(), m); err != nil {
				k.fail(sess.Context(), err)
				return
			}
			continue
		}
		if !k.publish(sess.Context(), m) {
			return
		}
	}
}

// publish sends m, pipelined: the bus's answer (an ack, or an error
// frame) comes later, in order, while the next frames are read. A message
// refused before the bus gets an error frame and the connection goes on.
// It returns false when the session is over.
func (k *conn) publish(ctx context.Context, m *api.Message) bool {
	err := k.sess.PublishAsync(ctx, m, answer)
	if err == nil {
		return true
	}
	e := hub.AsError(err)
	if e == nil || e.Kind == hub.KindClosed {
		return false
	}
	if e.Kind != hub.KindUnavailable {
		k.h.log.Debug("message rejected", "user", k.sess.User(), "err", err)
	}
	k.sess.SendError(errorEvent(e), m.GetClientId())
	// Refused as invalid counts against the budget; a rate-limited send
	// does not (the hub closes a client that ignores the limit, CloseAbuse),
	// nor does a backend outage.
	if (e.Kind == hub.KindInvalid || e.Kind == hub.KindTooLarge) && k.spendInvalid() {
		k.sess.Close(hub.CloseInvalidInput)
		return false
	}
	return true
}

// answer maps the failure of a send the bus did not store (or may not
// have: KindUnavailable) to the error frame the client gets; a session or
// node closing gets none.
func answer(err error) *api.Error {
	e := hub.AsError(err)
	if err == nil || e == nil || e.Kind == hub.KindClosed {
		return nil
	}
	return errorEvent(e)
}

// errorEvent is the error frame's content for e.
func errorEvent(e *hub.Error) *api.Error {
	return e.Proto()
}

// fail answers a failed join: an error frame, then a close.
func (k *conn) fail(ctx context.Context, err error) {
	e := hub.AsError(err)
	if e == nil {
		e = &hub.Error{Kind: hub.KindUnavailable, Msg: "internal error"}
	}
	k.writeError(ctx, Code(e), e.Msg, e.RetryAfterMs)
	status := websocket.StatusPolicyViolation
	switch e.Kind {
	case hub.KindClosed:
		status = websocket.StatusServiceRestart
	case hub.KindUnavailable, hub.KindLimit:
		status = websocket.StatusTryAgainLater
	case hub.KindTooLarge:
		status = websocket.StatusMessageTooBig
	}
	k.c.Close(status, truncateReason(e.Msg))
}

// writeError writes an error frame before the join (after it, errors go
// through the session's queue), in the connection's mode.
func (k *conn) writeError(ctx context.Context, code codes.Code, msg string, retryMs int64) {
	typ, b, err := errorFrame(k.mode, &api.Message{Error: &api.Error{Code: int32(code), Message: hub.ClientText(msg, hub.MaxErrorText), RetryAfterMs: retryMs}})
	if err != nil {
		// Cannot happen with a valid UTF-8 text; never send a broken frame.
		k.h.log.Error("encode error frame", "err", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, k.h.cfg.WriteTimeout)
	defer cancel()
	_ = k.c.Write(wctx, typ, b)
}

// Write implements hub.Transport: the batch leaves in one system call, one
// frame per message or packed (by the connection's mode).
// ctx is not watched here: a session closed without flush closes the
// connection (see run), which ends a blocked write.
func (k *conn) Write(ctx context.Context, frames []*hub.Frame) error {
	if err := k.raw.writeFrames(frames, k.mode, k.h.cfg.WriteTimeout); err != nil {
		return fmt.Errorf("ws: write: %w", err)
	}
	return nil
}

// Close implements hub.Transport.
func (k *conn) Close(reason hub.CloseReason) {
	defer close(k.closed)
	status, text := CloseStatus(reason)
	if reason == hub.CloseSlowConsumer || reason == hub.CloseWriteError {
		// The peer is not reading: a close handshake would only wait.
		k.c.CloseNow()
		return
	}
	k.c.Close(status, text)
}

// startPinger pings the peer every PingInterval until ctx ends, which keeps
// idle connections alive through proxies and finds dead peers. It runs from
// a timer, not a goroutine of its own: an idle connection's memory is
// mostly its goroutines' stacks.
func (k *conn) startPinger(ctx context.Context) {
	p := &pinger{k: k, ctx: ctx}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t = time.AfterFunc(k.h.cfg.PingInterval, p.ping)
	context.AfterFunc(ctx, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.t.Stop()
	})
}

type pinger struct {
	k   *conn
	ctx context.Context
	mu  sync.Mutex
	t   *time.Timer
}

// ping sends one ping and waits for its pong (which the read loop
// handles); a peer that does not answer within an interval is closed.
func (p *pinger) ping() {
	k := p.k
	pctx, cancel := context.WithTimeout(p.ctx, k.h.cfg.PingInterval)
	err := k.c.Ping(pctx)
	cancel()
	if p.ctx.Err() != nil {
		return
	}
	if err != nil {
		k.sess.Close(hub.CloseWriteError)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.Reset(k.h.cfg.PingInterval)
}

// CloseStatus maps a close reason to the WebSocket close code and text.
func CloseStatus(r hub.CloseReason) (websocket.StatusCode, string) {
	switch r {
	case hub.CloseNormal:
		return websocket.StatusNormalClosure, ""
	case hub.CloseSlowConsumer:
		return websocket.StatusPolicyViolation, "slow consumer: not reading fast enough"
	case hub.CloseShutdown:
		return websocket.StatusServiceRestart, "service restart: reconnect"
	case hub.CloseInvalidInput:
		return websocket.StatusPolicyViolation, tooManyInvalid
	case hub.CloseTooLarge:
		return websocket.StatusMessageTooBig, "message too large"
	case hub.CloseUnauthenticated:
		return websocket.StatusPolicyViolation, "unauthenticated: token expired; reconnect with a fresh token"
	case hub.CloseAbuse:
		return websocket.StatusPolicyViolation, "rate limit: too many messages"
	default:
		return websocket.StatusTryAgainLater, "try again later"
	}
}

// Code maps a hub error to its google.rpc code, as the gateway would.
func Code(e *hub.Error) codes.Code { return e.Code() }

// maxCloseReason is the most bytes a close frame's reason may have
// (RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them
// the code).
const maxCloseReason = 123

// truncateReason fits a close reason into a close frame: valid UTF-8 (a
// browser fails a connection whose close reason is not) and at most 123
// bytes, cut on a character boundary.
func truncateReason(s string) string { return hub.ClientText(s, maxCloseReason) }

var _ hub.Transport = (*conn)(nil)
