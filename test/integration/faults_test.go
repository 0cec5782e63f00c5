package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/history"
	"example.com/chat/pkg/node"
)

// faultCluster is two in-process nodes, a sender on the first and
// receivers on both over both transports.
func faultCluster(t *testing.T, rs *testutil.RedisServer) (nodes []node.Addrs, room string, src *chattest.Member, receivers []*chattest.Member) {
	nodes = startNodes(t, rs, 2, "-history-size", "2000")
	room = newRoom()
	src = chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes...), User: "src", Room: room})
	receivers = []*chattest.Member{
		chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes...), Transport: client.WebSocket, User: "r0-ws", Room: room}),
		chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, chattest.Rotate(nodes, 1)...), User: "r1-grpc", Room: room}),
		chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, chattest.Rotate(nodes, 1)...), Transport: client.WebSocket, User: "r1-ws", Room: room}),
	}
	chattest.WaitLive(t, liveTimeout, append([]*chattest.Member{src}, receivers...)...)
	return nodes, room, src, receivers
}

// TestPubSubConnectionsKilled: Redis drops every pub/sub connection
// (CLIENT KILL TYPE pubsub) several times while a sender publishes. Each
// node has exactly one, notices, resubscribes and fills what it missed
// from history, so clients that stay connected get every message exactly
// once, in order.
func TestPubSubConnectionsKilled(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	rs.RequireOwn()
	nodes, room, src, receivers := faultCluster(t, rs)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()

	// Joins and leaves of other rooms race the kills: a subscription
	// confirmed on a connection about to die, an unsubscribe written to a
	// dead one. Every join must complete; no subscription may outlive its
	// room's last member.
	churnStop, churnDone := make(chan struct{}), make(chan struct{})
	var churnRooms []string
	go func() {
		defer close(churnDone)
		for i := 0; ; i++ {
			select {
			case <-churnStop:
				return
			default:
			}
			tr := []client.Transport{client.GRPC, client.WebSocket}[i%2]
			r := newRoom()
			churnRooms = append(churnRooms, r)
			c, err := client.Dial(client.Config{Addrs: chattest.Addrs(tr, nodes[i%len(nodes)]), Transport: tr, User: "churn", Room: r})
			if err != nil {
				t.Error(err)
				return
			}
			go func() {
				for range c.Messages() {
				}
			}()
			jctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			err = c.WaitLive(jctx)
			cancel()
			c.Close()
			if err != nil {
				t.Errorf("churn join %d (%s, node %d) did not go live: %v", i, tr, i%len(nodes), err)
				return
			}
		}
	}()

	// The sender sends until every kill is over, so that each outage
	// (at least the broker's first backoff, 50 ms) surely costs deliveries;
	// with a fixed count a fast sender could finish before the first kill.
	const kills = 4
	s := chattest.StartSender(ctx, src, "k", 0)
	for i := 1; i <= kills; i++ {
		s.WaitAcked(t, len(s.Acked())+20)
		killed, err := rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result()
		if err != nil {
			t.Fatal(err)
		}
		if killed != int64(len(nodes)) {
			t.Fatalf("kill %d: %d pub/sub connections killed; want one per node (%d)", i, killed, len(nodes))
		}
		// Each node notices and restores its subscriptions before the
		// next kill.
		for _, n := range nodes {
			chattest.Eventually(t, 15*time.Second, func() error {
				v, err := chattest.Metric(n.HTTP, "chat_hub_bus_reconnects_total")
				if err == nil && v < float64(i) {
					err = fmt.Errorf("node %s: %v bus reconnects after %d kills", n.HTTP, v, i)
				}
				return err
			})
		}
	}
	acks := s.Stop(t)
	close(churnStop)
	<-churnDone
	channels := make([]string, len(churnRooms))
	for i, r := range churnRooms {
		channels[i] = history.NewKeys("").Channel(r)
	}
	chattest.Eventually(t, 10*time.Second, func() error {
		subs, err := rdb.PubSubNumSub(ctx, channels...).Result()
		for ch, n := range subs {
			if n != 0 && err == nil {
				err = fmt.Errorf("%s still has %d subscribers after its last member left", ch, n)
			}
		}
		return err
	})
	t.Logf("%d joins raced the kills", len(churnRooms))
	for _, n := range nodes {
		// Each outage lasts at least the broker's first backoff (50 ms),
		// in which the sender publishes: deliveries were lost, and filled
		// from history. Without that this test would prove nothing.
		if v, err := chattest.Metric(n.HTTP, "chat_hub_backfills_total"); err != nil || v < 1 {
			t.Errorf("node %s: %v backfills (err %v); want the kills to have cost deliveries", n.HTTP, v, err)
		}
	}
	chattest.WaitHas(t, 20*time.Second, acks[len(acks)-1], receivers...)

	// A lost tail: one last message, published while the subscriptions
	// are down (the broker waits 50 ms before it redials), and nothing
	// after it to reveal the gap. The reconnect's position check finds it,
	// well before the periodic one (5 s) would.
	if _, err := rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil {
		t.Fatal(err)
	}
	tail, err := src.Send(ctx, fmt.Sprintf("k-%04d", len(acks)+1))
	if err != nil {
		t.Fatal(err)
	}
	chattest.WaitHas(t, 3*time.Second, tail, receivers...)
	acks = append(acks, tail)

	log := chattest.RoomLog(t, nodes[0].GRPC, room)
	if len(log) != len(acks) {
		t.Fatalf("log holds %d messages; want %d", len(log), len(acks))
	}
	for i, ack := range acks {
		if ack.GetSeq() != uint64(i+1) || log[i].GetText() != fmt.Sprintf("k-%04d", i+1) {
			t.Fatalf("ack %d is seq %d, log has %q; want seq %d", i+1, ack.GetSeq(), log[i].GetText(), i+1)
		}
	}
	for _, r := range receivers {
		if err := chattest.CheckDelivery(r, log, chattest.SkipOtherEpochs); err != nil {
			t.Error(err)
		}
		if n := r.Reconnects.Load(); n != 0 {
			t.Errorf("%s reconnected %d times; the test needs it to stay connected", r.User, n)
		}
		if n := r.Count(api.Kind_KIND_TRUNCATED); n != 0 {
			t.Errorf("%s was told %d times that messages were lost; the log held them", r.User, n)
		}
	}
}

