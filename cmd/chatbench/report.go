package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// result is a load run's summary, as printed with -json. Counts are of
// messages intended inside the measured window unless named otherwise.
type result struct {
	Mode  string `json:"mode"` // "load"
	Label string `json:"label,omitempty"`
	// The configuration.
	Transport    string `json:"transport"`
	PubTransport string `json:"pub_transport"`
	WSClient     string `json:"ws_client"`  // -ws-client of the WebSocket subscribers: fast or std
	WSFraming    string `json:"ws_framing"` // -ws-framing of the WebSocket subscribers: json, ndjson or proto
	Subs         int    `json:"subs"`
	Pubs         int    `json:"pubs"`
	Rooms        int    `json:"rooms"`
	RoomsPerConn int    `json:"rooms_per_conn"` // rooms each subscriber connection receives on its one stream
	// Subscriptions is subs × rooms_per_conn: the (connection, room) pairs.
	Subscriptions int     `json:"subscriptions"`
	Rate          float64 `json:"rate"` // msg/s per publisher
	Batch         int     `json:"batch"`
	Flood         bool    `json:"flood,omitempty"`       // publishers sent back to back (-flood)
	MaxUnacked    int     `json:"max_unacked,omitempty"` // -max-unacked
	Size          int     `json:"size"`
	DurationS     float64 `json:"duration_s"`
	WarmupS       float64 `json:"warmup_s"`
	WSAddrs       int     `json:"ws_addrs"`
	GRPCAddrs     int     `json:"grpc_addrs"`
	StreamsPer    int     `json:"grpc_streams_per_conn"`
	ConnectS      float64 `json:"connect_s"` // time to open every connection

	Sent      uint64  `json:"sent"`        // window messages sent
	SentTotal uint64  `json:"sent_total"`  // warm-up included
	LateSends uint64  `json:"late_sends"`  // sends that started > 1 ms after their intended time
	MaxLateMS float64 `json:"max_late_ms"` // the latest of them
	Skipped   uint64  `json:"skipped"`     // window messages never sent (publisher hopelessly behind)
	SendLagMS latency `json:"send_lag_ms"` // intended to actual send start (timer wake-up, send back-pressure)
	Acked     uint64  `json:"acked"`       // window messages the node acknowledged (stored)
	Unacked   uint64  `json:"unacked"`     // window messages sent but never answered before the publisher closed
	Rejected  uint64  `json:"rejected"`    // window messages answered with an error (not stored)
	// AcksPerSec is the acknowledgements the publishers received during
	// the window (by arrival time), per second: with -flood and one
	// publisher, what one stream gets.
	AcksPerSec float64 `json:"acks_per_s"`
	Expected   uint64  `json:"expected"`  // deliveries: each sent message times the connections in its room
	Delivered  uint64  `json:"delivered"` // distinct deliveries received
	Missing    int64   `json:"missing"`   // expected - delivered, whatever the cause
	// Lost is the real loss: deliveries of acknowledged messages that
	// never arrived (and any missing delivery the tracker could not
	// place, having forgotten its gap: counted here, to be safe).
	Lost int64 `json:"lost"`
	// LostUnacked are missing deliveries of messages never acknowledged:
	// never stored, or stored with the ack still on its way when the
	// publisher closed (unknown). Not a loss the cluster promised against.
	LostUnacked uint64 `json:"lost_unacked"`
	// LostRejected are missing deliveries of rejected messages (expected).
	LostRejected uint64 `json:"lost_rejected"`
	Duplicated   uint64 `json:"duplicated"` // deliveries of a message a subscriber already had
	Reordered    uint64 `json:"reordered"`  // deliveries that came after a later message of the same publisher
	SeqGaps      uint64 `json:"seq_gaps"`   // deliveries whose room seq was not the previous + 1 in that room, on that connection
	// WrongRoom counts benchmark messages a connection got from a room
	// it is not in, or tagged with a room that is not their publisher's.
	WrongRoom uint64  `json:"wrong_room"`
	Other     uint64  `json:"other_frames"`
	PerSec    float64 `json:"deliveries_per_s"` // delivered / duration

	LatencyMS latency `json:"latency_ms"` // from intended send time to receipt

	SubErrors int    `json:"sub_errors"` // subscribers whose connection ended early
	PubErrors int    `json:"pub_errors"`
	FirstErr  string `json:"first_error,omitempty"`

	ClientCPUS float64 `json:"client_cpu_s"` // this tool's CPU over the window
	// ClientCPUPer100k is ClientCPUS per 100k deliveries: with -ws-client
	// std, about what a standard client pays for its messages (publishers
	// and the tool's accounting included).
	ClientCPUPer100k float64 `json:"client_cpu_s_per_100k,omitempty"`
	// WebSocket frames per read from the socket, warm-up included: how
	// much the servers batch (more is cheaper for both sides). The fast
	// client only: the std one does not see its reads.
	WSFramesPerRead float64 `json:"ws_frames_per_read,omitempty"`
	// WSMessagesPerFrame is the WebSocket subscribers' messages per frame,
	// warm-up included: 1 in the JSON framing, more when the node packs
	// (ndjson, proto) a burst.
	WSMessagesPerFrame float64 `json:"ws_messages_per_frame,omitempty"`

	ServerCPUS       float64        `json:"server_cpu_s,omitempty"` // all -pids, over the window
	ServerCPUPer100k float64        `json:"server_cpu_s_per_100k,omitempty"`
	ServerRSSBytes   int64          `json:"server_rss_bytes,omitempty"` // at the window's end
	Servers          []serverResult `json:"servers,omitempty"`
	// LoadAvg is the host's load average (1, 5, 15 min) at the window's
	// end: on a shared machine, how much else ran.
	LoadAvg []float64 `json:"load_avg,omitempty"`
}

type latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type serverResult struct {
	PID      int     `json:"pid"`
	CPUS     float64 `json:"cpu_s"`
	RSSBytes int64   `json:"rss_bytes"`
}

func buildResult(cfg *config, p *plan, connect time.Duration, subs []*subStats, pubs []*pubStats, expected uint64) *result {
	t := mergeSubs(subs)
	a := accountSends(p, subs, pubs)
	missing := int64(expected) - int64(t.delivered)
	r := &result{
		Mode: "load", Label: cfg.label,
		Transport: cfg.transport, PubTransport: cfg.pubTransport, WSClient: cfg.wsClient, WSFraming: cfg.wsFraming,
		Subs: cfg.subs, Pubs: cfg.pubs, Rooms: cfg.rooms, RoomsPerConn: cfg.roomsPerConn, Subscriptions: cfg.subs * cfg.roomsPerConn, Rate: cfg.rate, Batch: cfg.batch, Flood: cfg.flood, MaxUnacked: cfg.maxUnacked, Size: cfg.size,
		DurationS: cfg.duration.Seconds(), WarmupS: cfg.warmup.Seconds(),
		WSAddrs: len(cfg.wsAddrs), GRPCAddrs: len(cfg.grpcAddrs), StreamsPer: cfg.streamsPer,
		ConnectS: connect.Seconds(),
		Acked:    a.acked, Unacked: a.unacked, Rejected: a.rejected,
		Expected: expected, Delivered: t.delivered, Missing: missing,
		Lost:        missing - int64(a.missingUnacked) - int64(a.missingRejected),
		LostUnacked: a.missingUnacked, LostRejected: a.missingRejected,
		Duplicated: t.duplicated, Reordered: t.reordered, SeqGaps: t.seqGaps, WrongRoom: t.wrongRoom, Other: t.foreign,
		PerSec:    float64(t.delivered) / cfg.duration.Seconds(),
		SubErrors: t.errors,
	}
	if t.firstErr != nil {
		r.FirstErr = t.firstErr.Error()
	}
	if t.wsReads > 0 {
		r.WSFramesPerRead = float64(t.wsFrames) / float64(t.wsReads)
	}
	if t.wsFrames > 0 {
		r.WSMessagesPerFrame = float64(t.wsMsgs) / float64(t.wsFrames)
	}
	for _, p := range pubs {
		r.Sent += p.sentWindow
		r.SentTotal += p.sent.Load()
		r.LateSends += p.late
		r.MaxLateMS = max(r.MaxLateMS, float64(p.maxLateNS)/1e6)
		r.Skipped += p.skipped
		for _, err := range []error{p.err, p.recvErr} {
			if err != nil {
				r.PubErrors++
				if r.FirstErr == "" {
					r.FirstErr = err.Error()
				}
			}
		}
	}
	lag := newHist()
	for _, p := range pubs {
		lag.Merge(p.lag)
	}
	r.LatencyMS = quantilesMS(t.hist)
	r.SendLagMS = quantilesMS(lag)
	return r
}

// quantilesMS summarizes a histogram of microseconds, in milliseconds.
func quantilesMS(h *hdrhistogram.Histogram) latency {
	if h.TotalCount() == 0 {
		return latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1e3 }
	return latency{
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)),
		P99: ms(h.ValueAtQuantile(99)), P999: ms(h.ValueAtQuantile(99.9)),
		Max: ms(h.Max()), Mean: h.Mean() / 1e3,
	}
}

// addCPU fills the CPU and memory figures from the samples taken at the
// window's start and end.
func (r *result) addCPU(cfg *config, start, end serverSample, self time.Duration) {
	r.ClientCPUS = self.Seconds()
	if r.Delivered > 0 {
		r.ClientCPUPer100k = self.Seconds() / float64(r.Delivered) * 1e5
	}
	if len(cfg.pids) == 0 {
		return
	}
	var cpu time.Duration
	for i, pid := range cfg.pids {
		d := end.cpu[i] - start.cpu[i]
		cpu += d
		r.Servers = append(r.Servers, serverResult{PID: pid, CPUS: d.Seconds(), RSSBytes: end.rss[i]})
	}
	r.ServerCPUS = cpu.Seconds()
	r.ServerRSSBytes = end.totalRSS()
	if r.Delivered > 0 {
		r.ServerCPUPer100k = cpu.Seconds() / float64(r.Delivered) * 1e5
	}
}

