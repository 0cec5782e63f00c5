package chattest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/chat/api"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

// Member is a pkg/client Client whose every received message is recorded.
type Member struct {
	*client.Client
	// User is the user name the client joined with.
	User string

	mu   sync.Mutex
	msgs []*api.Message
	done chan struct{} // the recorder ended (Messages was closed)
}

// Join dials a client with cfg and records what it gets. Unless cfg sets
// MinBackoff, it uses the tests' backoff (MinBackoff, MaxBackoff). It is
// closed at cleanup.
func Join(tb testing.TB, cfg client.Config) *Member {
	tb.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = MinBackoff, MaxBackoff
	}
	c, err := client.Dial(cfg)
	if err != nil {
		tb.Fatalf("dial %s to %s: %v", cfg.User, cfg.Room, err)
	}
	m := &Member{Client: c, User: cfg.User, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for msg := range c.Messages() {
			m.mu.Lock()
			m.msgs = append(m.msgs, msg)
			m.mu.Unlock()
		}
	}()
	tb.Cleanup(m.Close)
	return m
}

// Close closes the client and waits for the recorder.
func (m *Member) Close() {
	m.Client.Close()
	<-m.done
}

// All returns a copy of everything received, in order.
func (m *Member) All() []*api.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.msgs)
}

// Stored returns the stored chat messages received in epoch (any epoch if
// empty), in order of arrival.
func (m *Member) Stored(epoch string) []*api.Message {
	var out []*api.Message
	for _, msg := range m.All() {
		if msg.GetKind() == api.Kind_KIND_MESSAGE && msg.GetSeq() > 0 && (epoch == "" || msg.GetEpoch() == epoch) {
			out = append(out, msg)
		}
	}
	return out
}

// Count returns how many frames of kind m received.
func (m *Member) Count(kind api.Kind) int {
	n := 0
	for _, msg := range m.All() {
		if msg.GetKind() == kind {
			n++
		}
	}
	return n
}

// Has reports whether m received the stored message epoch:seq.
func (m *Member) Has(epoch string, seq uint64) bool {
	return slices.ContainsFunc(m.Stored(""), func(msg *api.Message) bool {
		return msg.GetEpoch() == epoch && msg.GetSeq() == seq
	})
}

// WaitHas waits up to timeout until every member received the stored
// message of ack.
func WaitHas(tb testing.TB, timeout time.Duration, ack *api.Message, members ...*Member) {
	tb.Helper()
	Eventually(tb, timeout, func() error {
		for _, m := range members {
			if !m.Has(ack.GetEpoch(), ack.GetSeq()) {
				return fmt.Errorf("%s has not received %s:%d (%q)", m.User, ack.GetEpoch(), ack.GetSeq(), ack.GetText())
			}
		}
		return nil
	})
}

// WaitLive waits up to timeout until every member is live, then (up to
// 5 s) until each has recorded its KIND_LIVE.
func WaitLive(tb testing.TB, timeout time.Duration, members ...*Member) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, m := range members {
		if err := m.WaitLive(ctx); err != nil {
			tb.Fatalf("%s is not live: %v", m.User, err)
		}
	}
	// The client is live once it handled KIND_LIVE; the recorder gets
	// the frames a moment later.
	Eventually(tb, 5*time.Second, func() error {
		for _, m := range members {
			if !slices.ContainsFunc(m.All(), func(msg *api.Message) bool { return msg.GetKind() == api.Kind_KIND_LIVE }) {
				return fmt.Errorf("%s has not recorded KIND_LIVE", m.User)
			}
		}
		return nil
	})
}

// OtherEpochs says what CheckDelivery makes of the stored messages a
// member received in other epochs than the log's.
type OtherEpochs int

const (
	// RejectOtherEpochs fails the check on a stored message of another
	// epoch: the room's log never started over.
	RejectOtherEpochs OtherEpochs = iota
	// SkipOtherEpochs leaves them unchecked: the room started a new
	// epoch (Redis lost its log), and the log is the new epoch's.
	SkipOtherEpochs
)

// JoinHome is Join for a client of room whose home node is nodes[home]
// and which fails over to the others in order, over transport tr.
func JoinHome(tb testing.TB, nodes []node.Addrs, home int, tr client.Transport, user, room string) *Member {
	tb.Helper()
	return Join(tb, client.Config{Addrs: Addrs(tr, Rotate(nodes, home)...), Transport: tr, User: user, Room: room})
}

// Except returns members without m: those that must receive m's messages.
func Except(members []*Member, m *Member) []*Member {
	out := make([]*Member, 0, len(members))
	for _, o := range members {
		if o != m {
			out = append(out, o)
		}
	}
	return out
}