// TestRedisRestart: Redis dies (no persistence) while a sender sends.
// While it is down the nodes say not ready and answer sends with
// Unavailable (gRPC code 14), keeping the streams open; the pending Send
// is retried until it succeeds; when Redis is back, the cluster recovers
// without a node restart; the room starts a new epoch, event clients are
// told (KIND_TRUNCATED), and no acked message of the new epoch is lost or
// repeated for connected clients.
func TestRedisRestart(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	rs.RequireOwn()
	nodes, room, src, receivers := faultCluster(t, rs)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// Raw event streams that will send during the outage.
	var raws []raw
	for i, tr := range []client.Transport{client.GRPC, client.WebSocket} {
		r := dialRaw(t, ctx, tr, chattest.Addrs(tr, nodes[i])[0])
		if err := r.Send(&api.Message{User: "raw-" + string(tr), Room: room, Join: &api.Join{Events: true, NoHistory: true}}); err != nil {
			t.Fatal(err)
		}
		recvReplay(t, r)
		raws = append(raws, r)
	}

	s := chattest.StartSender(ctx, src, "t", 0)
	before := s.WaitAcked(t, 20)
	old := before[len(before)-1]
	// Every receiver has the old epoch up to here: what follows may die
	// with Redis.
	chattest.WaitHas(t, 10*time.Second, old, receivers...)

	rs.Kill()
	ready := func(want int) {
		t.Helper()
		for _, n := range nodes {
			chattest.Eventually(t, 15*time.Second, func() error {
				code, body, err := chattest.HTTPGet("http://" + n.HTTP + "/readyz")
				if err == nil && code != want {
					err = fmt.Errorf("node %s: /readyz %d %q; want %d", n.HTTP, code, body, want)
				}
				return err
			})
		}
	}
	ready(http.StatusServiceUnavailable)
	for i, r := range raws {
		id := fmt.Sprintf("outage-%d", i)
		if err := r.Send(&api.Message{Text: "during the outage", ClientId: id}); err != nil {
			t.Fatal(err)
		}
		// Skipping the live messages from before the outage.
		m := recvNext(t, r, api.Kind_KIND_ERROR, api.Kind_KIND_MESSAGE)
		if m.GetClientId() != id || m.GetError().GetCode() != 14 {
			t.Errorf("raw stream %d: error %v for client id %q; want code 14 (Unavailable) for %q", i, m.GetError(), m.GetClientId(), id)
		}
	}

	rs.Restart()
	ready(http.StatusOK)
	// The sender's pending send went through: acks of the new epoch come.
	var after []*api.Message
	chattest.Eventually(t, 30*time.Second, func() error {
		after = after[:0]
		for _, a := range s.Acked() {
			if a.GetEpoch() != old.GetEpoch() {
				after = append(after, a)
			}
		}
		if len(after) < 20 {
			return fmt.Errorf("%d acks in a new epoch", len(after))
		}
		return nil
	})
	acks := s.Stop(t)
	epoch := after[0].GetEpoch()
	fence, err := src.Send(ctx, "fence")
	if err != nil {
		t.Fatal(err)
	}
	if fence.GetEpoch() != epoch {
		t.Fatalf("fence stored in epoch %s; want %s", fence.GetEpoch(), epoch)
	}
	chattest.WaitHas(t, 20*time.Second, fence, receivers...)

	log := chattest.RoomLog(t, nodes[1].GRPC, room)
	if log[0].GetEpoch() != epoch {
		t.Fatalf("log epoch %s; want %s", log[0].GetEpoch(), epoch)
	}
	// Joins work again: a late joiner replays the new epoch's log, and a
	// room new to both nodes (a fresh subscription on each) carries
	// messages between them.
	late := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes[1]), Transport: client.WebSocket, User: "late", Room: room})
	chattest.WaitLive(t, liveTimeout, late)
	if got := late.Stored(""); !equalSeqs(seqs(got), seqs(log)) || got[len(got)-1].GetText() != "fence" {
		t.Errorf("late joiner replayed %v; want the new epoch's log %v", seqs(got), seqs(log))
	}
	room2 := newRoom()
	from := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[0]), User: "from", Room: room2})
	to := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes[1]), Transport: client.WebSocket, User: "to", Room: room2})
	chattest.WaitLive(t, liveTimeout, from, to)
	hello, err := from.Send(ctx, "hello after the restart")
	if err != nil {
		t.Fatal(err)
	}
	chattest.WaitHas(t, 10*time.Second, hello, to)
	chattest.CheckStoredOnce(t, log) // the new epoch's log
	// The sender's view: acks of the old epoch are 1..k; those of the new
	// one are in its log under their seq.
	var oldAcks int
	for _, a := range acks {
		switch {
		case a.GetEpoch() == epoch:
			if e := log[a.GetSeq()-1]; e.GetText() != a.GetText() || e.GetUser() != src.User {
				t.Errorf("ack %d:%q: the log has %s:%q", a.GetSeq(), a.GetText(), e.GetUser(), e.GetText())
			}
		case a.GetEpoch() == old.GetEpoch() && a.GetSeq() == uint64(oldAcks+1):
			oldAcks++
		default:
			t.Errorf("unexpected ack %s:%d %q", a.GetEpoch(), a.GetSeq(), a.GetText())
		}
	}
	for _, r := range receivers {
		// The new epoch: everything, once, in order.
		if err := chattest.CheckDelivery(r, log, chattest.SkipOtherEpochs); err != nil {
			t.Error(err)
		}
		// The old epoch: 1..k without gap or repeat, k at least what
		// every receiver had before Redis died. (It may hold one message
		// more than was acked: a send whose reply died with Redis, and
		// which the sender retried in the new epoch.)
		got := r.Stored(old.GetEpoch())
		if len(got) < int(old.GetSeq()) || len(got) > oldAcks+1 || !equalSeqs(seqs(got), seqRange(1, uint64(len(got)))) {
			t.Errorf("%s: old epoch seqs %v; want 1..k, %d <= k <= %d", r.User, seqs(got), old.GetSeq(), oldAcks+1)
		}
		for _, m := range got {
			if want := fmt.Sprintf("t-%04d", m.GetSeq()); m.GetText() != want {
				t.Errorf("%s: old epoch seq %d is %q; want %q", r.User, m.GetSeq(), m.GetText(), want)
			}
		}
		// Told about the new epoch before its first message.
		var truncatedAt, firstNew = -1, -1
		for i, m := range r.All() {
			switch {
			case m.GetKind() == api.Kind_KIND_TRUNCATED && m.GetEpoch() == epoch && truncatedAt < 0:
				truncatedAt = i
			case m.GetKind() == api.Kind_KIND_MESSAGE && m.GetEpoch() == epoch && firstNew < 0:
				firstNew = i
			}
		}
		if truncatedAt < 0 || truncatedAt > firstNew {
			t.Errorf("%s: KIND_TRUNCATED for epoch %s at %d, first message of it at %d; want the event first", r.User, epoch, truncatedAt, firstNew)
		}
		if n := r.Reconnects.Load(); n != 0 {
			t.Errorf("%s reconnected %d times; the nodes stayed up, so should its stream", r.User, n)
		}
	}
}

