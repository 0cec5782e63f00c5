package pubsub_test

import (
	"context"
	"os/exec"
	"testing"

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
