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

// maxDrain bounds -drain: the tool always stops within warm-up + duration +
// drain (+ connection setup).
const maxDrain = 10 * time.Second

// config is the parsed command line.
type config struct {
	wsAddrs      []string
	grpcAddrs    []string
	transport    string // subscribers (and idle connections): ws, grpc or mix
	pubTransport string // publishers: ws or grpc
	subs         int
	pubs         int
	rooms        int
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

With -idle N it instead holds N idle connections open and reports the
servers' memory per connection (from their RSS: give -pids).

IMPORTANT: run the nodes with a high per-user rate limit, or publishers are
throttled and the run measures the limiter:

    node -send-rate 100000 ...

Examples:

    chatbench -ws-addrs 127.0.0.1:8080 -grpc-addrs 127.0.0.1:50051 \
      -subs 1000 -pubs 10 -rooms 10 -rate 100 -duration 30s -pids $(pgrep -d, -x node)
    chatbench -ws-addrs 127.0.0.1:8080 -idle 10000 -transport ws -pids 1234
    chatbench -grpc-addrs 127.0.0.1:50051 -transport grpc -subs 1 -pubs 1 -flood   # one stream's acks/s

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
	var wsAddrs, grpcAddrs, pids string
	fs.StringVar(&wsAddrs, "ws-addrs", "", "comma-separated node HTTP addresses (host:port) for WebSocket connections")
	fs.StringVar(&grpcAddrs, "grpc-addrs", "", "comma-separated node gRPC addresses (host:port)")
	fs.StringVar(&c.transport, "transport", transportWS, "subscriber (and -idle) transport: ws, grpc or mix (alternating)")
	fs.StringVar(&c.pubTransport, "pub-transport", transportGRPC, "publisher transport: ws or grpc")
	fs.IntVar(&c.subs, "subs", 100, "subscriber connections")
	fs.IntVar(&c.pubs, "pubs", 1, "publisher connections")
	fs.IntVar(&c.rooms, "rooms", 1, "rooms; subscribers and publishers are spread evenly over them")
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
	fs.IntVar(&c.idle, "idle", 0, "hold this many idle connections (no traffic) and report server memory per connection")
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
	if c.idle == 0 {
		need(c.pubTransport)
		if c.subs < 1 || c.pubs < 1 || c.rooms < 1 {
			errs = append(errs, errors.New("-subs, -pubs and -rooms must be at least 1"))
		}
		if c.rooms > c.pubs {
			errs = append(errs, fmt.Errorf("-rooms (%d) must not exceed -pubs (%d): every room needs a publisher", c.rooms, c.pubs))
		}
		if c.rooms > c.subs {
			errs = append(errs, fmt.Errorf("-rooms (%d) must not exceed -subs (%d): every room needs a subscriber", c.rooms, c.subs))
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

// subTransport is subscriber i's transport.
func (c *config) subTransport(i int) string {
	if c.transport != transportMix {
		return c.transport
	}
	if (i/c.rooms)%2 == 0 {
		return transportWS
	}
	return transportGRPC
}

// subAddr is subscriber i's node address. Within each room, the subscribers
// of one transport take the addresses in turn, starting at a room-dependent
// offset, so every room spans every node and every node gets its share.
func (c *config) subAddr(i int) string {
	room, j := i%c.rooms, i/c.rooms
	addrs := c.addrs(c.subTransport(i))
	if c.transport == transportMix {
		j /= 2
	}
	return addrs[(j+room)%len(addrs)]
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

// subsInRoom is how many subscribers room r has.
func (c *config) subsInRoom(r int) int {
	n := c.subs / c.rooms
	if r < c.subs%c.rooms {
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
