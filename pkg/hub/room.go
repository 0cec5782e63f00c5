package hub

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"example.com/chat/api"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
)

// backfillPage is how many entries one history read fetches while filling a
// gap.
const backfillPage = 1000

// room is one room's local state on this node.
type room struct {
	name string
	h    *Hub

	// subMu serialises subscribe and unsubscribe, which do broker I/O. It is
	// taken before mu, never while holding it.
	subMu      sync.Mutex
	subscribed bool
	dead       bool // removed from its shard; guarded by subMu

	mu         sync.Mutex
	members    []*sub
	known      bool   // epoch and lastSeq are initialised
	epoch      string // epoch of lastSeq
	lastSeq    uint64 // newest id fanned out here (or known to be in history)
	recovering bool   // a backfill is running; deliveries wait in pending
	pending    []pubsub.Envelope
	// pendingBytes counts pending's data; past MaxReplayBytes the
	// deliveries are dropped (they are in the log) and overflow makes the
	// backfill read on until it has them.
	pendingBytes int
	overflow     bool

	// retired is the epoch the room left last (rotated away from, or
	// jumped over by a backfill): deliveries of it still on the bus are
	// stale and dropped, not taken for a new epoch.
	retired string
	// regressed says the log went back within the epoch (see
	// history.Rotator): the backfill rotates the epoch before anything
	// else.
	regressed bool
	// sums remembers the content of the newest delivered ids, to tell a
	// re-delivery from an id given to another message; made on first use.
	sums *sumRing

	users map[string]int // local sessions per user
	cache frameCache     // stored frames shared by fan-out and replays
	// events is the room's budget of join/leave events, made on first use.
	events *rate.Limiter
}

// acquire returns name's room with b added as a syncing member, subscribing
// the node to the room first if b is its first local member.
func (h *Hub) acquire(ctx context.Context, name string, b *sub) (*room, error) {
	for {
		sh := h.shard(name)
		sh.mu.Lock()
		r := sh.rooms[name]
		if r == nil {
			r = &room{name: name, h: h}
			sh.rooms[name] = r
		}
		sh.mu.Unlock()

		r.subMu.Lock()
		if r.dead {
			// Lost a race with the last member's release; take a fresh room.
			r.subMu.Unlock()
			continue
		}
		if !r.subscribed {
			if err := r.subscribeLocked(ctx); err != nil {
				r.subMu.Unlock()
				h.dropIfEmpty(r)
				return nil, err
			}
		}
		r.mu.Lock()
		r.members = append(r.members, b)
		r.mu.Unlock()
		r.subMu.Unlock()
		return r, nil
	}
}

// subscribeLocked subscribes the node to the room and learns the log's
// position, so that every later delivery can be checked for gaps. r.subMu
// must be held.
func (r *room) subscribeLocked(ctx context.Context) error {
	r.mu.Lock()
	r.known, r.recovering, r.overflow = false, false, false
	r.takePendingLocked()
	r.mu.Unlock()
	// A bus that is down must fail the join promptly, not hang it.
	ctx, cancel := context.WithTimeout(ctx, r.h.cfg.PublishTimeout)
	defer cancel()
	if err := r.h.cfg.Broker.Subscribe(ctx, r.name); err != nil {
		return &Error{Kind: KindUnavailable, Msg: "message bus is unavailable; retry", Err: err}
	}
	// Deliveries from here on are held in pending until the position is
	// known: anything at or below it is in history for every joiner.
	pos, err := r.h.cfg.History.Position(ctx, r.name)
	if err != nil {
		_ = r.h.cfg.Broker.Unsubscribe(context.WithoutCancel(ctx), r.name)
		return &Error{Kind: KindUnavailable, Msg: "history is unavailable; retry", Err: err}
	}
	r.subscribed = true
	r.mu.Lock()
	r.known, r.epoch, r.lastSeq = true, pos.Epoch, pos.Seq
	if r.overflow {
		r.overflow = false
		r.startBackfillLocked()
	}
	r.acceptAllLocked(r.takePendingLocked())
	r.mu.Unlock()
	return nil
}

