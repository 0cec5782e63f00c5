// Package client is a Go client for chat nodes, over gRPC or WebSocket. It
// joins a room, reconnects by itself with backoff and jitter (to the next
// address in its list), resumes from the last id it saw so that nothing is
// missed or repeated, and retries unacknowledged sends with their client id
// so that none is stored twice. It reports its connection state as it
// changes (Config.OnState) and stops by itself on a refusal that no retry
// can change (PermanentError: a bad or expired token, another user's
// token, a forbidden room). The terminal client, the load tool and the
// integration tests use it.
//
// A Client's methods are safe for concurrent use.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"example.com/chat/api"
)

// Transport selects the wire.
type Transport string

// The transports.
const (
	GRPC      Transport = "grpc"
	WebSocket Transport = "ws"
)

// Config configures a Client.
type Config struct {
	// Addrs are node addresses (host:port of the gRPC or HTTP listener),
	// tried in turn. Required.
	Addrs []string
	// Transport is GRPC (default) or WebSocket.
	Transport Transport
	// User and Room to join; Room empty means the default room.
	User string
	Room string
	// Rooms are more rooms the stream receives, subscribed on every
	// connection, each resumed from its own position (one stream, many
	// rooms). Messages carry their room; SendTo names one. A room the
	// node refuses (an error event naming it) is dropped; see Subscribe.
	Rooms []string
	// Personal also receives the user's personal channel: KIND_INVITE
	// says a direct conversation or a private room waits (its room), and
	// KIND_READ that the user's read marker of Room moved to Seq of
	// Epoch (from any of their sessions; see MarkRead).
	Personal bool
	// Changes also receives edits, deletes and reactions (KIND_EDIT,
	// KIND_DELETE, KIND_REACTION, see Edit) on Messages, this client's
	// own among them, and deleted messages in replays as tombstones.
	// Without it the stream sees messages only, as they stand.
	Changes bool
	// Token, when set, is sent as a bearer token.
	Token string
	// TLS, when set, secures the connection.
	TLS *tls.Config
	// History is how many messages to replay on the first join (zero: the
	// server's default). NoHistory skips it.
	History   int
	NoHistory bool
	// MinBackoff and MaxBackoff bound reconnect delays. Zero means 100 ms and
	// 5 s.
	MinBackoff, MaxBackoff time.Duration
	// Buffer is the capacity of the Messages channel. Zero means 4096. When
	// it is full the client stops reading, and the server will eventually
	// treat it as a slow consumer; consume promptly.
	Buffer int
	// Logger receives reconnect notices; nil discards them.
	Logger *slog.Logger
	// OnState, when set, is told of every change of the connection's
	// state (see State), in order, from the client's own goroutine: it
	// must return quickly and must not call the Client's blocking
	// methods (Send, WaitLive, Close). A terminal or a page shows it
	// as one status line instead of a line per retry.
	OnState func(State)
	// RetryPermanent keeps the client reconnecting after a refusal that
	// no retry can change (see PermanentError). By default (false) the
	// client stops: Messages is closed, Done is closed and Err says why.
	RetryPermanent bool

	// HeartbeatTimeout is how long the client waits for a frame from the
	// node (a message, an event, or the KIND_HEARTBEAT a node sends to a
	// stream that has been silent for its -heartbeat) before it treats
	// the connection as dead: a frozen or black-holed node. The client
	// then closes the connection, reconnects to the next address and
	// resumes. It bounds the dial and the join too. The node checks for
	// silent streams every half -heartbeat, so a live node's silent
	// stream hears from it at least every 1.5 × -heartbeat: keep this
	// above that. Zero means 45 s, for the node's default -heartbeat of
	// 25 s; negative disables the check.
	HeartbeatTimeout time.Duration
	// AckTimeout is how long a send waits for its acknowledgement on one
	// connection before the client treats that connection as dead (as
	// for HeartbeatTimeout); the send is then retried with its client id
	// on the next connection, so it is stored once. Zero means 10 s;
	// negative disables it. The whole send is bounded by its ctx.
	AckTimeout time.Duration
	// Keepalive is the interval of the client's keepalive pings on an
	// idle connection (gRPC HTTP/2 pings, WebSocket pings), and
	// KeepaliveTimeout how long it waits for the answer before it treats
	// the connection as dead. Zero means 15 s and 5 s. gRPC pings more
	// often than every 10 s are raised to 10 s, the least the node's
	// enforcement policy accepts (min(10 s, -grpc-keepalive)).
	Keepalive, KeepaliveTimeout time.Duration
}

