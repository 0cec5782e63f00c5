package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MemoryConfig configures a Memory.
type MemoryConfig struct {
	// Limit applies to every key. Its Rate must be positive.
	Limit Limit
	// MaxKeys bounds how many keys are remembered at once. Past it,
	// arbitrary keys are forgotten, which gives them a full bucket: an
	// attacker inventing keys gains nothing it would not get from new keys
	// anyway, and memory stays bounded. Zero means 262144.
	MaxKeys int
}

// Memory is a Limiter for one process: a GCRA per key in a sharded map.
// Entries whose bucket is full again (a TAT in the past) are the same as
// no entry and are swept as a shard grows, so the map holds about the keys
// active within the last Burst/Rate seconds, and never more than MaxKeys.
type Memory struct {
	limit  Limit
	g      gcra
	seed   maphash.Seed
	shards [memoryShards]memoryShard
	keys   prometheus.GaugeFunc
}

var _ Limiter = (*Memory)(nil)

const (
	memoryShards = 32
	// minSweep is the shard size below which no sweep runs.
	minSweep = 64
)

type memoryShard struct {
	mu      sync.Mutex
	max     int // MaxKeys/memoryShards
	entries map[string]*entry
	sweepAt int // sweep when len(entries) reaches it
}

// entry is one key's state, in unix nanoseconds.
type entry struct {
	tat int64 // theoretical arrival time of the next event; <= now: full
	// blocked is when a refusal from Redis ends (Redis's local bucket
	// only): the key is refused locally until then.
	blocked int64
}

// NewMemory returns an empty Memory.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	l, err := cfg.Limit.normalize()
	if err != nil {
		return nil, err
	}
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = 1 << 18
	}
	m := &Memory{limit: l, g: newGCRA(l), seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i] = memoryShard{
			max:     max(1, cfg.MaxKeys/memoryShards),
			entries: make(map[string]*entry),
			sweepAt: minSweep,
		}
	}
	m.keys = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chat_ratelimit_local_keys",
		Help: "Keys (users) whose send bucket this node remembers: those that sent within the time a bucket takes to refill.",
	}, func() float64 { return float64(m.Len()) })
	return m, nil
}

// Limit returns the limit applied to every key.
func (m *Memory) Limit() Limit { return m.limit }

// Allow charges one event to key at now if its bucket has room. It never
// returns an error.
func (m *Memory) Allow(_ context.Context, key string, now time.Time) (Decision, error) {
	t := now.UnixNano()
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entries[key]
	var tat int64
	if e != nil {
		if e.blocked > t {
			return Decision{RetryAfter: time.Duration(e.blocked - t)}, nil
		}
		tat = e.tat
	}
	next, retry, ok := m.g.check(tat, t)
	if !ok {
		if e != nil {
			e.tat = next // clamped after a clock step back
		}
		return Decision{RetryAfter: retry}, nil
	}
	if e == nil {
		e = sh.addLocked(key, t)
	}
	e.tat = next
	return Decision{Allowed: true}, nil
}

// peek judges one event at now without charging it.
func (m *Memory) peek(key string, now time.Time) Decision {
	t := now.UnixNano()
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entries[key]
	if e == nil {
		return Decision{Allowed: true}
	}
	if e.blocked > t {
		return Decision{RetryAfter: time.Duration(e.blocked - t)}
	}
	if _, retry, ok := m.g.check(e.tat, t); !ok {
		return Decision{RetryAfter: retry}
	}
	return Decision{Allowed: true}
}

// charge records an event at now that was admitted elsewhere.
func (m *Memory) charge(key string, now time.Time) {
	t := now.UnixNano()
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entries[key]
	if e == nil {
		e = sh.addLocked(key, t)
	}
	e.tat = m.g.charge(e.tat, t)
}

// block refuses key locally until until.
func (m *Memory) block(key string, now, until time.Time) {
	sh := m.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entries[key]
	if e == nil {
		e = sh.addLocked(key, now.UnixNano())
	}
	e.blocked = max(e.blocked, until.UnixNano())
}

// Len returns how many keys are remembered.
func (m *Memory) Len() int {
	n := 0
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		n += len(sh.entries)
		sh.mu.Unlock()
	}
	return n
}

func (m *Memory) shard(key string) *memoryShard {
	return &m.shards[maphash.String(m.seed, key)%memoryShards]
}

// addLocked adds an entry for key, first making room: when the shard has
// grown to sweepAt, entries whose bucket is full are dropped (they mean
// nothing), and the next sweep waits until the shard has doubled, so that
// sweeping costs O(1) per insert amortised. At max, arbitrary entries go,
// down to three quarters of it.
func (sh *memoryShard) addLocked(key string, now int64) *entry {
	if len(sh.entries) >= sh.sweepAt || len(sh.entries) >= sh.max {
		for k, e := range sh.entries {
			if e.tat <= now && e.blocked <= now {
				delete(sh.entries, k)
			}
		}
		if len(sh.entries) >= sh.max {
			// Down to three quarters, so that the next full sweep is a
			// quarter of max inserts away.
			keep := sh.max - max(1, sh.max/4)
			for k := range sh.entries {
				if len(sh.entries) <= keep {
					break
				}
				delete(sh.entries, k) // map order: arbitrary
			}
		}
		sh.sweepAt = max(minSweep, 2*len(sh.entries))
	}
	e := &entry{}
	sh.entries[key] = e
	return e
}

// Describe implements prometheus.Collector.
func (m *Memory) Describe(ch chan<- *prometheus.Desc) { m.keys.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *Memory) Collect(ch chan<- prometheus.Metric) { m.keys.Collect(ch) }
