package history

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"time"
)

var _ Store = (*Memory)(nil)

// MemoryConfig configures a Memory log.
type MemoryConfig struct {
	// Size is the number of entries kept per room. Zero means 100.
	Size int
	// TTL is how long a room's log is kept after its last append, as
	// pubsub.RedisConfig.HistoryTTL (the -history-ttl flag) is for Redis:
	// reads do not extend it, and an idle room's next append starts a new
	// epoch. Zero means 24 hours; a negative TTL keeps logs forever.
	TTL time.Duration
	// MaxBytes bounds, approximately, the memory all rooms hold: their
	// entries' data plus a fixed overhead per entry and per room. Past it,
	// the rooms appended to longest ago are evicted as if their TTL had
	// passed; the room being appended to never is, so one room alone may
	// exceed it (it is bounded by Size). Zero means 1 GiB; negative means
	// no bound.
	MaxBytes int64
	// IdempotencyTTL is how long an idempotency key is remembered. Zero
	// means five minutes.
	IdempotencyTTL time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Accounting and sweep parameters. The overheads are rough Go sizes (a
// map entry, a memRoom, an Entry in its ring); they make MaxBytes bound
// rooms of tiny messages too.
const (
	roomOverhead  = 256
	entryOverhead = 48
	// sweepBatch bounds the expired rooms one Append frees, so a publish
	// never pays for the expiry of thousands of rooms at once.
	sweepBatch = 16
	// timerBatch bounds the rooms one timer run frees; the rest wait for
	// the next run, minSweepDelay later.
	timerBatch    = 1024
	minSweepDelay = time.Second
)

// Memory is the embedded, single-node log: the default when no Redis is
// configured. Its Append is the in-memory twin of the Redis publish script,
// and like Redis it forgets a room TTL after its last append.
//
// Expired rooms are freed without anyone reading them: each Append frees a
// few, and a timer owned by the store (armed only while rooms are held)
// frees the rest. Close stops the timer.
type Memory struct {
	cfg MemoryConfig
	mu  sync.Mutex
	// rooms and order hold the same rooms; order is by last append, the
	// least recent first, so expired and evictable rooms are at its front
	// and a sweep costs only what it frees.
	rooms  map[string]*memRoom
	order  *list.List
	bytes  int64 // accounted size of all rooms (MaxBytes)
	timer  *time.Timer
	timers sync.WaitGroup // a timer armed or running
	closed bool
}

type memRoom struct {
	name    string
	elem    *list.Element // in Memory.order
	last    time.Time     // last append: the room expires TTL later
	bytes   int64         // accounted size
	epoch   string
	seq     uint64
	entries []Entry // ring of at most cfg.Size, oldest first after rotation
	start   int     // index of the oldest entry in entries
	idem    map[string]idemRecord
	// Chat state (state.go): the State of messages events acted on, the
	// reactions set (key: seq, emoji, user) and the ids of the events
	// held, increasing, to count unread messages without a scan.
	states map[uint64]*State
	reacts map[uint64]map[reaction]struct{}
	events []uint64
}

// reaction is one user's reaction with one emoji.
type reaction struct{ emoji, user string }

type idemRecord struct {
	seq     uint64
	expires time.Time
}

// NewMemory returns an empty in-memory log.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.Size <= 0 {
		cfg.Size = 100
	}
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 1 << 30
	}
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{cfg: cfg, rooms: make(map[string]*memRoom), order: list.New()}
}

// Close stops the store's expiry timer and waits for a run in progress.
// The store stays usable: expired rooms are then still hidden from reads
// and freed by later appends. Close is idempotent and always returns nil.
func (m *Memory) Close() error {
	m.mu.Lock()
	m.closed = true
	if m.timer != nil && m.timer.Stop() {
		m.timers.Done() // its run will not happen
	}
	m.timer = nil
	m.mu.Unlock()
	m.timers.Wait()
	return nil
}

