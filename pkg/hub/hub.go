package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"log/slog"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
)

const numShards = 64

// Hub is a node's registry of rooms and sessions. Create it with New and
// stop it with Shutdown.
type Hub struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	seed    maphash.Seed
	shards  [numShards]shard

	nextID atomic.Uint64
	closed atomic.Bool
	wg     sync.WaitGroup // sessions (until their writer finishes), publishes under way and their completers, backfills, the position checker

	base    context.Context // sessions' parent; cancelled last by Shutdown
	stop    context.CancelFunc
	bg      context.Context // position checks and backfills; cancelled first
	bgStop  context.CancelFunc
	recheck chan struct{}
	gate    busGate
	// serverKeys says publishes without a client id get an idempotency key
	// of the hub's own: the broker is remote, and its client may retry.
	serverKeys bool
	warnLimit  rateLimiter

	leavingMu sync.Mutex
	leaving   map[leaveKey]*time.Timer // leaves waiting out the grace

	usersMu  sync.Mutex
	users    map[string]*user        // local users
	sessionN int                     // local sessions
	all      map[*Session]struct{}   // the local sessions, for Shutdown
	admitted map[*Admission]struct{} // connections not joined yet
}

type shard struct {
	mu    sync.RWMutex
	rooms map[string]*room
}

// New returns a running Hub and registers it as cfg.Broker's handler.
func New(cfg Config) (*Hub, error) {
	if cfg.Broker == nil || cfg.History == nil {
		return nil, fmt.Errorf("hub: Broker and History are required")
	}
	cfg.setDefaults()
	if err := cfg.setLimiter(); err != nil {
		return nil, err
	}
	h := &Hub{
		cfg:      cfg,
		log:      cfg.Logger,
		seed:     maphash.MakeSeed(),
		recheck:  make(chan struct{}, 1),
		users:    make(map[string]*user),
		leaving:  make(map[leaveKey]*time.Timer),
		admitted: make(map[*Admission]struct{}),
		all:      make(map[*Session]struct{}),
	}
	_, inProcess := cfg.Broker.(*pubsub.Memory)
	h.serverKeys = !inProcess
	m, err := newMetrics(cfg.Registerer, h)
	if err != nil {
		return nil, err
	}
	h.metrics = m
	h.warnLimit.every = 10 * time.Second
	for i := range h.shards {
		h.shards[i].rooms = make(map[string]*room)
	}
	h.base, h.stop = context.WithCancel(context.Background())
	h.bg, h.bgStop = context.WithCancel(context.Background())
	cfg.Broker.Register(h)
	h.wg.Add(3)
	go h.checkPositions()
	go h.heartbeat()
	go h.keepAlive()
	return h, nil
}

// Config returns the hub's configuration with defaults applied.
func (h *Hub) Config() Config { return h.cfg }

// sum hashes a stored message's content for a room's sumRing.
func (h *Hub) sum(data []byte) uint64 { return maphash.Bytes(h.seed, data) }

func (h *Hub) shard(room string) *shard {
	return &h.shards[maphash.String(h.seed, room)%numShards]
}

func (h *Hub) lookup(name string) *room {
	sh := h.shard(name)
	sh.mu.RLock()
	r := sh.rooms[name]
	sh.mu.RUnlock()
	return r
}

