package node_test

import (
	"bufio"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// connOutcome dials addr, sends hello and reports whether the node
// answered (true) or closed the connection without a byte (false).
func connOutcome(t *testing.T, addr, hello string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if errors.Is(err, syscall.ECONNRESET) {
		return false // the reset of a refusal can beat connect's return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(hello)) // may fail on a refused connection: the read tells
	c.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := bufio.NewReader(c).Read(make([]byte, 1))
	if n == 0 && err == nil || err != nil && n > 0 {
		t.Fatalf("read %d, %v", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("neither answered nor closed within %v", testTimeout)
	}
	return n > 0
}

const (
	httpHello = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	// The HTTP/2 client preface: the gRPC server answers with its settings.
	grpcHello = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
)

// TestConnRatePerIP: in open mode, one IP opening connections faster than
// -conn-rate-per-ip (beyond -conn-burst-per-ip) has the excess closed at
// once, on both listeners, and the refusals are counted.
func TestConnRatePerIP(t *testing.T) {
	t.Parallel()
	flags := []string{"-conn-rate-per-ip", "0.5", "-conn-burst-per-ip", "3", "-metrics-addr", "127.0.0.1:0"}
	a := start(t, flags...)
	for _, l := range []struct{ name, addr, hello string }{{"http", a.HTTP, httpHello}, {"grpc", a.GRPC, grpcHello}} {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			served := 0
			const tries = 12
			for range tries {
				if connOutcome(t, l.addr, l.hello) {
					served++
				}
			}
			// The burst, plus what the rate refilled meanwhile.
			most := 3 + int(time.Since(began).Seconds()*0.5) + 1
			if served < 3 || served > most {
				t.Fatalf("%d of %d connections served, want 3 to %d", served, tries, most)
			}
			waitMetric(t, a.Metrics, `chat_node_connections_rate_limited_total{listener="`+l.name+`"}`, func(v float64) bool { return v >= float64(tries-most) })
		})
	}
	t.Run("jwt mode is not limited", func(t *testing.T) {
		t.Parallel()
		j := start(t, hsNodeFlags(flags...)...)
		for i := range 12 {
			if !connOutcome(t, j.HTTP, httpHello) {
				t.Fatalf("connection %d refused in JWT mode", i)
			}
		}
	})
	t.Run("zero disables", func(t *testing.T) {
		t.Parallel()
		o := start(t, "-conn-rate-per-ip", "0")
		for i := range 60 {
			if !connOutcome(t, o.HTTP, httpHello) {
				t.Fatalf("connection %d refused with -conn-rate-per-ip 0", i)
			}
		}
	})
}
