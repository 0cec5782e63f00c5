package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startNode runs a node in-process on loopback ports, with the high send
// rate the tool needs, and stops it at cleanup.
func startNode(t *testing.T, args ...string) node.Addrs {
	t.Helper()
	return testutil.StartNode(t, args...)
}

// runJSON runs the tool with -json and decodes its result into v.
func runJSON(t *testing.T, v any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, append(args, "-json"), &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
		t.Fatalf("decode %q: %v", stdout.String(), err)
	}
	t.Logf("stderr:\n%s\nresult:\n%s", stderr.String(), stdout.String())
}

func TestRunLoad(t *testing.T) {
	a := startNode(t)
	self := strconv.Itoa(os.Getpid()) // the node runs in this process
	cases := []struct {
		name string
		args []string
		subs int
	}{
		{"mix grpc publishers", []string{"-transport", "mix", "-subs", "40", "-pubs", "2", "-rooms", "2", "-rate", "50"}, 40},
		{"ws publishers batched, shared grpc conns", []string{"-transport", "grpc", "-grpc-streams-per-conn", "8", "-pub-transport", "ws",
			"-subs", "20", "-pubs", "3", "-rooms", "3", "-rate", "100", "-batch", "5", "-size", "300", "-room-prefix", "b2-"}, 20},
		// 4 connections (ws, ws, grpc, ws) in 6 of 8 rooms each: 3 per room.
		{"many rooms per connection", []string{"-transport", "mix", "-subs", "4", "-pubs", "8", "-rooms", "8", "-rooms-per-conn", "6",
			"-rate", "40", "-room-prefix", "many"}, 4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var r result
			runJSON(t, &r, append(c.args, "-ws-addrs", a.HTTP, "-grpc-addrs", a.GRPC,
				"-duration", "2s", "-warmup", "1s", "-drain", "5s", "-pids", self, "-label", "test")...)
			if r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || r.SeqGaps != 0 {
				t.Errorf("lost %d, duplicated %d, reordered %d, seq gaps %d; want none", r.Lost, r.Duplicated, r.Reordered, r.SeqGaps)
			}
			// Both publisher transports read their acknowledgements.
			if r.Acked != r.Sent || r.Unacked != 0 || r.Rejected != 0 || r.LostUnacked != 0 {
				t.Errorf("sent %d: acked %d, unacked %d, rejected %d, lost unacked %d; want all acked", r.Sent, r.Acked, r.Unacked, r.Rejected, r.LostUnacked)
			}
			if r.Delivered == 0 || r.Delivered != r.Expected {
				t.Errorf("delivered %d, expected %d: want equal and positive", r.Delivered, r.Expected)
			}
			if r.LatencyMS.P99 <= 0 || r.LatencyMS.P50 > r.LatencyMS.P99 || r.LatencyMS.P99 > r.LatencyMS.Max {
				t.Errorf("latency %+v: want 0 < p50 <= p99 <= max", r.LatencyMS)
			}
			if r.SubErrors != 0 || r.PubErrors != 0 || r.Skipped != 0 {
				t.Errorf("errors: subscribers %d, publishers %d, skipped %d: %s", r.SubErrors, r.PubErrors, r.Skipped, r.FirstErr)
			}
			if r.Subs != c.subs || r.Label != "test" || r.Mode != "load" || r.WSAddrs != 1 || r.GRPCAddrs != 1 {
				t.Errorf("config echoed wrong: %+v", r)
			}
			if r.WrongRoom != 0 || r.Subscriptions != r.Subs*r.RoomsPerConn {
				t.Errorf("wrong room %d, subscriptions %d of %d x %d", r.WrongRoom, r.Subscriptions, r.Subs, r.RoomsPerConn)
			}
			if r.RoomsPerConn > 1 {
				// Every room has Subscriptions/Rooms connections: each
				// message is expected, and delivered, that many times.
				if per := uint64(r.Subscriptions / r.Rooms); r.Expected != r.Sent*per {
					t.Errorf("expected %d deliveries of %d messages, want %d each", r.Expected, r.Sent, per)
				}
			}
			// About rate * pubs * window messages: the schedule is fixed.
			want := r.Rate * float64(r.Pubs) * r.DurationS
			if d := float64(r.Sent) - want; d < -float64(r.Batch*r.Pubs) || d > float64(r.Batch*r.Pubs) {
				t.Errorf("sent %d in the window, want about %.0f", r.Sent, want)
			}
			if len(r.Servers) != 1 || r.ServerRSSBytes <= 0 || r.ServerCPUS <= 0 || r.ServerCPUPer100k <= 0 {
				t.Errorf("server figures missing: %+v", r)
			}
		})
	}
}