// TestSlowConsumer: clients that stop reading (one over gRPC, one over
// WebSocket) are cut as slow consumers once their queue passes
// -max-queue-bytes (1 MiB), with the reason on the wire and in the metric;
// the sender and a client that reads go on, missing nothing.
func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	nodes := startNodes(t, rs, 2, "-history-size", "10", "-log-size", "10")
	room := newRoom()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	src := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[0]), User: "src", Room: room})
	fast := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes[1]), Transport: client.WebSocket, User: "fast", Room: room})
	chattest.WaitLive(t, liveTimeout, src, fast)
	slow := map[client.Transport]raw{}
	for _, tr := range []client.Transport{client.GRPC, client.WebSocket} {
		r := dialRaw(t, ctx, tr, chattest.Addrs(tr, nodes[1])[0])
		if err := r.Send(&api.Message{User: "slow-" + string(tr), Room: room, Join: &api.Join{Events: true}}); err != nil {
			t.Fatal(err)
		}
		recvReplay(t, r)
		slow[tr] = r // and never read again, for now
	}

	// Kernel buffers and gRPC flow-control windows take a few MB before
	// the node's queue grows: send until node 1 has cut both.
	series := `chat_hub_disconnects_total{reason="slow_consumer"}`
	cut := func() error {
		v, err := chattest.Metric(nodes[1].HTTP, series)
		if err == nil && v < 2 {
			err = fmt.Errorf("node 1: %s is %v; want 2", series, v)
		}
		return err
	}
	text := strings.Repeat("x", 15000)
	var last *api.Message
	for i := 1; ; i++ {
		if i%50 == 0 && cut() == nil {
			t.Logf("both cut after %d messages", i)
			break
		}
		if i > 3000 {
			t.Fatalf("after %d messages of 15 kB: %v", i, cut())
		}
		var err error
		if last, err = src.Send(ctx, fmt.Sprintf("%05d %s", i, text)); err != nil {
			t.Fatal(err)
		}
	}
	chattest.WaitHas(t, 20*time.Second, last, fast)
	if got := fast.Stored(""); !equalSeqs(seqs(got), seqRange(1, last.GetSeq())) || fast.Reconnects.Load() != 0 {
		t.Errorf("the reading client got %d messages, seqs %v..., after %d reconnects; want 1..%d on one connection",
			len(got), seqs(got)[:min(len(got), 10)], fast.Reconnects.Load(), last.GetSeq())
	}

	// Each slow stream ends after what was already on its way.
	end := func(r raw) error {
		for {
			if _, err := r.Recv(); err != nil {
				return err
			}
		}
	}
	if err := end(slow[client.GRPC]); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("slow gRPC stream ended with %v; want ResourceExhausted", err)
	}
	if err := end(slow[client.WebSocket]); ctx.Err() != nil {
		t.Errorf("slow WebSocket stream did not end: %v", err)
	}
}