// AppendResult is what Append reports.
type AppendResult struct {
	Entry     Entry
	Epoch     string
	Duplicate bool // the idempotency key was seen: Entry.Seq is the original id
	Reacted   bool // an OpReact event added its reaction (false: removed)
}

// Append assigns data the room's next sequence id and stores it, capped at
// Size entries. If idemKey is not empty and was used within IdempotencyTTL,
// nothing is stored and the original id is returned with Duplicate set. A
// room whose TTL has passed is started afresh, in a new epoch.
//
// then, when not nil, runs before Append returns and while the room is still
// locked, so that a caller publishing the entry does so in sequence order.
func (m *Memory) Append(room string, data []byte, idemKey string, then func(AppendResult)) AppendResult {
	res, _ := m.AppendEvent(room, data, idemKey, nil, then)
	return res
}

// AppendEvent is Append for an event with effect eff on an earlier message
// (nil: a plain message): the effect is applied to the message's State in
// the same step, or the event is refused with ErrTarget or
// ErrTooManyReactions and nothing is stored. A reaction toggle that
// removes stores eff.Off instead of data; AppendResult.Reacted says which.
func (m *Memory) AppendEvent(room string, data []byte, idemKey string, eff *Effect, then func(AppendResult)) (AppendResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Now()
	m.sweepLocked(now, sweepBatch)
	r := m.liveLocked(room, now)
	if r == nil {
		r = &memRoom{name: room, epoch: newEpoch(), bytes: roomOverhead + int64(len(room))}
		r.elem = m.order.PushBack(r)
		m.rooms[room] = r
		m.bytes += r.bytes
	}
	if idemKey != "" {
		// A duplicate stores nothing and, as in the Redis script, does
		// not extend the room's life.
		if rec, ok := r.idem[idemKey]; ok && now.Before(rec.expires) {
			return AppendResult{Entry: Entry{Seq: rec.seq}, Epoch: r.epoch, Duplicate: true}, nil
		}
	}
	reacted := false
	if eff != nil {
		var err error
		if data, reacted, err = r.effectLocked(eff, data); err != nil {
			return AppendResult{Epoch: r.epoch}, err
		}
	}
	r.seq++
	e := Entry{Seq: r.seq, Data: data}
	delta := int64(len(data))
	if len(r.entries) < m.cfg.Size {
		r.entries = append(r.entries, e)
		delta += entryOverhead
	} else {
		gone := r.entries[r.start]
		delta -= int64(len(gone.Data))
		r.forgetLocked(gone.Seq)
		r.entries[r.start] = e
		r.start = (r.start + 1) % len(r.entries)
	}
	if eff != nil {
		r.events = append(r.events, e.Seq)
	}
	r.bytes += delta
	m.bytes += delta
	r.last = now
	m.order.MoveToBack(r.elem)
	if idemKey != "" {
		if r.idem == nil {
			r.idem = make(map[string]idemRecord)
		}
		// Sweep expired keys now and then so the map stays bounded by the
		// send rate times the TTL.
		if len(r.idem)%256 == 255 {
			for k, rec := range r.idem {
				if !now.Before(rec.expires) {
					delete(r.idem, k)
				}
			}
		}
		r.idem[idemKey] = idemRecord{seq: e.Seq, expires: now.Add(m.cfg.IdempotencyTTL)}
	}
	m.shrinkLocked(r)
	m.armLocked(now)
	res := AppendResult{Entry: e, Epoch: r.epoch, Reacted: reacted}
	if then != nil {
		then(res)
	}
	return res, nil
}

// Reset forgets a room's log, as a Redis restart without persistence would.
// The next Append starts a new epoch. Tests use it.
func (m *Memory) Reset(room string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.rooms[room]; r != nil {
		m.evictLocked(r)
	}
}

var _ Rotator = (*Memory)(nil)

