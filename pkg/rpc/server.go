package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/hub"
)

// Config configures a Server. Hub is required.
type Config struct {
	// Hub receives the sessions.
	Hub *hub.Hub
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// Server implements chat.Chat.
type Server struct {
	api.UnimplementedChatServer
	cfg Config
	log *slog.Logger
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: cfg.Logger}
}

// Register registers the service on gs.
func (s *Server) Register(gs *grpc.Server) { api.RegisterChatServer(gs, s) }

// identify fills o's identity: from the token's claims that the auth
// interceptors put in ctx, or, in open mode, from the name the client gave.
func identity(ctx context.Context) *hub.Identity {
	c, ok := auth.FromContext(ctx)
	if !ok {
		return nil
	}
	return &hub.Identity{User: c.User, MayJoin: c.MayJoin, Expires: c.Expires}
}

// Stream implements chat.Chat.
func (s *Server) Stream(stream grpc.BidiStreamingServer[api.Message, api.Message]) error {
	ctx := stream.Context()
	// A stream that has not joined holds a node slot (a full node refuses
	// it with ResourceExhausted, a draining one with Unavailable) until
	// the join deadline.
	adm, err := s.cfg.Hub.Admit()
	if err != nil {
		return Status(err)
	}
	defer adm.Release()
	first, err := s.readFirst(stream, adm)
	if err != nil || first == nil {
		return err
	}
	// The join runs on a goroutine of its own and this one waits: its
	// stack, which the stream keeps for its whole life, does not grow
	// through the join (history replay, presence, ...).
	type joined struct {
		sess *hub.Session
		err  error
	}
	t := newTransport(stream, s.cfg.Hub.Config().WriteTimeout)
	jc := make(chan joined, 1)
	go func() {
		sess, err := s.join(ctx, t, first, adm)
		jc <- joined{sess, err}
	}()
	jr := <-jc
	if jr.err != nil {
		return jr.err
	}
	sess := jr.sess
	events := first.GetJoin().GetEvents()

	// The reader reports the first error that ends the stream: io.EOF,
	// a transport error, or a rejected message the client must hear about
	// (the reader's own, or a publish's answer from the session's
	// completer: whichever comes first).
	errc := make(chan error, 1)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	// answer maps a send's failure: a retryable one is an error event for
	// a client that asked for events, and the stream goes on; anything
	// else ends the stream with its status.
	answer := func(err error) *api.Error {
		if err == nil {
			return nil
		}
		if events && hub.Recoverable(nil, err) {
			// Retryable, or a later refusal of an edit or reaction
			// (its message gone meanwhile, too many reactions): told,
			// and the stream goes on.
			return hub.AsError(err).Proto()
		}
		fail(err)
		return nil
	}
	go func() {
		m := first
		if m.GetText() == "" && m.GetKind() != api.Kind_KIND_TYPING {
			m = nil // a bare join
		}
		for {
			if m != nil && hub.IsControl(m) {
				if err := sess.Control(ctx, m); err != nil {
					fail(err)
					return
				}
			} else if m != nil {
				// Pipelined: the bus's answer comes later (answer, in
				// order); the next message is read meanwhile.
				if err := sess.PublishAsync(ctx, m, answer); err != nil {
					if events && hub.Recoverable(m, err) {
						sess.SendError(hub.AsError(err).Proto(), m.GetClientId())
					} else if e := answer(err); e != nil {
						sess.SendError(e, m.GetClientId())
					} else {
						return
					}
				}
			}
			var err error
			if m, err = stream.Recv(); err != nil {
				// The answers of the last sends first: a failure among
				// them decides the status of a client without events.
				_ = sess.WaitPublishes(sess.Context())
				fail(err)
				return
			}
			if err := undecodable(m); err != nil {
				fail(err)
				return
			}
		}
	}()

	// flushed waits for the session's writer to flush after a close; a
	// batch stuck past the write deadline cuts it short.
	flushed := func() (stuck bool) {
		select {
		case <-sess.Context().Done():
			return false
		case <-t.stuck:
			sess.Close(hub.CloseWriteError)
			return true
		}
	}
	select {
	case err := <-errc:
		if e := hub.AsError(err); e != nil && e.Kind != hub.KindClosed {
			sess.Close(hub.CloseReasonForError(err))
			flushed()
			return Status(err)
		}
		// The client closed its side (or went away): flush and end.
		sess.Close(hub.CloseNormal)
		if flushed() {
			return CloseStatus(hub.CloseWriteError)
		}
		if sess.Reason() == hub.CloseNormal {
			return nil
		}
		return CloseStatus(sess.Reason())
	case <-sess.Context().Done():
		// The hub ended the session (slow consumer, shutdown, ...).
		// Returning releases a Send stuck on a client that stopped reading.
		return CloseStatus(sess.Reason())
	case <-t.stuck:
		// A batch missed its write deadline: the client stopped reading.
		// Returning is what releases the stuck Send (grpc-go#3586), and
		// with it the writer, the session and the user's stream slot.
		sess.Close(hub.CloseWriteError)
		return CloseStatus(hub.CloseWriteError)
	}
}

