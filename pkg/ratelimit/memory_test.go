package ratelimit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"example.com/chat/pkg/ratelimit"
)

func TestMemoryForgetsFullBuckets(t *testing.T) {
	t.Parallel()
	m, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: 10, Burst: 10}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	for i := range 10000 {
		_, _ = m.Allow(ctx, fmt.Sprint("old", i), now)
	}
	// A second later every bucket is full again: new keys sweep them out.
	later := now.Add(time.Second)
	for i := range 10000 {
		_, _ = m.Allow(ctx, fmt.Sprint("new", i), later)
	}
	if n := m.Len(); n > 2*10000+32*64 {
		t.Fatalf("%d keys remembered, want about the 10000 recent ones", n)
	}
}

func TestMemoryIsBounded(t *testing.T) {
	t.Parallel()
	const maxKeys = 32 * 100
	m, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: slow, Burst: 1}, MaxKeys: maxKeys})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	// Keys that never refill in time: only MaxKeys may stay.
	for i := range 20000 {
		if d, _ := m.Allow(ctx, fmt.Sprint("k", i), now); !d.Allowed {
			t.Fatalf("new key %d refused", i)
		}
	}
	if n := m.Len(); n > maxKeys {
		t.Fatalf("%d keys remembered, want at most MaxKeys %d", n, maxKeys)
	}
}

func TestMemoryClockStepBack(t *testing.T) {
	t.Parallel()
	m, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: 1, Burst: 2}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	for range 2 {
		_, _ = m.Allow(ctx, "u", now)
	}
	// The clock steps back an hour: the refusal is still at most one
	// interval away, not an hour.
	d, _ := m.Allow(ctx, "u", now.Add(-time.Hour))
	if d.Allowed || d.RetryAfter > time.Second {
		t.Fatalf("after the clock stepped back: %+v, want refused for at most 1 s", d)
	}
	if d, _ := m.Allow(ctx, "u", now.Add(-time.Hour+time.Second)); !d.Allowed {
		t.Fatalf("a second later: %+v, want admitted", d)
	}
}

func TestMemoryRefill(t *testing.T) {
	t.Parallel()
	m, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: 4, Burst: 2}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Unix(1e9, 0)
	var got []bool
	// 2 at once, then one per 250 ms.
	for _, at := range []time.Duration{0, 0, 0, 249 * time.Millisecond, 250 * time.Millisecond, 250 * time.Millisecond, time.Second} {
		d, _ := m.Allow(ctx, "u", now.Add(at))
		got = append(got, d.Allowed)
	}
	want := []bool{true, true, false, false, true, false, true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("admitted %v, want %v", got, want)
	}
	if _, err := ratelimit.NewMemory(ratelimit.MemoryConfig{}); err == nil {
		t.Fatal("NewMemory without a rate: no error")
	}
}