func (r *result) write(w io.Writer, asJSON bool) error {
	if asJSON {
		return writeJSON(w, r)
	}
	var b strings.Builder
	mode := fmt.Sprintf("rate=%g/s batch=%d", r.Rate, r.Batch)
	if r.Flood {
		mode = fmt.Sprintf("flood (max unacked %d)", r.MaxUnacked)
	}
	rooms := strconv.Itoa(r.Rooms)
	if r.RoomsPerConn > 1 {
		rooms += fmt.Sprintf(" (%d per subscriber, %d subscriptions)", r.RoomsPerConn, r.Subscriptions)
	}
	subs := r.Transport
	if r.Transport != transportGRPC {
		subs += fmt.Sprintf(", ws %s/%s", r.WSClient, r.WSFraming)
	}
	fmt.Fprintf(&b, "chatbench: subs=%d (%s) pubs=%d (%s) rooms=%s %s size=%dB window=%s warmup=%s nodes: ws=%d grpc=%d; connected in %.1fs\n",
		r.Subs, subs, r.Pubs, r.PubTransport, rooms, mode, r.Size,
		time.Duration(r.DurationS*1e9), time.Duration(r.WarmupS*1e9), r.WSAddrs, r.GRPCAddrs, r.ConnectS)
	fmt.Fprintf(&b, "sent        %d in window (%d in all), late sends %d (max %.1fms), skipped %d\n",
		r.Sent, r.SentTotal, r.LateSends, r.MaxLateMS, r.Skipped)
	fmt.Fprintf(&b, "send lag    p50 %s  p99 %s  max %s  (intended to actual send start: timer wake-up, back-pressure)\n",
		fmtUS(r.SendLagMS.P50*1e3), fmtUS(r.SendLagMS.P99*1e3), fmtUS(r.SendLagMS.Max*1e3))
	fmt.Fprintf(&b, "answers     acked %d, never answered %d, rejected %d  (of the window's sends); %.0f acks/s received in the window\n",
		r.Acked, r.Unacked, r.Rejected, r.AcksPerSec)
	fmt.Fprintf(&b, "deliveries  expected %d, delivered %d, missing %d: lost %d (acked, not delivered), of unacked sends %d (never stored, or unknown), of rejected %d\n",
		r.Expected, r.Delivered, r.Missing, r.Lost, r.LostUnacked, r.LostRejected)
	wrong := ""
	if r.RoomsPerConn > 1 || r.WrongRoom > 0 {
		wrong = fmt.Sprintf(", wrong room %d", r.WrongRoom)
	}
	fmt.Fprintf(&b, "            duplicated %d, reordered %d, seq gaps %d%s, other frames %d\n",
		r.Duplicated, r.Reordered, r.SeqGaps, wrong, r.Other)
	fmt.Fprintf(&b, "throughput  %.0f deliveries/s\n", r.PerSec)
	l := r.LatencyMS
	fmt.Fprintf(&b, "latency     p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  mean %s  (from intended send time)\n",
		fmtUS(l.P50*1e3), fmtUS(l.P90*1e3), fmtUS(l.P99*1e3), fmtUS(l.P999*1e3), fmtUS(l.Max*1e3), fmtUS(l.Mean*1e3))
	if len(r.Servers) > 0 {
		fmt.Fprintf(&b, "server      cpu %.2fs over the window (%.0f%% of a core), %.3fs per 100k deliveries; rss %.1f MiB\n",
			r.ServerCPUS, 100*r.ServerCPUS/r.DurationS, r.ServerCPUPer100k, float64(r.ServerRSSBytes)/(1<<20))
		for _, s := range r.Servers {
			fmt.Fprintf(&b, "            pid %d: cpu %.2fs, rss %.1f MiB\n", s.PID, s.CPUS, float64(s.RSSBytes)/(1<<20))
		}
	}
	fmt.Fprintf(&b, "client      cpu %.2fs over the window (%.0f%% of a core), %.3fs per 100k deliveries",
		r.ClientCPUS, 100*r.ClientCPUS/r.DurationS, r.ClientCPUPer100k)
	if r.WSFramesPerRead > 0 {
		fmt.Fprintf(&b, ", %.1f WebSocket frames per read", r.WSFramesPerRead)
	}
	if r.WSMessagesPerFrame > 0 {
		fmt.Fprintf(&b, ", %.2f messages per frame", r.WSMessagesPerFrame)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "errors      subscribers %d, publishers %d", r.SubErrors, r.PubErrors)
	if r.FirstErr != "" {
		fmt.Fprintf(&b, "; first: %s", r.FirstErr)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("chatbench: encode result: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