// ErrWriteTimeout is the writer's error for a batch that was not sent
// within the hub's WriteTimeout.
var ErrWriteTimeout = errors.New("rpc: write timeout: the client is not reading")

// transport implements hub.Transport over a server stream.
//
// SendMsg has no deadline: to a client that stopped reading it blocks once
// the HTTP/2 windows are full, until the stream ends. So every batch runs
// against a timer; when it fires, stuck is closed, and the handler, which
// waits on it, closes the session and returns, which ends the stream and
// releases the Send.
type transport struct {
	stream  grpc.ServerStream
	timeout time.Duration
	timer   *time.Timer // the batch deadline; only the writer uses it
	stuck   chan struct{}
	once    sync.Once
}

func newTransport(stream grpc.ServerStream, timeout time.Duration) *transport {
	return &transport{stream: stream, timeout: timeout, stuck: make(chan struct{})}
}

func (t *transport) expire() { t.once.Do(func() { close(t.stuck) }) }

// Write sends frames within the write timeout; the codec reuses each
// frame's shared encoding.
func (t *transport) Write(ctx context.Context, frames []*hub.Frame) error {
	if t.timer == nil {
		t.timer = time.AfterFunc(t.timeout, t.expire)
	} else {
		t.timer.Reset(t.timeout)
	}
	for _, f := range frames {
		if err := t.stream.SendMsg(f); err != nil {
			if !t.timer.Stop() {
				err = ErrWriteTimeout
			}
			return fmt.Errorf("rpc: write: %w", err)
		}
	}
	if !t.timer.Stop() {
		// Sent, but late: the handler is already ending the stream.
		return ErrWriteTimeout
	}
	return nil
}

// Close stops the batch timer; the handler returns the session's status.
func (t *transport) Close(hub.CloseReason) {
	if t.timer != nil {
		t.timer.Stop()
	}
}

// History implements chat.Chat.
func (s *Server) History(ctx context.Context, req *api.HistoryRequest) (*api.HistoryResponse, error) {
	if err := mayRead(ctx, req.GetRoom()); err != nil {
		return nil, err
	}
	// The reader: the token's subject, or the user the request names in
	// open mode (none for a public room).
	user, err := caller(ctx, req.GetUser())
	if err != nil {
		return nil, err
	}
	page, err := s.cfg.Hub.History(ctx, hub.HistoryQuery{Room: req.GetRoom(), User: user, Limit: int(req.GetLimit()),
		AfterSeq: req.GetAfterSeq(), BeforeSeq: req.GetBeforeSeq(), Epoch: req.GetEpoch(), NewestFirst: req.GetNewestFirst()})
	if err != nil {
		return nil, Status(err)
	}
	return page, nil
}

