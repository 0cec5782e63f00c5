package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"example.com/chat/api"
	"example.com/chat/pkg/hub"
	"example.com/chat/pkg/rpc"
	"example.com/chat/pkg/web"
	"example.com/chat/pkg/ws"
)

// Addrs are the addresses a running node listens on.
type Addrs struct {
	GRPC string
	HTTP string
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
	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	if cfg.NodeID != "" {
		log = log.With("node", cfg.NodeID)
	}
	redisLog.Store(log) // go-redis's own lines, where Main routed them (redis.go)

	be, err := openBackends(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer be.close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h, err := hub.New(hub.Config{
		Broker:             be.broker,
		History:            be.history,
		Presence:           be.presence,
		HeartbeatInterval:  cfg.Heartbeat,
		DrainSpread:        cfg.DrainSpread,
		WriteDelay:         cfg.WriteDelay,
		PresenceTTL:        cfg.PresenceTTL,
		LeaveGrace:         cfg.LeaveGrace,
		NodeID:             cfg.NodeID,
		HistorySize:        cfg.HistorySize,
		MaxTextBytes:       cfg.MaxTextBytes,
		MaxQueueBytes:      cfg.MaxQueueBytes,
		SendRate:           cfg.SendRate,
		SendBurst:          cfg.SendBurst,
		MaxSessionsPerUser: cfg.MaxStreamsUser,
		MaxSessions:        cfg.MaxStreams,
		Logger:             log,
		Registerer:         reg,
	})
	if err != nil {
		return err
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chat_cluster_active_users",
		Help: "Distinct users connected anywhere in the cluster, from presence (every node reports the same figure; use max()).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n, err := be.presence.ActiveUsers(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	}))

	grpcLn, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("node: listen grpc: %w", err)
	}
	httpLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLn.Close()
		return fmt.Errorf("node: listen http: %w", err)
	}

	v, err := verifier(cfg, log)
	if err != nil {
		return err
	}
	sopts, err := grpcServerCreds(cfg)
	if err != nil {
		return err
	}
	// gRPC server metrics (calls started/handled by code, latency); the
	// auth interceptors run inside them, so rejected calls are counted too.
	gm := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	reg.MustRegister(gm)
	sopts = append(sopts, grpc.ChainUnaryInterceptor(gm.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(gm.StreamServerInterceptor()))
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
	cc, err := grpc.NewClient(dialAddr(grpcLn.Addr()), gwCreds)
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
		return be.ping(pctx)
	}

	mux := runtime.NewServeMux()
	if err := api.RegisterChatHandlerClient(ctx, mux, api.NewChatClient(cc)); err != nil {
		return fmt.Errorf("node: gateway: %w", err)
	}
	wsh := ws.New(ws.Config{Hub: h, Logger: log, OriginPatterns: cfg.AllowedOrigins, Verifier: v, PingInterval: cfg.WSPingInterval})
	must(mux.HandlePath(http.MethodGet, "/v1/chat/stream", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
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
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	must(mux.HandlePath(http.MethodGet, "/metrics", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		metricsHandler.ServeHTTP(w, r)
	}))
	page := web.Handler()
	must(mux.HandlePath(http.MethodGet, "/", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {
		page.ServeHTTP(w, r)
	}))
	hsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := gs.Serve(grpcLn); err != nil {
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
	log.Info("node started", "grpc", grpcLn.Addr().String(), "http", httpLn.Addr().String(), "backend", be.name)
	if ready != nil {
		ready(Addrs{GRPC: grpcLn.Addr().String(), HTTP: httpLn.Addr().String()})
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