// Join validates o, adds a session for t to its room, replays history, and
// starts the session's writer. The session's first queued frames are the
// replay; live messages follow without gap or duplicate.
func (h *Hub) Join(ctx context.Context, t Transport, o JoinOptions) (*Session, error) {
	if o.Admission != nil {
		// The session takes the slot over (addUser); on any failure before
		// that, the slot is freed here.
		defer o.Admission.Release()
	}
	if h.closed.Load() {
		return nil, &Error{Kind: KindClosed, Msg: "node is shutting down; reconnect"}
	}
	user, err := NormalizeUser(o.User)
	if err != nil {
		return nil, err
	}
	o.User = user
	if o.ClaimedUser != "" {
		// The name the client gave must be the token's, in any
		// normalisation; a name that is not valid is not the token's.
		if claimed, err := NormalizeUser(o.ClaimedUser); err != nil || claimed != o.User {
			return nil, errorf(KindForbidden, "user %q does not match the authenticated user", o.ClaimedUser)
		}
	}
	roomName, err := NormalizeRoom(o.Room)
	if err != nil {
		return nil, err
	}
	if err := h.mayJoin(ctx, o.MayJoin, roomName, o.User); err != nil {
		return nil, err
	}
	id := h.nextID.Add(1)
	s := &Session{
		hub:       h,
		id:        id,
		origin:    h.cfg.NodeID + "/" + strconv.FormatUint(id, 10),
		user:      o.User,
		transport: o.Transport,
		events:    o.Events,
		changes:   o.Events && o.Changes,
		mayJoin:   o.MayJoin,
		t:         t,
		wake:      make(chan struct{}, 1),
		slots:     make(chan struct{}, h.cfg.MaxInflightSends),
	}
	s.log = h.log.With("session", s.origin, "user", o.User, "transport", o.Transport, "room", roomName)
	s.ctx, s.cancel = context.WithCancel(h.base)
	if err := h.addUser(s, o.Admission); err != nil {
		s.cancel()
		return nil, err
	}
	primary := &sub{s: s, syncing: true}
	if err := h.attach(ctx, primary, roomName, o); err != nil {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.cancel()
		h.removeUser(s)
		return nil, err
	}
	if !o.Expires.IsZero() {
		// The token's expiry ends the stream; the client reconnects with a
		// fresh one and resumes.
		t := time.AfterFunc(time.Until(o.Expires), func() { s.Close(CloseUnauthenticated) })
		context.AfterFunc(s.ctx, func() { t.Stop() })
	}
	h.wg.Add(1) // done when the session finishes
	// Writers start on demand; one must also look at a session whose
	// context ends (the hub's base context), since none may be running.
	context.AfterFunc(s.ctx, func() {
		s.mu.Lock()
		s.wakeLocked()
		s.mu.Unlock()
	})
	first := h.presenceCount(primary)
	s.start()
	if h.closed.Load() {
		// Shutdown began while this joined, perhaps after it listed the
		// sessions to close: close this one too.
		s.Close(CloseShutdown)
	}
	h.presenceJoin(ctx, primary, first)
	// The other rooms of a multi-room join: each one's failure is told
	// to the client in an error event naming it; the stream goes on.
	more := o.Rooms
	if o.Personal && o.Events {
		more = append(more, SubOptions{Room: access.PersonalRoom(o.User), NoHistory: true})
	}
	for _, so := range more {
		_ = s.tell(s.Subscribe(ctx, so), so.Room, "")
	}
	s.log.Debug("session joined")
	return s, nil
}

// replayPage reads the history a joining session gets, and the log's
// position at the read: the joining session has seen everything up to it
// once the frames are queued (see finishSync).
func (h *Hub) replayPage(ctx context.Context, room string, o JoinOptions) ([]*Frame, history.Position, bool, error) {
	limit := h.cfg.HistorySize
	if o.History > 0 && o.History < limit {
		limit = o.History
	}
	var (
		page history.Page
		err  error
	)
	switch {
	case o.AfterSeq > 0 || o.Epoch != "":
		// A resume replays everything missed, in pages if need be; the cap
		// is the log's own size.
		page, err = h.cfg.History.Since(ctx, room, o.Epoch, o.AfterSeq, h.cfg.LogSize)
	case o.NoHistory:
		page, err = h.cfg.History.Recent(ctx, room, 0)
	default:
		page, err = h.cfg.History.Recent(ctx, room, limit)
	}
	if err != nil {
		return nil, history.Position{}, false, &Error{Kind: KindUnavailable, Msg: "history is unavailable; retry", Err: err}
	}
	// Frames that some local reader still holds are shared, not decoded
	// (and encoded) again: see frameCache.
	r := h.lookup(room)
	if r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
	}
	frames := make([]*Frame, 0, len(page.Entries))
	for _, e := range page.Entries {
		if e.State != nil {
			// A message events acted on is shown as it stands, in a
			// frame of its own: the cache holds messages as sent.
			f, err := h.storedFrame(room, page.Position.Epoch, e.Seq, e.Data)
			if err != nil {
				h.log.Error("skipping malformed history entry", "room", room, "seq", e.Seq, "err", err)
				continue
			}
			origin := f.origin
			f = NewFrame(applyState(f.msg, e.State))
			f.origin, f.replay = origin, true
			frames = append(frames, f)
			continue
		}
		var f *Frame
		if r != nil {
			f = r.cache.get(page.Position.Epoch, e.Seq)
		}
		if f == nil {
			var err error
			if f, err = h.storedFrame(room, page.Position.Epoch, e.Seq, e.Data); err != nil {
				h.log.Error("skipping malformed history entry", "room", room, "seq", e.Seq, "err", err)
				continue
			}
			f.replay = true
			if r != nil {
				r.cache.put(page.Position.Epoch, e.Seq, f)
			}
		}
		frames = append(frames, f)
	}
	return frames, page.Position, page.Truncated, nil
}

