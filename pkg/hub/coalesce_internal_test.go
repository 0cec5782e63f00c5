package hub

import (
	"testing"
	"time"
)

// TestNextCoalesce: the rules of the writer's coalescing delay. A session
// that keeps up never waits; one behind starts at a 32nd of the limit and
// doubles up to it; a late batch (the node's cores busy) goes to the limit
// at once; catching up shrinks the delay by a 16th a write, to zero below
// a 32nd; a zero limit never waits.
func TestNextCoalesce(t *testing.T) {
	t.Parallel()
	const limit = 32 * time.Millisecond
	step := func(cur time.Duration, behind, late bool) time.Duration {
		next := nextCoalesce(cur, behind, late, limit)
		if next < 0 || next > limit {
			t.Fatalf("nextCoalesce(%v, %v, %v) = %v, outside [0, %v]", cur, behind, late, next, limit)
		}
		return next
	}
	if d := step(0, false, false); d != 0 {
		t.Fatalf("a session that keeps up waits %v", d)
	}
	d := step(0, true, false)
	if d != time.Millisecond {
		t.Fatalf("first wait behind %v, want a 32nd of %v", d, limit)
	}
	for range 10 {
		d = step(d, true, false)
	}
	if d != limit {
		t.Fatalf("a session that stays behind waits %v, want the limit", d)
	}
	if d := step(0, false, true); d != limit {
		t.Fatalf("after a late batch %v, want the limit", d)
	}
	// Catching up from the limit: 32 ms × (15/16)^n stays at or above a
	// 32nd of it for about 54 writes, and then it is zero.
	d, writes := limit, 0
	for d > 0 {
		next := step(d, false, false)
		if next >= d {
			t.Fatalf("caught up at %v, next %v: it does not shrink", d, next)
		}
		d, writes = next, writes+1
	}
	if writes < 16 || writes > 60 {
		t.Fatalf("back to zero after %d writes, want a slow decay (16 to 60)", writes)
	}
	if d := nextCoalesce(time.Second, true, true, 0); d != 0 {
		t.Fatalf("zero limit waits %v", d)
	}
}
