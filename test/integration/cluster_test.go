package integration_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/history"
)

// TestThreeNodesOneBurst: six clients on three nodes, half over gRPC, half
// over WebSocket, one room; one of them sends 300 messages. Every other
// client gets all 300 exactly once, in seq order, seqs 1..300 with the
// right texts; the sender gets acks only.
func TestThreeNodesOneBurst(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	nodes := startNodes(t, rs, 3, "-history-size", "400", "-log-size", "400")
	room := newRoom()

	var members []*chattest.Member
	for i := range 6 {
		tr := client.GRPC
		if i%2 == 1 {
			tr = client.WebSocket
		}
		members = append(members, chattest.Join(t, client.Config{
			Addrs: chattest.Addrs(tr, chattest.Rotate(nodes, i%3)...), Transport: tr,
			User: fmt.Sprintf("u%d-%s", i, tr), Room: room,
		}))
	}
	chattest.WaitLive(t, liveTimeout, members...)
	sender, receivers := members[0], members[1:]

	const n = 300
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var epoch string
	for i := range n {
		ack, err := sender.Send(ctx, fmt.Sprintf("burst-%03d", i+1))
		if err != nil {
			t.Fatalf("send %d: %v", i+1, err)
		}
		if ack.GetKind() != api.Kind_KIND_ACK || ack.GetSeq() != uint64(i+1) {
			t.Fatalf("send %d: ack %v; want KIND_ACK with seq %d", i+1, ack, i+1)
		}
		if epoch == "" {
			epoch = ack.GetEpoch()
		} else if ack.GetEpoch() != epoch {
			t.Fatalf("send %d: epoch %q, earlier %q", i+1, ack.GetEpoch(), epoch)
		}
	}
	// Each session's frames arrive in order, so once the last message is
	// in, any duplicate would have come before it.
	last := &api.Message{Epoch: epoch, Seq: n, Text: fmt.Sprintf("burst-%03d", n)}
	chattest.WaitHas(t, 20*time.Second, last, receivers...)

	for _, r := range receivers {
		got := r.Stored("")
		if !equalSeqs(seqs(got), seqRange(1, n)) {
			t.Errorf("%s got seqs %v; want 1..%d once each, in order", r.User, seqs(got), n)
			continue
		}
		for i, m := range got {
			if want := fmt.Sprintf("burst-%03d", i+1); m.GetText() != want || m.GetUser() != sender.User || m.GetEpoch() != epoch {
				t.Errorf("%s: seq %d is %s:%q in epoch %q; want %s:%q in %q", r.User, m.GetSeq(), m.GetUser(), m.GetText(), m.GetEpoch(), sender.User, want, epoch)
			}
		}
	}
	if own := sender.Stored(""); len(own) != 0 {
		t.Errorf("the sender got %d of its own messages; want acks only", len(own))
	}
	for _, m := range members {
		if n := m.Reconnects.Load(); n != 0 {
			t.Errorf("%s reconnected %d times; want a steady connection", m.User, n)
		}
	}
}

