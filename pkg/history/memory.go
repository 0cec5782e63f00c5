package history

import (
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
	// IdempotencyTTL is how long an idempotency key is remembered. Zero
	// means five minutes.
	IdempotencyTTL time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// Memory is the embedded, single-node log: the default when no Redis is
// configured. Its Append is the in-memory twin of the Redis publish script.
type Memory struct {
	cfg   MemoryConfig
	mu    sync.Mutex
	rooms map[string]*memRoom
}

type memRoom struct {
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
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 5 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Memory{cfg: cfg, rooms: make(map[string]*memRoom)}
}

// AppendResult is what Append reports.
type AppendResult struct {
	Entry     Entry
	Epoch     string
	Duplicate bool // the idempotency key was seen: Entry.Seq is the original id
}

// Append assigns data the room's next sequence id and stores it, capped at
// Size entries. If idemKey is not empty and was used within IdempotencyTTL,
// nothing is stored and the original id is returned with Duplicate set.
//
// then, when not nil, runs before Append returns and while the room is still
// locked, so that a caller publishing the entry does so in sequence order.
func (m *Memory) Append(room string, data []byte, idemKey string, then func(AppendResult)) AppendResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.roomLocked(room, true)
	now := m.cfg.Now()
	if idemKey != "" {
		if rec, ok := r.idem[idemKey]; ok && now.Before(rec.expires) {
			return AppendResult{Entry: Entry{Seq: rec.seq}, Epoch: r.epoch, Duplicate: true}
		}
	}
	r.seq++
	e := Entry{Seq: r.seq, Data: data}
	if len(r.entries) < m.cfg.Size {
		r.entries = append(r.entries, e)
	} else {
		r.entries[r.start] = e
		r.start = (r.start + 1) % len(r.entries)
	}
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
	delete(m.rooms, room)
}

// roomLocked returns room's state, creating it when create is set. m.mu must
// be held.
func (m *Memory) roomLocked(room string, create bool) *memRoom {
	r := m.rooms[room]
	if r == nil && create {
		r = &memRoom{epoch: newEpoch()}
		m.rooms[room] = r
	}
	return r
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
	r := m.roomLocked(room, false)
	if r == nil {
		return Page{}, nil
	}
	return Page{Entries: tail(r.orderedLocked(), limit), Position: Position{Epoch: r.epoch, Seq: r.seq}}, nil
}

// Since implements Store.
func (m *Memory) Since(ctx context.Context, room, epoch string, afterSeq uint64, limit int) (Page, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.roomLocked(room, false)
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
	r := m.roomLocked(room, false)
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
	if afterSeq >= pos.Seq {
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

// NewEpoch returns a fresh random epoch id.
func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