// TestRunWSClients runs a short load with each WebSocket client and
// framing: every delivery arrives once, in order, and the client's CPU
// per 100k deliveries is reported; the second table runs a two-room
// stream (which waits for KIND_LIVE per room) with the std client.
func TestRunWSClients(t *testing.T) {
	a := startNode(t)
	cases := []struct{ client, framing, roomsPerConn string }{
		{"fast", "json", "1"},
		{"fast", "ndjson", "1"},
		{"fast", "proto", "1"},
		{"std", "json", "1"},
		{"std", "ndjson", "1"},
		{"std", "proto", "1"},
		{"std", "json", "2"},
		{"std", "ndjson", "2"},
		{"std", "proto", "2"},
	}
	for _, c := range cases {
		name := c.client + "-" + c.framing + "-rooms" + c.roomsPerConn
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var r result
			runJSON(t, &r, "-ws-addrs", a.HTTP, "-grpc-addrs", a.GRPC, "-ws-client", c.client, "-ws-framing", c.framing,
				"-subs", "20", "-pubs", "2", "-rooms", "2", "-rooms-per-conn", c.roomsPerConn, "-rate", "50",
				"-duration", "1s", "-warmup", "500ms", "-drain", "5s", "-room-prefix", "wsc-"+name+"-")
			if r.WSClient != c.client || r.WSFraming != c.framing {
				t.Errorf("ws_client %q, ws_framing %q; want %q, %q", r.WSClient, r.WSFraming, c.client, c.framing)
			}
			if r.Delivered == 0 || r.Delivered != r.Expected || r.Missing != 0 {
				t.Errorf("delivered %d, expected %d, missing %d: want all of a positive number", r.Delivered, r.Expected, r.Missing)
			}
			if r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || r.SeqGaps != 0 || r.WrongRoom != 0 {
				t.Errorf("lost %d, duplicated %d, reordered %d, seq gaps %d, wrong room %d; want none", r.Lost, r.Duplicated, r.Reordered, r.SeqGaps, r.WrongRoom)
			}
			if r.SubErrors != 0 || r.PubErrors != 0 {
				t.Errorf("errors: subscribers %d, publishers %d: %s", r.SubErrors, r.PubErrors, r.FirstErr)
			}
			if r.ClientCPUPer100k <= 0 || r.WSMessagesPerFrame < 1 {
				t.Errorf("client cpu per 100k %v, messages per frame %v: want both positive (at least 1 a frame)", r.ClientCPUPer100k, r.WSMessagesPerFrame)
			}
		})
	}
}

// TestRunRefusedFraming: a server that does not select the subprotocol
// -ws-framing offers fails the run while connecting, with either client,
// instead of measuring another framing than asked.
func TestRunRefusedFraming(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil) // selects no subprotocol
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, _, _ = c.Read(r.Context()) // until the client goes
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	for _, c := range [][2]string{{"fast", "ndjson"}, {"std", "proto"}, {"std", "json"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var out bytes.Buffer
		err := run(ctx, []string{"-ws-addrs", addr, "-pub-transport", "ws", "-ws-client", c[0], "-ws-framing", c[1],
			"-subs", "1", "-duration", "1s", "-warmup", "0s", "-q"}, &out, &out)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "selected WebSocket subprotocol") {
			t.Errorf("%s/%s: run: %v; want the subprotocol refused\n%s", c[0], c[1], err, out.String())
		}
	}
}