// release removes b from its room and unsubscribes the node when b was the
// last local member.
func (h *Hub) release(b *sub) {
	r := b.room
	if r == nil {
		return
	}
	r.subMu.Lock()
	defer r.subMu.Unlock()
	r.mu.Lock()
	for i, m := range r.members {
		if m == b {
			last := len(r.members) - 1
			r.members[i] = r.members[last]
			r.members[last] = nil
			r.members = r.members[:last]
			break
		}
	}
	empty := len(r.members) == 0
	r.mu.Unlock()
	if !empty || !r.subscribed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.PublishTimeout)
	defer cancel()
	if err := h.cfg.Broker.Unsubscribe(ctx, r.name); err != nil {
		h.log.Warn("unsubscribe failed", "room", r.name, "err", err)
	}
	r.subscribed = false
	h.dropIfEmptyLocked(r)
}

func (h *Hub) dropIfEmpty(r *room) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	h.dropIfEmptyLocked(r)
}

// dropIfEmptyLocked removes an unsubscribed, empty room from its shard.
// r.subMu must be held.
func (h *Hub) dropIfEmptyLocked(r *room) {
	if r.subscribed || r.dead {
		return
	}
	r.mu.Lock()
	empty := len(r.members) == 0
	r.mu.Unlock()
	if !empty {
		return
	}
	sh := h.shard(r.name)
	sh.mu.Lock()
	if sh.rooms[r.name] == r {
		delete(sh.rooms, r.name)
	}
	sh.mu.Unlock()
	r.dead = true
}

// HandleMessage implements pubsub.Handler. It runs on the broker's receive
// loop: it decodes, fans out by enqueueing only, and hands gaps to a
// backfill goroutine.
func (h *Hub) HandleMessage(env pubsub.Envelope) {
	r := h.lookup(env.Room)
	if r == nil {
		return
	}
	if env.Seq == 0 {
		h.fanoutEvent(r, env)
		return
	}
	r.mu.Lock()
	r.acceptLocked(env)
	r.mu.Unlock()
}

// HandleReconnect implements pubsub.Handler: deliveries may have been lost,
// so every room checks its position now.
func (h *Hub) HandleReconnect() {
	h.log.Info("bus reconnected; checking rooms for lost messages")
	h.metrics.busReconnects.Inc()
	h.gate.reconnected()
	select {
	case h.recheck <- struct{}{}:
	default:
	}
}

func (r *room) acceptAllLocked(envs []pubsub.Envelope) {
	for i, env := range envs {
		if r.recovering {
			for _, e := range envs[i:] {
				r.holdLocked(e)
			}
			return
		}
		r.acceptLocked(env)
	}
}

// holdLocked keeps a delivery until the room knows where it stands. The
// held bytes are bounded: a room that cannot catch up (a stalled store, a
// flood) keeps the oldest deliveries and drops the newer ones past
// MaxReplayBytes, and overflow makes the backfill read those from the log.
// The oldest are kept because they are the ones the log may have trimmed
// already; the newest are the last it trims. r.mu must be held.
func (r *room) holdLocked(env pubsub.Envelope) {
	if env.Epoch == r.retired && env.Epoch != "" {
		r.h.metrics.duplicates.Inc() // in the log, which the new epoch kept
		return
	}
	if r.overflow || r.pendingBytes+len(env.Data) > r.h.cfg.MaxReplayBytes {
		// Once one is dropped, all later ones are too: pending stays a
		// run without holes, which applyHeldLocked relies on.
		r.overflow = true
		r.h.metrics.pendingDropped.Inc()
		return
	}
	r.pending = append(r.pending, env)
	r.pendingBytes += len(env.Data)
}

