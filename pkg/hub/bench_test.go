package hub_test

import (
	"context"
	"fmt"
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
