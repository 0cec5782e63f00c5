package pubsub_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/pubsub"
)

// BenchmarkRedisScrollback measures one backwards page of 100 (the
// scrollback read: LRANGE at an offset, plus the states of the page) in a
// room of 10,000 messages with edits and reactions, against a real
// redis-server, at a random point of the log: the page's cost, whatever
// its depth. The reported p99-µs is over the benchmark's pages.
func BenchmarkRedisScrollback(b *testing.B) {
	st, ctx := fillBench(b, 1, 10000)
	lat := newLatencies(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		before := uint64(rand.IntN(10000) + 1)
		t0 := nowNanos()
		p, err := st.Before(ctx, "room0", "", before, 100)
		if err != nil {
			b.Fatal(err)
		}
		lat.add(nowNanos() - t0)
		if want := min(int(before)-1, 100); len(p.Entries) != want {
			b.Fatalf("page before %d: %d entries, want %d", before, len(p.Entries), want)
		}
	}
	b.StopTimer()
	b.ReportMetric(lat.p99Micros(), "p99-µs")
}

// BenchmarkRedisUnread100 measures the unread counts of a user in 100
// rooms (history.Summarizer: one pipeline of one small script per room,
// no log read), each room of 1,000 messages and 100 events.
func BenchmarkRedisUnread100(b *testing.B) {
	st, ctx := fillBench(b, 100, 1000)
	reads := make([]history.Read, 100)
	for i := range reads {
		pos, _ := st.Position(ctx, fmt.Sprintf("room%d", i))
		reads[i] = history.Read{Room: fmt.Sprintf("room%d", i), Epoch: pos.Epoch, Seq: uint64(rand.IntN(1000))}
	}
	lat := newLatencies(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		t0 := nowNanos()
		if _, err := st.Summaries(ctx, reads); err != nil {
			b.Fatal(err)
		}
		lat.add(nowNanos() - t0)
	}
	b.StopTimer()
	b.ReportMetric(lat.p99Micros(), "p99-µs")
}

// fillBench fills rooms rooms of n entries each on a fresh redis-server:
// messages, with an edit and a reaction every twentieth.
func fillBench(b *testing.B, rooms, n int) (*history.Redis, context.Context) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skip("no redis-server on PATH")
	}
	srv := testutil.StartRedis(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
	b.Cleanup(func() { c.Close() })
	prefix := testutil.UniquePrefix(b)
	br := pubsub.NewRedis(pubsub.RedisConfig{Client: c, Prefix: prefix, HistorySize: n + n/10})
	b.Cleanup(func() { br.Close() })
	ctx := context.Background()
	data := make([]byte, 120)
	for r := range rooms {
		room := fmt.Sprintf("room%d", r)
		var pend []*pubsub.Pending
		var epoch string
		for i := 1; len(pend) < n; i++ {
			opts := pubsub.PublishOptions{}
			if i%20 == 0 && epoch != "" {
				opts.Effect = &history.Effect{Op: history.OpReact, Target: uint64(i - 5), Epoch: epoch, Text: "👍", User: "u", Off: data}
				if i%40 == 0 {
					opts.Effect = &history.Effect{Op: history.OpEdit, Target: uint64(i - 5), Epoch: epoch, Text: "edited"}
				}
			}
			p := br.Submit(ctx, room, data, opts)
			pend = append(pend, p)
			if epoch == "" {
				res, err := p.Wait(ctx)
				if err != nil {
					b.Fatal(err)
				}
				epoch = res.Epoch
			}
		}
		for _, p := range pend {
			if _, err := p.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	return history.NewRedis(history.RedisConfig{Client: c, Prefix: prefix}), ctx
}

// latencies collects a benchmark's per-operation times for a percentile.
type latencies struct{ ns []int64 }

func newLatencies(n int) *latencies { return &latencies{ns: make([]int64, 0, n)} }

func (l *latencies) add(ns int64) { l.ns = append(l.ns, ns) }

func (l *latencies) p99Micros() float64 {
	if len(l.ns) == 0 {
		return 0
	}
	slices.Sort(l.ns)
	return float64(l.ns[len(l.ns)*99/100]) / 1e3
}

func nowNanos() int64 { return time.Now().UnixNano() }