// applyHeldLocked delivers the held deliveries that continue the room's
// position (the next id of its epoch, and so on), drops those already
// delivered, and keeps the rest. A backfill calls it before each read, so
// that what the node already holds is never skipped by a truncated jump.
// r.mu must be held.
func (r *room) applyHeldLocked() {
	i := 0
	for ; i < len(r.pending); i++ {
		env := r.pending[i]
		if env.Epoch != r.epoch || env.Seq > r.lastSeq+1 {
			break
		}
		r.pendingBytes -= len(env.Data)
		if env.Seq <= r.lastSeq {
			r.h.metrics.duplicates.Inc()
			continue
		}
		r.deliverLocked(env)
	}
	if i == 0 {
		return
	}
	n := copy(r.pending, r.pending[i:])
	clear(r.pending[n:])
	r.pending = r.pending[:n]
}

// takePendingLocked returns the held deliveries and forgets them.
func (r *room) takePendingLocked() []pubsub.Envelope {
	p := r.pending
	r.pending, r.pendingBytes = nil, 0
	return p
}

// acceptLocked orders one stored delivery: duplicates are dropped, a gap
// starts a backfill, the next id is fanned out. r.mu must be held.
func (r *room) acceptLocked(env pubsub.Envelope) {
	if !r.known || r.recovering {
		r.holdLocked(env)
		return
	}
	if env.Epoch != r.epoch {
		if env.Epoch == r.retired {
			r.h.metrics.duplicates.Inc() // published before the epoch moved on
			return
		}
		if r.epoch != "" {
			r.h.log.Warn("room history epoch changed; resynchronising", "room", r.name)
		}
		r.retired, r.epoch, r.lastSeq = r.epoch, env.Epoch, 0
	}
	switch {
	case env.Seq <= r.lastSeq:
		if r.sums.differs(env.Seq, r.h.sum(env.Data)) {
			// The log went back and gave the id to a new message; the
			// backfill moves the room to a new epoch, where the log holds it.
			r.regressLocked("an id already delivered came with other content")
			return
		}
		r.h.metrics.duplicates.Inc()
		return
	case env.Seq > r.lastSeq+1:
		r.startBackfillLocked()
		r.holdLocked(env)
		return
	}
	r.deliverLocked(env)
}

// deliverLocked fans out env, the next id of the room's epoch. r.mu must be
// held.
func (r *room) deliverLocked(env pubsub.Envelope) {
	r.lastSeq = env.Seq
	if r.sums == nil {
		r.sums = new(sumRing)
	}
	r.sums.put(env.Seq, r.h.sum(env.Data))
	f := r.cache.get(env.Epoch, env.Seq)
	if f == nil {
		var err error
		if f, err = r.h.storedFrame(r.name, env.Epoch, env.Seq, env.Data); err != nil {
			r.h.log.Error("dropping malformed delivery", "room", r.name, "seq", env.Seq, "err", err)
			return
		}
		r.cache.put(env.Epoch, env.Seq, f)
	}
	for _, b := range r.members {
		b.deliverStored(f)
	}
}

// regressLocked records that the room's log went back within its epoch
// (see history.Rotator) and has the backfill move it to a new epoch. r.mu
// must be held.
func (r *room) regressLocked(why string) {
	if r.regressed {
		return
	}
	r.h.log.Warn("room log went back (a Redis failover or lost writes); moving it to a new epoch",
		"room", r.name, "epoch", r.epoch, "delivered", r.lastSeq, "why", why)
	r.h.metrics.regressions.Inc()
	r.regressed = true
	// The cached frames of the ids given again hold the old messages.
	r.cache = frameCache{}
	if r.recovering {
		return // the running backfill rotates before its next read
	}
	r.startBackfillLocked()
}

func (r *room) startBackfillLocked() {
	if r.recovering {
		return
	}
	r.recovering = true
	r.h.metrics.backfills.Inc()
	r.h.wg.Add(1)
	go r.backfill()
}

