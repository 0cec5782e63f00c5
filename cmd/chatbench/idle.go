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
	Mode      string `json:"mode"` // "idle"
	Label     string `json:"label,omitempty"`
	Transport string `json:"transport"`
	Rooms     int    `json:"rooms"`
	// RoomsPerConn is how many rooms each connection receives on its
	// stream, and Subscriptions the (connection, room) pairs held.
	RoomsPerConn  int     `json:"rooms_per_conn"`
	Subscriptions int     `json:"subscriptions"`
	Requested     int     `json:"requested"`
	Connected     int     `json:"connected"`
	Failed        int     `json:"failed"`
	ClosedEarly   int64   `json:"closed_early"` // connections the server ended while held
	StreamsPer    int     `json:"grpc_streams_per_conn"`
	WSAddrs       int     `json:"ws_addrs"`
	GRPCAddrs     int     `json:"grpc_addrs"`
	ConnectS      float64 `json:"connect_s"`
	HoldS         float64 `json:"hold_s"`
	FirstErr      string  `json:"first_error,omitempty"`

	RSSBeforeBytes int64   `json:"server_rss_before_bytes,omitempty"`
	RSSAfterBytes  int64   `json:"server_rss_after_bytes,omitempty"`
	BytesPerConn   float64 `json:"server_bytes_per_conn,omitempty"`
	BytesPerSub    float64 `json:"server_bytes_per_subscription,omitempty"` // RSS growth per (connection, room)

	// With -pprof-addrs: the nodes' live heap and goroutine stacks
	// (HeapAlloc + StackInuse) right after a GC, summed.
	HeapBeforeBytes    int64   `json:"server_heap_before_bytes,omitempty"`
	HeapAfterBytes     int64   `json:"server_heap_after_bytes,omitempty"`
	HeapBytesPerConn   float64 `json:"server_heap_bytes_per_conn,omitempty"`
	HeapBytesPerSub    float64 `json:"server_heap_bytes_per_subscription,omitempty"`
	ServerGoroutines   int64   `json:"server_goroutines_after,omitempty"`
	ServerGoroutinesB4 int64   `json:"server_goroutines_before,omitempty"`

	LoadAvg []float64 `json:"load_avg,omitempty"` // the host's (1, 5, 15 min), when measured
}

// runIdle opens cfg.idle connections that join a room and send nothing,
// holds them, and reports the servers' RSS growth per connection.
func runIdle(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	before, err := sampleServers(cfg.pids)
	if err != nil {
		return fmt.Errorf("chatbench: %w", err)
	}
	heapBefore, err := sampleHeaps(ctx, cfg.pprofAddrs)
	if err != nil {
		return fmt.Errorf("chatbench: %w", err)
	}
	start := time.Now()
	set, err := openSubs(ctx, cfg, cfg.idle, 4<<10, false, stderr)
	if err != nil {
		return err
	}
	defer set.closeClients()
	r := &idleResult{
		Mode: "idle", Label: cfg.label, Transport: cfg.transport, Rooms: cfg.rooms, RoomsPerConn: cfg.roomsPerConn,
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
			st := &subStats{id: i}
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
	r.LoadAvg = loadAvg()
	var heapAfter heapSample
	if sampleErr == nil {
		heapAfter, sampleErr = sampleHeaps(ctx, cfg.pprofAddrs)
	}
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
	r.Subscriptions = r.Connected * cfg.roomsPerConn
	if len(cfg.pids) > 0 {
		r.RSSBeforeBytes, r.RSSAfterBytes = before.totalRSS(), after.totalRSS()
		if r.Connected > 0 {
			r.BytesPerConn = float64(r.RSSAfterBytes-r.RSSBeforeBytes) / float64(r.Connected)
			r.BytesPerSub = r.BytesPerConn / float64(cfg.roomsPerConn)
		}
	}
	if len(cfg.pprofAddrs) > 0 {
		r.HeapBeforeBytes, r.HeapAfterBytes = heapBefore.bytes(), heapAfter.bytes()
		r.ServerGoroutinesB4, r.ServerGoroutines = heapBefore.goroutines, heapAfter.goroutines
		if r.Connected > 0 {
			r.HeapBytesPerConn = float64(r.HeapAfterBytes-r.HeapBeforeBytes) / float64(r.Connected)
			r.HeapBytesPerSub = r.HeapBytesPerConn / float64(cfg.roomsPerConn)
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
	if r.RoomsPerConn > 1 {
		fmt.Fprintf(&b, "rooms       %d per connection, of %d: %d subscriptions\n", r.RoomsPerConn, r.Rooms, r.Subscriptions)
	}
	if len(cfg.pids) > 0 {
		fmt.Fprintf(&b, "server rss  %.1f MiB before, %.1f MiB after: %.1f KiB per connection",
			float64(r.RSSBeforeBytes)/(1<<20), float64(r.RSSAfterBytes)/(1<<20), r.BytesPerConn/1024)
		if r.RoomsPerConn > 1 {
			fmt.Fprintf(&b, ", %.0f B per subscription", r.BytesPerSub)
		}
		b.WriteString("\n")
	}
	if len(cfg.pprofAddrs) > 0 {
		fmt.Fprintf(&b, "server heap %.1f MiB before, %.1f MiB after (live heap + stacks after a GC): %.1f KiB per connection, %.0f B per subscription; goroutines %d -> %d\n",
			float64(r.HeapBeforeBytes)/(1<<20), float64(r.HeapAfterBytes)/(1<<20), r.HeapBytesPerConn/1024, r.HeapBytesPerSub,
			r.ServerGoroutinesB4, r.ServerGoroutines)
	}
	if r.FirstErr != "" {
		fmt.Fprintf(&b, "first error: %s\n", r.FirstErr)
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}
