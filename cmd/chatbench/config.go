package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// Transport names accepted by -transport and -pub-transport.
const (
	transportWS   = "ws"
	transportGRPC = "grpc"
	transportMix  = "mix"
)

// WebSocket subscriber clients accepted by -ws-client.
const (
	wsClientFast = "fast" // gobwas/ws with the zero-allocation frame reader, JSON scanned not decoded
	wsClientStd  = "std"  // coder/websocket, every message fully decoded, as an app does
)

// WebSocket framings accepted by -ws-framing: what the subscribers ask
// the node for in Sec-WebSocket-Protocol.
const (
	framingJSON   = "json"   // one JSON message per text frame (chat.v1)
	framingNDJSON = "ndjson" // chat.v1.ndjson: newline-separated JSON messages per text frame
	framingProto  = "proto"  // chat.v1.proto: varint-length-prefixed protobuf messages per binary frame
)

// maxDrain bounds -drain: the tool always stops within warm-up + duration +
// drain (+ connection setup).
const maxDrain = 10 * time.Second

// config is the parsed command line.
type config struct {
	wsAddrs      []string
	grpcAddrs    []string
	transport    string // subscribers (and idle connections): ws, grpc or mix
	pubTransport string // publishers: ws or grpc
	wsClient     string // WebSocket subscribers' client: fast or std
	wsFraming    string // WebSocket subscribers' framing: json, ndjson or proto
	subs         int
	pubs         int
	rooms        int
	roomsPerConn int     // rooms each subscriber (and idle) connection receives on its one stream
	rate         float64 // messages per second per publisher
	duration     time.Duration
	warmup       time.Duration
	drain        time.Duration
	size         int
	batch        int
	flood        bool // publishers send back to back, not on a schedule
	maxUnacked   int  // with flood: sends per publisher waiting for an answer at most (0: no bound)
	jsonOut      bool
	pids         []int
	idle         int
	pprofAddrs   []string // the nodes' -pprof-addr: -idle reads their live heap
	token        string
	roomPrefix   string
	label        string
	streamsPer   int // gRPC subscriber streams per ClientConn
	connTimeout  time.Duration
	dialParallel int
	quiet        bool
	cpuProfile   string
}

const usageHead = `Usage: chatbench [flags]

chatbench measures a chat cluster: it opens -subs subscriber and -pubs
publisher connections (WebSocket, gRPC or a mix), spread round-robin over the
node addresses given, in -rooms rooms. Each publisher sends -rate msg/s on a
fixed schedule for -duration after -warmup; latency is measured from each
message's intended send time (so a stalled publisher shows as latency, not as
fewer samples). It prints one progress line per second on stderr and a summary
on stdout (-json for machines), then stops by itself.

With -rooms-per-conn K, each subscriber connection receives K of the
-rooms rooms on its one stream (Join.rooms; connection i takes rooms
(i*K + j) mod -rooms for j < K, so every room gets the same number of
subscribers, give or take one), and a message in room r is expected once
by every connection in r.

With -idle N it instead holds N idle connections open (each in
-rooms-per-conn rooms) and reports the servers' memory per connection and
per room subscription (from their RSS: give -pids; the live heap after a
GC too with -pprof-addrs).

IMPORTANT: run the nodes with a high per-user rate limit, or publishers are
throttled and the run measures the limiter:

    node -send-rate 100000 ...

Examples:

    chatbench -ws-addrs 127.0.0.1:8080 -grpc-addrs 127.0.0.1:50051 \
      -subs 1000 -pubs 10 -rooms 10 -rate 100 -duration 30s -pids $(pgrep -d, -x node)
    chatbench -ws-addrs 127.0.0.1:8080 -grpc-addrs 127.0.0.1:50051 \
      -subs 1000 -rooms 100 -rooms-per-conn 20 -pubs 100 -rate 5 -pids 1234   # 100k deliveries/s
    chatbench -ws-addrs 127.0.0.1:8080 -idle 10000 -transport ws -pids 1234
    chatbench -ws-addrs 127.0.0.1:8080 -idle 100 -rooms 100 -rooms-per-conn 100 -pids 1234 \
      -pprof-addrs 127.0.0.1:6060   # node -pprof-addr 127.0.0.1:6060
    chatbench -grpc-addrs 127.0.0.1:50051 -transport grpc -subs 1 -pubs 1 -flood   # one stream's acks/s
    chatbench -ws-addrs 127.0.0.1:8080 -grpc-addrs 127.0.0.1:50051 -ws-client std -ws-framing ndjson \
      -subs 1000 -pubs 10 -rooms 10 -rate 100 -pids 1234   # what a standard client pays, packed frames

Flags:
`