// backfill reads what the room missed from history, delivers it in order,
// then the deliveries that waited meanwhile. It retries with backoff while
// the store is unavailable and gives up only when the hub stops.
//
// It never skips what the node holds. Before each read it delivers the
// held deliveries that continue the room's position; and when the log no
// longer holds the next id (a node that stalled while its rooms passed the
// history size), it first syncs with the bus, whose connection may still
// hold those messages, and takes the truncated jump only if they did not
// come. After a jump, sessions see the gap and event clients are told.
func (r *room) backfill() {
	defer r.h.wg.Done()
	ctx := r.h.bg
	wait := 50 * time.Millisecond
	synced := false
	for {
		r.mu.Lock()
		regressed := r.regressed
		if !regressed {
			r.applyHeldLocked()
		}
		epoch, after := r.epoch, r.lastSeq
		r.mu.Unlock()
		if regressed {
			if !r.rotate(ctx, epoch) {
				return
			}
			continue
		}
		page, err := r.read(ctx, epoch, after)
		if err != nil {
			r.h.metrics.historyErrors.Inc()
			r.h.log.Warn("backfill failed; retrying", "room", r.name, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
			continue
		}
		if page.Truncated && !synced {
			// What follows lastSeq may still be on its way from the bus:
			// take it in (it waits in pending) before concluding it is gone.
			synced = true
			r.h.syncBus(ctx, r.name)
			continue
		}
		r.mu.Lock()
		if r.regressed {
			r.mu.Unlock()
			continue
		}
		if page.Truncated {
			// More was lost than history keeps, or the log was reset: take
			// what there is; sessions see the jump and say so.
			r.h.log.Warn("room lost messages older than the history kept", "room", r.name, "seq", after)
			r.h.metrics.truncatedJumps.Inc()
			if page.Position.Epoch != r.epoch && r.epoch != "" {
				r.retired = r.epoch
			}
			r.epoch = page.Position.Epoch
			r.lastSeq = 0
			if len(page.Entries) > 0 {
				r.lastSeq = page.Entries[0].Seq - 1
			}
		}
		synced = false
		for _, e := range page.Entries {
			if e.Seq == r.lastSeq+1 && page.Position.Epoch == r.epoch {
				r.deliverLocked(pubsub.Envelope{Room: r.name, Seq: e.Seq, Epoch: page.Position.Epoch, Data: e.Data})
			}
		}
		if r.lastSeq < page.Position.Seq && len(page.Entries) == backfillPage {
			r.mu.Unlock()
			continue // more pages to read
		}
		if r.overflow {
			// Deliveries newer than those held were dropped while this
			// ran: they are in the log; read on.
			r.overflow = false
			r.mu.Unlock()
			continue
		}
		r.recovering = false
		r.acceptAllLocked(r.takePendingLocked())
		r.mu.Unlock()
		return
	}
}

// read returns what the log holds after the room's position (epoch,
// after), and checks on the way that the log did not go back: it reads one
// entry more, the last one delivered, and compares its content with what
// was delivered; a log whose newest id is below after went back too. A
// regression marks the room (regressLocked) and the caller's next pass
// rotates the epoch; the page returned is then not to be delivered.
func (r *room) read(ctx context.Context, epoch string, after uint64) (history.Page, error) {
	r.mu.Lock()
	sum, known := r.sums.get(after)
	r.mu.Unlock()
	from := after
	if known && after > 0 {
		from = after - 1
	}
	page, err := r.h.cfg.History.Since(ctx, r.name, epoch, from, backfillPage)
	if err != nil {
		return page, err
	}
	if page.Position.Epoch == epoch && page.Position.Seq < after {
		r.mu.Lock()
		r.regressLocked("the log's newest id is below what was delivered")
		r.mu.Unlock()
		return page, nil
	}
	if from == after {
		return page, nil
	}
	if page.Truncated || len(page.Entries) == 0 || page.Entries[0].Seq != after {
		// The entry to compare is gone (trimmed): read as usual.
		return r.h.cfg.History.Since(ctx, r.name, epoch, after, backfillPage)
	}
	if r.h.sum(page.Entries[0].Data) != sum {
		r.mu.Lock()
		r.regressLocked("the log holds other content at the last id delivered")
		r.mu.Unlock()
		return page, nil
	}
	page.Entries = page.Entries[1:]
	return page, nil
}

// rotate moves the room's log to a new epoch after a regression (see
// history.Rotator), retrying while the store is unavailable. It returns
// false when the hub stops first. The backfill's next read then finds the
// room's epoch changed and takes the log as it is now: sessions see the
// new epoch, and event clients are told.
func (r *room) rotate(ctx context.Context, from string) bool {
	rot, ok := r.h.cfg.History.(history.Rotator)
	wait := 50 * time.Millisecond
	for ok {
		epoch, err := rot.Rotate(ctx, r.name, from)
		if err == nil {
			r.h.log.Info("room moved to a new epoch", "room", r.name, "from", from, "to", epoch)
			break
		}
		r.h.metrics.historyErrors.Inc()
		r.h.log.Warn("moving a room to a new epoch failed; retrying", "room", r.name, "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regressed = false
	if !ok {
		r.h.log.Error("the history store cannot move a room to a new epoch; its clients may miss messages", "room", r.name)
		return true
	}
	// The old epoch is over: what the bus still carries of it, and what is
	// held of it, is in the log, which the backfill's next read (it finds
	// the epoch changed) takes from its oldest entry, in the new epoch.
	r.retired, r.sums = from, nil
	keep := r.pending[:0]
	for _, env := range r.pending {
		if env.Epoch == from {
			r.pendingBytes -= len(env.Data)
			continue
		}
		keep = append(keep, env)
	}
	clear(r.pending[len(keep):])
	r.pending = keep
	return true
}

// syncBus waits (at most PublishTimeout) until the bus handed over every
// delivery of room already on its way to this node; see pubsub.Syncer.
func (h *Hub) syncBus(ctx context.Context, room string) {
	s, ok := h.cfg.Broker.(pubsub.Syncer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.PublishTimeout)
	defer cancel()
	if err := s.Sync(ctx, room); err != nil {
		h.log.Debug("bus sync failed", "room", room, "err", err)
	}
}

// fanoutEvent delivers an ephemeral event to the room's event sessions.
func (h *Hub) fanoutEvent(r *room, env pubsub.Envelope) {
	origin, m, err := decodeRecord(env.Data)
	if err != nil {
		h.log.Error("dropping malformed event", "room", r.name, "err", err)
		return
	}
	switch m.Kind {
	case api.Kind_KIND_UNSUBSCRIBED:
		h.removed(r, m.User)
		return
	case api.Kind_KIND_INVITE, api.Kind_KIND_READ:
		// On a personal channel: the frame names the room waiting for
		// the user, or whose read marker moved (the notice's text), not
		// the channel.
		m.Room, m.Text = m.Text, ""
		if _, err := NormalizeRoom(m.Room); err != nil || m.Room == "" {
			h.log.Error("dropping malformed invitation", "room", r.name)
			return
		}
	default:
		m.Room = r.name
	}
	f := NewFrame(m)
	r.mu.Lock()
	defer r.mu.Unlock()
	presence := m.Kind == api.Kind_KIND_JOIN || m.Kind == api.Kind_KIND_LEAVE
	if presence {
		// Join/leave churn (fresh names in a loop) must not flood the
		// room's watchers: past the room's event budget they are dropped,
		// and the presence API stays the truth.
		if r.events == nil {
			r.events = rate.NewLimiter(rate.Limit(h.cfg.PresenceEventRate), 2*int(h.cfg.PresenceEventRate)+1)
		}
		if !r.events.Allow() {
			h.metrics.eventsDropped.Inc()
			return
		}
	}
	for _, b := range r.members {
		s := b.s
		// A user's own join and leave are news only to others.
		if s.events && s.origin != origin && !(presence && s.user == m.User) {
			s.send(f)
		}
	}
}

// removed ends user's subscriptions of r on this node: the room's owner
// removed them (a KIND_UNSUBSCRIBED notice on the room, which every node
// receives). It runs on the bus's receive loop, so the unsubscribes (which
// may call the broker) run on a goroutine of their own.
func (h *Hub) removed(r *room, user string) {
	r.mu.Lock()
	var gone []*Session
	for _, b := range r.members {
		if b.s.user == user {
			gone = append(gone, b.s)
		}
	}
	r.mu.Unlock()
	if len(gone) == 0 {
		return
	}
	h.log.Info("member removed from a private room; ending their subscriptions", "room", r.name, "sessions", len(gone))
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for _, s := range gone {
			_ = s.Unsubscribe(r.name, "removed from the room by its owner")
		}
	}()
}

// checkPositions compares each room's last delivered id with the log's, to
// catch a lost tail, every PositionCheckInterval and after a bus reconnect.
func (h *Hub) checkPositions() {
	defer h.wg.Done()
	t := time.NewTicker(h.cfg.PositionCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-h.bg.Done():
			return
		case <-t.C:
		case <-h.recheck:
		}
		losses, reopen := h.gate.takeDue()
		var started []*room
		for _, r := range h.rooms() {
			// What was delivered before the read: a log found below it
			// went back (what is delivered after the read may be newer).
			r.mu.Lock()
			epoch, delivered := r.epoch, r.lastSeq
			r.mu.Unlock()
			pos, err := h.cfg.History.Position(h.bg, r.name)
			if err != nil {
				h.log.Debug("position check failed", "room", r.name, "err", err)
				continue
			}
			if pos.Epoch != "" && pos.Epoch == epoch && pos.Seq < delivered {
				r.mu.Lock()
				if r.known && r.epoch == epoch {
					r.regressLocked("the log's newest id is below what was delivered")
				}
				r.mu.Unlock()
				continue
			}
			if !r.behind(pos) {
				continue
			}
			// The bus may just be slower than the log (a node waking from
			// a stall has its socket full): let it deliver what it holds,
			// then look again, before reading history at all.
			h.syncBus(h.bg, r.name)
			r.mu.Lock()
			if r.behindLocked(pos) {
				r.startBackfillLocked()
				started = append(started, r)
			}
			r.mu.Unlock()
		}
		if reopen {
			h.settleAndReopen(losses, started)
		}
	}
}

// behind reports whether the log at pos holds what the room has not
// delivered.
func (r *room) behind(pos history.Position) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.behindLocked(pos)
}

