package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/node"
)

// roomMembers is a room's sender (on node home) and one receiver on each
// node, over gRPC and WebSocket in turn.
type roomMembers struct {
	room      string
	sender    *chattest.Member
	receivers []*chattest.Member
}

func joinRoom(t *testing.T, nodes []node.Addrs, room string, home int) *roomMembers {
	t.Helper()
	rm := &roomMembers{room: room, sender: chattest.JoinHome(t, nodes, home, client.GRPC, "sender-"+room, room)}
	for n := range nodes {
		tr := client.GRPC
		if (n+home)%2 == 1 {
			tr = client.WebSocket
		}
		rm.receivers = append(rm.receivers, chattest.JoinHome(t, nodes, n, tr, fmt.Sprintf("r%d-%s-%s", n, tr, room), room))
	}
	chattest.WaitLive(t, liveTimeout, append([]*chattest.Member{rm.sender}, rm.receivers...)...)
	return rm
}

func channel(room string) string { return history.NewKeys("").Channel(room) }

// checkRoom checks, once the sender is done, that the room's log holds
// exactly the acked messages and that every receiver got each once, in
// order.
func checkRoom(t *testing.T, nodes []node.Addrs, rm *roomMembers, acks []*api.Message) {
	t.Helper()
	if len(acks) == 0 {
		t.Fatalf("%s: no acks", rm.room)
	}
	chattest.WaitHas(t, 30*time.Second, acks[len(acks)-1], rm.receivers...)
	log := chattest.RoomLog(t, nodes[0].GRPC, rm.room)
	checkAcks(t, log, acks)
	for _, r := range rm.receivers {
		if err := chattest.CheckDelivery(r, log, chattest.RejectOtherEpochs); err != nil {
			t.Error(err)
		}
	}
}

// TestRoomsOnDifferentShards: one room on each master, a sender and a
// receiver per node in each; bursts in all rooms at once arrive complete,
// in order, exactly once, on every node; each node holds one sharded
// subscription per room, on the room's master only, and no classic one.
func TestRoomsOnDifferentShards(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	nodes := startNodes(t, c, "-history-size", "500", "-log-size", "500")
	rooms, masters := roomsOnMasters(t, c, "s-")
	var rms []*roomMembers
	for i, room := range rooms {
		rms = append(rms, joinRoom(t, nodes, room, i%len(nodes)))
	}
	for i, room := range rooms {
		chattest.Eventually(t, 10*time.Second, func() error { return checkSubscribers(c, t, channel(room), masters[i], int64(len(nodes))) })
	}

	const n = 150
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var senders []*chattest.Sender
	for _, rm := range rms {
		senders = append(senders, chattest.StartSender(ctx, rm.sender, rm.room, n))
	}
	for i, rm := range rms {
		acks := senders[i].Wait(t)
		checkRoom(t, nodes, rm, acks)
		for _, r := range rm.receivers {
			if got := len(r.Stored("")); got != n {
				t.Errorf("%s got %d stored messages; want %d", r.User, got, n)
			}
		}
	}
	for _, rm := range rms {
		for _, m := range append([]*chattest.Member{rm.sender}, rm.receivers...) {
			if k := m.Reconnects.Load(); k != 0 {
				t.Errorf("%s reconnected %d times; want a steady connection", m.User, k)
			}
		}
	}
	// Messages went by SPUBLISH on each room's master (called by the
	// publish script, counted too), never by a cluster-wide PUBLISH.
	for _, addr := range c.Live() {
		stats := commandStats(t, c, addr)
		t.Logf("%s: publish %d spublish %d evalsha %d", addr, stats["publish"], stats["spublish"], stats["evalsha"])
		if n := stats["publish"]; n != 0 {
			t.Errorf("%s ran PUBLISH %d times; want sharded pub/sub only", addr, n)
		}
		if got := stats["spublish"]; slices.Contains(masters, addr) && got < n {
			t.Errorf("%s ran SPUBLISH %d times; want at least %d", addr, got, n)
		}
	}
}