// CheckStoredOnce reports, as test errors, every text the room's log holds
// more than once: a retried send must not be stored twice.
func CheckStoredOnce(tb testing.TB, log []*api.Message) {
	tb.Helper()
	seqs := make(map[string]uint64, len(log))
	for _, m := range log {
		if prev, dup := seqs[m.GetText()]; dup {
			tb.Errorf("%q stored twice: seqs %d and %d", m.GetText(), prev, m.GetSeq())
		}
		seqs[m.GetText()] = m.GetSeq()
	}
}

// CheckAcksInLog reports, as test errors, every acknowledgement that does
// not name its message in the room's log (one epoch, oldest first, as
// RoomLog returns it): same epoch, a seq the log holds, and there the same
// user and text.
func CheckAcksInLog(tb testing.TB, acks, log []*api.Message) {
	tb.Helper()
	for _, ack := range acks {
		if len(log) == 0 || ack.GetEpoch() != log[0].GetEpoch() || ack.GetSeq() == 0 || ack.GetSeq() > uint64(len(log)) {
			tb.Errorf("ack %s:%d for %q is not in the log", ack.GetEpoch(), ack.GetSeq(), ack.GetText())
			continue
		}
		if e := log[ack.GetSeq()-1]; e.GetText() != ack.GetText() || e.GetUser() != ack.GetUser() {
			tb.Errorf("ack %d for %s:%q: the log has %s:%q", ack.GetSeq(), ack.GetUser(), ack.GetText(), e.GetUser(), e.GetText())
		}
	}
}

// CheckDelivery checks what m received of the room's log (one epoch, as
// RoomLog returns it, oldest first): each stored message at most once, in
// increasing seq order, as stored (user, text); and every message of the
// log sent by someone else. m's own messages may be missing (a sender
// gets acks, not its messages) or present (a resume replays them). other
// says whether stored messages of other epochs fail the check or are
// skipped.
func CheckDelivery(m *Member, log []*api.Message, other OtherEpochs) error {
	if len(log) == 0 {
		return fmt.Errorf("%s: empty log", m.User)
	}
	epoch := log[0].GetEpoch()
	bySeq := make(map[uint64]*api.Message, len(log))
	for _, e := range log {
		bySeq[e.GetSeq()] = e
	}
	got := make(map[uint64]bool)
	var last uint64
	for _, r := range m.Stored("") {
		if r.GetEpoch() != epoch {
			if other == SkipOtherEpochs {
				continue
			}
			return fmt.Errorf("%s: got %s:%d, of another epoch than the log's %s", m.User, r.GetEpoch(), r.GetSeq(), epoch)
		}
		if r.GetSeq() <= last {
			return fmt.Errorf("%s: got seq %d after seq %d: duplicate or out of order", m.User, r.GetSeq(), last)
		}
		last = r.GetSeq()
		want := bySeq[r.GetSeq()]
		if want == nil {
			return fmt.Errorf("%s: got seq %d (%q), which the log does not hold", m.User, r.GetSeq(), r.GetText())
		}
		if r.GetText() != want.GetText() || r.GetUser() != want.GetUser() {
			return fmt.Errorf("%s: seq %d is %s:%q, the log has %s:%q", m.User, r.GetSeq(), r.GetUser(), r.GetText(), want.GetUser(), want.GetText())
		}
		got[r.GetSeq()] = true
	}
	missing := 0
	var first *api.Message
	for _, e := range log {
		if e.GetUser() != m.User && !got[e.GetSeq()] {
			if missing == 0 {
				first = e
			}
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("%s: missing %d messages of others, the first seq %d (%s:%q)", m.User, missing, first.GetSeq(), first.GetUser(), first.GetText())
	}
	return nil
}

// RoomLog returns the room's whole stored log, oldest first, through the
// History RPC of the node at grpcAddr. The nodes' -history-size must hold
// it all: it fails the test unless the log starts at seq 1 and is
// contiguous.
func RoomLog(tb testing.TB, grpcAddr, room string) []*api.Message {
	tb.Helper()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("history of %s: dial %s: %v", room, grpcAddr, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := api.NewChatClient(cc).History(ctx, &api.HistoryRequest{Room: room})
	if err != nil {
		tb.Fatalf("history of %s: %v", room, err)
	}
	log := res.GetMessages()
	for i, m := range log {
		if m.GetSeq() != uint64(i+1) || m.GetEpoch() != res.GetEpoch() {
			tb.Fatalf("history of %s: entry %d is %s:%d; want the whole log of epoch %s from seq 1", room, i, m.GetEpoch(), m.GetSeq(), res.GetEpoch())
		}
	}
	return log
}
