package node

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"time"
)

// Config is a node's configuration, from flags, each of which falls back to
// an environment variable (CHAT_ plus the flag name in upper snake case).
type Config struct {
	GRPCAddr      string
	HTTPAddr      string
	RedisURL      string
	HistorySize   int
	LogSize       int
	HistoryTTL    time.Duration
	MaxTextBytes  int
	MaxQueueBytes int
	NodeID        string
	LogLevel      slog.Level
	// LogFormat is "text", "json" or "auto" (text when the log goes to a
	// terminal, JSON otherwise).
	LogFormat string
	// LoopbackOnly is true when the node is in open development mode (no
	// JWT key) and neither -grpc-addr nor -http-addr was given: both
	// listeners were then narrowed to 127.0.0.1, so that a node anyone
	// may use under any name is not on the network by accident.
	LoopbackOnly    bool
	ShutdownTimeout time.Duration
	DrainDelay      time.Duration
	DrainSpread     time.Duration
	WriteDelay      time.Duration
	PprofAddr       string
	PresenceTTL     time.Duration
	PresenceEvents  float64
	LeaveGrace      time.Duration
	AllowedOrigins  []string
	WSPingInterval  time.Duration
	GRPCKeepalive   time.Duration
	Heartbeat       time.Duration
	SendRate        float64
	SendBurst       int
	MaxStreamsUser  int
	MaxStreams      int
	MaxInflight     int
	MaxRoomsPerConn int

	// Bounds on what one connection may hold (see the flags' usage).
	JoinTimeout           time.Duration
	MaxInvalidFrames      int
	WriteTimeout          time.Duration
	FlushTimeout          time.Duration
	MaxReplayBytes        int
	HTTPReadHeaderTimeout time.Duration
	HTTPReadTimeout       time.Duration
	HTTPWriteTimeout      time.Duration
	HTTPIdleTimeout       time.Duration
	MaxHeaderBytes        int
	MaxBodyBytes          int64
	GRPCMaxStreamsPerConn int
	GRPCMaxHeaderBytes    int
	ConnRatePerIP         float64
	ConnBurstPerIP        int

	MetricsToken string
	MetricsAddr  string

	// Replication-aware acknowledgements (see the flags' usage).
	RedisMinReplicas    int
	RedisReplicaTimeout time.Duration

	JWTSecret    string
	JWTPublicKey string
	JWTJWKS      string
	JWTIssuer    string
	JWTAudience  string

	TLSCert     string
	TLSKey      string
	TLSCA       string
	HTTPTLSCert string
	HTTPTLSKey  string
}