// Send implements chat.Chat.
func (s *Server) Send(ctx context.Context, req *api.SendRequest) (*api.Message, error) {
	m := req.GetMessage()
	if m == nil {
		return nil, status.Error(codes.InvalidArgument, "message is required")
	}
	in := proto.Clone(m).(*api.Message)
	in.Room = req.GetRoom()
	if c, ok := auth.FromContext(ctx); ok {
		if m.GetUser() != "" && m.GetUser() != c.User {
			return nil, statusf(codes.PermissionDenied, "user %q does not match the authenticated user", m.GetUser())
		}
		room, err := hub.NormalizeRoom(in.Room)
		if err != nil {
			return nil, Status(err)
		}
		if !c.MayJoin(room) {
			return nil, statusf(codes.PermissionDenied, "this token may not post to room %q", room)
		}
		in.User = c.User
	}
	out, err := s.cfg.Hub.Publish(ctx, in)
	if err != nil {
		return nil, Status(err)
	}
	return out, nil
}

// Presence implements chat.Chat.
func (s *Server) Presence(ctx context.Context, req *api.PresenceRequest) (*api.PresenceResponse, error) {
	if err := mayRead(ctx, req.GetRoom()); err != nil {
		return nil, err
	}
	// Who is in a private room is its members' business: the token's
	// subject must be one (PresenceRequest names no user, so in open mode
	// only public rooms answer).
	user, _ := caller(ctx, "")
	if err := s.cfg.Hub.MayUse(ctx, req.GetRoom(), user); err != nil {
		return nil, Status(err)
	}
	limit := int(req.GetLimit())
	switch {
	case limit == 0:
		limit = 100
	case limit < 0:
		limit = 0
	}
	users, n, err := s.cfg.Hub.Presence(ctx, req.GetRoom(), limit)
	if err != nil {
		return nil, Status(err)
	}
	return &api.PresenceResponse{Users: users, Count: int32(n)}, nil
}

// mayRead refuses reading a room (history, presence) that the caller's
// token may not join: its "rooms" claim bounds reads as well as joins.
// Without a token (open mode) everything is readable.
func mayRead(ctx context.Context, room string) error { return mayClaim(ctx, room, "read") }

// mayClaim refuses room if the caller's token has a "rooms" claim without
// it; verb says what the caller may not do there.
func mayClaim(ctx context.Context, room, verb string) error {
	c, ok := auth.FromContext(ctx)
	if !ok {
		return nil
	}
	name, err := hub.NormalizeRoom(room)
	if err != nil {
		return Status(err)
	}
	if !c.MayJoin(name) {
		return statusf(codes.PermissionDenied, "this token may not %s room %q", verb, name)
	}
	return nil
}

// Status maps a hub error to a gRPC status.
func Status(err error) error {
	e := hub.AsError(err)
	if e == nil {
		if errors.Is(err, context.Canceled) {
			return status.Error(codes.Canceled, "canceled")
		}
		return status.Error(codes.Internal, "internal error")
	}
	return status.Error(Code(e), ClientText(e.Msg, MaxErrorText))
}

// statusf is status.Errorf with the message fit for a client (ClientText):
// it may quote the client's input.
func statusf(c codes.Code, format string, args ...any) error {
	return status.Error(c, ClientText(fmt.Sprintf(format, args...), MaxErrorText))
}

// Code maps a hub error kind to a gRPC code.
func Code(e *hub.Error) codes.Code { return e.Code() }

// ClientText is hub.ClientText (the edges share it).
func ClientText(s string, max int) string { return hub.ClientText(s, max) }

// MaxErrorText is hub.MaxErrorText.
const MaxErrorText = hub.MaxErrorText

// CloseStatus maps the reason a session closed to the stream's status.
func CloseStatus(r hub.CloseReason) error {
	switch r {
	case hub.CloseNormal:
		return nil
	case hub.CloseSlowConsumer:
		return status.Error(codes.ResourceExhausted, "slow consumer: the client did not read fast enough; reconnect and resume")
	case hub.CloseShutdown:
		return status.Error(codes.Unavailable, "node shutting down: reconnect (to any node) and resume")
	case hub.CloseUnauthenticated:
		return status.Error(codes.Unauthenticated, "token expired: reconnect with a fresh token")
	case hub.CloseInvalidInput:
		return status.Error(codes.InvalidArgument, "invalid input")
	case hub.CloseTooLarge:
		return status.Error(codes.ResourceExhausted, "input too large")
	case hub.CloseAbuse:
		return status.Error(codes.ResourceExhausted, "rate limit: too many messages")
	default:
		return status.Error(codes.Unavailable, "connection lost: reconnect and resume")
	}
}

