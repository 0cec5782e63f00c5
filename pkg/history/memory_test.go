package history

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable Now for MemoryConfig.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// roomsHeld is how many rooms m holds, expired or not.
func roomsHeld(m *Memory) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.rooms)
}

// TestMemoryTTL: a room's log lives TTL past its last append, as a Redis
// log lives HistoryTTL past its last publish; reads do not extend it. An
// expired room reads as never written, and its next append starts a new
// epoch at sequence id 1.
func TestMemoryTTL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clk := newClock()
	m := NewMemory(MemoryConfig{TTL: time.Minute, Now: clk.Now})
	defer m.Close()

	m.Append("a", []byte("1"), "", nil)
	m.Append("a", []byte("2"), "k", nil)
	old, _ := m.Position(ctx, "a")
	clk.Add(30 * time.Second)
	m.Append("b", []byte("1"), "", nil)
	clk.Add(30*time.Second - time.Millisecond)
	if p, _ := m.Recent(ctx, "a", 10); len(p.Entries) != 2 || p.Position != old {
		t.Fatalf("a just before its TTL: %+v", p)
	}
	clk.Add(time.Millisecond)
	if p, _ := m.Position(ctx, "a"); p != (Position{}) {
		t.Fatalf("a at its TTL: position %+v, want none", p)
	}
	if p, _ := m.Recent(ctx, "a", 10); len(p.Entries) != 0 || p.Position != (Position{}) {
		t.Fatalf("a at its TTL: %+v", p)
	}
	if p, _ := m.Since(ctx, "a", old.Epoch, 1, 10); !p.Truncated || len(p.Entries) != 0 {
		t.Fatalf("resuming a after its TTL: %+v, want truncated", p)
	}
	if p, _ := m.Recent(ctx, "b", 10); len(p.Entries) != 1 {
		t.Fatalf("b, 30 s idle: %+v", p)
	}
	res := m.Append("a", []byte("3"), "k", nil)
	if res.Entry.Seq != 1 || res.Epoch == old.Epoch || res.Duplicate {
		t.Fatalf("append after the TTL: %+v, want seq 1 in a new epoch (old %s)", res, old.Epoch)
	}
	if p, _ := m.Since(ctx, "a", old.Epoch, 2, 10); !p.Truncated || len(p.Entries) != 1 || p.Position.Epoch != res.Epoch {
		t.Fatalf("resuming the old epoch: %+v", p)
	}
}

// TestMemoryTTLFreesIdleRooms: expired rooms are dropped, not only hidden,
// and without anyone reading them: an append elsewhere sweeps them.
func TestMemoryTTLFreesIdleRooms(t *testing.T) {
	t.Parallel()
	clk := newClock()
	m := NewMemory(MemoryConfig{TTL: time.Minute, Now: clk.Now})
	defer m.Close()
	for i := range 1000 {
		m.Append(fmt.Sprintf("room-%d", i), []byte("hello"), "", nil)
	}
	if n := roomsHeld(m); n != 1000 {
		t.Fatalf("%d rooms held, want 1000", n)
	}
	clk.Add(time.Minute)
	// Each append sweeps a bounded batch: a few appends free them all.
	appends := 1000/sweepBatch + 1
	for range appends {
		m.Append("busy", []byte("x"), "", nil)
	}
	if n := roomsHeld(m); n != 1 {
		t.Fatalf("%d rooms held after their TTL, want 1 (busy)", n)
	}
	if want := roomOverhead + int64(len("busy")) + int64(appends)*(1+entryOverhead); m.bytes != want {
		t.Fatalf("%d bytes accounted for one room of %d one-byte entries, want %d", m.bytes, appends, want)
	}
}

// TestMemoryTimerFreesIdleNode: with no append at all, the store's timer
// frees expired rooms; Close stops it (goleak checks).
func TestMemoryTimerFreesIdleNode(t *testing.T) {
	t.Parallel()
	m := NewMemory(MemoryConfig{TTL: 20 * time.Millisecond})
	defer m.Close()
	for _, r := range []string{"a", "b", "c"} {
		m.Append(r, []byte("x"), "", nil)
	}
	deadline := time.Now().Add(10 * time.Second)
	for roomsHeld(m) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rooms still held long after their TTL", roomsHeld(m))
		}
		time.Sleep(5 * time.Millisecond) // polling the store
	}
}

// TestMemoryMaxBytes: past MaxBytes the rooms appended to longest ago are
// evicted (and restart with a new epoch), never the one being appended to.
func TestMemoryMaxBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	data := []byte(strings.Repeat("d", 1000))
	per := int64(len(data)) + entryOverhead + roomOverhead + 1 // one room "a".."z" of one entry
	m := NewMemory(MemoryConfig{MaxBytes: 3*per + entryOverhead})
	defer m.Close()
	m.Append("a", data, "", nil)
	m.Append("b", data, "", nil)
	m.Append("c", data, "", nil)
	m.Append("a", []byte{}, "", nil) // a is now the most recent
	if n := roomsHeld(m); n != 3 {
		t.Fatalf("%d rooms, want 3 (a's second entry fits: %d of %d bytes)", n, m.bytes, m.cfg.MaxBytes)
	}
	m.Append("d", data, "", nil)
	if p, _ := m.Position(ctx, "b"); p != (Position{}) {
		t.Fatalf("b, appended to longest ago, still held: %+v", p)
	}
	for _, r := range []string{"a", "c", "d"} {
		if p, _ := m.Position(ctx, r); p.Epoch == "" {
			t.Fatalf("%s evicted", r)
		}
	}
	if m.bytes > m.cfg.MaxBytes {
		t.Fatalf("%d bytes held, over MaxBytes %d", m.bytes, m.cfg.MaxBytes)
	}
	// One room larger than the bound is kept (trimmed by Size only).
	big := NewMemory(MemoryConfig{MaxBytes: 10, Size: 3})
	defer big.Close()
	for range 5 {
		big.Append("x", data, "", nil)
	}
	if p, _ := big.Recent(ctx, "x", 10); len(p.Entries) != 3 {
		t.Fatalf("a room alone over MaxBytes: %d entries, want 3", len(p.Entries))
	}
}

// TestMemoryResetAccounts: Reset frees a room's bytes.
func TestMemoryResetAccounts(t *testing.T) {
	t.Parallel()
	m := NewMemory(MemoryConfig{})
	defer m.Close()
	m.Append("a", []byte("xyz"), "", nil)
	m.Reset("a")
	if m.bytes != 0 || roomsHeld(m) != 0 || m.order.Len() != 0 {
		t.Fatalf("after Reset: %d bytes, %d rooms, %d in order", m.bytes, roomsHeld(m), m.order.Len())
	}
}
