package node_test

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/certs"
	"example.com/chat/pkg/node"
)

// TestHealthcheckFollowsEnv: with no -url, `node healthcheck` probes the
// node the container's environment configures: the port of CHAT_HTTP_ADDR
// (on loopback when its host is empty), over https when
// CHAT_HTTP_TLS_CERT is set, trusting exactly that certificate.
func TestHealthcheckFollowsEnv(t *testing.T) {
	t.Parallel()
	dir, other := t.TempDir(), t.TempDir()
	// The certificates name a host the probe does not use: it checks the
	// certificate itself, not a name.
	for _, d := range []string{dir, other} {
		if err := certs.Generate(d, []string{"node.example"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	cert, key := filepath.Join(dir, certs.ServerFile), filepath.Join(dir, certs.ServerKeyFile)
	plain := testutil.StartNode(t)
	secure := testutil.StartNode(t, "-http-tls-cert", cert, "-http-tls-key", key)
	port := func(a string) string {
		_, p, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(env map[string]string) error {
		return node.Main(context.Background(), []string{"healthcheck"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		ok   bool
	}{
		{"plain, host empty", map[string]string{"CHAT_HTTP_ADDR": ":" + port(plain.HTTP)}, true},
		{"plain, host given", map[string]string{"CHAT_HTTP_ADDR": plain.HTTP}, true},
		{"plain, wildcard host", map[string]string{"CHAT_HTTP_ADDR": "0.0.0.0:" + port(plain.HTTP)}, true},
		{"tls", map[string]string{"CHAT_HTTP_ADDR": ":" + port(secure.HTTP), "CHAT_HTTP_TLS_CERT": cert, "CHAT_HTTP_TLS_KEY": key}, true},
		{"tls node probed in plain http", map[string]string{"CHAT_HTTP_ADDR": ":" + port(secure.HTTP)}, false},
		{"plain node probed over tls", map[string]string{"CHAT_HTTP_ADDR": ":" + port(plain.HTTP), "CHAT_HTTP_TLS_CERT": cert}, false},
		{"another certificate", map[string]string{"CHAT_HTTP_ADDR": ":" + port(secure.HTTP), "CHAT_HTTP_TLS_CERT": filepath.Join(other, certs.ServerFile)}, false},
		{"missing certificate file", map[string]string{"CHAT_HTTP_ADDR": ":" + port(secure.HTTP), "CHAT_HTTP_TLS_CERT": filepath.Join(dir, "none.pem")}, false},
	} {
		err := check(tc.env)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s: healthy; want an error", tc.name)
		}
	}
}
