package history

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/hex"
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
}

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
}

// Append assigns data the room's next sequence id and stores it, capped at
// Size entries. If idemKey is not empty and was used within IdempotencyTTL,
// nothing is stored and the original id is returned with Duplicate set. A
// room whose TTL has passed is started afresh, in a new epoch.
//
// then, when not nil, runs before Append returns and while the room is still
// locked, so that a caller publishing the entry does so in sequence order.
func (m *Memory) Append(room string, data []byte, idemKey string, then func(AppendResult)) AppendResult {
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
			return AppendResult{Entry: Entry{Seq: rec.seq}, Epoch: r.epoch, Duplicate: true}
		}
	}
	r.seq++
	e := Entry{Seq: r.seq, Data: data}
	delta := int64(len(data))
	if len(r.entries) < m.cfg.Size {
		r.entries = append(r.entries, e)
		delta += entryOverhead
	} else {
		delta -= int64(len(r.entries[r.start].Data))
		r.entries[r.start] = e
		r.start = (r.start + 1) % len(r.entries)
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
	res := AppendResult{Entry: e, Epoch: r.epoch}
	if then != nil {
		then(res)
	}
	return res
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
func (r *memRoom) orderedLocked() []Entry {
	out := make([]Entry, 0, len(r.entries))
	out = append(out, r.entries[r.start:]...)
	return append(out, r.entries[:r.start]...)
}

// Recent implements Store.
func (m *Memory) Recent(ctx context.Context, room string, limit int) (Page, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil {
		return Page{}, nil
	}
	return Page{Entries: tail(r.orderedLocked(), limit), Position: Position{Epoch: r.epoch, Seq: r.seq}}, nil
}

// Since implements Store.
func (m *Memory) Since(ctx context.Context, room, epoch string, afterSeq uint64, limit int) (Page, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil {
		return Page{Truncated: epoch != "" && afterSeq > 0}, nil
	}
	all := r.orderedLocked()
	pos := Position{Epoch: r.epoch, Seq: r.seq}
	return SincePage(all, pos, epoch, afterSeq, limit), nil
}

// Position implements Store.
func (m *Memory) Position(ctx context.Context, room string) (Position, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.liveLocked(room, m.cfg.Now())
	if r == nil {
		return Position{}, nil
	}
	return Position{Epoch: r.epoch, Seq: r.seq}, nil
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