// Client is a resilient chat stream.
type Client struct {
	cfg  Config
	log  *slog.Logger
	msgs chan *api.Message

	mu      sync.Mutex
	conn    *link // the live connection, nil between connections
	epoch   string
	lastSeq uint64
	rooms   map[string]*roomPos     // the Rooms and Subscribe's, by name (not the primary)
	waiting int                     // rooms whose KIND_LIVE (or refusal) the connection awaits
	pending map[string]*pendingSend // by client id, until acknowledged
	order   []string                // pending ids in send order
	live    chan struct{}           // closed when the current connection is live
	addr    string                  // conn's address
	// joining is the connection whose join went out and which is not
	// live yet: Subscribe and Unsubscribe act on it, after its join.
	joining *link
	// ownAhead holds this client's own acknowledged seqs in the primary
	// room beyond lastSeq (in epoch), waiting for the seqs before them
	// (see observe); nil until the first.
	ownAhead map[uint64]bool
	// pages are the Page calls waiting for their answer, by client id.
	pages map[string]*pendingPage

	nextID     atomic.Uint64
	idPrefix   string
	Reconnects atomic.Int64 // how many times the client reconnected

	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// roomPos is where the client stands in one of its Rooms.
type roomPos struct {
	epoch   string
	lastSeq uint64
	// liveOn is the connection that sent the room's KIND_LIVE: before
	// it, an error event naming the room without a client id refuses
	// the subscription; after it, it is about something else (a typing
	// event, say).
	liveOn *link
}

type pendingSend struct {
	msg *api.Message
	// on and at say which connection last carried the send, and when;
	// nil while no connection owes an answer (not yet live, or waiting
	// out an Unavailable backoff). Guarded by Client.mu.
	on   *link
	at   time.Time
	done chan *api.Message // receives the ack, or an error that ends the send
	// retry receives the retry_after_ms of an Unavailable error: the node
	// could not store the message (its Redis is down) but kept the stream,
	// so no reconnect will resend it; SendMessage does, after a backoff.
	retry chan int64
}

// codeUnavailable is google.rpc.Code UNAVAILABLE: the send may be retried.
const codeUnavailable = 14

// conn is one connection attempt's stream.
type conn interface {
	send(m *api.Message) error
	recv() (*api.Message, error)
	// ping checks that the peer answers (a WebSocket ping and its pong);
	// nil when the transport has its own keepalive (gRPC).
	ping(ctx context.Context) error
	close()
}

// link is a live connection and the way to end it: kill cancels its
// session's context with a cause, which ends any send or recv in
// progress and makes the session reconnect.
type link struct {
	conn
	kill context.CancelCauseFunc
	addr string
}

// Why a connection was given up as dead; logged as the reconnect's err.
var (
	errSilent      = errors.New("client: no frame from the node within the heartbeat timeout")
	errAckTimeout  = errors.New("client: no acknowledgement within the ack timeout")
	errPingTimeout = errors.New("client: no pong within the keepalive timeout")
)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("client: closed")

// Dial starts the client; it connects in the background. Close stops it.
func Dial(cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 || cfg.User == "" {
		return nil, errors.New("client: Addrs and User are required")
	}
	if cfg.Transport == "" {
		cfg.Transport = GRPC
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HeartbeatTimeout == 0 {
		cfg.HeartbeatTimeout = 45 * time.Second
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = 15 * time.Second
	}
	if cfg.KeepaliveTimeout <= 0 {
		cfg.KeepaliveTimeout = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger,
		msgs:     make(chan *api.Message, cfg.Buffer),
		pending:  make(map[string]*pendingSend),
		rooms:    make(map[string]*roomPos),
		live:     make(chan struct{}),
		idPrefix: strconv.FormatUint(rand.Uint64(), 36) + "-",
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	for _, r := range cfg.Rooms {
		c.rooms[r] = &roomPos{}
	}
	go c.run(ctx)
	return c, nil
}

// Messages delivers everything the server sends: history, live messages and
// events (the client joins with events on). It is closed after Close.
func (c *Client) Messages() <-chan *api.Message { return c.msgs }

// WaitLive blocks until the client's current connection has replayed
// history and is live.
func (c *Client) WaitLive(ctx context.Context) error {
	c.mu.Lock()
	live := c.live
	c.mu.Unlock()
	select {
	case <-live:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

// Position returns the epoch and the resume point: the id of the newest
// stored message such that every one up to it was received or was this
// client's own, acknowledged, message.
func (c *Client) Position() (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.epoch, c.lastSeq
}

// Send sends text and waits for its acknowledgement, across reconnects:
// an unacknowledged send is retried on the next connection with the same
// client id, so it is stored once. A send the node answers with
// Unavailable (its Redis is down; the stream stays up) is retried on the
// same connection after a backoff (or the error's retry_after_ms), until
// it is acknowledged or ctx ends. It returns the ack (with the message's
// seq and epoch).
func (c *Client) Send(ctx context.Context, text string) (*api.Message, error) {
	return c.SendMessage(ctx, &api.Message{Text: text})
}

// SendMessage is Send for a full message (kind, client id); typing events
// are not acknowledged and return nil at once.
func (c *Client) SendMessage(ctx context.Context, m *api.Message) (*api.Message, error) {
	if m.GetKind() == api.Kind_KIND_TYPING {
		c.mu.Lock()
		cn := c.conn
		c.mu.Unlock()
		if cn == nil {
			return nil, errors.New("client: not connected")
		}
		return nil, cn.send(m)
	}
	if m.ClientId == "" {
		m.ClientId = c.idPrefix + strconv.FormatUint(c.nextID.Add(1), 10)
	}
	p := &pendingSend{msg: m, done: make(chan *api.Message, 1), retry: make(chan int64, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.pending[m.ClientId] = p
	c.order = append(c.order, m.ClientId)
	cn := c.conn
	if cn != nil {
		p.on, p.at = cn, time.Now()
	}
	c.mu.Unlock()
	if cn != nil {
		// A failed send is retried after the reconnect.
		_ = cn.send(m)
	}
	backoff := c.cfg.MinBackoff
	var (
		timer *time.Timer
		wait  <-chan time.Time
		// ackWait fires when the connection that carried the send may
		// have owed its answer for AckTimeout.
		ackWait <-chan time.Time
	)
	if c.cfg.AckTimeout > 0 {
		t := time.NewTimer(c.cfg.AckTimeout)
		defer t.Stop()
		ackWait = t.C
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ackWait:
			ackWait = c.checkAck(p)
		case ack := <-p.done:
			if ack.GetKind() == api.Kind_KIND_ERROR {
				return ack, fmt.Errorf("client: send rejected: %s", ack.GetError().GetMessage())
			}
			return ack, nil
		case after := <-p.retry:
			d := time.Duration(after) * time.Millisecond
			if d <= 0 {
				d = time.Duration(rand.Int64N(int64(backoff))) + backoff/2
				backoff = min(2*backoff, c.cfg.MaxBackoff)
			}
			if timer != nil {
				timer.Stop()
			}
			timer = time.NewTimer(d)
			wait = timer.C
		case <-wait:
			wait = nil
			c.mu.Lock()
			_, still := c.pending[m.ClientId]
			cn := c.conn
			if still && cn != nil {
				p.on, p.at = cn, time.Now()
			}
			c.mu.Unlock()
			if still && cn != nil {
				// Same client id: if an earlier try was stored after all,
				// this one is acknowledged without being stored again.
				_ = cn.send(m)
			}
		case <-ctx.Done():
			c.mu.Lock()
			c.dropPendingLocked(m.ClientId)
			c.mu.Unlock()
			return nil, ctx.Err()
		case <-c.done:
			return nil, c.Err()
		}
	}
}

// checkAck kills the connection that has owed p's answer for AckTimeout,
// so that the send is retried on the next one, and returns when to check
// again.
func (c *Client) checkAck(p *pendingSend) <-chan time.Time {
	c.mu.Lock()
	next := c.cfg.AckTimeout
	var dead *link
	if _, still := c.pending[p.msg.ClientId]; still && p.on != nil && p.on == c.conn {
		if owed := time.Since(p.at); owed >= c.cfg.AckTimeout {
			dead = p.on
			p.on = nil
		} else {
			next -= owed
		}
	}
	c.mu.Unlock()
	if dead != nil {
		c.log.Info("send unacknowledged; dropping the connection", "client_id", p.msg.ClientId, "after", c.cfg.AckTimeout)
		dead.kill(errAckTimeout)
	}
	return time.After(next)
}

func (c *Client) dropPendingLocked(id string) {
	delete(c.pending, id)
	for i, o := range c.order {
		if o == id {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

// Close stops the client and closes Messages.
func (c *Client) Close() {
	c.cancel()
	<-c.done
}

func (c *Client) run(ctx context.Context) {
	defer close(c.done)
	defer close(c.msgs)
	var stopErr error
	defer func() {
		c.mu.Lock()
		if stopErr != nil {
			c.err = stopErr
		} else {
			c.err = ErrClosed
		}
		c.mu.Unlock()
		c.state(State{Kind: Stopped, Err: stopErr})
	}()
	backoff := c.cfg.MinBackoff
	failures := 0
	for attempt := 0; ; attempt++ {
		addr := c.cfg.Addrs[attempt%len(c.cfg.Addrs)]
		start := time.Now()
		c.state(State{Kind: Connecting, Addr: addr})
		wasLive, err := c.session(ctx, addr, attempt > 0)
		if ctx.Err() != nil {
			return
		}
		if perm := permanent(addr, err, wasLive); perm != nil && !c.cfg.RetryPermanent {
			c.log.Info("refused; stopping", "addr", addr, "err", err)
			stopErr = perm
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = c.cfg.MinBackoff // it was a healthy connection
		}
		if wasLive {
			failures = 0
		}
		failures++
		// Full jitter keeps a node's clients from returning in a herd.
		d := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		c.log.Info("reconnecting", "addr", addr, "err", err, "in", d)
		c.state(State{Kind: Reconnecting, Addr: addr, Err: err, Retry: d, Failures: failures})
		c.Reconnects.Add(1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// session runs one connection until it fails. A watchdog cancels the
// session's context, with errSilent as the cause, when no frame has come
// for HeartbeatTimeout while the session waits for one (dialling,
// joining, or reading): a frozen node answers neither data nor pings,
// and the kernel keeps its sockets open, so nothing else would end the
// connection.
func (c *Client) session(ctx context.Context, addr string, resume bool) (wasLive bool, err error) {
	sctx, kill := context.WithCancelCause(ctx)
	defer kill(nil)
	defer func() {
		// Report why the connection was given up, not "context canceled".
		if cause := context.Cause(sctx); err != nil && ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
	}()
	arm, disarm := func() {}, func() {}
	if d := c.cfg.HeartbeatTimeout; d > 0 {
		t := time.AfterFunc(d, func() { kill(errSilent) })
		defer t.Stop()
		arm = func() { t.Reset(d) }
		disarm = func() { t.Stop() }
	}
	cn, err := c.connect(sctx, addr)
	if err != nil {
		return false, err
	}
	defer cn.close()
	l := &link{conn: cn, kill: kill, addr: addr}
	var wg sync.WaitGroup
	defer func() {
		kill(nil) // ends the keepalive when the connection failed by itself
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.keepalive(sctx, l)
	}()
	c.mu.Lock()
	join := &api.Join{Events: true, History: int32(c.cfg.History), NoHistory: c.cfg.NoHistory}
	if resume && (c.lastSeq > 0 || c.epoch != "") {
		join = &api.Join{Events: true, AfterSeq: c.lastSeq, Epoch: c.epoch}
	} else if resume {
		join.NoHistory = false
	}
	join.Personal = c.cfg.Personal
	join.Changes = c.cfg.Changes
	// The other rooms, each from its own position.
	for name, p := range c.rooms {
		sub := &api.Subscription{Room: name, History: int32(c.cfg.History), NoHistory: c.cfg.NoHistory}
		if p.lastSeq > 0 || p.epoch != "" {
			sub = &api.Subscription{Room: name, AfterSeq: p.lastSeq, Epoch: p.epoch}
		}
		join.Rooms = append(join.Rooms, sub)
	}
	c.waiting = 1 + len(join.Rooms)
	if c.cfg.Personal {
		c.waiting++ // the personal channel's KIND_LIVE comes too
	}
	// Sent with c.mu held: a Subscribe or Unsubscribe is in this join, or
	// goes out on this connection after it (c.joining), never in neither.
	err = cn.send(&api.Message{User: c.cfg.User, Room: c.cfg.Room, Join: join})
	if err == nil {
		c.joining = l
	}
	c.mu.Unlock()
	if err != nil {
		return false, err
	}
	defer func() {
		c.mu.Lock()
		if c.joining == l {
			c.joining = nil
		}
		c.mu.Unlock()
	}()
	for {
		arm()
		m, err := cn.recv()
		// Not while the message waits for room in Messages: a slow
		// consumer is not a dead node.
		disarm()
		if err != nil {
			c.mu.Lock()
			if c.conn == l {
				c.conn = nil
				c.live = make(chan struct{})
			}
			c.failPagesLocked(l)
			c.mu.Unlock()
			return wasLive, err
		}
		if c.claimPage(m) {
			continue
		}
		if c.observe(l, m) {
			wasLive = true
			c.state(State{Kind: Live, Addr: addr})
		}
		select {
		case c.msgs <- m:
		case <-ctx.Done():
			return wasLive, ctx.Err()
		}
	}
}

// keepalive pings the node every Keepalive and kills the connection when
// a pong is not back within KeepaliveTimeout, until ctx ends. gRPC
// connections have keepalive pings of their own (transport.go).
func (c *Client) keepalive(ctx context.Context, l *link) {
	t := time.NewTicker(c.cfg.Keepalive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, c.cfg.KeepaliveTimeout)
		err := l.ping(pctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				l.kill(fmt.Errorf("%w: %v", errPingTimeout, err))
			}
			return
		}
	}
}

func (c *Client) handle(cn *link, m *api.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.rooms[m.GetRoom()]; p != nil {
		c.handleRoomLocked(cn, p, m)
		return
	}
	if m.GetKind() == api.Kind_KIND_LIVE && m.GetRoom() != c.primaryRoom() {
		c.roomLiveLocked(cn) // the personal channel's: it has no position
		return
	}
	switch m.GetKind() {
	case api.Kind_KIND_MESSAGE, api.Kind_KIND_EDIT, api.Kind_KIND_DELETE, api.Kind_KIND_REACTION:
		if m.GetSeq() > 0 {
			c.epoch, c.lastSeq = m.GetEpoch(), m.GetSeq()
		}
	case api.Kind_KIND_LIVE:
		if m.GetEpoch() != "" {
			c.epoch = m.GetEpoch()
		}
		if m.GetSeq() > c.lastSeq {
			c.lastSeq = m.GetSeq()
		}
		c.roomLiveLocked(cn)
	case api.Kind_KIND_ACK, api.Kind_KIND_ERROR:
		c.answerLocked(m)
	}
}

// answerLocked hands an ack or an error event to the send it answers.
// c.mu must be held.
func (c *Client) answerLocked(m *api.Message) {
	p := c.pending[m.GetClientId()]
	switch {
	case p == nil:
	case m.GetKind() == api.Kind_KIND_ERROR && m.GetError().GetCode() == codeUnavailable:
		p.on = nil // answered: the node is alive, and retries after a backoff
		select {
		case p.retry <- m.GetError().GetRetryAfterMs():
		default: // a retry is already due
		}
	default:
		c.dropPendingLocked(m.GetClientId())
		p.done <- m
	}
}

// handleRoomLocked follows one of the Rooms: its position, and its
// KIND_LIVE (or a refusal of its subscription) towards the connection's.
// c.mu must be held.
func (c *Client) handleRoomLocked(cn *link, p *roomPos, m *api.Message) {
	switch m.GetKind() {
	case api.Kind_KIND_MESSAGE, api.Kind_KIND_EDIT, api.Kind_KIND_DELETE, api.Kind_KIND_REACTION:
		if m.GetSeq() > 0 {
			p.epoch, p.lastSeq = m.GetEpoch(), m.GetSeq()
		}
	case api.Kind_KIND_LIVE:
		if m.GetEpoch() != "" {
			p.epoch = m.GetEpoch()
		}
		p.lastSeq = max(p.lastSeq, m.GetSeq())
		p.liveOn = cn
		c.roomLiveLocked(cn)
	case api.Kind_KIND_ERROR:
		if m.GetClientId() == "" && p.liveOn != cn {
			// The subscription was refused: the room counts as settled,
			// and is dropped (no reconnect asks again to be refused again;
			// Subscribe again to retry).
			c.log.Warn("client: a room was refused", "room", m.GetRoom(), "err", m.GetError().GetMessage())
			delete(c.rooms, m.GetRoom())
			c.roomLiveLocked(cn)
			return
		}
		c.answerLocked(m)
	case api.Kind_KIND_ACK:
		c.answerLocked(m)
	case api.Kind_KIND_UNSUBSCRIBED:
		// On request or by the server (removed from a private room): no
		// reconnect subscribes it again.
		delete(c.rooms, m.GetRoom())
	}
}

// roomLiveLocked counts one room of the connection as live; with the last
// one, the connection is live: sends go out on it, and what the previous
// connection left unacknowledged is retried, in order (only now: a send to
// a room not yet subscribed again would be refused). c.mu must be held.
func (c *Client) roomLiveLocked(cn *link) {
	if c.waiting--; c.waiting > 0 || c.conn == cn {
		return
	}
	c.conn, c.joining = cn, nil
	close(c.live)
	now := time.Now()
	for _, id := range c.order {
		p := c.pending[id]
		p.on, p.at = cn, now
		_ = cn.send(p.msg)
	}
}

// SendTo is Send to one of the client's rooms (Config.Room or Rooms, or
// one added with Subscribe).
func (c *Client) SendTo(ctx context.Context, room, text string) (*api.Message, error) {
	return c.SendMessage(ctx, &api.Message{Room: room, Text: text})
}

// Subscribe adds room to the stream, now and on every reconnect (history
// as Config says, then live; resumed from its position after a
// reconnect). Called while a connection is joining, it subscribes on that
// connection, which goes live once the room has replayed too. The room's
// KIND_LIVE, or an error event naming it if the node refuses it, comes
// through Messages; a refused room is dropped (Subscribe again to retry).
func (c *Client) Subscribe(room string) error {
	c.mu.Lock()
	if c.rooms[room] != nil || room == c.cfg.Room {
		c.mu.Unlock()
		return nil
	}
	c.rooms[room] = &roomPos{}
	cn := c.conn
	if cn == nil {
		cn = c.joining
	}
	if cn != nil {
		// Its KIND_LIVE is one more to count: the joining connection
		// waits for it, a live one harmlessly.
		c.waiting++
	}
	c.mu.Unlock()
	if cn == nil {
		return nil // the next connection subscribes it
	}
	return cn.send(&api.Message{Kind: api.Kind_KIND_SUBSCRIBE, Room: room, Join: &api.Join{History: int32(c.cfg.History), NoHistory: c.cfg.NoHistory}})
}

// Unsubscribe removes room from the stream.
func (c *Client) Unsubscribe(room string) error {
	c.mu.Lock()
	if c.rooms[room] == nil {
		c.mu.Unlock()
		return nil
	}
	delete(c.rooms, room)
	cn := c.conn
	if cn == nil {
		cn = c.joining
	}
	c.mu.Unlock()
	if cn == nil {
		return nil
	}
	return cn.send(&api.Message{Kind: api.Kind_KIND_UNSUBSCRIBE, Room: room})
}

// RoomPosition returns the epoch and id of the newest stored message
// received in room (one of Rooms, or the primary room).
func (c *Client) RoomPosition(room string) (string, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.rooms[room]; p != nil {
		return p.epoch, p.lastSeq
	}
	return c.epoch, c.lastSeq
}

// primaryRoom is the room the client joins.
func (c *Client) primaryRoom() string {
	if c.cfg.Room == "" {
		return "general"
	}
	return c.cfg.Room
}
