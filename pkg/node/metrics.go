package node

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
)

// activeUsersTTL is how long a scrape reuses the cluster's active-user
// count: the figure costs a Redis script, and scrapes (a Prometheus per
// replica, a curl loop, an attacker on an open /metrics) must not cost one
// each.
const activeUsersTTL = 2 * time.Second

// cachedCount is a count read at most once per ttl, on demand: a scrape
// within ttl of the last read gets its figure without asking, and
// concurrent scrapes share one read. A failed read is cached too (as -1),
// so a Redis outage does not turn every scrape into a timeout.
type cachedCount struct {
	ttl   time.Duration
	now   func() time.Time
	fetch func(context.Context) (int, error)

	mu sync.Mutex // held during a read: the others wait for its figure
	at time.Time  // of the last read; zero: never read
	v  float64
}

func (c *cachedCount) value() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if !c.at.IsZero() && now.Sub(c.at) < c.ttl {
		return c.v
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := c.fetch(ctx)
	c.at, c.v = c.now(), float64(n)
	if err != nil {
		c.v = -1
	}
	return c.v
}

// activeUsersGauge is chat_cluster_active_users, read through a cachedCount.
func activeUsersGauge(fetch func(context.Context) (int, error)) prometheus.Collector {
	c := &cachedCount{ttl: activeUsersTTL, now: time.Now, fetch: fetch}
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chat_cluster_active_users",
		Help: "Distinct users connected anywhere in the cluster, from presence (every node reports the same figure; use max()). Read at most every 2 s.",
	}, c.value)
}

// metricsHandler serves reg; with a token, only to requests carrying
// "Authorization: Bearer <token>" (others get 401).
func metricsHandler(reg *prometheus.Registry, token string) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if token == "" {
		return h
	}
	// Comparing digests keeps the comparison constant-time in the
	// token's length too.
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := "", false
		if v := r.Header.Get("Authorization"); len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
			got, ok = strings.TrimSpace(v[7:]), true
		}
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 || !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "metrics: a valid bearer token is required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// callsOnly runs a stream interceptor around each call but hands the
// handler the stream grpc-go made, not the interceptor's wrapper of it.
//
// It is for go-grpc-middleware's Prometheus interceptor: its calls
// started, handled (by code) and handling time are kept, while its
// wrapper's count of every message of a stream (two clock reads, a label
// slice and a labelled counter lookup per SendMsg and RecvMsg) is not: on
// a chat stream that is a cost per delivery, some 10% of a small room's
// CPU in the profile, for counts chat_hub_frames_delivered_total and
// chat_hub_messages_published_total already give. So
// grpc_server_msg_sent_total and grpc_server_msg_received_total stay 0
// for streams.
func callsOnly(in grpc.StreamServerInterceptor) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return in(srv, ss, info, func(srv any, _ grpc.ServerStream) error { return handler(srv, ss) })
	}
}
