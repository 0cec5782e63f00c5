package cluster_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
)

// TestFailoverToALaggingReplica: the replication link of the master that
// owns three rooms is black-holed (iptables DROP: the replica lags, no one
// sees an error) while senders publish there; the master is then
// SIGKILLed and the replica takes over with a log that lacks the newest
// acknowledged messages. The
// new master gives their seqs to new messages.
//
// Without -redis-min-replicas that loss is what asynchronous replication
// allows, so the pass condition is: no silent loss. Every receiver (event
// clients, seed clients, clients that resume from a point they saw before
// the failover) gets every acknowledged message the log still holds, the
// reused seqs included; and every event client is told (KIND_TRUNCATED)
// that the room's log went back. Before the fix, the receivers dropped the
// reused seqs as duplicates, silently.
func TestFailoverToALaggingReplica(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 1)
	nodes := startNodes(t, c, "-history-size", "5000")
	victim := c.Masters()[0]
	rooms := roomsOn(t, c, victim, "lag-", 3)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	type roomSet struct {
		name    string
		sender  *chattest.Member
		events  []*chattest.Member
		seeds   []*chattest.Seed
		resumer *chattest.Seed
	}
	var all []*roomSet
	var live []*chattest.Member
	for i, room := range rooms {
		rs := &roomSet{name: room, sender: chattest.JoinHome(t, nodes, i%len(nodes), client.GRPC, "snd-"+room, room)}
		for n := range nodes {
			tr := client.GRPC
			if (n+i)%2 == 1 {
				tr = client.WebSocket
			}
			rs.events = append(rs.events, chattest.JoinHome(t, nodes, n, tr, fmt.Sprintf("ev%d-%s", n, room), room))
			rs.seeds = append(rs.seeds, chattest.JoinSeed(t, ctx, nodes[n].GRPC, fmt.Sprintf("seed%d-%s", n, room), room))
		}
		live = append(live, rs.sender)
		live = append(live, rs.events...)
		all = append(all, rs)
	}
	chattest.WaitLive(t, liveTimeout, live...)

	var senders []*chattest.Sender
	for _, rs := range all {
		senders = append(senders, chattest.StartSender(ctx, rs.sender, rs.name, 0))
	}
	for _, s := range senders {
		s.WaitAcked(t, 50)
	}
	replica := c.ReplicaOf(victim)
	restore := c.CutReplication(victim)
	for _, s := range senders {
		s.WaitAcked(t, len(s.Acked())+100)
	}
	// Where each room's resumer stands: what an event client had got.
	type point struct {
		epoch string
		seq   uint64
	}
	points := make([]point, len(all))
	for i, rs := range all {
		got := rs.events[1].Stored("")
		last := got[len(got)-1]
		points[i] = point{last.GetEpoch(), last.GetSeq()}
	}
	acked := len(senders[0].Acked())
	c.Kill(victim)
	// The link stays cut until the replica took over: the dead master's
	// kernel would otherwise still deliver what its socket held.
	owner := c.WaitMasterFor(rooms[0], victim)
	restore()
	t.Logf("master %s killed with its replication link to %s cut, after %d acks in %s; %s took over", victim, replica, acked, rooms[0], owner)
	for i, rs := range all {
		// A client retries a join the node refused (the cluster may still
		// be settling on its new master).
		chattest.Eventually(t, 30*time.Second, func() error {
			if rs.resumer != nil {
				if live, err := rs.resumer.State(); live {
					return nil
				} else if err == nil {
					return fmt.Errorf("%s is not live yet", rs.resumer.User)
				}
			}
			rs.resumer = chattest.JoinResume(t, ctx, nodes[2].GRPC, "res-"+rs.name, rs.name, points[i].epoch, points[i].seq)
			return fmt.Errorf("%s joined", rs.resumer.User)
		})
	}
	for _, s := range senders {
		s.WaitAcked(t, len(s.Acked())+100)
	}

	var lost, silent, dups, gone int
	for i, rs := range all {
		acks := senders[i].Stop(t)
		last := acks[len(acks)-1]
		chattest.Eventually(t, 30*time.Second, func() error {
			for _, m := range rs.events {
				if !hasText(m.Stored(""), last) {
					return fmt.Errorf("%s has not got %q", m.User, last.GetText())
				}
			}
			for _, s := range append(rs.seeds, rs.resumer) {
				if !hasText(s.Stored(), last) {
					return fmt.Errorf("%s has not got %q", s.User, last.GetText())
				}
			}
			return nil
		})
		log := chattest.RoomLog(t, nodes[0].GRPC, rs.name)
		chattest.CheckStoredOnce(t, log)
		var kept, lostAcks []*api.Message
		for _, a := range acks {
			if hasText(log, a) {
				kept = append(kept, a)
			} else {
				lostAcks = append(lostAcks, a)
			}
		}
		gone += len(lostAcks)
		t.Logf("%s: %d acked, %d lost with the master (%d..%d), log at %s:%d", rs.name, len(acks), len(lostAcks),
			firstSeq(lostAcks), lastSeq(lostAcks), log[0].GetEpoch(), len(log))
		if len(lostAcks) > 0 && log[0].GetEpoch() == lostAcks[0].GetEpoch() {
			t.Errorf("%s: the log lost acknowledged messages but kept its epoch %s", rs.name, log[0].GetEpoch())
		}
		var tallies []chattest.Tally
		for _, m := range rs.events {
			truncated := m.Count(api.Kind_KIND_TRUNCATED) > 0
			tallies = append(tallies, chattest.CountByText(m.User, kept, m.Stored(""), truncated))
			if len(lostAcks) > 0 && !truncated {
				t.Errorf("%s: %d acknowledged messages are gone, and it was not told (no KIND_TRUNCATED)", m.User, len(lostAcks))
			}
		}
		for _, s := range rs.seeds {
			// A seed client cannot be told: it gets the new epoch's log
			// again, duplicates it cannot avoid, and loses nothing.
			tl := chattest.CountByText(s.User, kept, s.Stored(), true)
			tallies = append(tallies, tl)
		}
		r := rs.resumer
		if tl := chattest.CountByText(r.User, afterText(kept, points[i].seq, acks), r.Stored(), r.Truncated() > 0); tl.Lost > 0 {
			t.Errorf("resumer %s: %v", r.User, tl)
		}
		if len(lostAcks) > 0 && r.Truncated() == 0 {
			t.Errorf("resumer %s was not told that the log went back", r.User)
		}
		for _, tl := range tallies {
			lost += tl.Lost
			dups += tl.Dups
			silent += tl.Silent()
			if tl.Lost > 0 || tl.Dups > 0 {
				t.Error(tl)
			}
		}
	}
	if gone == 0 {
		t.Fatal("no acknowledged message was lost with the master: the replica did not lag, and the test proves nothing")
	}
	var regressions float64
	for _, n := range nodes {
		v, err := chattest.Metric(n.HTTP, "chat_hub_log_regressions_total")
		if err != nil {
			t.Fatal(err)
		}
		regressions += v
	}
	t.Logf("%d acknowledged messages lost with the master; receivers: %d lost of what the log kept (%d silently), %d duplicated; %v regressions found",
		gone, lost, silent, dups, regressions)
	if regressions < 1 {
		t.Error("no node reported the regression (chat_hub_log_regressions_total)")
	}
}

