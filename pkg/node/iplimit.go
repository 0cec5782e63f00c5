package node

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// Per-IP connection rate limiting (-conn-rate-per-ip, -conn-burst-per-ip).
//
// It applies in open mode only. There, nothing identifies a client but its
// address: a loop opening connections (each admitted, each holding a slot
// until its join deadline) is otherwise bounded only by -max-streams. With
// a JWT key every stream needs a valid token and is counted per user, and
// such deployments usually sit behind a load balancer or proxy whose one
// address all clients share, where a per-IP limit would throttle everyone
// at once. Behind a balancer in open mode (deploy/docker-compose.yml),
// set -conn-rate-per-ip 0 and limit at the balancer.

// ipLimiterMaxEntries caps the addresses an ipLimiter tracks (about 100
// bytes each). Past it, an arbitrary entry is forgotten: only a client
// with that many addresses gains by it, and the per-IP limit cannot stop
// such a client anyway.
const ipLimiterMaxEntries = 1 << 16

// ipLimiterSweepEvery is how often an ipLimiter drops the entries of
// addresses whose bucket is full again: those are indistinguishable from
// new ones.
const ipLimiterSweepEvery = 10 * time.Second

// ipLimiter is a token bucket per client address: an IPv4 address, or the
// /64 of an IPv6 one (one host commonly holds a whole /64). Safe for
// concurrent use.
type ipLimiter struct {
	rate  rate.Limit
	burst int
	max   int
	now   func() time.Time

	mu        sync.Mutex
	buckets   map[netip.Prefix]*rate.Limiter
	nextSweep time.Time
}

func newIPLimiter(perSecond float64, burst int) *ipLimiter {
	return &ipLimiter{rate: rate.Limit(perSecond), burst: burst, max: ipLimiterMaxEntries, now: time.Now,
		buckets: make(map[netip.Prefix]*rate.Limiter)}
}

// ipKey is the bucket of a remote address; ok is false for an address that
// is not an IP (a unix socket in a test), which is not limited.
func ipKey(a net.Addr) (netip.Prefix, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}, false
	}
	ip := ta.AddrPort().Addr().Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	return p, err == nil
}

// allow takes a token for a new connection from a, and reports whether
// there was one.
func (l *ipLimiter) allow(a net.Addr) bool {
	key, ok := ipKey(a)
	if !ok {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if !now.Before(l.nextSweep) {
		for k, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, k)
			}
		}
		l.nextSweep = now.Add(ipLimiterSweepEvery)
	}
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= l.max {
			for k := range l.buckets { // an arbitrary one: map order is random
				delete(l.buckets, k)
				break
			}
		}
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[key] = b
	}
	return b.AllowN(now, 1)
}

// limitListener closes, right after accepting them, the connections its
// ipLimiter refuses, and counts them; Accept only returns the others (or
// the listener's error).
type limitListener struct {
	net.Listener
	lim     *ipLimiter
	refused prometheus.Counter
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.lim.allow(c.RemoteAddr()) {
			return c, nil
		}
		l.refused.Inc()
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset: no TIME_WAIT kept for a refusal
		}
		_ = c.Close()
	}
}

// rateLimitListeners wraps the node's listeners (name -> listener) with a
// per-IP connection limit each, when cfg asks for one and the node is in
// open mode, and registers chat_node_connections_rate_limited_total.
func rateLimitListeners(cfg Config, open bool, reg prometheus.Registerer, lns map[string]*net.Listener) {
	if !open || cfg.ConnRatePerIP <= 0 {
		return
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chat_node_connections_rate_limited_total",
		Help: "TCP connections closed at accept because their client IP opened them faster than -conn-rate-per-ip (open mode only), by listener.",
	}, []string{"listener"})
	reg.MustRegister(refused)
	for name, ln := range lns {
		*ln = &limitListener{Listener: *ln, lim: newIPLimiter(cfg.ConnRatePerIP, cfg.ConnBurstPerIP), refused: refused.WithLabelValues(name)}
	}
}