// boundReplay keeps the newest of frames (oldest first) whose sizes add up
// to at most limit bytes, and reports whether it left any out.
func boundReplay(frames []*Frame, limit int) ([]*Frame, bool) {
	total := 0
	for i := len(frames) - 1; i >= 0; i-- {
		if total += frames[i].size; total > limit {
			return frames[i+1:], true
		}
	}
	return frames, false
}

// storedFrame decodes a stored record into a frame carrying its id.
func (h *Hub) storedFrame(room, epoch string, seq uint64, data []byte) (*Frame, error) {
	origin, m, err := decodeRecord(data)
	if err != nil {
		return nil, err
	}
	m.Room, m.Seq, m.Epoch = room, seq, epoch
	f := NewFrame(m)
	f.origin = origin
	return f, nil
}

func (h *Hub) truncatedFrame(room, epoch, why string) *Frame {
	return NewFrame(&api.Message{Kind: api.Kind_KIND_TRUNCATED, Room: room, Epoch: epoch, Text: why})
}

// user is a user's state on this node: its session count. Its send limit
// lives in Config.SendLimiter, keyed by name, so that REST sends need no
// entry here and the limit can be shared by nodes.
type user struct {
	sessions int
}

// addUser counts s against the node's and its user's session limits. A
// session that comes with its connection's Admission takes that slot over
// instead of a new one.
func (h *Hub) addUser(s *Session, a *Admission) error {
	h.usersMu.Lock()
	defer h.usersMu.Unlock()
	admitted := a != nil && a.takeLocked()
	if !admitted && h.sessionN+len(h.admitted) >= h.cfg.MaxSessions {
		return errorf(KindLimit, "this node is full (%d streams); try another node", h.cfg.MaxSessions)
	}
	u := h.users[s.user]
	if u == nil {
		u = &user{}
		h.users[s.user] = u
	}
	if u.sessions >= h.cfg.MaxSessionsPerUser {
		return errorf(KindLimit, "user %q has too many streams (limit %d)", s.user, h.cfg.MaxSessionsPerUser)
	}
	u.sessions++
	h.sessionN++
	h.all[s] = struct{}{}
	h.metrics.sessions.WithLabelValues(s.transport).Inc()
	return nil
}

func (h *Hub) removeUser(s *Session) {
	h.usersMu.Lock()
	defer h.usersMu.Unlock()
	if u := h.users[s.user]; u != nil {
		if u.sessions--; u.sessions <= 0 {
			delete(h.users, s.user)
		}
	}
	h.sessionN--
	delete(h.all, s)
	h.metrics.sessions.WithLabelValues(s.transport).Dec()
}

// ActiveUsers returns the number of distinct users with a session on this
// node.
func (h *Hub) ActiveUsers() int {
	h.usersMu.Lock()
	defer h.usersMu.Unlock()
	n := 0
	for _, u := range h.users {
		if u.sessions > 0 {
			n++
		}
	}
	return n
}

