package ratelimit_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	chattest "example.com/chat/internal/testutil"
	"example.com/chat/pkg/ratelimit"
)

// BenchmarkAllow measures one Allow of a user well within its budget (the
// common case: a round trip to Redis for Redis), serially and from
// parallel goroutines, each sending as its own user; and a user past its
// budget (refused by the local pre-check, no round trip).
//
//	go test -run XXX -bench Allow ./pkg/ratelimit
func BenchmarkAllow(b *testing.B) {
	srv := chattest.StartRedis(b)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 64})
	b.Cleanup(func() { _ = c.Close() })
	unlimited := ratelimit.Limit{Rate: 1e9}
	// The floor: one round trip to this Redis.
	b.Run("ping", func(b *testing.B) {
		ctx := context.Background()
		for b.Loop() {
			if err := c.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, impl := range []struct {
		name string
		new  func(b *testing.B, l ratelimit.Limit) ratelimit.Limiter
	}{
		{"memory", func(b *testing.B, l ratelimit.Limit) ratelimit.Limiter {
			m, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: l})
			if err != nil {
				b.Fatal(err)
			}
			return m
		}},
		{"redis", func(b *testing.B, l ratelimit.Limit) ratelimit.Limiter {
			r, err := ratelimit.NewRedis(ratelimit.RedisConfig{Client: c, Prefix: chattest.UniquePrefix(b), Limit: l})
			if err != nil {
				b.Fatal(err)
			}
			return r
		}},
	} {
		b.Run(impl.name+"/serial", func(b *testing.B) {
			l := impl.new(b, unlimited)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if d, err := l.Allow(ctx, "u", time.Now()); err != nil || !d.Allowed {
					b.Fatalf("%+v, %v", d, err)
				}
			}
		})
		b.Run(impl.name+"/parallel", func(b *testing.B) {
			l := impl.new(b, unlimited)
			var n atomic.Int64
			b.SetParallelism(8) // as BenchmarkRedisPublish: 8 senders per CPU
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				key := "u" + strconv.FormatInt(n.Add(1), 10)
				for pb.Next() {
					if d, err := l.Allow(ctx, key, time.Now()); err != nil || !d.Allowed {
						b.Errorf("%+v, %v", d, err)
						return
					}
				}
			})
		})
		b.Run(impl.name+"/refused", func(b *testing.B) {
			l := impl.new(b, ratelimit.Limit{Rate: slow, Burst: 1})
			ctx := context.Background()
			_, _ = l.Allow(ctx, "u", time.Now())
			for b.Loop() {
				if d, _ := l.Allow(ctx, "u", time.Now()); d.Allowed {
					b.Fatal("admitted past the burst")
				}
			}
		})
	}
}