// TestLateJoinerAndResume: history on join is exactly the last N; a resume
// on another node with afterSeq+epoch replays exactly what was missed, then
// goes live; a resume older than the log, or from another epoch, says
// KIND_TRUNCATED and replays the log; a join without history goes live at
// the room's position.
func TestLateJoinerAndResume(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	const historySize = 30
	nodes := startNodes(t, rs, 3, "-history-size", fmt.Sprint(historySize), "-log-size", fmt.Sprint(historySize))
	a, b, c := nodes[0], nodes[1], nodes[2]
	room := newRoom()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	writer := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, a), User: "writer", Room: room})
	watcher := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, a), Transport: client.WebSocket, User: "watcher", Room: room})
	chattest.WaitLive(t, liveTimeout, writer, watcher)
	send := func(from, to int) *api.Message {
		t.Helper()
		var ack *api.Message
		for i := from; i <= to; i++ {
			var err error
			if ack, err = writer.Send(ctx, fmt.Sprintf("m-%02d", i)); err != nil {
				t.Fatal(err)
			}
			if ack.GetSeq() != uint64(i) {
				t.Fatalf("message %d stored as seq %d", i, ack.GetSeq())
			}
		}
		return ack
	}
	checkTexts := func(who string, msgs []*api.Message) {
		t.Helper()
		for _, m := range msgs {
			if want := fmt.Sprintf("m-%02d", m.GetSeq()); m.GetText() != want || m.GetUser() != "writer" {
				t.Errorf("%s: seq %d is %s:%q; want writer:%q", who, m.GetSeq(), m.GetUser(), m.GetText(), want)
			}
		}
	}

	// The watcher sees 1..20, then leaves, remembering where it was.
	ack20 := send(1, 20)
	chattest.WaitHas(t, 10*time.Second, ack20, watcher)
	watcher.Close()
	epoch, k := watcher.Position()
	if epoch != ack20.GetEpoch() || k != 20 {
		t.Fatalf("watcher's position is %s:%d; want %s:20", epoch, k, ack20.GetEpoch())
	}
	send(21, 40) // the log now holds 11..40

	// A late joiner on node C asking for 10 gets exactly 31..40, then live.
	late := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, c), User: "late", Room: room, History: 10})
	chattest.WaitLive(t, liveTimeout, late)
	if got := late.Stored(""); !equalSeqs(seqs(got), seqRange(31, 40)) {
		t.Fatalf("late joiner replayed seqs %v; want 31..40", seqs(got))
	} else {
		checkTexts("late joiner", got)
	}

	// Raw joins on node B (and C), each over both transports.
	type rawCase struct {
		name      string
		tr        client.Transport
		addr      string
		join      *api.Join
		want      []uint64
		truncated bool
	}
	var cases []rawCase
	for _, tr := range []client.Transport{client.GRPC, client.WebSocket} {
		cases = append(cases,
			rawCase{"resume-" + string(tr), tr, chattest.Addrs(tr, b)[0], &api.Join{Events: true, AfterSeq: k, Epoch: epoch}, seqRange(21, 40), false},
			rawCase{"resume-trimmed-" + string(tr), tr, chattest.Addrs(tr, b)[0], &api.Join{Events: true, AfterSeq: 5, Epoch: epoch}, seqRange(11, 40), true},
			rawCase{"resume-other-epoch-" + string(tr), tr, chattest.Addrs(tr, b)[0], &api.Join{Events: true, AfterSeq: 20, Epoch: "0123456789abcdef"}, seqRange(11, 40), true},
			rawCase{"resume-up-to-date-" + string(tr), tr, chattest.Addrs(tr, c)[0], &api.Join{Events: true, AfterSeq: 40, Epoch: epoch}, nil, false},
			rawCase{"no-history-" + string(tr), tr, chattest.Addrs(tr, c)[0], &api.Join{Events: true, NoHistory: true}, nil, false},
		)
	}
	streams := make([]raw, len(cases))
	for i, tc := range cases {
		r := dialRaw(t, ctx, tc.tr, tc.addr)
		if err := r.Send(&api.Message{User: "raw-" + tc.name, Room: room, Join: tc.join}); err != nil {
			t.Fatal(err)
		}
		msgs, truncated, live := recvReplay(t, r)
		if !equalSeqs(seqs(msgs), tc.want) || truncated != tc.truncated {
			t.Errorf("%s: replay %v (truncated %v); want %v (truncated %v)", tc.name, seqs(msgs), truncated, tc.want, tc.truncated)
		}
		checkTexts(tc.name, msgs)
		// KIND_LIVE carries the position the client now holds: resuming
		// from it later must neither repeat nor skip anything.
		if live.GetEpoch() != epoch || live.GetSeq() != 40 {
			t.Errorf("%s: KIND_LIVE at %s:%d; want %s:40", tc.name, live.GetEpoch(), live.GetSeq(), epoch)
		}
		streams[i] = r
	}

	// Then live: the next message reaches every stream, and the late
	// joiner, exactly once and next.
	ack41 := send(41, 41)
	for i, r := range streams {
		m := recvNext(t, r, api.Kind_KIND_MESSAGE)
		if m.GetSeq() != 41 || m.GetText() != "m-41" || m.GetEpoch() != epoch {
			t.Errorf("%s: live message %s:%d %q; want %s:41 m-41", cases[i].name, m.GetEpoch(), m.GetSeq(), m.GetText(), epoch)
		}
	}
	chattest.WaitHas(t, 10*time.Second, ack41, late)
	if got := late.Stored(""); !equalSeqs(seqs(got), seqRange(31, 41)) {
		t.Errorf("late joiner got seqs %v; want 31..41", seqs(got))
	}
}