// Rotate implements Rotator.
func (m *Memory) Rotate(ctx context.Context, room, from string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil {
		return "", nil
	}
	if r.epoch == from {
		r.epoch = newEpoch()
	}
	return r.epoch, nil
}

// Rewind makes a room's log go back to seq within its epoch, as a Redis
// failover to a replica that lagged does: the entries after seq and their
// idempotency keys are gone, and the next Append reuses seq+1. Tests use
// it to prove that such a regression is never silent.
func (m *Memory) Rewind(room string, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil || seq >= r.seq {
		return
	}
	keep := make([]Entry, 0, len(r.entries))
	for _, e := range r.orderedLocked() {
		if e.Seq <= seq {
			keep = append(keep, e)
			continue
		}
		delta := int64(len(e.Data)) + entryOverhead
		r.bytes -= delta
		m.bytes -= delta
	}
	r.entries, r.start, r.seq = keep, 0, seq
	r.states, r.reacts, r.events = nil, nil, nil
	for k, rec := range r.idem {
		if rec.seq > seq {
			delete(r.idem, k)
		}
	}
}

// liveLocked returns room's state, or nil when it has none or its TTL has
// passed (it is then freed). m.mu must be held.
func (m *Memory) liveLocked(room string, now time.Time) *memRoom {
	r := m.rooms[room]
	if r != nil && m.expiredLocked(r, now) {
		m.evictLocked(r)
		return nil
	}
	return r
}

// expiredLocked reports whether r's TTL has passed at now: from TTL after
// its last append on, as a Redis PEXPIRE. m.mu must be held.
func (m *Memory) expiredLocked(r *memRoom, now time.Time) bool {
	return m.cfg.TTL > 0 && !now.Before(r.last.Add(m.cfg.TTL))
}

// evictLocked forgets r. m.mu must be held.
func (m *Memory) evictLocked(r *memRoom) {
	delete(m.rooms, r.name)
	m.order.Remove(r.elem)
	m.bytes -= r.bytes
}

// sweepLocked frees up to max expired rooms, least recently appended
// first, and stops at the first live one. m.mu must be held.
func (m *Memory) sweepLocked(now time.Time, max int) {
	for range max {
		f := m.order.Front()
		if f == nil || !m.expiredLocked(f.Value.(*memRoom), now) {
			return
		}
		m.evictLocked(f.Value.(*memRoom))
	}
}

// shrinkLocked evicts the rooms appended to longest ago until the store is
// within MaxBytes, sparing keep. m.mu must be held.
func (m *Memory) shrinkLocked(keep *memRoom) {
	for m.cfg.MaxBytes > 0 && m.bytes > m.cfg.MaxBytes {
		f := m.order.Front()
		if f == nil || f == keep.elem {
			return
		}
		m.evictLocked(f.Value.(*memRoom))
	}
}

// armLocked starts the expiry timer for the oldest room unless it runs
// already, the store is closed, logs never expire or none is held. Runs
// are at least minSweepDelay (or TTL, if shorter) apart. m.mu must be held.
func (m *Memory) armLocked(now time.Time) {
	if m.closed || m.timer != nil || m.cfg.TTL < 0 {
		return
	}
	f := m.order.Front()
	if f == nil {
		return
	}
	d := f.Value.(*memRoom).last.Add(m.cfg.TTL).Sub(now)
	if floor := min(minSweepDelay, m.cfg.TTL); d < floor {
		d = floor
	}
	m.timers.Add(1)
	m.timer = time.AfterFunc(d, m.expire)
}

// expire is the timer's run: free a batch of expired rooms, then re-arm
// for the next.
func (m *Memory) expire() {
	defer m.timers.Done()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.timer = nil
	if m.closed {
		return
	}
	now := m.cfg.Now()
	m.sweepLocked(now, timerBatch)
	m.armLocked(now)
}

// orderedLocked returns the room's entries oldest first. m.mu must be held.
func (r *memRoom) orderedLocked() []Entry { return r.rangeLocked(0, len(r.entries)) }

