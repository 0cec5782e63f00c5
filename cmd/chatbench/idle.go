package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// idleResult is an -idle run's summary, as printed with -json.
type idleResult struct {
	Mode        string  `json:"mode"` // "idle"
	Label       string  `json:"label,omitempty"`
	Transport   string  `json:"transport"`
	Rooms       int     `json:"rooms"`
	Requested   int     `json:"requested"`
	Connected   int     `json:"connected"`
	Failed      int     `json:"failed"`
	ClosedEarly int64   `json:"closed_early"` // connections the server ended while held
	StreamsPer  int     `json:"grpc_streams_per_conn"`
	WSAddrs     int     `json:"ws_addrs"`
	GRPCAddrs   int     `json:"grpc_addrs"`
	ConnectS    float64 `json:"connect_s"`
	HoldS       float64 `json:"hold_s"`
	FirstErr    string  `json:"first_error,omitempty"`

	RSSBeforeBytes int64   `json:"server_rss_before_bytes,omitempty"`
	RSSAfterBytes  int64   `json:"server_rss_after_bytes,omitempty"`
	BytesPerConn   float64 `json:"server_bytes_per_conn,omitempty"`
}

// runIdle opens cfg.idle connections that join a room and send nothing,
// holds them, and reports the servers' RSS growth per connection.
func runIdle(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	before, err := sampleServers(cfg.pids)
	if err != nil {
		return fmt.Errorf("chatbench: %w", err)
	}
	if cfg.rooms < 1 {
		cfg.rooms = 1
	}
	start := time.Now()
	set, err := openSubs(ctx, cfg, cfg.idle, 4<<10, false, stderr)
	if err != nil {
		return err
	}
	defer set.closeClients()
	r := &idleResult{
		Mode: "idle", Label: cfg.label, Transport: cfg.transport, Rooms: cfg.rooms,
		Requested: cfg.idle, Failed: len(set.errs), StreamsPer: cfg.streamsPer,
		WSAddrs: len(cfg.wsAddrs), GRPCAddrs: len(cfg.grpcAddrs),
		ConnectS: time.Since(start).Seconds(), HoldS: (cfg.warmup + cfg.duration).Seconds(),
	}
	if len(set.errs) > 0 {
		r.FirstErr = set.errs[0].Error()
	}

	var stopping atomic.Bool
	var closed atomic.Int64
	var wg sync.WaitGroup
	var errMu sync.Mutex
	for i, c := range set.conns {
		if c == nil {
			continue
		}
		r.Connected++
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &subStats{room: i % cfg.rooms}
			err := c.run(st, nil)
			if !stopping.Load() {
				closed.Add(1)
				errMu.Lock()
				if r.FirstErr == "" {
					r.FirstErr = err.Error()
				}
				errMu.Unlock()
			}
		}()
	}
	stop := progressEvery(time.Second, func() {
		line := fmt.Sprintf("holding %d connections (%d closed by the server)", r.Connected, closed.Load())
		if s, err := sampleServers(cfg.pids); err == nil && len(cfg.pids) > 0 {
			line += fmt.Sprintf(", server rss %.1f MiB", float64(s.totalRSS())/(1<<20))
		}
		fmt.Fprintln(stderr, line)
	})
	select {
	case <-ctx.Done():
	case <-time.After(cfg.warmup + cfg.duration):
	}
	stop()
	after, sampleErr := sampleServers(cfg.pids)
	stopping.Store(true)
	set.close()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("chatbench: interrupted: %w", err)
	}
	if sampleErr != nil {
		return fmt.Errorf("chatbench: %w", sampleErr)
	}
	r.ClosedEarly = closed.Load()
	if len(cfg.pids) > 0 {
		r.RSSBeforeBytes, r.RSSAfterBytes = before.totalRSS(), after.totalRSS()
		if r.Connected > 0 {
			r.BytesPerConn = float64(r.RSSAfterBytes-r.RSSBeforeBytes) / float64(r.Connected)
		}
	}
	if r.Connected == 0 {
		return fmt.Errorf("chatbench: no connection opened: %s", r.FirstErr)
	}
	if cfg.jsonOut {
		return writeJSON(stdout, r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "chatbench idle: %d/%d %s connections open (%d failed, %d closed by the server) in %.1fs, held %.0fs\n",
		r.Connected, r.Requested, r.Transport, r.Failed, r.ClosedEarly, r.ConnectS, r.HoldS)
	if len(cfg.pids) > 0 {
		fmt.Fprintf(&b, "server rss  %.1f MiB before, %.1f MiB after: %.1f KiB per connection\n",
			float64(r.RSSBeforeBytes)/(1<<20), float64(r.RSSAfterBytes)/(1<<20), r.BytesPerConn/1024)
	}
	if r.FirstErr != "" {
		fmt.Fprintf(&b, "first error: %s\n", r.FirstErr)
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}