// TestSubscriptionPropagation: a node subscribes to a room's channel for
// its first local member (confirmed before the join completes), once, and
// unsubscribes when its last local member leaves; a later join subscribes
// again and gets both history and live messages; join/leave churn leaves
// the subscription state consistent.
func TestSubscriptionPropagation(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	nodes := startNodes(t, rs, 2)
	a, b := nodes[0], nodes[1]
	room := newRoom()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	channel := history.NewKeys("").Channel(room)
	numsub := func() (int64, error) {
		res, err := rdb.PubSubNumSub(ctx, channel).Result()
		return res[channel], err
	}
	expect := func(want int64, why string) {
		t.Helper()
		if got, err := numsub(); err != nil || got != want {
			t.Fatalf("%s: %d subscribers (err %v); want %d", why, got, err, want)
		}
	}
	expectEventually := func(want int64, why string) {
		t.Helper()
		chattest.Eventually(t, 10*time.Second, func() error {
			if got, err := numsub(); err != nil || got != want {
				return fmt.Errorf("%s: %d subscribers (err %v); want %d", why, got, err, want)
			}
			return nil
		})
	}
	// users waits until the node at httpAddr counts n users: a session
	// leaves its room before the node stops counting its user.
	users := func(httpAddr string, n float64) {
		t.Helper()
		chattest.Eventually(t, 10*time.Second, func() error {
			v, err := chattest.Metric(httpAddr, "active_users")
			if err == nil && v != n {
				err = fmt.Errorf("node %s: %v active users; want %v", httpAddr, v, n)
			}
			return err
		})
	}

	expect(0, "before any join")
	a1 := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, a), User: "a1", Room: room})
	chattest.WaitLive(t, liveTimeout, a1)
	expect(1, "after the first join on A") // Subscribe returned once Redis confirmed
	b1 := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, b), Transport: client.WebSocket, User: "b1", Room: room})
	chattest.WaitLive(t, liveTimeout, b1)
	expect(2, "after a join on B")
	a2 := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, a), Transport: client.WebSocket, User: "a2", Room: room})
	chattest.WaitLive(t, liveTimeout, a2)
	expect(2, "after a second join on A")

	a2.Close()
	users(a.HTTP, 1)
	// A still delivers to its remaining member, and still subscribes once.
	still, err := b1.Send(ctx, "A has a1 still")
	if err != nil {
		t.Fatal(err)
	}
	chattest.WaitHas(t, 10*time.Second, still, a1)
	expect(2, "after one of two members of A left")
	a1.Close()
	users(a.HTTP, 0)
	expectEventually(1, "after the last member of A left")

	first, err := b1.Send(ctx, "while A is empty")
	if err != nil {
		t.Fatal(err)
	}

	// Churn on A: joins and leaves racing each other.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 5 {
				tr := client.GRPC
				if (w+i)%2 == 1 {
					tr = client.WebSocket
				}
				c, err := client.Dial(client.Config{Addrs: chattest.Addrs(tr, a), Transport: tr, User: fmt.Sprintf("churn-%d-%d", w, i), Room: room, NoHistory: true})
				if err != nil {
					t.Error(err)
					return
				}
				go func() {
					for range c.Messages() {
					}
				}()
				err = c.WaitLive(ctx)
				c.Close()
				if err != nil {
					t.Errorf("churn client %d-%d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	expectEventually(1, "after the churn on A ended")

	a3 := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, a), User: "a3", Room: room})
	chattest.WaitLive(t, liveTimeout, a3)
	expect(2, "after a new join on A")
	second, err := b1.Send(ctx, "after A joined again")
	if err != nil {
		t.Fatal(err)
	}
	chattest.WaitHas(t, 10*time.Second, second, a3)
	if got := a3.Stored(""); len(got) != 3 || got[1].GetSeq() != first.GetSeq() || got[2].GetSeq() != second.GetSeq() ||
		got[1].GetText() != "while A is empty" || got[2].GetText() != "after A joined again" {
		t.Errorf("a3 got %v; want the history (ending with the message sent while A was empty), then the live one", got)
	}
}

// TestBigReplay: with the default flags (history 100, queue 1 MiB), a room
// whose last 100 messages are large (1.5 MB in all) can still be joined:
// the replay is bounded by the history, not a sign of a slow consumer.
func TestBigReplay(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	nodes := startNodes(t, rs, 1)
	room := newRoom()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[0]), User: "src", Room: room})
	chattest.WaitLive(t, liveTimeout, src)
	text := strings.Repeat("y", 15000)
	for i := 1; i <= 100; i++ {
		if _, err := src.Send(ctx, fmt.Sprintf("%03d %s", i, text)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range []client.Transport{client.GRPC, client.WebSocket} {
		late := chattest.Join(t, client.Config{Addrs: chattest.Addrs(tr, nodes[0]), Transport: tr, User: "late-" + string(tr), Room: room})
		chattest.WaitLive(t, liveTimeout, late)
		if got := late.Stored(""); !equalSeqs(seqs(got), seqRange(1, 100)) || late.Reconnects.Load() != 0 {
			t.Errorf("%s: replayed %d messages after %d reconnects; want 1..100 at once", tr, len(got), late.Reconnects.Load())
		}
	}
}