// rangeLocked returns the entries from the i-th oldest held up to (not
// including) the j-th, each with its state: a copy, costing j-i. m.mu must
// be held.
func (r *memRoom) rangeLocked(i, j int) []Entry {
	if i >= j {
		return nil
	}
	out := make([]Entry, 0, j-i)
	n := len(r.entries)
	for k := i; k < j; k++ {
		e := r.entries[(r.start+k)%n]
		if st := r.states[e.Seq]; st != nil {
			c := *st
			e.State = &c
		}
		out = append(out, e)
	}
	return out
}

// oldestLocked returns the id of the oldest entry held, zero if none.
func (r *memRoom) oldestLocked() uint64 {
	if len(r.entries) == 0 {
		return 0
	}
	return r.entries[r.start].Seq
}

// Recent implements Store.
func (m *Memory) Recent(ctx context.Context, room string, limit int) (Page, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil {
		return Page{}, nil
	}
	n := len(r.entries)
	return Page{Entries: r.rangeLocked(n-min(max(limit, 0), n), n), Position: r.positionLocked(), Oldest: r.oldestLocked()}, nil
}

// Since implements Store. It copies only what the page holds.
func (m *Memory) Since(ctx context.Context, room, epoch string, afterSeq uint64, limit int) (Page, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil {
		return Page{Truncated: epoch != "" && afterSeq > 0}, nil
	}
	// The suffix of the log SincePage can return: from the entry after
	// afterSeq when it is held, else the newest limit.
	n, from, to := len(r.entries), 0, len(r.entries)
	if oldest := r.oldestLocked(); oldest > 0 && afterSeq+1 >= oldest && afterSeq < r.seq && (epoch == "" || epoch == r.epoch) {
		from = max(int(afterSeq)-int(oldest), 0) // from afterSeq itself when held
		if limit >= 0 {
			to = min(n, from+max(limit, 1)+1)
		}
	} else if limit >= 0 {
		from = n - min(limit, n)
	}
	p := SincePage(r.rangeLocked(from, to), r.positionLocked(), epoch, afterSeq, limit)
	p.Oldest = r.oldestLocked()
	return p, nil
}

// Before implements Store, in O(limit).
func (m *Memory) Before(ctx context.Context, room, epoch string, beforeSeq uint64, limit int) (Page, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil {
		return Page{Truncated: epoch != "" && beforeSeq > 0}, nil
	}
	pos, oldest, n := r.positionLocked(), r.oldestLocked(), len(r.entries)
	if epoch != "" && epoch != r.epoch {
		return Page{Entries: r.rangeLocked(n-min(max(limit, 0), n), n), Position: pos, Oldest: oldest, Truncated: true}, nil
	}
	end := n // entries [0, end) have ids below beforeSeq
	if beforeSeq > 0 && beforeSeq <= r.seq {
		end = max(int(int64(beforeSeq)-int64(oldest)), 0)
	}
	from := max(end-max(limit, 0), 0)
	return beforePage(r.rangeLocked(from, end), pos, oldest), nil
}

// beforePage completes a Before page: it is Truncated when it reaches the
// log's start and the log lost older entries.
func beforePage(entries []Entry, pos Position, oldest uint64) Page {
	p := Page{Entries: entries, Position: pos, Oldest: oldest}
	if oldest > 1 && (len(entries) == 0 || entries[0].Seq == oldest) {
		p.Truncated = true
	}
	return p
}

// positionLocked returns the room's position. m.mu must be held.
func (r *memRoom) positionLocked() Position { return Position{Epoch: r.epoch, Seq: r.seq} }

// Position implements Store.
func (m *Memory) Position(ctx context.Context, room string) (Position, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil {
		return Position{}, nil
	}
	return r.positionLocked(), nil
}

var _ Summarizer = (*Memory)(nil)

