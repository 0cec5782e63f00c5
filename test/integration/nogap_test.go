package integration_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestStalledNodeKeepsWhatItHolds: node 2 (a process) is SIGSTOPped while
// senders on node 1 send more to each of its rooms than -history-size
// keeps; its subscriber socket holds all of it. On SIGCONT the position
// check and the backfill must not jump past what the socket holds: every
// receiver on node 2, seed clients included, gets every acknowledged
// message exactly once.
//
// Before the fix (room.backfill taking the truncated page at once), runs
// lost hundreds of deliveries on node 2, silently for seed clients.
func TestStalledNodeKeepsWhatItHolds(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	const historySize, rooms, perRoom = 100, 8, 150
	procs, nodes := startProcs(t, bin, rs.Addr(), "st", 2, "-history-size", fmt.Sprint(historySize), "-log-size", fmt.Sprint(historySize))
	ctx := t.Context()

	type roomSet struct {
		name   string
		src    *chattest.Member
		events []*chattest.Member // on node 2, and one control on node 1
		seeds  []*chattest.Seed   // on node 2
	}
	var all []*roomSet
	var live []*chattest.Member
	for i := range rooms {
		rm := &roomSet{name: newRoom()}
		rm.src = chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[0]), User: "src", Room: rm.name})
		// The stall outlasts pkg/client's liveness window (keepalive 15 s
		// + 5 s) when the senders are slow; a client that gave up would
		// resume from the short log and be told TRUNCATED, which is right
		// for it but is not what this test measures (what the node does
		// with what it holds): these stay through the stall.
		patient := func(c client.Config) client.Config {
			c.HeartbeatTimeout, c.Keepalive, c.KeepaliveTimeout, c.AckTimeout = -1, 10*time.Minute, 10*time.Minute, -1
			return c
		}
		rm.events = []*chattest.Member{
			chattest.Join(t, patient(client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[1]), User: "ev-grpc-n2", Room: rm.name})),
			chattest.Join(t, patient(client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes[1]), Transport: client.WebSocket, User: "ev-ws-n2", Room: rm.name})),
			chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes[0]), Transport: client.WebSocket, User: "ev-ws-n1", Room: rm.name}),
		}
		rm.seeds = []*chattest.Seed{chattest.JoinSeed(t, ctx, nodes[1].GRPC, fmt.Sprintf("seed-%d", i), rm.name)}
		live = append(live, rm.src)
		live = append(live, rm.events...)
		all = append(all, rm)
	}
	chattest.WaitLive(t, liveTimeout, live...)
	// The seed streams have no KIND_LIVE: wait until each got a first
	// message instead.
	senders := make([]*chattest.Sender, rooms)
	for i, rm := range all {
		senders[i] = chattest.StartSender(ctx, rm.src, fmt.Sprintf("m%d", i), 0)
	}
	for i, rm := range all {
		first := senders[i].WaitAcked(t, 5)[4]
		chattest.WaitHas(t, 10*time.Second, first, rm.events...)
		chattest.Eventually(t, 10*time.Second, func() error {
			if len(rm.seeds[0].Stored()) < 5 {
				return fmt.Errorf("seed of %s has %d messages", rm.name, len(rm.seeds[0].Stored()))
			}
			return nil
		})
	}

	if err := procs[1].cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// The senders slow down on a loaded machine: wait as long as it takes
	// them (WaitAcked gives 30 s).
	for _, s := range senders {
		want := len(s.Acked()) + perRoom
		chattest.Eventually(t, 120*time.Second, func() error {
			if n := len(s.Acked()); n < want {
				return fmt.Errorf("%d acks, waiting for %d", n, want)
			}
			return nil
		})
	}
	// Past one position check interval (5 s), so that a tick waits for
	// the node when it wakes.
	if d := 6*time.Second - time.Since(stopped); d > 0 {
		time.Sleep(d)
	}
	if err := procs[1].cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	t.Logf("node 2 stopped for %v", time.Since(stopped).Round(time.Millisecond))
	for _, s := range senders {
		s.WaitAcked(t, len(s.Acked())+20)
	}
	var tallies []chattest.Tally
	for i, rm := range all {
		acks := senders[i].Stop(t)
		last := acks[len(acks)-1]
		// Fence: the last ack reaches everyone (a loss before it is
		// what is counted below).
		chattest.WaitHas(t, 30*time.Second, last, rm.events...)
		chattest.Eventually(t, 30*time.Second, func() error {
			for _, m := range rm.seeds[0].Stored() {
				if m.GetSeq() == last.GetSeq() && m.GetEpoch() == last.GetEpoch() {
					return nil
				}
			}
			return fmt.Errorf("seed of %s has not got %d", rm.name, last.GetSeq())
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
	if v, err := chattest.Metric(nodes[1].HTTP, "chat_hub_backfills_truncated_total"); err == nil {
		t.Logf("node 2: %v truncated backfills", v)
	}
}

// TestRedisStallStoresOnce: REST senders without a client id post while
// the answers of Redis stall past go-redis's read timeout (2 s); go-redis
// retries the publish pipeline on a new connection, and the first copy
// has run already. Each message must be stored once, each 200 answer's
// seq must hold its text, and a receiver gets every answered message
// once.
//
// Before the fix (no idempotency key without a client id) a stall stored
// the pipeline's messages twice, answering the second seq.
func TestRedisStallStoresOnce(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	px := startStallProxy(t, rs.Addr())
	n := chattest.StartNode(t, "redis://"+px.Addr()+"/0", "stall", "-history-size", "5000")
	room := newRoom()
	rcv := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, n), Transport: client.WebSocket, User: "rcv", Room: room})
	chattest.WaitLive(t, liveTimeout, rcv)

	var (
		mu    sync.Mutex
		acks  []*api.Message
		fails int
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				text := fmt.Sprintf("rest-%d-%04d", g, i)
				m, err := restPost(n.HTTP, room, "poster", text)
				mu.Lock()
				if err != nil {
					fails++
				} else {
					acks = append(acks, m)
				}
				mu.Unlock()
			}
		}()
	}
	acked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acks)
	}
	for range 2 {
		before := acked()
		chattest.Eventually(t, 30*time.Second, func() error {
			if acked() < before+50 {
				return fmt.Errorf("%d acks", acked())
			}
			return nil
		})
		px.Stall(3 * time.Second)
		time.Sleep(3500 * time.Millisecond) // the stall itself is the test
	}
	before := acked()
	chattest.Eventually(t, 30*time.Second, func() error {
		if acked() < before+50 {
			return fmt.Errorf("%d acks", acked())
		}
		return nil
	})
	close(stop)
	wg.Wait()
	log := chattest.RoomLog(t, n.GRPC, room)
	chattest.CheckStoredOnce(t, log)
	wrong := 0
	for _, a := range acks {
		if a.GetSeq() == 0 || a.GetSeq() > uint64(len(log)) || log[a.GetSeq()-1].GetText() != a.GetText() {
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d answers name a seq that does not hold their message", wrong, len(acks))
	}
	last := log[len(log)-1]
	chattest.WaitHas(t, 20*time.Second, last, rcv)
	tl := chattest.CountBySeq("rcv", acks, rcv.Stored(""), rcv.Count(api.Kind_KIND_TRUNCATED) > 0)
	if tl.Lost > 0 || tl.Dups > 0 {
		t.Error(tl)
	}
	t.Logf("%d answered 200, %d errors, log holds %d; %v", len(acks), fails, len(log), tl)
}

// restPost posts text to room as user, without a client id, and returns
// the stored message of a 200 answer.
func restPost(httpAddr, room, user, text string) (*api.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	body := fmt.Sprintf(`{"user":%q,"text":%q}`, user, text)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/v1/rooms/"+room+"/messages", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("POST: %d %s", resp.StatusCode, b)
	}
	m := new(api.Message)
	if err := protojson.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("POST: %s: %w", b, err)
	}
	if m.GetText() == "" {
		m.Text = text
	}
	return m, nil
}