// roomsOn returns n room names whose slot the master at addr owns.
func roomsOn(t *testing.T, c *testutil.Cluster, addr, prefix string, n int) []string {
	t.Helper()
	var out []string
	for i := 0; len(out) < n; i++ {
		if i > 100000 {
			t.Fatalf("no %d room names on %s", n, addr)
		}
		room := prefix + strconv.Itoa(i)
		if c.MasterFor(room) == addr {
			out = append(out, room)
		}
	}
	return out
}

func hasText(got []*api.Message, m *api.Message) bool {
	for _, g := range got {
		if g.GetText() == m.GetText() && g.GetUser() == m.GetUser() {
			return true
		}
	}
	return false
}

// afterText returns the messages of kept acked after the ack of seq in the
// epoch of the first ack: what a client that resumed from seq must get.
func afterText(kept []*api.Message, seq uint64, acks []*api.Message) []*api.Message {
	i := 0
	for ; i < len(acks); i++ {
		if acks[i].GetEpoch() == acks[0].GetEpoch() && acks[i].GetSeq() == seq {
			break
		}
	}
	var out []*api.Message
	for _, a := range acks[min(i+1, len(acks)):] {
		if hasText(kept, a) {
			out = append(out, a)
		}
	}
	return out
}

func firstSeq(m []*api.Message) uint64 {
	if len(m) == 0 {
		return 0
	}
	return m[0].GetSeq()
}

func lastSeq(m []*api.Message) uint64 {
	if len(m) == 0 {
		return 0
	}
	return m[len(m)-1].GetSeq()
}