// leave runs when a session's writer has finished: each of its rooms
// lets it go.
func (h *Hub) leave(s *Session) {
	s.mu.Lock()
	subs := s.subs
	s.subs = nil
	for _, b := range subs {
		b.gone = true
	}
	s.mu.Unlock()
	for _, b := range subs {
		h.presenceLeave(b)
		h.release(b)
	}
}

// publishEvent broadcasts a join or leave of user; failures only cost the
// event.
func (h *Hub) publishEvent(room, user string, kind api.Kind) {
	m := &api.Message{User: user, Room: room, Kind: kind, Ts: h.cfg.Now().UnixMilli()}
	data, err := encodeRecord("", m)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.PublishTimeout)
	defer cancel()
	if _, err := h.cfg.Broker.Publish(ctx, room, data, pubsub.PublishOptions{Ephemeral: true}); err != nil {
		h.log.Debug("event not published", "room", room, "kind", kind.String(), "err", err)
	}
}

// Shutdown closes every session with CloseShutdown (flushing their queues)
// and waits for the hub's goroutines, or returns ctx's error.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.closed.Store(true)
	h.cancelAdmissions()
	h.bgStop()
	h.presenceShutdown()
	h.closeSpread(ctx, h.sessions())
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	// Writers end by themselves once flushed; the base context stays alive
	// for them until then, or until ctx runs out.
	defer h.stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		h.stop()
		<-done
		return fmt.Errorf("hub: shutdown: %w", ctx.Err())
	}
}

// closeSpread closes sessions with CloseShutdown in batches spread over
// DrainSpread, in random order with jitter, so that their reconnects do not
// land on the other nodes all at once.
func (h *Hub) closeSpread(ctx context.Context, ss []*Session) {
	mrand.Shuffle(len(ss), func(i, j int) { ss[i], ss[j] = ss[j], ss[i] })
	batches := 1
	if h.cfg.DrainSpread > 0 {
		batches = min(len(ss), 20)
	}
	for b := 0; b < batches; b++ {
		lo, hi := b*len(ss)/batches, (b+1)*len(ss)/batches
		for _, s := range ss[lo:hi] {
			s.Close(CloseShutdown)
		}
		if b == batches-1 {
			break
		}
		step := h.cfg.DrainSpread / time.Duration(batches)
		jitter := time.Duration(mrand.Int64N(int64(step)/2 + 1))
		select {
		case <-ctx.Done():
			for _, s := range ss[hi:] {
				s.Close(CloseShutdown)
			}
			return
		case <-time.After(step/2 + jitter):
		}
	}
}

// sessions returns every local session (those that joined, with or
// without rooms left).
func (h *Hub) sessions() []*Session {
	h.usersMu.Lock()
	defer h.usersMu.Unlock()
	out := make([]*Session, 0, len(h.all))
	for s := range h.all {
		out = append(out, s)
	}
	return out
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rateLimiter lets one warning through per interval and counts the rest, so
// a storm of slow consumers does not flood the log.
type rateLimiter struct {
	every      time.Duration
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (h *Hub) warn(log *slog.Logger, msg string, args ...any) {
	rl := &h.warnLimit
	rl.mu.Lock()
	now := time.Now()
	if now.Sub(rl.last) < rl.every {
		rl.suppressed++
		rl.mu.Unlock()
		return
	}
	n := rl.suppressed
	rl.last, rl.suppressed = now, 0
	rl.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Warn(msg, args...)
}

// keepAlive sends a heartbeat to every event stream that has been silent
// for HeartbeatInterval. Seed clients never get one: they cannot tell it
// from a message.
func (h *Hub) keepAlive() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.HeartbeatInterval / 2)
	defer t.Stop()
	beat := NewFrame(&api.Message{Kind: api.Kind_KIND_HEARTBEAT})
	for {
		select {
		case <-h.bg.Done():
			return
		case <-t.C:
		}
		idle := time.Now().Add(-h.cfg.HeartbeatInterval).UnixNano()
		for _, s := range h.sessions() {
			if s.events && s.lastWrite.Load() < idle {
				s.send(beat)
			}
		}
	}
}
