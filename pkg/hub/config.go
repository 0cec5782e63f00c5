package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"example.com/chat/pkg/access"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/presence"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/ratelimit"
)

// Config configures a Hub. Broker and History are required; every other
// field has a default for its zero value.
type Config struct {
	// Broker publishes to rooms and delivers their messages to this node.
	Broker pubsub.Broker
	// History reads rooms' logs for join replay and gap filling.
	History history.Store

	// Access decides who may use private rooms, direct conversations and
	// personal channels, and keeps users' conversation lists (see
	// MayUse). A cluster needs one store shared by its nodes
	// (access.Redis); nil means an access.Memory for this node alone,
	// which refuses to make a room private once History has a log for it.
	Access access.Store

	// Presence records who is in which room across the cluster. Nil means
	// an in-memory store (single node).
	Presence presence.Store
	// PresenceTTL is how long a node's presence records live without a
	// heartbeat: the bound on how long a crashed node's users stay listed.
	// The hub refreshes them every third of it. Zero means 30 s.
	PresenceTTL time.Duration
	// LeaveGrace is how long a user's last session may be gone before the
	// room hears that it left: a client reconnecting (to any node) within it
	// causes no leave/join flicker. Zero means 5 s.
	LeaveGrace time.Duration

	// PresenceEventRate is how many join and leave events per second a
	// room delivers to its watchers on this node, with bursts of twice
	// that; under churn the rest are dropped (the presence API stays
	// exact). Zero means 10.
	PresenceEventRate float64

	// NodeID names this node in origin tags and logs. Empty means a random id.
	NodeID string
	// HistorySize is the most messages replayed on join (the -history-size
	// flag). Zero means 100.
	HistorySize int
	// LogSize is how many entries the store keeps per room (the -log-size
	// flag: the broker's and the store's own setting, which the hub only
	// reads): a resume replays up to that many, so that a client that was
	// away for more than HistorySize messages still resumes without a
	// gap. Zero, or less than HistorySize, means HistorySize.
	LogSize int
	// MaxTextBytes is the largest text a message may carry. Zero means 16 KiB.
	MaxTextBytes int
	// MaxQueueBytes is how many bytes of frames may wait for one slow
	// session before it is closed as a slow consumer. Zero means 1 MiB.
	MaxQueueBytes int
	// PublishTimeout bounds one publish to the broker. Zero means 5 s.
	PublishTimeout time.Duration
	// BusSettle is how long, after the bus reported its subscriptions
	// back (pubsub.Handler.HandleReconnect, following a
	// pubsub.LostHandler.HandleLost) and the rooms' positions were
	// checked, the hub still holds its senders' publishes: the other
	// nodes, which lost the bus at the same time, resubscribe within
	// their reconnect backoff (up to a second), and messages stored
	// before they did would have to be read back from a log capped at
	// HistorySize. Zero means 1.5 s; negative means no wait.
	BusSettle time.Duration
	// MaxInflightSends is how many of one session's publishes may await
	// the bus's answer at once (Session.PublishAsync): a stream's reader
	// hands a message to the bus and reads the next while it is on its
	// way. Past the bound the reader waits for an answer before reading
	// on: back-pressure on the client, not an error. One makes every send
	// wait for the previous one's answer. Zero means 32.
	MaxInflightSends int
	// MaxSubscriptions bounds the rooms one stream receives at once (its
	// first room and those it subscribed to). Zero means 100.
	MaxSubscriptions int
	// PositionCheckInterval is how often each room compares its last
	// delivered id with the log's, to find a lost tail. Zero means 5 s.
	PositionCheckInterval time.Duration
	// SendRate is how many messages per second one user may send, across
	// its sessions, on average. Zero means 20.
	SendRate float64
	// SendBurst is how many messages a user may send at once above the
	// rate. Zero means 2*SendRate.
	SendBurst int
	// SendLimiter applies the send limit, keyed by user name: every chat
	// message and typing event of a session, and every Hub.Publish, asks it
	// first. A limiter shared by the nodes (ratelimit.Redis) makes the
	// limit hold across them; nil means a ratelimit.Memory of SendRate and
	// SendBurst, which limits each node alone. When set, its Limit replaces
	// SendRate and SendBurst (the refusal quotes them). If it is a
	// prometheus.Collector, it is registered on Registerer. An error from
	// it refuses the send with KindUnavailable.
	SendLimiter ratelimit.Limiter
	// MaxSessionsPerUser caps one user's concurrent streams on this node.
	// Zero means 32.
	MaxSessionsPerUser int
	// MaxSessions caps this node's connections: joined streams plus those
	// admitted (Admit) that have not joined yet. Zero means 100000.
	MaxSessions int
	// JoinTimeout is how long an admitted connection may take to send its
	// first message before the edge closes it. Zero means 10 s.
	JoinTimeout time.Duration
	// MaxInvalidFrames is how many malformed or refused frames a connection
	// may send before the edge closes it (CloseInvalidInput): a client that
	// keeps sending garbage must not keep the node busy. Zero means 10.
	MaxInvalidFrames int
	// WriteTimeout bounds one write of a batch to a client, on every edge;
	// a write that takes longer closes the session (CloseWriteError). The
	// WebSocket edge refreshes its deadline once per half of it, so a
	// write there is cut after between half of it and all of it. Zero
	// means 10 s.
	WriteTimeout time.Duration
	// MaxReplayBytes bounds the history one join (or one REST history read)
	// replays, in encoded bytes: older messages past it are left out and an
	// event client is told (KIND_TRUNCATED). Zero means 4 MiB.
	MaxReplayBytes int
	// FlushTimeout bounds an orderly close: a session whose queue is not
	// flushed within it is cut without the rest. Zero means 5 s.
	FlushTimeout time.Duration
	// WriteDelay bounds the time a frame may wait for others to leave
	// with it (adaptive coalescing, see Session.writeLoop): a client that
	// keeps up is written to at once; while writes keep finding frames
	// that arrived during them, the writer waits before the next write,
	// doubling the wait from a 32nd of WriteDelay up to WriteDelay, so
	// the backlog leaves in few system calls. Zero never waits.
	WriteDelay time.Duration
	// WriterIdle is how long a session's writer goroutine waits for more
	// frames after its queue empties before it exits: a busy client keeps
	// its writer, an idle one holds no goroutine (most of an idle
	// connection's memory). Zero means 1 s.
	WriterIdle time.Duration
	// DrainSpread is how long Shutdown takes to tell all sessions to go:
	// they are closed in batches over it, with jitter. Zero closes them all
	// at once.
	DrainSpread time.Duration
	// HeartbeatInterval is how long a stream that asked for events may stay
	// silent before it is sent a KIND_HEARTBEAT, which keeps it open through
	// load balancers with idle timeouts. Zero means 25 s.
	HeartbeatInterval time.Duration
	// Logger receives the hub's logs. Nil discards them.
	Logger *slog.Logger
	// Registerer receives the hub's metrics. Nil registers nothing.
	Registerer prometheus.Registerer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Access == nil {
		hist := c.History
		c.Access = access.NewMemory(func(room string) bool {
			// A log that cannot be read may exist: answer yes, so that a
			// room with messages is never taken private.
			pos, err := hist.Position(context.Background(), room)
			return err != nil || pos.Epoch != ""
		})
	}
	if c.Presence == nil {
		c.Presence = presence.NewMemory(nil)
	}
	if c.PresenceTTL <= 0 {
		c.PresenceTTL = 30 * time.Second
	}
	if c.LeaveGrace <= 0 {
		c.LeaveGrace = 5 * time.Second
	}
	if c.PresenceEventRate <= 0 {
		c.PresenceEventRate = 10
	}
	if c.NodeID == "" {
		c.NodeID = randomID()
	}
	if c.HistorySize <= 0 {
		c.HistorySize = 100
	}
	c.LogSize = max(c.LogSize, c.HistorySize)
	if c.MaxTextBytes <= 0 {
		c.MaxTextBytes = 16 << 10
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = 1 << 20
	}
	if c.BusSettle == 0 {
		c.BusSettle = 1500 * time.Millisecond
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.MaxInflightSends <= 0 {
		c.MaxInflightSends = 32
	}
	if c.MaxSubscriptions <= 0 {
		c.MaxSubscriptions = 100
	}
	if c.PositionCheckInterval <= 0 {
		c.PositionCheckInterval = 5 * time.Second
	}
	if c.SendRate <= 0 {
		c.SendRate = 20
	}
	if c.SendBurst <= 0 {
		c.SendBurst = int(2 * c.SendRate)
	}
	if c.MaxSessionsPerUser <= 0 {
		c.MaxSessionsPerUser = 32
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 100000
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = 10 * time.Second
	}
	if c.MaxInvalidFrames <= 0 {
		c.MaxInvalidFrames = 10
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxReplayBytes <= 0 {
		c.MaxReplayBytes = 4 << 20
	}
	if c.FlushTimeout <= 0 {
		c.FlushTimeout = 5 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 25 * time.Second
	}
	if c.WriterIdle <= 0 {
		c.WriterIdle = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// setLimiter builds the default SendLimiter, or takes SendRate and
// SendBurst from a given one, and registers its metrics; after
// setDefaults.
func (c *Config) setLimiter() error {
	if c.SendLimiter == nil {
		l, err := ratelimit.NewMemory(ratelimit.MemoryConfig{Limit: ratelimit.Limit{Rate: c.SendRate, Burst: c.SendBurst}})
		if err != nil {
			return fmt.Errorf("hub: send limit: %w", err)
		}
		c.SendLimiter = l
	}
	lim := c.SendLimiter.Limit()
	c.SendRate, c.SendBurst = lim.Rate, lim.Burst
	if col, ok := c.SendLimiter.(prometheus.Collector); ok && c.Registerer != nil {
		// A limiter shared by two hubs on one registry is registered once.
		if err := c.Registerer.Register(col); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return fmt.Errorf("hub: register send limiter metrics: %w", err)
		}
	}
	return nil
}