// Summaries implements Summarizer.
func (m *Memory) Summaries(ctx context.Context, reads []Read) ([]Summary, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Summary, len(reads))
	now := m.cfg.Now()
	for i, rd := range reads {
		r := m.liveLocked(rd.Room, now)
		if r == nil {
			continue
		}
		pos, oldest := r.positionLocked(), r.oldestLocked()
		from := oldest
		if rd.Epoch == pos.Epoch && rd.Seq >= from {
			from = rd.Seq + 1
		}
		k, _ := slices.BinarySearch(r.events, from)
		out[i] = Summary{Position: pos, Unread: unread(pos, oldest, rd, len(r.events)-k)}
	}
	return out, nil
}

// effectLocked applies eff to its message before the event is appended
// with the room's next id, and returns the data to store (eff.Off for a
// reaction toggle that removes). m.mu must be held.
func (r *memRoom) effectLocked(eff *Effect, data []byte) ([]byte, bool, error) {
	oldest := r.oldestLocked()
	if eff.Epoch != r.epoch || eff.Target == 0 || eff.Target > r.seq || eff.Target < oldest {
		return nil, false, ErrTarget
	}
	rev := r.seq + 1
	key := reaction{emoji: eff.Text, user: eff.User}
	_, reacts := r.reacts[eff.Target][key]
	st, err := eff.apply(r.states[eff.Target], rev, reacts)
	if err != nil {
		return nil, false, err
	}
	if r.states == nil {
		r.states = make(map[uint64]*State)
	}
	r.states[eff.Target] = st
	switch {
	case eff.Op == OpDelete:
		delete(r.reacts, eff.Target)
	case eff.Op == OpReact && reacts:
		delete(r.reacts[eff.Target], key)
		return eff.Off, false, nil
	case eff.Op == OpReact:
		if r.reacts == nil {
			r.reacts = make(map[uint64]map[reaction]struct{})
		}
		if r.reacts[eff.Target] == nil {
			r.reacts[eff.Target] = make(map[reaction]struct{})
		}
		r.reacts[eff.Target][key] = struct{}{}
		return data, true, nil
	}
	return data, false, nil
}

// forgetLocked drops the chat state of entry seq, which leaves the log.
// m.mu must be held.
func (r *memRoom) forgetLocked(seq uint64) {
	if r.states == nil && len(r.events) == 0 {
		return
	}
	delete(r.states, seq)
	delete(r.reacts, seq)
	if len(r.events) > 0 && r.events[0] == seq {
		r.events = r.events[1:]
	}
}

// SincePage applies the Since rules to a room's whole log (oldest first) and
// position. Backends that read the whole capped list share it.
func SincePage(all []Entry, pos Position, epoch string, afterSeq uint64, limit int) Page {
	if epoch != "" && epoch != pos.Epoch {
		return Page{Entries: tail(all, limit), Position: pos, Truncated: true}
	}
	if afterSeq > pos.Seq {
		// The caller holds ids the log never reached: the log went back
		// (a failover to a replica that lagged, an AOF that lost its last
		// second). What the caller holds past pos.Seq is gone, and the ids
		// it holds may be given to other messages.
		return Page{Entries: tail(all, limit), Position: pos, Truncated: true}
	}
	if afterSeq == pos.Seq {
		return Page{Position: pos}
	}
	// The entry right after afterSeq must still be held.
	if len(all) == 0 || all[0].Seq > afterSeq+1 {
		return Page{Entries: tail(all, limit), Position: pos, Truncated: true}
	}
	i := int(afterSeq + 1 - all[0].Seq) // ids are contiguous within an epoch
	out := all[i:]
	if limit >= 0 && len(out) > limit {
		out = out[:limit]
	}
	return Page{Entries: out, Position: pos}
}

func tail(all []Entry, limit int) []Entry {
	if limit <= 0 {
		return nil
	}
	if len(all) > limit {
		return all[len(all)-limit:]
	}
	return all
}

// newEpoch returns a fresh random epoch id.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
