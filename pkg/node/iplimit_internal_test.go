package node

import (
	"net"
	"sync"
	"testing"
	"time"
)

func tcpAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestIPLimiter(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	l := newIPLimiter(1, 2)
	l.max = 4
	l.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	t.Run("burst then rate", func(t *testing.T) {
		a := tcpAddr("10.0.0.1:1000")
		if !l.allow(a) || !l.allow(tcpAddr("10.0.0.1:2000")) {
			t.Fatal("burst refused")
		}
		if l.allow(a) {
			t.Fatal("third connection at once allowed")
		}
		if !l.allow(tcpAddr("10.0.0.2:1")) {
			t.Fatal("another address shares the bucket")
		}
		advance(time.Second)
		if !l.allow(a) || l.allow(a) {
			t.Fatal("one token a second expected")
		}
	})
	t.Run("IPv6 by /64, mapped IPv4 as IPv4", func(t *testing.T) {
		if !l.allow(tcpAddr("[2001:db8:1:2::1]:1")) || !l.allow(tcpAddr("[2001:db8:1:2:ffff::9]:1")) {
			t.Fatal("burst refused")
		}
		if l.allow(tcpAddr("[2001:db8:1:2:abcd::1]:1")) {
			t.Fatal("a third address of the same /64 allowed")
		}
		if !l.allow(tcpAddr("[2001:db8:1:3::1]:1")) {
			t.Fatal("another /64 shares the bucket")
		}
		if l.allow(tcpAddr("[::ffff:10.0.0.1]:1")) {
			t.Fatal("a mapped IPv4 address escaped its bucket")
		}
	})
	t.Run("bounded", func(t *testing.T) {
		for i := range 100 {
			l.allow(tcpAddr(net.IPv4(11, 0, byte(i/256), byte(i)).String() + ":1"))
			l.mu.Lock()
			n := len(l.buckets)
			l.mu.Unlock()
			if n > l.max {
				t.Fatalf("%d buckets, cap %d", n, l.max)
			}
		}
	})
	t.Run("idle buckets swept", func(t *testing.T) {
		advance(ipLimiterSweepEvery)
		l.allow(tcpAddr("12.0.0.1:1"))
		l.mu.Lock()
		n := len(l.buckets)
		l.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d buckets after a sweep, want only the new one", n)
		}
	})
	if !newIPLimiter(1, 1).allow(&net.UnixAddr{Name: "x", Net: "unix"}) {
		t.Fatal("a non-IP address is not limited")
	}
}