func TestRunFlood(t *testing.T) {
	// Publishers sending back to back, with and without a bound on their
	// unanswered sends: every window send is acknowledged and delivered
	// once, in order, and the ack rate is measured.
	a := startNode(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"grpc unbounded", []string{"-pub-transport", "grpc"}},
		{"ws one at a time", []string{"-pub-transport", "ws", "-max-unacked", "1"}},
		{"grpc window of 8", []string{"-pub-transport", "grpc", "-max-unacked", "8", "-pubs", "2", "-rooms", "2", "-subs", "2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var r result
			runJSON(t, &r, append([]string{"-transport", "grpc", "-subs", "1", "-pubs", "1", "-flood", "-room-prefix", "flood-" + strings.ReplaceAll(c.name, " ", "-"),
				"-ws-addrs", a.HTTP, "-grpc-addrs", a.GRPC, "-duration", "1s", "-warmup", "300ms", "-drain", "5s"}, c.args...)...)
			if !r.Flood || r.Sent == 0 || r.Acked != r.Sent || r.Unacked != 0 || r.Rejected != 0 {
				t.Errorf("flood %v: sent %d, acked %d, unacked %d, rejected %d; want all of a positive number acked", r.Flood, r.Sent, r.Acked, r.Unacked, r.Rejected)
			}
			if r.Lost != 0 || r.Duplicated != 0 || r.Reordered != 0 || r.SeqGaps != 0 || r.Delivered != r.Expected {
				t.Errorf("delivered %d of %d: lost %d, duplicated %d, reordered %d, seq gaps %d", r.Delivered, r.Expected, r.Lost, r.Duplicated, r.Reordered, r.SeqGaps)
			}
			if r.AcksPerSec <= 0 || r.PubErrors != 0 || r.SubErrors != 0 {
				t.Errorf("acks/s %v, errors %d/%d: %s", r.AcksPerSec, r.PubErrors, r.SubErrors, r.FirstErr)
			}
		})
	}
}

func TestRunIdle(t *testing.T) {
	a := startNode(t)
	for _, tr := range []string{"ws", "grpc"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			var r idleResult
			runJSON(t, &r, "-idle", "25", "-transport", tr, "-ws-addrs", a.HTTP, "-grpc-addrs", a.GRPC,
				"-rooms", "3", "-warmup", "300ms", "-duration", "700ms", "-pids", strconv.Itoa(os.Getpid()))
			if r.Mode != "idle" || r.Connected != 25 || r.Failed != 0 || r.ClosedEarly != 0 {
				t.Errorf("got %+v; want 25 connections held", r)
			}
			if r.RSSBeforeBytes <= 0 || r.RSSAfterBytes <= 0 {
				t.Errorf("rss not measured: %+v", r)
			}
		})
	}
}