// commandStats returns the calls of each command on the node at addr
// (INFO commandstats).
func commandStats(t *testing.T, c *testutil.Cluster, addr string) map[string]int64 {
	t.Helper()
	info, err := c.Client(addr).Info(t.Context(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats on %s: %v", addr, err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		out[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.ParseInt(calls, 10, 64)
	}
	return out
}

// TestMasterFailover: a master owning a room dies (SIGKILL) while a sender
// publishes there and another sender publishes in a room of another
// master. Its replica takes over; the nodes move their subscriptions to it
// and fill what they missed from history. Sends that failed meanwhile are
// retried by the client with their client id, stored once; every
// acknowledged message reaches every receiver exactly once, in order.
func TestMasterFailover(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 1)
	nodes := startNodes(t, c, "-history-size", "2000")
	rooms, masters := roomsOnMasters(t, c, "f-")
	victim := masters[0]
	hit, calm := joinRoom(t, nodes, rooms[0], 0), joinRoom(t, nodes, rooms[1], 1)

	const total = 300
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sHit, sCalm := chattest.StartSender(ctx, hit.sender, "hit", total), chattest.StartSender(ctx, calm.sender, "calm", total)
	sHit.WaitAcked(t, total/3)
	c.Kill(victim)
	owner := c.WaitMasterFor(hit.room, victim)
	t.Logf("master %s killed after %d acks; %s took over", victim, len(sHit.Acked()), owner)

	checkRoom(t, nodes, hit, sHit.Wait(t))
	checkRoom(t, nodes, calm, sCalm.Wait(t))
	chattest.Eventually(t, 10*time.Second, func() error { return checkSubscribers(c, t, channel(hit.room), owner, int64(len(nodes))) })
	for _, n := range nodes {
		if v, err := chattest.Metric(n.HTTP, "chat_hub_bus_reconnects_total"); err != nil || v < 1 {
			t.Errorf("node %s: %v bus reconnects (err %v); want the failover reported", n.HTTP, v, err)
		}
		bf, _ := chattest.Metric(n.HTTP, "chat_hub_backfills_total")
		t.Logf("node %s: %v backfills", n.HTTP, bf)
	}
}

// TestSlotMigration: the slot of a room moves to another master (MIGRATE
// of its keys, then SETSLOT NODE) while its sender publishes. Publishes
// that hit the migration (TRYAGAIN) are retried by the client; Redis drops
// the nodes' subscriptions on the old master, they subscribe on the new
// one, and nothing acknowledged is lost or duplicated.
func TestSlotMigration(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 0)
	nodes := startNodes(t, c, "-history-size", "2000")
	rooms, masters := roomsOnMasters(t, c, "m-")
	from, to := masters[0], masters[1]
	moved, stays := joinRoom(t, nodes, rooms[0], 0), joinRoom(t, nodes, rooms[2], 1)
	chattest.Eventually(t, 10*time.Second, func() error { return checkSubscribers(c, t, channel(moved.room), from, int64(len(nodes))) })

	const total = 300
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	sMoved, sStays := chattest.StartSender(ctx, moved.sender, "moved", total), chattest.StartSender(ctx, stays.sender, "stays", total)
	sMoved.WaitAcked(t, total/3)
	c.MigrateSlot(testutil.RoomSlot(moved.room), to)
	t.Logf("slot %d of %s moved from %s to %s after %d acks", testutil.RoomSlot(moved.room), moved.room, from, to, len(sMoved.Acked()))

	checkRoom(t, nodes, moved, sMoved.Wait(t))
	checkRoom(t, nodes, stays, sStays.Wait(t))
	chattest.Eventually(t, 10*time.Second, func() error { return checkSubscribers(c, t, channel(moved.room), to, int64(len(nodes))) })
	for _, n := range nodes {
		if v, err := chattest.Metric(n.HTTP, "chat_hub_bus_reconnects_total"); err != nil || v < 1 {
			t.Errorf("node %s: %v bus reconnects (err %v); want the move reported", n.HTTP, v, err)
		}
		bf, _ := chattest.Metric(n.HTTP, "chat_hub_backfills_total")
		t.Logf("node %s: %v backfills", n.HTTP, bf)
	}
}
