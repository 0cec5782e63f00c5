package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCachedCount(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	var fail atomic.Bool
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	c := &cachedCount{
		ttl: 2 * time.Second,
		now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		fetch: func(context.Context) (int, error) {
			n := calls.Add(1)
			if fail.Load() {
				return 0, errors.New("redis down")
			}
			return int(n) * 10, nil
		},
	}
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if v := c.value(); v != 10 {
				t.Errorf("value %v, want 10", v)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("100 concurrent scrapes: %d reads, want 1", n)
	}
	advance(1999 * time.Millisecond)
	if v := c.value(); v != 10 || calls.Load() != 1 {
		t.Fatalf("within the ttl: %v after %d reads", v, calls.Load())
	}
	advance(time.Millisecond)
	if v := c.value(); v != 20 || calls.Load() != 2 {
		t.Fatalf("after the ttl: %v after %d reads", v, calls.Load())
	}
	fail.Store(true)
	advance(2 * time.Second)
	for range 10 {
		if v := c.value(); v != -1 {
			t.Fatalf("failed read: %v, want -1", v)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("a failed read is retried per scrape: %d reads", n)
	}
}