// parseConfig parses args (without the program name). Usage goes to out.
func parseConfig(args []string, out io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("chatbench", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usageHead)
		fs.PrintDefaults()
	}
	var wsAddrs, grpcAddrs, pids, pprofAddrs string
	fs.StringVar(&wsAddrs, "ws-addrs", "", "comma-separated node HTTP addresses (host:port) for WebSocket connections")
	fs.StringVar(&grpcAddrs, "grpc-addrs", "", "comma-separated node gRPC addresses (host:port)")
	fs.StringVar(&c.transport, "transport", transportWS, "subscriber (and -idle) transport: ws, grpc or mix (alternating)")
	fs.StringVar(&c.pubTransport, "pub-transport", transportGRPC, "publisher transport: ws or grpc")
	fs.StringVar(&c.wsClient, "ws-client", wsClientFast, "WebSocket subscriber client: fast (gobwas/ws, a zero-allocation frame reader that scans the JSON for its fields, to load the nodes with the least client CPU) or std (github.com/coder/websocket reading frame by frame, every message fully decoded into an api.Message with protojson or proto, as a typical app does: what a standard client pays, see client_cpu_s_per_100k)")
	fs.StringVar(&c.wsFraming, "ws-framing", framingJSON, "WebSocket subscriber framing, asked for in Sec-WebSocket-Protocol and checked against the node's choice: json (one JSON message per text frame; std offers chat.v1, fast offers nothing, as a seed client), ndjson (chat.v1.ndjson: text frames of newline-separated JSON messages) or proto (chat.v1.proto: binary frames of varint-length-prefixed protobuf messages; the fast client decodes those with proto.Unmarshal, there is nothing to scan)")
	fs.IntVar(&c.subs, "subs", 100, "subscriber connections")
	fs.IntVar(&c.pubs, "pubs", 1, "publisher connections")
	fs.IntVar(&c.rooms, "rooms", 1, "rooms; subscribers and publishers are spread evenly over them")
	fs.IntVar(&c.roomsPerConn, "rooms-per-conn", 1, "rooms each subscriber (or -idle) connection receives on its one stream, at most -rooms: connection i takes rooms (i*K + j) mod -rooms, j < K; above 1 the stream joins with events (Join.rooms needs them), so it also gets presence events, counted as other frames")
	fs.Float64Var(&c.rate, "rate", 10, "messages per second sent by each publisher")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured window (for -idle: how long to hold the connections)")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "traffic before the measured window, not counted (for -idle: settle time before measuring)")
	fs.DurationVar(&c.drain, "drain", 5*time.Second, "after the window, how long to wait for outstanding deliveries (at most 10s)")
	fs.IntVar(&c.size, "size", 100, "message text size in bytes (the header is padded with [a-z] up to it)")
	fs.IntVar(&c.batch, "batch", 1, "messages a publisher sends back to back per tick; ticks come every batch/rate seconds and the batch shares the tick's intended send time (use for high per-publisher rates)")
	fs.BoolVar(&c.flood, "flood", false, "publishers ignore -rate and -batch and send back to back, as fast as their stream takes, like a client that does not wait for acks; the summary's acks/s is what one stream gets (latency then includes the client's own queueing)")
	fs.IntVar(&c.maxUnacked, "max-unacked", 0, "with -flood: at most this many sends per publisher waiting for their answer (1 waits for each ack before the next send); 0: no bound but the transport's flow control")
	fs.BoolVar(&c.jsonOut, "json", false, "print the summary as one JSON object on stdout")
	fs.StringVar(&pids, "pids", "", "comma-separated server pids: report their CPU per 100k deliveries and RSS (from /proc)")
	fs.IntVar(&c.idle, "idle", 0, "hold this many idle connections (no traffic) and report server memory per connection and per room subscription")
	fs.StringVar(&pprofAddrs, "pprof-addrs", "", "comma-separated node pprof addresses (node -pprof-addr): -idle also reports their live heap and stacks after a GC, before and after")
	fs.StringVar(&c.token, "token", "", "JWT sent on every connection (optional; all connections then share its user, so raise the node's -max-streams-per-user)")
	fs.StringVar(&c.roomPrefix, "room-prefix", "bench", "room names are this prefix plus an index")
	fs.StringVar(&c.label, "label", "", "series name stored in the JSON result (benchplot groups by it)")
	fs.IntVar(&c.streamsPer, "grpc-streams-per-conn", 1, "gRPC subscriber streams sharing one connection (1 = one TCP connection per subscriber, like real clients; more is cheaper for the tool)")
	fs.DurationVar(&c.connTimeout, "connect-timeout", 60*time.Second, "bound on opening all connections")
	fs.IntVar(&c.dialParallel, "dial-parallel", 100, "connections opened concurrently")
	fs.BoolVar(&c.quiet, "q", false, "no progress lines on stderr")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the tool's own CPU profile to this file (to find client-side bottlenecks)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("chatbench: unexpected argument %q", fs.Arg(0))
	}
	c.wsAddrs = splitList(wsAddrs)
	c.grpcAddrs = splitList(grpcAddrs)
	c.pprofAddrs = splitList(pprofAddrs)
	for _, s := range splitList(pids) {
		p, err := strconv.Atoi(s)
		if err != nil || p <= 0 {
			return c, fmt.Errorf("chatbench: -pids: bad pid %q", s)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/stat", p)); err != nil {
			return c, fmt.Errorf("chatbench: -pids: %w", err)
		}
		c.pids = append(c.pids, p)
	}
	return c, c.validate()
}

