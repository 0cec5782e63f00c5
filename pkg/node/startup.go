package node

import (
	"io"
	"log/slog"
	"net"
	"os"

	"golang.org/x/term"
)

// openMode reports whether no JWT key is configured: open development
// mode, where any client may claim any user name.
func (c Config) openMode() bool {
	return c.JWTSecret == "" && c.JWTPublicKey == "" && c.JWTJWKS == ""
}

// loopbackDefault is a default listen address (":8080") on 127.0.0.1.
func loopbackDefault(addr string) string { return "127.0.0.1" + addr }

// newLogger is the node's logger on w, in cfg.LogFormat: "text" (slog's
// key=value lines, for people), "json" (one object per line, for log
// collectors), or "auto": text when w is a terminal, JSON otherwise (a
// pipe, a file, a container's log).
func newLogger(w io.Writer, cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	text := cfg.LogFormat == "text"
	if cfg.LogFormat == "auto" || cfg.LogFormat == "" {
		f, ok := w.(*os.File)
		text = ok && term.IsTerminal(int(f.Fd()))
	}
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// pageURL is the address to open the page at: the HTTP listener's, with
// localhost for an unspecified or loopback host.
func pageURL(a net.Addr, https bool) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && (ip.IsUnspecified() || ip.IsLoopback()) {
		host = "localhost"
	}
	scheme := "http"
	if https {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}

// authMode says, for the start-up line, how clients are authenticated.
func authMode(cfg Config) string {
	switch {
	case cfg.JWTSecret != "":
		return "jwt (HS256 secret)"
	case cfg.JWTPublicKey != "":
		return "jwt (public key " + cfg.JWTPublicKey + ")"
	case cfg.JWTJWKS != "":
		return "jwt (JWKS " + cfg.JWTJWKS + ")"
	}
	return "open (development: no token, any user name)"
}

// tlsMode says, for the start-up line, which listeners use TLS.
func tlsMode(cfg Config) string {
	g, h := cfg.TLSCert != "", cfg.HTTPTLSCert != ""
	switch {
	case g && h:
		return "grpc and https"
	case g:
		return "grpc only (http plain)"
	case h:
		return "https only (grpc plain)"
	}
	return "off (plain grpc and http)"
}