// TestRunIdleManyRooms holds connections in many rooms each and reads the
// node's live heap from a pprof endpoint (this process's: the node runs in
// it): one subscription per connection and room, and the heap grows.
func TestRunIdleManyRooms(t *testing.T) {
	a := startNode(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, tr := range []string{"ws", "grpc"} {
		t.Run(tr, func(t *testing.T) {
			var r idleResult
			runJSON(t, &r, "-idle", "20", "-transport", tr, "-ws-addrs", a.HTTP, "-grpc-addrs", a.GRPC,
				"-rooms", "30", "-rooms-per-conn", "30", "-room-prefix", "idle-"+tr, "-warmup", "500ms", "-duration", "500ms",
				"-pids", strconv.Itoa(os.Getpid()), "-pprof-addrs", strings.TrimPrefix(srv.URL, "http://"))
			if r.Connected != 20 || r.Failed != 0 || r.ClosedEarly != 0 || r.RoomsPerConn != 30 || r.Subscriptions != 600 {
				t.Errorf("got %+v; want 20 connections in 30 rooms each held", r)
			}
			if r.HeapBeforeBytes <= 0 || r.HeapAfterBytes <= r.HeapBeforeBytes || r.HeapBytesPerSub <= 0 {
				t.Errorf("heap %d -> %d, %.0f B per subscription: want growth", r.HeapBeforeBytes, r.HeapAfterBytes, r.HeapBytesPerSub)
			}
			if r.ServerGoroutines <= r.ServerGoroutinesB4 {
				t.Errorf("goroutines %d -> %d: want more with 20 connections open", r.ServerGoroutinesB4, r.ServerGoroutines)
			}
		})
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-transport", "ws"},                                        // no -ws-addrs
		{"-ws-addrs", "x:1", "-transport", "ws"},                    // publishers need -grpc-addrs
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-rooms", "2"}, // more rooms than publishers
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-drain", "11s"},
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-rate", "0"},
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-pids", "abc"},
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-max-unacked", "4"}, // needs -flood
		{"-ws-addrs", "x:1", "-transport", "quic"},
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-rooms-per-conn", "2"},                                              // more than -rooms
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-rooms-per-conn", "0"},                                              // none
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-pubs", "10", "-rooms", "10", "-subs", "3", "-rooms-per-conn", "3"}, // room 9 without a subscriber
		{"-ws-addrs", "x:1", "-idle", "5", "-rooms", "2", "-rooms-per-conn", "3"},
		{"-ws-addrs", "x:1", "stray"},
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-ws-client", "gorilla"},
		{"-ws-addrs", "x:1", "-pub-transport", "ws", "-ws-framing", "msgpack"},
	} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, &out); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-h"}, &out, &out); err == nil || !strings.Contains(out.String(), "-send-rate 100000") {
		t.Errorf("-h: err %v, usage without the -send-rate advice:\n%s", err, out.String())
	}
}

func TestParseRoomsPerConn(t *testing.T) {
	// More rooms than connections is fine when the subscriptions cover
	// them: 3 connections in 4 of 10 rooms.
	c, err := parseConfig([]string{"-ws-addrs", "x:1", "-pub-transport", "ws", "-pubs", "10", "-rooms", "10", "-subs", "3", "-rooms-per-conn", "4"}, io.Discard)
	if err != nil || c.roomsPerConn != 4 || c.subsInRoom(9) != 1 || c.subsInRoom(1) != 2 {
		t.Errorf("parseConfig: %+v, %v", c, err)
	}
	c, err = parseConfig([]string{"-ws-addrs", "x:1", "-pub-transport", "ws"}, io.Discard)
	if err != nil || c.roomsPerConn != 1 {
		t.Errorf("default -rooms-per-conn: %d, %v; want 1", c.roomsPerConn, err)
	}
}

// TestRunRefusedSubscription: a node that refuses a connection's rooms
// (more than its -max-rooms-per-stream) fails the run while connecting,
// on both transports, instead of measuring fewer subscriptions than asked.
func TestRunRefusedSubscription(t *testing.T) {
	a := startNode(t, "-max-rooms-per-stream", "2")
	for _, tr := range []string{"ws", "grpc"} {
		t.Run(tr, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out bytes.Buffer
			err := run(ctx, []string{"-ws-addrs", a.HTTP, "-grpc-addrs", a.GRPC, "-transport", tr, "-subs", "2", "-pubs", "3", "-rooms", "3",
				"-rooms-per-conn", "3", "-room-prefix", "refused-" + tr, "-duration", "1s", "-warmup", "0s", "-q"}, &out, &out)
			if err == nil || !strings.Contains(err.Error(), "while subscribing") {
				t.Fatalf("run: %v; want a refused subscription\n%s", err, out.String())
			}
		})
	}
}

func TestRunFailsWhenNodeIsDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	// Port 1 on loopback: nothing listens there.
	err := run(ctx, []string{"-ws-addrs", "127.0.0.1:1", "-grpc-addrs", "127.0.0.1:1", "-subs", "2", "-connect-timeout", "5s"}, &out, &out)
	if err == nil {
		t.Fatal("no error")
	}
}