// Codec is the server's "proto" codec: it sends a hub.Frame's shared
// encoding as is, so fan-out marshals once per message, not once per
// stream, and handles everything else like the default codec. Install it
// with grpc.ForceServerCodecV2(rpc.Codec{}).
type Codec struct{}

var protoCodec = encoding.GetCodecV2("proto")

// Marshal implements encoding.CodecV2.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*hub.Frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.Proto())}, nil
	}
	return protoCodec.Marshal(v)
}

// Unmarshal implements encoding.CodecV2. Bytes that are not a chat.Message
// do not fail: grpc-go would end the stream with Internal, a server fault,
// before the handler could say InvalidArgument. The message is left empty
// but marked (undecodable), and the handler refuses it.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	err := protoCodec.Unmarshal(data, v)
	if m, ok := v.(*api.Message); ok && err != nil {
		proto.Reset(m)
		mark := protowire.AppendTag(nil, undecodableField, protowire.BytesType)
		m.ProtoReflect().SetUnknown(protowire.AppendString(mark, err.Error()))
		return nil
	}
	return err
}

// undecodableField is the unknown field in which Codec.Unmarshal marks a
// message it could not decode, with the decoding error. A client sending it
// itself only gets its own message refused.
const undecodableField = protowire.MaxValidNumber

// undecodable returns the client-facing error for a message Codec.Unmarshal
// could not decode, or nil.
func undecodable(m *api.Message) error {
	u := m.ProtoReflect().GetUnknown()
	num, typ, n := protowire.ConsumeTag(u)
	if n < 0 || num != undecodableField || typ != protowire.BytesType {
		return nil
	}
	why, k := protowire.ConsumeString(u[n:])
	if k < 0 {
		return nil
	}
	return &hub.Error{Kind: hub.KindInvalid, Msg: "message is not a valid chat.Message: " + why}
}

// Name implements encoding.CodecV2.
func (Codec) Name() string { return "proto" }

// readFirst waits for the stream's first message until the admission
// ends: at the join deadline (DeadlineExceeded) or on drain (Unavailable).
// A stream the client closed before joining returns no message and no
// error. On a deadline the Recv is left behind: the handler's return ends
// it.
func (s *Server) readFirst(stream grpc.BidiStreamingServer[api.Message, api.Message], adm *hub.Admission) (*api.Message, error) {
	type received struct {
		m   *api.Message
		err error
	}
	rc := make(chan received, 1)
	go func() {
		m, err := stream.Recv()
		rc <- received{m, err}
	}()
	select {
	case r := <-rc:
		if errors.Is(r.err, io.EOF) {
			return nil, nil
		}
		if r.err != nil {
			return nil, r.err
		}
		if err := undecodable(r.m); err != nil {
			return nil, Status(err)
		}
		return r.m, nil
	case <-adm.Context().Done():
		if adm.Context().Err() == context.DeadlineExceeded {
			return nil, status.Errorf(codes.DeadlineExceeded, "join timeout: send the first message within %v", s.cfg.Hub.Config().JoinTimeout)
		}
		return nil, CloseStatus(hub.CloseShutdown)
	}
}

// join joins the hub with the stream's first message; the session takes
// the admission's slot over.
func (s *Server) join(ctx context.Context, t *transport, first *api.Message, adm *hub.Admission) (*hub.Session, error) {
	o := hub.JoinFrom(first, "grpc", identity(ctx))
	o.Admission = adm
	sess, err := s.cfg.Hub.Join(ctx, t, o)
	if err != nil {
		return nil, Status(err)
	}
	return sess, nil
}
