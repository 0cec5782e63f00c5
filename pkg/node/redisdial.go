package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// redisDialer returns the dialer of the nodes' Redis connections: go-redis's
// own (TCP, then TLS when tlsCfg is set), except that each TCP connection
// is closed with a reset that discards what it has not sent yet
// (SO_LINGER 0).
//
// Why: go-redis closes a connection whose reply timed out. Under a
// black-holed network, the publish scripts it wrote are still in the
// socket's send queue; a plain close keeps retransmitting them, and Redis
// ran them when the network came back, up to tens of seconds after the
// sender was told "not stored" (and, for the subscriber, before this node
// was subscribed again). With the reset, what was written on a connection
// that go-redis gave up on never runs later.
func redisDialer(timeout time.Duration, tlsCfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Minute}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			if err := tc.SetLinger(0); err != nil {
				conn.Close()
				return nil, fmt.Errorf("set SO_LINGER on %s: %w", addr, err)
			}
		}
		if tlsCfg == nil {
			return conn, nil
		}
		cfg := tlsCfg.Clone()
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg.ServerName = host
		}
		tconn := tls.Client(conn, cfg)
		if err := tconn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		return tconn, nil
	}
}