func (r *room) behindLocked(pos history.Position) bool {
	return r.known && !r.recovering && pos.Epoch != "" && (pos.Epoch != r.epoch || pos.Seq > r.lastSeq)
}

func (h *Hub) rooms() []*room {
	var out []*room
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, r := range sh.rooms {
			out = append(out, r)
		}
		sh.mu.RUnlock()
	}
	return out
}

// sumRing remembers a hash of the content of the newest delivered ids of
// a room (the last len(sumRing) of them), so that an id that comes again
// can be told a re-delivery (same content) from an id the log gave to
// another message after it went back. It costs one hash per delivery per
// room, not per session.
type sumRing [32]struct{ seq, sum uint64 }

func (s *sumRing) put(seq, sum uint64) {
	s[seq%uint64(len(s))] = struct{ seq, sum uint64 }{seq, sum}
}

// get returns the hash of seq's content if it is remembered. A nil ring
// remembers nothing.
func (s *sumRing) get(seq uint64) (uint64, bool) {
	if s == nil || seq == 0 {
		return 0, false
	}
	e := s[seq%uint64(len(s))]
	return e.sum, e.seq == seq
}

// differs reports whether seq is remembered with another content hash.
func (s *sumRing) differs(seq, sum uint64) bool {
	got, ok := s.get(seq)
	return ok && got != sum
}