// EnvName returns the environment variable that backs flag name.
func EnvName(flagName string) string {
	return "CHAT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseConfig parses args (without the program name), with getenv supplying
// defaults for flags not given.
func ParseConfig(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: node [flags]\n       node <subcommand> [flags]\n\nRuns one chat node. Every flag can also be set with the environment variable shown.\n\n")
		fmt.Fprint(out, subcommandsUsage)
		fmt.Fprintf(out, "\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(out, "  -%s (env %s, default %q)\n    \t%s\n", f.Name, EnvName(f.Name), f.DefValue, f.Usage)
		})
	}
	var origins, level string
	defineFlags(fs, &c, &origins, &level)

	// Environment first, so that explicit flags override it.
	var envErr error
	set := map[string]bool{} // flags given, by flag or environment
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(EnvName(f.Name)); v != "" && envErr == nil {
			set[f.Name] = true
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("node: %s=%q: %w", EnvName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return c, envErr
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("node: unexpected argument %q (subcommands come first: node %s ...; node -h lists them)", fs.Arg(0), fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.openMode() && !set["grpc-addr"] && !set["http-addr"] {
		c.GRPCAddr, c.HTTPAddr, c.LoopbackOnly = loopbackDefault(c.GRPCAddr), loopbackDefault(c.HTTPAddr), true
	}
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		return c, fmt.Errorf("node: -log-format %q: want auto, text or json", c.LogFormat)
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return c, fmt.Errorf("node: -log-level: %w", err)
	}
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") || (c.HTTPTLSCert == "") != (c.HTTPTLSKey == "") {
		return c, fmt.Errorf("node: a TLS certificate needs its key, and a key its certificate")
	}
	if c.RedisMinReplicas < 0 || c.RedisReplicaTimeout <= 0 {
		return c, fmt.Errorf("node: -redis-min-replicas must not be negative and -redis-replica-timeout must be positive")
	}
	if c.RedisMinReplicas > 0 && c.RedisURL == "" {
		return c, fmt.Errorf("node: -redis-min-replicas needs -redis-url")
	}
	if c.HistorySize <= 0 {
		return c, fmt.Errorf("node: -history-size must be positive")
	}
	if c.LogSize < 1 || c.LogSize > maxLogSize {
		return c, fmt.Errorf("node: -log-size must be in [1, %d]", maxLogSize)
	}
	c.LogSize = max(c.LogSize, c.HistorySize)
	if c.MaxInflight < 1 || c.MaxInflight > maxInflight {
		return c, fmt.Errorf("node: -max-inflight-sends must be in [1, %d]", maxInflight)
	}
	if c.MaxRoomsPerConn < 1 || c.MaxRoomsPerConn > 100000 {
		return c, fmt.Errorf("node: -max-rooms-per-stream must be in [1, 100000]")
	}
	for _, p := range []struct {
		name string
		v    int64
	}{
		{"max-header-bytes", int64(c.MaxHeaderBytes)},
		{"max-body-bytes", c.MaxBodyBytes},
		{"grpc-max-streams-per-conn", int64(c.GRPCMaxStreamsPerConn)},
		{"grpc-max-header-bytes", int64(c.GRPCMaxHeaderBytes)},
	} {
		if p.v <= 0 || p.v > math.MaxUint32 {
			return c, fmt.Errorf("node: -%s must be positive (and fit 32 bits)", p.name)
		}
	}
	if c.ConnRatePerIP < 0 || c.ConnBurstPerIP < 0 || c.ConnRatePerIP > 0 && c.ConnBurstPerIP == 0 {
		return c, fmt.Errorf("node: -conn-rate-per-ip and -conn-burst-per-ip must not be negative, and a rate needs a burst")
	}
	return c, nil
}

// maxInflight bounds -max-inflight-sends: what one stream may make the node
// hold while the bus answers (up to that many messages of -max-text-bytes).
const maxInflight = 4096

// flagHelp is flag.ErrHelp: -h printed the usage, and Run exits cleanly.
var flagHelp = flag.ErrHelp

