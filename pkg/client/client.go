// Package client is a Go client for chat nodes, over gRPC or WebSocket. It
// joins a room, reconnects by itself with backoff and jitter (to the next
// address in its list), resumes from the last id it saw so that nothing is
// missed or repeated, and retries unacknowledged sends with their client id
// so that none is stored twice. The terminal client, the load tool and the
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
}

// Client is a resilient chat stream.
type Client struct {
	cfg  Config
	log  *slog.Logger
	msgs chan *api.Message

	mu      sync.Mutex
	conn    conn
	epoch   string
	lastSeq uint64
	pending map[string]*pendingSend // by client id, until acknowledged
	order   []string                // pending ids in send order
	live    chan struct{}           // closed when the current connection is live

	nextID     atomic.Uint64
	idPrefix   string
	Reconnects atomic.Int64 // how many times the client reconnected

	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

type pendingSend struct {
	msg  *api.Message
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
	close()
}

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
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger,
		msgs:     make(chan *api.Message, cfg.Buffer),
		pending:  make(map[string]*pendingSend),
		live:     make(chan struct{}),
		idPrefix: strconv.FormatUint(rand.Uint64(), 36) + "-",
		cancel:   cancel,
		done:     make(chan struct{}),
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

// Position returns the epoch and id of the newest stored message received.
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
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.pending[m.ClientId] = p
	c.order = append(c.order, m.ClientId)
	cn := c.conn
	c.mu.Unlock()
	if cn != nil {
		// A failed send is retried after the reconnect.
		_ = cn.send(m)
	}
	backoff := c.cfg.MinBackoff
	var (
		timer *time.Timer
		wait  <-chan time.Time
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
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
			return nil, ErrClosed
		}
	}
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
	defer func() {
		c.mu.Lock()
		c.err = ErrClosed
		c.mu.Unlock()
	}()
	backoff := c.cfg.MinBackoff
	for attempt := 0; ; attempt++ {
		addr := c.cfg.Addrs[attempt%len(c.cfg.Addrs)]
		start := time.Now()
		err := c.session(ctx, addr, attempt > 0)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 10*time.Second {
			backoff = c.cfg.MinBackoff // it was a healthy connection
		}
		// Full jitter keeps a node's clients from returning in a herd.
		d := time.Duration(rand.Int64N(int64(backoff))) + backoff/2
		c.log.Info("reconnecting", "addr", addr, "err", err, "in", d)
		c.Reconnects.Add(1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// session runs one connection until it fails.
func (c *Client) session(ctx context.Context, addr string, resume bool) error {
	cn, err := c.connect(ctx, addr)
	if err != nil {
		return err
	}
	defer cn.close()
	c.mu.Lock()
	join := &api.Join{Events: true, History: int32(c.cfg.History), NoHistory: c.cfg.NoHistory}
	if resume && (c.lastSeq > 0 || c.epoch != "") {
		join = &api.Join{Events: true, AfterSeq: c.lastSeq, Epoch: c.epoch}
	} else if resume {
		join.NoHistory = false
	}
	c.mu.Unlock()
	if err := cn.send(&api.Message{User: c.cfg.User, Room: c.cfg.Room, Join: join}); err != nil {
		return err
	}
	for {
		m, err := cn.recv()
		if err != nil {
			c.mu.Lock()
			if c.conn == cn {
				c.conn = nil
				c.live = make(chan struct{})
			}
			c.mu.Unlock()
			return err
		}
		c.handle(cn, m)
		select {
		case c.msgs <- m:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *Client) handle(cn conn, m *api.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.GetKind() {
	case api.Kind_KIND_MESSAGE:
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
		c.conn = cn
		close(c.live)
		// Retry what the previous connection left unacknowledged, in order.
		for _, id := range c.order {
			_ = cn.send(c.pending[id].msg)
		}
	case api.Kind_KIND_ACK, api.Kind_KIND_ERROR:
		p := c.pending[m.GetClientId()]
		switch {
		case p == nil:
		case m.GetKind() == api.Kind_KIND_ERROR && m.GetError().GetCode() == codeUnavailable:
			select {
			case p.retry <- m.GetError().GetRetryAfterMs():
			default: // a retry is already due
			}
		default:
			c.dropPendingLocked(m.GetClientId())
			p.done <- m
		}
	}
}
