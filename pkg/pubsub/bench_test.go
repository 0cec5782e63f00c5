package pubsub_test

import (
	"context"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/pubsub"
)

// BenchmarkRedisPublish measures the stored publish path: one Lua script
// (seq, append, trim, expire, publish) per message, one round trip, against
// a real redis-server. Parallel runs show what concurrent publishers get
// from go-redis's connection pool.
func BenchmarkRedisPublish(b *testing.B) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skip("no redis-server on PATH")
	}
	srv := testutil.StartRedis(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
	defer c.Close()
	br := pubsub.NewRedis(pubsub.RedisConfig{Client: c, Prefix: testutil.UniquePrefix(b)})
	defer br.Close()
	data := make([]byte, 120)
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := br.Publish(ctx, "bench", data, pubsub.PublishOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := br.Publish(ctx, "bench", data, pubsub.PublishOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// countHandler counts deliveries and closes done when the want-th comes.
type countHandler struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (h *countHandler) HandleMessage(pubsub.Envelope) {
	if h.n.Add(1) == h.want {
		close(h.done)
	}
}

func (h *countHandler) HandleReconnect() {}

// BenchmarkDeliver measures the receive path: messages published by
// another connection (PUBLISH, or SPUBLISH on the room's master, in
// pipelines of 100) until the Handler has had each. Per op: one delivery
// through go-redis's read, the broker's routing and payload parse, and
// the publisher's share of Redis's work (the two run concurrently);
// cpu-ns/op is this process's CPU time per delivery.
func BenchmarkDeliver(b *testing.B) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skip("no redis-server on PATH")
	}
	payload := ":0:" + strings.Repeat("x", 120) // an ephemeral event of 120 bytes
	run := func(b *testing.B, br pubsub.Broker, pub redis.Cmdable, cmd, channel string) {
		b.ReportAllocs()
		h := &countHandler{want: int64(b.N), done: make(chan struct{})}
		br.Register(h)
		ctx := context.Background()
		cpu0 := processCPU(b)
		b.ResetTimer()
		for sent := 0; sent < b.N; {
			n := min(100, b.N-sent)
			if _, err := pub.Pipelined(ctx, func(p redis.Pipeliner) error {
				for range n {
					p.Do(ctx, cmd, channel, payload)
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			sent += n
		}
		select {
		case <-h.done:
		case <-time.After(time.Minute):
			b.Fatalf("%d of %d delivered", h.n.Load(), b.N)
		}
		// CPU time of this process (receiver and publisher, not
		// redis-server) per delivery: steadier than ns/op on a shared
		// machine.
		b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	}
	b.Run("redis", func(b *testing.B) {
		srv := testutil.StartRedis(b)
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer c.Close()
		br := pubsub.NewRedis(pubsub.RedisConfig{Client: c, Prefix: testutil.UniquePrefix(b)})
		defer br.Close()
		if err := br.Subscribe(context.Background(), "bench"); err != nil {
			b.Fatal(err)
		}
		b.Run("serial", func(b *testing.B) { run(b, br, c, "PUBLISH", br.Keys().Channel("bench")) })
	})
	b.Run("cluster", func(b *testing.B) {
		cl := testutil.StartCluster(b, 3, 0)
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
		defer cc.Close()
		br := pubsub.NewRedisCluster(pubsub.RedisClusterConfig{Client: cc, Prefix: testutil.UniquePrefix(b)})
		defer br.Close()
		if err := br.Subscribe(context.Background(), "bench"); err != nil {
			b.Fatal(err)
		}
		channel := br.Keys().Channel("bench")
		master, err := cc.MasterForKey(context.Background(), channel)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("serial", func(b *testing.B) { run(b, br, master, "SPUBLISH", channel) })
	})
}

// processCPU returns the user and system CPU time this process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