// defineFlags defines the node's flags on fs, writing to c; origins and
// level receive the two that need parsing after fs.Parse.
func defineFlags(fs *flag.FlagSet, c *Config, origins, level *string) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", ":50051", "gRPC listen address; in open development mode (no JWT key) with neither address given, 127.0.0.1:50051")
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8080", "HTTP listen address (gateway, WebSocket, page, health, metrics); in open development mode (no JWT key) with neither address given, 127.0.0.1:8080 (give -http-addr :8080 to listen on every interface)")
	fs.StringVar(&c.RedisURL, "redis-url", "", "Redis to join a cluster: redis://[user:pass@]host:port/db; a Redis Cluster as redis-cluster://[user:pass@]host1:port1,host2:port2,...[?prefix=P] (sharded pub/sub); a master watched by Redis Sentinel as redis-sentinel://[user:pass@]sentinel1:port1,sentinel2:port2,.../master-name[?db=N&prefix=P&sentinel_password=S] (follows failovers); empty runs on the embedded in-memory default")
	fs.IntVar(&c.RedisMinReplicas, "redis-min-replicas", 0, "acknowledge a message only once this many Redis replicas have it (WAIT after the publish, same round trip); otherwise the sender gets Unavailable \"may or may not be stored\" and retries with its client id. 0: off (acknowledged once the master stored it)")
	fs.DurationVar(&c.RedisReplicaTimeout, "redis-replica-timeout", 500*time.Millisecond, "how long a publish waits for -redis-min-replicas replicas before the sender is answered Unavailable")
	fs.IntVar(&c.HistorySize, "history-size", 100, "messages replayed on join (last N), and the largest history page")
	fs.IntVar(&c.LogSize, "log-size", 1000, "entries (messages, edits, deletes, reactions) kept per room: how far back clients scroll and resume; at least -history-size, which it is raised to")
	fs.DurationVar(&c.HistoryTTL, "history-ttl", 24*time.Hour, "how long an idle room's history is kept (in Redis, or in memory without Redis)")
	fs.IntVar(&c.MaxTextBytes, "max-text-bytes", 16<<10, "largest message text accepted, in bytes")
	fs.IntVar(&c.MaxQueueBytes, "max-queue-bytes", 1<<20, "bytes queued for one client before it is disconnected as a slow consumer")
	fs.StringVar(&c.NodeID, "node-id", "", "this node's name in logs (empty: random)")
	fs.StringVar(level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "log format: text, json, or auto (text when the log goes to a terminal, JSON otherwise)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 20*time.Second, "how long a graceful drain may take before connections are cut")
	fs.DurationVar(&c.DrainDelay, "drain-delay", 0, "after SIGTERM, how long to stay up not-ready before closing clients (lets a load balancer notice)")
	fs.DurationVar(&c.WSPingInterval, "ws-ping-interval", 30*time.Second, "WebSocket ping interval: keeps idle connections open through proxies and finds dead peers")
	fs.DurationVar(&c.GRPCKeepalive, "grpc-keepalive", 30*time.Second, "gRPC keepalive ping interval for idle connections (dead peers are dropped after another 10 s)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 25*time.Second, "silence after which a stream that asked for events gets a KIND_HEARTBEAT (keep under load balancer idle timeouts)")
	fs.Float64Var(&c.SendRate, "send-rate", 20, "messages per second one user may send (token bucket rate)")
	fs.IntVar(&c.SendBurst, "send-burst", 0, "messages one user may send at once above the rate (0: twice the rate)")
	fs.IntVar(&c.MaxStreamsUser, "max-streams-per-user", 32, "concurrent streams one user may open on a node")
	fs.IntVar(&c.MaxStreams, "max-streams", 100000, "concurrent streams a node accepts")
	fs.IntVar(&c.MaxRoomsPerConn, "max-rooms-per-stream", 100, "rooms one stream (gRPC stream or WebSocket) may receive at once: its first room and those it subscribed to (KIND_SUBSCRIBE, Join.rooms); 1 to 100000")
	fs.IntVar(&c.MaxInflight, "max-inflight-sends", 32, "messages one stream may have on their way to the message bus at once (pipelined: the next is read while earlier ones await their answer; acks stay in send order); past it the stream's reads wait (back-pressure), 1 waits for each answer; 1 to 4096")
	fs.StringVar(&c.JWTSecret, "jwt-secret", "", "HS256 secret (32+ bytes): require JWTs signed with it; empty with no other key = open development mode")
	fs.StringVar(&c.JWTPublicKey, "jwt-public-key", "", "PEM public key file (RSA for RS256, P-256 for ES256): require JWTs signed by it")
	fs.StringVar(&c.JWTJWKS, "jwt-jwks", "", "JWKS file: require JWTs signed by one of its keys (RS256/ES256, by kid)")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", "", "required JWT issuer (iss), if set")
	fs.StringVar(&c.JWTAudience, "jwt-audience", "", "required JWT audience (aud), if set")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate: serve gRPC over TLS (with -tls-key)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of -tls-cert")
	fs.StringVar(&c.TLSCA, "tls-ca", "", "PEM CA the gateway verifies the gRPC server with (default: system roots)")
	fs.StringVar(&c.HTTPTLSCert, "http-tls-cert", "", "PEM certificate: serve HTTPS/WSS on -http-addr (with -http-tls-key)")
	fs.StringVar(&c.HTTPTLSKey, "http-tls-key", "", "PEM private key of -http-tls-cert")
	fs.DurationVar(&c.DrainSpread, "drain-spread", 2*time.Second, "after the drain delay, clients are told to reconnect elsewhere in batches spread over this long")
	fs.DurationVar(&c.WriteDelay, "write-delay", 50*time.Millisecond, "the longest a frame waits for others to leave with it: a client that keeps up is written to at once; one that falls behind is written to in batches, waiting up to this between writes; 0 never waits")
	fs.Float64Var(&c.PresenceEvents, "presence-event-rate", 10, "join and leave events per second one room delivers to its watchers on a node (bursts of twice that); under churn the rest are dropped and the presence API stays exact")
	fs.DurationVar(&c.PresenceTTL, "presence-ttl", 30*time.Second, "how long a node's presence records outlive its last heartbeat: the bound on how long a crashed node's users stay listed")
	fs.DurationVar(&c.LeaveGrace, "leave-grace", 5*time.Second, "how long a user may be gone before the room hears it left (no leave/join flicker on a quick reconnect)")
	fs.StringVar(&c.PprofAddr, "pprof-addr", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060); empty: off. Never expose it publicly")
	fs.DurationVar(&c.JoinTimeout, "join-timeout", 10*time.Second, "how long a new WebSocket or gRPC stream may take to send its first message before it is closed")
	fs.IntVar(&c.MaxInvalidFrames, "max-invalid-frames", 10, "malformed or refused frames one connection may send before it is closed")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "longest write of one batch to a client (WebSocket write, gRPC Send) before the session is closed (WebSocket: cut after between half of it and all of it)")
	fs.DurationVar(&c.FlushTimeout, "flush-timeout", 5*time.Second, "how long an orderly close may spend flushing a client's queue before it is cut")
	fs.IntVar(&c.MaxReplayBytes, "max-replay-bytes", 4<<20, "most encoded bytes of history one join or one REST history read replays (older messages are left out)")
	fs.DurationVar(&c.HTTPReadHeaderTimeout, "http-read-header-timeout", 5*time.Second, "how long a client may take to send an HTTP request's headers (0: no limit)")
	fs.DurationVar(&c.HTTPReadTimeout, "http-read-timeout", 10*time.Second, "how long a REST request may take to send its body (not WebSockets; 0: no limit)")
	fs.DurationVar(&c.HTTPWriteTimeout, "http-write-timeout", 10*time.Second, "how long a REST response may take to be written (not WebSockets; 0: no limit)")
	fs.DurationVar(&c.HTTPIdleTimeout, "http-idle-timeout", 60*time.Second, "how long an idle HTTP keep-alive connection stays open (0: no limit)")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", 16<<10, "largest HTTP request header block, in bytes")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", 256<<10, "largest REST request body, in bytes (larger: 413)")
	fs.IntVar(&c.GRPCMaxStreamsPerConn, "grpc-max-streams-per-conn", 100, "concurrent gRPC streams one connection may open (more wait for a free one)")
	fs.IntVar(&c.GRPCMaxHeaderBytes, "grpc-max-header-bytes", 16<<10, "largest gRPC header list (metadata) a client may send, in bytes")
	fs.StringVar(&c.MetricsToken, "metrics-token", "", "require \"Authorization: Bearer <token>\" on /metrics; empty: /metrics is open")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve /metrics on this address only (e.g. 127.0.0.1:9100); empty: on -http-addr")
	fs.Float64Var(&c.ConnRatePerIP, "conn-rate-per-ip", 20, "new TCP connections per second one client IP (IPv6: /64) may open on each listener, in open mode only (behind a load balancer set 0); 0: no limit")
	fs.IntVar(&c.ConnBurstPerIP, "conn-burst-per-ip", 40, "new TCP connections one client IP may open at once above -conn-rate-per-ip")
	fs.StringVar(origins, "allowed-origins", "", "comma-separated extra origins (host patterns) allowed to open WebSockets; the page's own origin is always allowed")
}

// maxLogSize bounds -log-size: a room's log is one Redis list (or ring in
// memory) read by index.
const maxLogSize = 1_000_000
