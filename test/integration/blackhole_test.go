package integration_test

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
)

// TestBlackHoledRedis: every packet to and from Redis is dropped (iptables
// DROP on its port: no reset, no error; the nodes' writes wait in their
// sockets) for 12 s while senders on each of three node processes send
// continuously to four rooms of a small history (-history-size 50). When
// the network comes back, each node must be subscribed again and know its
// rooms' positions before it stores what its senders queued meanwhile;
// else a burst of them passes the history cap before the nodes can read
// it back, and their clients miss it.
//
// Every receiver (event clients and seed clients on each node) must get
// every acknowledged message exactly once.
func TestBlackHoledRedis(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	_, p, _ := net.SplitHostPort(rs.Addr())
	port, _ := strconv.Atoi(p)
	const historySize, rooms = 50, 4
	_, nodes := startProcs(t, bin, rs.Addr(), "bh", 3, "-history-size", strconv.Itoa(historySize), "-log-size", strconv.Itoa(historySize))
	ctx := t.Context()

	type roomSet struct {
		name    string
		senders []*chattest.Sender
		events  []*chattest.Member
		seeds   []*chattest.Seed
	}
	var all []*roomSet
	var live, srcs []*chattest.Member
	for i := range rooms {
		rm := &roomSet{name: newRoom()}
		for n := range nodes {
			tr := client.GRPC
			if (n+i)%2 == 1 {
				tr = client.WebSocket
			}
			// Each client stays on its node: the test is about what the
			// node does, not about clients moving.
			srcs = append(srcs, chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[n]), User: fmt.Sprintf("src%d", n), Room: rm.name}))
			rm.events = append(rm.events, chattest.Join(t, client.Config{Addrs: chattest.Addrs(tr, nodes[n]), Transport: tr, User: fmt.Sprintf("ev%d", n), Room: rm.name}))
			rm.seeds = append(rm.seeds, chattest.JoinSeed(t, ctx, nodes[n].GRPC, fmt.Sprintf("seed%d", n), rm.name))
		}
		live = append(live, srcs[len(srcs)-len(nodes):]...)
		live = append(live, rm.events...)
		all = append(all, rm)
	}
	chattest.WaitLive(t, liveTimeout, live...)
	for i, rm := range all {
		for n := range nodes {
			rm.senders = append(rm.senders, chattest.StartSender(ctx, srcs[i*len(nodes)+n], fmt.Sprintf("m%d-n%d", i, n), 0))
		}
	}
	for _, rm := range all {
		for _, s := range rm.senders {
			s.WaitAcked(t, 20)
		}
	}

	restore := testutil.BlackHole(t, port)
	time.Sleep(12 * time.Second)
	restore()
	t.Log("Redis black-holed for 12 s")
	for _, rm := range all {
		for _, s := range rm.senders {
			chattest.Eventually(t, 60*time.Second, func() error {
				if n := len(s.Acked()); n < 20+historySize {
					return fmt.Errorf("%d acks", n)
				}
				return nil
			})
		}
	}
	var tallies []chattest.Tally
	for i, rm := range all {
		var acks []*api.Message
		for _, s := range rm.senders {
			acks = append(acks, s.Stop(t)...)
		}
		last := acks[0]
		for _, a := range acks {
			if a.GetSeq() > last.GetSeq() {
				last = a
			}
		}
		chattest.WaitHas(t, 30*time.Second, last, rm.events...)
		chattest.Eventually(t, 30*time.Second, func() error {
			for _, s := range rm.seeds {
				if !s.Has(last.GetEpoch(), last.GetSeq()) {
					return fmt.Errorf("%s of room %d has not got %d", s.User, i, last.GetSeq())
				}
			}
			return nil
		})
		for _, m := range rm.events {
			tallies = append(tallies, chattest.CountBySeq(fmt.Sprintf("room %d %s", i, m.User), acks, m.Stored(""), m.Count(api.Kind_KIND_TRUNCATED) > 0))
		}
		for _, s := range rm.seeds {
			tallies = append(tallies, chattest.CountBySeq(fmt.Sprintf("room %d %s", i, s.User), acks, s.Stored(), false))
		}
	}
	var acked, lost, dups, silent int
	for _, tl := range tallies {
		acked += tl.Acked
		lost += tl.Lost
		dups += tl.Dups
		silent += tl.Silent()
		if tl.Lost > 0 || tl.Dups > 0 {
			t.Error(tl)
		}
	}
	t.Logf("%d receivers: %d acknowledged deliveries due, %d lost (%d silently), %d duplicated", len(tallies), acked, lost, silent, dups)
	for _, n := range nodes {
		held, _ := chattest.Metric(n.HTTP, "chat_hub_publishes_held_total")
		tr, _ := chattest.Metric(n.HTTP, "chat_hub_backfills_truncated_total")
		t.Logf("node %s: %v publishes held, %v truncated backfills", n.HTTP, held, tr)
	}
}