func (c *config) validate() error {
	switch c.transport {
	case transportWS, transportGRPC, transportMix:
	default:
		return fmt.Errorf("chatbench: -transport must be ws, grpc or mix, not %q", c.transport)
	}
	switch c.pubTransport {
	case transportWS, transportGRPC:
	default:
		return fmt.Errorf("chatbench: -pub-transport must be ws or grpc, not %q", c.pubTransport)
	}
	switch c.wsClient {
	case wsClientFast, wsClientStd:
	default:
		return fmt.Errorf("chatbench: -ws-client must be fast or std, not %q", c.wsClient)
	}
	switch c.wsFraming {
	case framingJSON, framingNDJSON, framingProto:
	default:
		return fmt.Errorf("chatbench: -ws-framing must be json, ndjson or proto, not %q", c.wsFraming)
	}
	var errs []error
	need := func(t string) {
		if (t == transportWS || t == transportMix) && len(c.wsAddrs) == 0 {
			errs = append(errs, errors.New("-ws-addrs is required for WebSocket connections"))
		}
		if (t == transportGRPC || t == transportMix) && len(c.grpcAddrs) == 0 {
			errs = append(errs, errors.New("-grpc-addrs is required for gRPC connections"))
		}
	}
	need(c.transport)
	if c.idle < 0 {
		errs = append(errs, errors.New("-idle must not be negative"))
	}
	if c.rooms < 1 || c.roomsPerConn < 1 || c.roomsPerConn > c.rooms {
		errs = append(errs, fmt.Errorf("-rooms must be at least 1 and -rooms-per-conn in [1, -rooms], not %d of %d", c.roomsPerConn, c.rooms))
	}
	if c.idle == 0 {
		need(c.pubTransport)
		if c.subs < 1 || c.pubs < 1 {
			errs = append(errs, errors.New("-subs and -pubs must be at least 1"))
		}
		if c.rooms > c.pubs {
			errs = append(errs, fmt.Errorf("-rooms (%d) must not exceed -pubs (%d): every room needs a publisher", c.rooms, c.pubs))
		}
		if c.subs >= 1 && c.roomsPerConn >= 1 && c.rooms > c.subs*c.roomsPerConn {
			errs = append(errs, fmt.Errorf("-rooms (%d) must not exceed -subs × -rooms-per-conn (%d): every room needs a subscriber", c.rooms, c.subs*c.roomsPerConn))
		}
		if c.rate <= 0 || c.rate > 1e6 {
			errs = append(errs, errors.New("-rate must be in (0, 1e6]"))
		}
		if c.maxUnacked < 0 || c.maxUnacked > 0 && !c.flood {
			errs = append(errs, errors.New("-max-unacked must not be negative, and needs -flood"))
		}
		if c.batch < 1 {
			errs = append(errs, errors.New("-batch must be at least 1"))
		}
		if c.size < 0 {
			errs = append(errs, errors.New("-size must not be negative"))
		}
	}
	if c.duration <= 0 || c.warmup < 0 {
		errs = append(errs, errors.New("-duration must be positive and -warmup not negative"))
	}
	if c.drain < 0 || c.drain > maxDrain {
		errs = append(errs, fmt.Errorf("-drain must be in [0, %s]", maxDrain))
	}
	if c.streamsPer < 1 || c.dialParallel < 1 || c.connTimeout <= 0 {
		errs = append(errs, errors.New("-grpc-streams-per-conn, -dial-parallel and -connect-timeout must be positive"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("chatbench: %w", errors.Join(errs...))
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Room assignment. Subscriber connection i takes the K = -rooms-per-conn
// consecutive positions i*K .. i*K+K-1 of an endless sequence that runs
// through the R = -rooms rooms again and again (position q is room q mod
// R), so its rooms are distinct (K <= R), every room has as many
// subscriptions as any other give or take one, and every room has one as
// soon as subs*K >= R. With K = 1 this is room i mod R, as before. The
// connection's lap, (i*K) div R, is how many times the sequence went round
// before it: within a lap the connections share no room.

// subRoom is subscriber i's j-th room (j < roomsPerConn); j = 0 is the
// room it joins with, the others are its Join.rooms.
func (c *config) subRoom(i, j int) int { return (c.firstRoom(i) + j) % c.rooms }

// firstRoom is subscriber i's first room.
func (c *config) firstRoom(i int) int { return i * c.roomsPerConn % c.rooms }

// lap is subscriber i's lap (see above).
func (c *config) lap(i int) int { return i * c.roomsPerConn / c.rooms }

// subRoomIndex is which of subscriber i's rooms room r is (its j), or -1
// when i is not in r.
func (c *config) subRoomIndex(i, r int) int {
	if r < 0 || r >= c.rooms {
		return -1
	}
	j := (r - c.firstRoom(i) + c.rooms) % c.rooms
	if j >= c.roomsPerConn {
		return -1
	}
	return j
}

// subTransport is subscriber i's transport: with mix, the laps alternate.
func (c *config) subTransport(i int) string {
	if c.transport != transportMix {
		return c.transport
	}
	if c.lap(i)%2 == 0 {
		return transportWS
	}
	return transportGRPC
}

// subAddr is subscriber i's node address. The laps of one transport take
// the addresses in turn, starting at an offset that depends on the
// connection's first room, so every room spans every node (given enough
// laps) and every node gets its share.
func (c *config) subAddr(i int) string {
	lap := c.lap(i)
	addrs := c.addrs(c.subTransport(i))
	if c.transport == transportMix {
		lap /= 2
	}
	return addrs[(lap+c.firstRoom(i))%len(addrs)]
}

// pubAddr is publisher p's node address, spread the same way.
func (c *config) pubAddr(p int) string {
	room, j := p%c.rooms, p/c.rooms
	addrs := c.addrs(c.pubTransport)
	return addrs[(j+room)%len(addrs)]
}

func (c *config) addrs(transport string) []string {
	if transport == transportWS {
		return c.wsAddrs
	}
	return c.grpcAddrs
}

// room is the name of room r.
func (c *config) room(r int) string { return c.roomPrefix + strconv.Itoa(r) }

// subsInRoom is how many subscriber connections room r has: the
// positions below subs*K that fall on r (see subRoom).
func (c *config) subsInRoom(r int) int {
	total := c.subs * c.roomsPerConn
	n := total / c.rooms
	if r < total%c.rooms {
		n++
	}
	return n
}

// pubsInRoom is how many publishers room r has.
func (c *config) pubsInRoom(r int) int {
	n := c.pubs / c.rooms
	if r < c.pubs%c.rooms {
		n++
	}
	return n
}
