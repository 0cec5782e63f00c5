package hub_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/pubsub"
)

// countingTransport counts frames and encodes each once per wire format,
// like a real edge, without I/O.
type countingTransport struct {
	n    *atomic.Int64
	json bool
}

func (c countingTransport) Write(_ context.Context, frames []*hub.Frame) error {
	for _, f := range frames {
		if c.json {
			_ = f.JSON()
		} else {
			_ = f.Proto()
		}
	}
	c.n.Add(int64(len(frames)))
	return nil
}
func (countingTransport) Close(hub.CloseReason) {}

// BenchmarkFanout publishes one message to N local subscribers and waits
// until every subscriber's writer has taken it: the cost per delivery of the
// whole local path (order check, decode once, enqueue, batch write, encode
// once).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprint("subs=", n), func(b *testing.B) {
			log := history.NewMemory(history.MemoryConfig{Size: 100})
			h, err := hub.New(hub.Config{Broker: pubsub.NewMemory(log), History: log, SendRate: 1e9,
				MaxQueueBytes: 1 << 30, MaxSessionsPerUser: 1 << 20, MaxSessions: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer h.Shutdown(context.Background())
			var delivered atomic.Int64
			for i := range n {
				if _, err := h.Join(context.Background(), countingTransport{n: &delivered, json: i%2 == 0},
					hub.JoinOptions{User: fmt.Sprint("s", i), NoHistory: true}); err != nil {
					b.Fatal(err)
				}
			}
			pub, err := h.Join(context.Background(), countingTransport{n: new(atomic.Int64)}, hub.JoinOptions{User: "pub", NoHistory: true})
			if err != nil {
				b.Fatal(err)
			}
			msg := &api.Message{Text: "a typical chat message of about sixty bytes, give or take"}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := pub.Publish(context.Background(), msg); err != nil {
					b.Fatal(err)
				}
			}
			want := int64(b.N * n)
			deadline := time.Now().Add(time.Minute)
			for delivered.Load() < want {
				if time.Now().After(deadline) {
					b.Fatalf("delivered %d of %d", delivered.Load(), want)
				}
				time.Sleep(time.Millisecond) // waiting for the writers to drain
			}
			b.StopTimer()
			b.ReportMetric(float64(want)/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkEncode measures one message's encodings, done once per message
// per node whatever the number of recipients.
func BenchmarkEncode(b *testing.B) {
	m := &api.Message{User: "alice", Text: "a typical chat message of about sixty bytes, give or take",
		Ts: time.Now().UnixMilli(), Room: "general", Seq: 123456, Epoch: "0123456789abcdef"}
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_ = hub.NewFrame(m).JSON()
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			_ = hub.NewFrame(m).Proto()
		}
	})
}

// BenchmarkMemoryPerRoom measures the heap one more room of a client
// costs: one stream in 100 rooms (subscriptions) against 100 streams in
// one room each (sessions), idle, with no history. It reports bytes per
// client-room ("B/room"); ns/op is meaningless here.
func BenchmarkMemoryPerRoom(b *testing.B) {
	const rooms = 100
	for _, mode := range []string{"one-stream-100-rooms", "100-streams-1-room"} {
		b.Run(mode, func(b *testing.B) {
			var perRoom float64
			for range b.N {
				log := history.NewMemory(history.MemoryConfig{Size: 10})
				h, err := hub.New(hub.Config{Broker: pubsub.NewMemory(log), History: log, HistorySize: 10, MaxSubscriptions: rooms, MaxSessionsPerUser: rooms})
				if err != nil {
					b.Fatal(err)
				}
				var n atomic.Int64
				t := countingTransport{n: &n}
				// The rooms exist (someone is in each) before the
				// measurement, so it counts the client's share only.
				for i := range rooms {
					if _, err := h.Join(context.Background(), t, hub.JoinOptions{User: "owner", Room: fmt.Sprint("r", i), NoHistory: true, Transport: "bench"}); err != nil {
						b.Fatal(err)
					}
				}
				before := heapInUse()
				var keep []*hub.Session
				if mode == "one-stream-100-rooms" {
					var subs []hub.SubOptions
					for i := 1; i < rooms; i++ {
						subs = append(subs, hub.SubOptions{Room: fmt.Sprint("r", i), NoHistory: true})
					}
					s, err := h.Join(context.Background(), t, hub.JoinOptions{User: "u", Room: "r0", Events: true, NoHistory: true, Rooms: subs, Transport: "bench"})
					if err != nil {
						b.Fatal(err)
					}
					keep = append(keep, s)
				} else {
					for i := range rooms {
						s, err := h.Join(context.Background(), t, hub.JoinOptions{User: "u", Room: fmt.Sprint("r", i), Events: true, NoHistory: true, Transport: "bench"})
						if err != nil {
							b.Fatal(err)
						}
						keep = append(keep, s)
					}
				}
				time.Sleep(1500 * time.Millisecond) // writers that ran for the join exit after WriterIdle
				perRoom += float64(heapInUse()-before) / rooms
				for _, s := range keep {
					s.Close(hub.CloseNormal)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = h.Shutdown(ctx)
				cancel()
			}
			b.ReportMetric(perRoom/float64(b.N), "B/room")
		})
	}
}

func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc) + int64(ms.StackInuse)
}

// BenchmarkCoalescing measures the writer's adaptive coalescing on one
// subscriber (WriteDelay 50 ms, the default). "keeps-up": each frame is
// published after the previous one was written (a client that keeps up):
// every frame leaves at once, in its own write. "behind": frames are
// published back to back (up to 256 outstanding) while each write costs
// 50 µs (a slow link): the backlog leaves in batches. Metrics: frames per write, and the mean wait
// from publish to the write's end.
func BenchmarkCoalescing(b *testing.B) {
	for _, c := range []struct {
		name string
		cost time.Duration
		wait bool
	}{{"keeps-up", 0, true}, {"behind", 50 * time.Microsecond, false}} {
		b.Run(c.name, func(b *testing.B) {
			e := newHub(b, func(cfg *hub.Config) { cfg.WriteDelay = 50 * time.Millisecond })
			p, _ := e.join(b, hub.JoinOptions{User: "p"}, false)
			bt := newBatchTransport(c.cost)
			if _, err := e.hub.Join(context.Background(), bt, hub.JoinOptions{User: "q", NoHistory: true}); err != nil {
				b.Fatal(err)
			}
			sent := make([]time.Time, 0, b.N)
			var lag time.Duration
			total, writes := 0, 0
			collect := func(n int) {
				at := <-bt.at
				for i := total; i < total+n; i++ {
					lag += at.Sub(sent[i])
				}
				total += n
				writes++
			}
			b.ResetTimer()
			for range b.N {
				sent = append(sent, time.Now())
				if err := p.Publish(context.Background(), &api.Message{Text: "x"}); err != nil {
					b.Fatal(err)
				}
				// keeps-up waits for each write; behind keeps at most
				// 256 frames outstanding (under the queue's byte limit,
				// past which the session would close as slow).
				for c.wait && total < len(sent) || len(sent)-total > 256 {
					collect(<-bt.sizes)
				}
				for drained := false; !drained; {
					select {
					case n := <-bt.sizes:
						collect(n)
					default:
						drained = true
					}
				}
			}
			for total < b.N {
				collect(<-bt.sizes)
			}
			b.StopTimer()
			b.ReportMetric(float64(total)/float64(writes), "frames/write")
			b.ReportMetric(float64(lag.Microseconds())/float64(total), "wait-µs")
		})
	}
}
