package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/rpc"
	"example.com/chat/pkg/web"
	"example.com/chat/pkg/ws"
)

// Addrs are the addresses a running node listens on.
type Addrs struct {
	GRPC string
	HTTP string
	// Metrics is the -metrics-addr listener's address; empty when /metrics
	// is served on HTTP.
	Metrics string
}

// Run runs a node until ctx is cancelled, then drains it. args are the
// command-line arguments without the program name; getenv backs flags not
// given; logs go to stdout. ready, when not nil, is called with the bound
// addresses once the node serves (tests pass ":0" ports).
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer, ready func(Addrs)) error {
	cfg, err := ParseConfig(args, getenv, stdout)
	if err != nil {
		if errors.Is(err, flagHelp) {
			return nil
		}
		return err
	}
	log := newLogger(stdout, cfg)
	if cfg.NodeID != "" {
		log = log.With("node", cfg.NodeID)
	}
	redisLog.Store(log) // go-redis's own lines, where Main routed them (redis.go)

	be, err := openBackends(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer be.close()
	var claim *nodeClaim
	if cfg.NodeID != "" && be.redis != nil {
		claim = newNodeClaim(be.redis, be.prefix, cfg.NodeID, log)
		actx, cancel := context.WithTimeout(ctx, nodeClaimTTL+5*time.Second)
		err := claim.acquire(actx)
		cancel()
		if errors.Is(err, errNodeIDInUse) || ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		if err != nil {
			log.Warn("cannot claim the node id yet; retrying in the background", "err", err)
		}
		defer claim.release() // after the drain: deferred after be.close, run before it
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h, err := hub.New(hub.Config{
		Broker:             be.broker,
		History:            be.history,
		Presence:           be.presence,
		Access:             be.access,
		HeartbeatInterval:  cfg.Heartbeat,
		DrainSpread:        cfg.DrainSpread,
		WriteDelay:         cfg.WriteDelay,
		PresenceTTL:        cfg.PresenceTTL,
		PresenceEventRate:  cfg.PresenceEvents,
		LeaveGrace:         cfg.LeaveGrace,
		NodeID:             cfg.NodeID,
		HistorySize:        cfg.HistorySize,
		LogSize:            cfg.LogSize,
		MaxTextBytes:       cfg.MaxTextBytes,
		MaxQueueBytes:      cfg.MaxQueueBytes,
		SendRate:           cfg.SendRate,
		SendBurst:          cfg.SendBurst,
		SendLimiter:        be.limiter,
		MaxSessionsPerUser: cfg.MaxStreamsUser,
		MaxSessions:        cfg.MaxStreams,
		MaxInflightSends:   cfg.MaxInflight,
		MaxSubscriptions:   cfg.MaxRoomsPerConn,
		JoinTimeout:        cfg.JoinTimeout,
		MaxInvalidFrames:   cfg.MaxInvalidFrames,
		WriteTimeout:       cfg.WriteTimeout,
		FlushTimeout:       cfg.FlushTimeout,
		MaxReplayBytes:     cfg.MaxReplayBytes,
		Logger:             log,
		Registerer:         reg,
	})
	if err != nil {
		return err
	}
	reg.MustRegister(activeUsersGauge(be.presence.ActiveUsers))

	grpcLn, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("node: listen grpc: %w", err)
	}
	httpLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("node: listen http: %w", err)
	}
	var metricsLn net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLn, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			grpcLn.Close()
			httpLn.Close()
			return fmt.Errorf("node: listen metrics: %w", err)
		}
	}

	v, err := verifier(cfg, log)
	if err != nil {
		return err
	}
	rateLimitListeners(cfg, v == nil, reg, map[string]*net.Listener{"grpc": &grpcLn, "http": &httpLn})
	sopts, err := grpcServerCreds(cfg)
	if err != nil {
		return err
	}
	// gRPC server metrics (calls started/handled by code, latency); the
	// auth interceptors run inside them, so rejected calls are counted too.
	gm := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(gm)
	sopts = append(sopts, grpc.ChainUnaryInterceptor(gm.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(callsOnly(gm.StreamServerInterceptor())))
	if v != nil {
		sopts = append(sopts, grpc.ChainUnaryInterceptor(v.UnaryInterceptor()), grpc.ChainStreamInterceptor(v.StreamInterceptor()))
	}
	gwCreds, err := gatewayCreds(cfg)
	if err != nil {
		return err
	}

	gs := grpc.NewServer(append(sopts,
		grpc.ForceServerCodecV2(rpc.Codec{}),
		grpc.SharedWriteBuffer(true),
		// Bounds on what one connection may make the server hold before
		// any handler (or token check) runs: 5000 never-joined streams on
		// one connection, or 16 MiB of metadata, were accepted before.
		grpc.MaxConcurrentStreams(uint32(cfg.GRPCMaxStreamsPerConn)),
		grpc.MaxHeaderListSize(uint32(cfg.GRPCMaxHeaderBytes)),
		grpc.MaxRecvMsgSize(maxRecvMsgSize(cfg)),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Ping an idle client after 30 s and drop it if no answer in 10 s:
			// that is how a dead mobile peer is found.
			Time:    cfg.GRPCKeepalive,
			Timeout: 10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             min(10*time.Second, cfg.GRPCKeepalive),
			PermitWithoutStream: true,
		}),
	)...)
	rpc.New(rpc.Config{Hub: h, Logger: log}).Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	gm.InitializeMetrics(gs)

	// The gateway talks to this node's own gRPC listener.
	// Its answers (a history read) are bounded by -max-replay-bytes, which
	// may exceed the client's default 4 MiB. Note that the gateway's one
	// connection also carries at most -grpc-max-streams-per-conn REST
	// calls at a time; more wait for a free stream.
	cc, err := grpc.NewClient(dialAddr(grpcLn.Addr()), gwCreds,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(max(4<<20, 2*cfg.MaxReplayBytes+1<<20))))
	if err != nil {
		return fmt.Errorf("node: gateway client: %w", err)
	}
	defer cc.Close()

	var draining atomic.Bool
	readyz := func() error {
		if draining.Load() {
			return errors.New("draining")
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := be.ping(pctx); err != nil {
			return err
		}
		// Redis answering is not enough: a dead subscription connection
		// loses every delivery while commands still work.
		if hc, ok := be.broker.(pubsub.HealthChecker); ok {
			return hc.Healthy()
		}
		return nil
	}

	guard := &restGuard{verifier: v, readTimeout: cfg.HTTPReadTimeout, writeTimeout: cfg.HTTPWriteTimeout, maxBody: cfg.MaxBodyBytes}
	mux := runtime.NewServeMux(runtime.WithErrorHandler(guard.errorHandler),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, browserMarshaler()))
	guard.gw, guard.next = mux, mux
	if err := api.RegisterChatHandlerClient(ctx, mux, api.NewChatClient(cc)); err != nil {
		return fmt.Errorf("node: gateway: %w", err)
	}
	wsh := ws.New(ws.Config{Hub: h, Logger: log, OriginPatterns: cfg.AllowedOrigins, Verifier: v, PingInterval: cfg.WSPingInterval})
	must(mux.HandlePath(http.MethodGet, streamPath, func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		wsh.ServeHTTP(w, r)
	}))
	must(mux.HandlePath(http.MethodGet, "/healthz", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		io.WriteString(w, "ok\n")
	}))
	must(mux.HandlePath(http.MethodGet, "/readyz", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		if err := readyz(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	}))
	metrics := metricsHandler(reg, cfg.MetricsToken)
	if cfg.MetricsAddr == "" {
		must(mux.HandlePath(http.MethodGet, "/metrics", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			metrics.ServeHTTP(w, r)
		}))
	}
	pageHandler := web.Handler()
	for _, p := range web.Paths {
		must(mux.HandlePath(http.MethodGet, p, func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
			pageHandler.ServeHTTP(w, r)
		}))
	}
	// No ReadTimeout or WriteTimeout here: they would also cut every
	// WebSocket; restGuard sets them per REST request instead.
	hsrv := withTimeouts(&http.Server{Handler: guard, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}, cfg)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		// ErrServerStopped: the drain began before Serve did (a node
		// stopped right after it was ready).
		if err := gs.Serve(grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("node: grpc serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		serve := func() error { return hsrv.Serve(httpLn) }
		if cfg.HTTPTLSCert != "" {
			serve = func() error { return hsrv.ServeTLS(httpLn, cfg.HTTPTLSCert, cfg.HTTPTLSKey) }
		}
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("node: http serve: %w", err)
		}
		return nil
	})
	if claim != nil {
		g.Go(func() error { return claim.keep(gctx) })
	}
	// Health follows readiness: Redis down or draining means NOT_SERVING.
	g.Go(func() error {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			st := healthpb.HealthCheckResponse_SERVING
			if readyz() != nil {
				st = healthpb.HealthCheckResponse_NOT_SERVING
			}
			hs.SetServingStatus("", st)
			hs.SetServingStatus("chat.Chat", st)
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
	if cfg.PprofAddr != "" {
		pl, err := net.Listen("tcp", cfg.PprofAddr)
		if err != nil {
			return fmt.Errorf("node: listen pprof: %w", err)
		}
		pm := http.NewServeMux()
		pm.HandleFunc("/debug/pprof/", pprof.Index)
		pm.HandleFunc("/debug/pprof/profile", pprof.Profile)
		pm.HandleFunc("/debug/pprof/trace", pprof.Trace)
		pm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		psrv := &http.Server{Handler: pm, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			<-gctx.Done()
			return psrv.Close()
		})
		g.Go(func() error {
			if err := psrv.Serve(pl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("node: pprof serve: %w", err)
			}
			return nil
		})
	}
	addrs := Addrs{GRPC: grpcLn.Addr().String(), HTTP: httpLn.Addr().String()}
	if metricsLn != nil {
		// Only /metrics, with every timeout of a plain server: nothing
		// on it lives longer than a scrape.
		ml := metricsLn
		addrs.Metrics = ml.Addr().String()
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", metrics)
		msrv := withTimeouts(&http.Server{Handler: mm, ReadTimeout: cfg.HTTPReadTimeout, WriteTimeout: cfg.HTTPWriteTimeout,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}, cfg)
		g.Go(func() error {
			<-gctx.Done()
			return msrv.Close()
		})
		g.Go(func() error {
			if err := msrv.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("node: metrics serve: %w", err)
			}
			return nil
		})
	}
	page := pageURL(httpLn.Addr(), cfg.HTTPTLSCert != "")
	// The message stays "node started": process-level tests and log
	// collectors wait for it. page is the URL to open in a browser.
	log.Info("node started", "page", page, "grpc", addrs.GRPC, "http", addrs.HTTP, "metrics", addrs.Metrics,
		"backend", be.name, "auth", authMode(cfg), "tls", tlsMode(cfg))
	if cfg.LoopbackOnly {
		log.Info("open development mode: listening on loopback (127.0.0.1) only; give -http-addr and -grpc-addr (e.g. :8080 and :50051) to listen on other interfaces")
	}
	if ready != nil {
		ready(addrs)
	}

	<-gctx.Done()
	log.Info("draining")
	draining.Store(true)
	hs.Shutdown()
	if cfg.DrainDelay > 0 && ctx.Err() != nil {
		time.Sleep(cfg.DrainDelay)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := h.Shutdown(sctx); err != nil {
		log.Warn("hub shutdown incomplete", "err", err)
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-sctx.Done():
		gs.Stop()
	}
	if err := hsrv.Shutdown(sctx); err != nil {
		hsrv.Close()
	}
	err = g.Wait()
	log.Info("node stopped")
	return err
}

// maxRecvMsgSize is the largest gRPC message the server decodes: the
// largest text plus room for every other field (names, ids, the join), and
// at least the REST body limit, so that whatever the gateway accepts it
// can forward. Larger messages are refused by the transport
// (ResourceExhausted) instead of the default 4 MiB being decoded first.
func maxRecvMsgSize(cfg Config) int {
	return max(cfg.MaxTextBytes+64<<10, int(min(cfg.MaxBodyBytes, math.MaxInt32)))
}

// dialAddr turns a listener address into one the gateway can dial: an
// unspecified host (":50051") becomes loopback.
func dialAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
