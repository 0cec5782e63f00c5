package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

// presence asks a node who is in room, over REST through its gateway.
func presence(t *testing.T, httpAddr, room string) (users []string, count int) {
	t.Helper()
	code, body, err := chattest.HTTPGet("http://" + httpAddr + "/v1/rooms/" + room + "/presence")
	if err != nil || code != 200 {
		t.Fatalf("presence: %d %s %v", code, body, err)
	}
	var r struct {
		Users []string
		Count int
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("presence: %q: %v", body, err)
	}
	return r.Users, r.Count
}

// TestTypingAndPresenceAcrossNodes: typing crosses nodes and never enters
// history; presence is cluster-wide, counts a two-device user once, shows
// no leave/join flicker when a client moves to another node, and forgets
// the users of a SIGKILLed node within the presence TTL.
func TestTypingAndPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	live := []string{"-presence-ttl", "2s", "-leave-grace", "1s"}
	var procs []*procNode
	var nodes []node.Addrs
	for i := range 3 {
		procs = append(procs, startProc(t, bin, rs.Addr(), fmt.Sprintf("l%d", i+1), live...))
	}
	for _, p := range procs {
		p.waitStarted(t)
		nodes = append(nodes, p.Addrs)
	}
	room := newRoom()
	watcher := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[0]), User: "watcher", Room: room})
	chattest.WaitLive(t, liveTimeout, watcher) // it must be there to see the others join
	alice := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes[1]), Transport: client.WebSocket, User: "alice", Room: room})
	alice2 := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[2]), User: "alice", Room: room}) // second device
	doomed := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.GRPC, nodes[2]), User: "doomed", Room: room, MaxBackoff: time.Hour, MinBackoff: time.Hour})
	bob := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes[1]), Transport: client.WebSocket, User: "bob", Room: room})
	chattest.WaitLive(t, liveTimeout, watcher, alice, alice2, doomed, bob)

	// Cluster-wide presence, alice once.
	chattest.Eventually(t, 10*time.Second, func() error {
		users, n := presence(t, nodes[0].HTTP, room)
		if n != 4 || fmt.Sprint(users) != "[alice bob doomed watcher]" {
			return fmt.Errorf("presence %v (%d)", users, n)
		}
		return nil
	})

	// Typing from node 2 reaches node 1, and is not stored.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := alice.SendMessage(ctx, &api.Message{Kind: api.Kind_KIND_TYPING}); err != nil {
		t.Fatal(err)
	}
	chattest.Eventually(t, 10*time.Second, func() error {
		if watcher.Count(api.Kind_KIND_TYPING) == 0 {
			return fmt.Errorf("no typing event yet")
		}
		return nil
	})
	for _, m := range watcher.All() {
		if m.GetKind() == api.Kind_KIND_TYPING && (m.GetUser() != "alice" || m.GetSeq() != 0) {
			t.Fatalf("typing event %v", m)
		}
	}
	if log := chattest.RoomLog(t, nodes[0].GRPC, room); len(log) != 0 {
		t.Fatalf("typing was stored: %v", log)
	}

	// bob, on one device, moves from node 2 to node 3 within the grace:
	// no leave, no second join for the watcher. (alice's first device
	// goes too; her second one keeps her present anyway.)
	bob.Close()
	alice.Close()
	moved := chattest.Join(t, client.Config{Addrs: chattest.Addrs(client.WebSocket, nodes[2]), Transport: client.WebSocket, User: "bob", Room: room})
	chattest.WaitLive(t, liveTimeout, moved)
	// A leave would come one grace (1 s) after the close: let that pass.
	// (Asserting that nothing happens takes a wait, not a poll.)
	time.Sleep(2500 * time.Millisecond)

	// No leave for alice while she only moved; one join each.
	joins := map[string]int{}
	for _, m := range watcher.All() {
		switch m.GetKind() {
		case api.Kind_KIND_JOIN:
			joins[m.GetUser()]++
		case api.Kind_KIND_LEAVE:
			t.Errorf("%s left while only moving between nodes", m.GetUser())
		}
	}
	if joins["alice"] != 1 || joins["doomed"] != 1 || joins["bob"] != 1 {
		t.Errorf("joins seen by the watcher: %v; want alice, bob and doomed once each", joins)
	}

	// Node 3 dies with doomed, bob and alice's remaining device: they
	// disappear within the presence TTL, though nobody said goodbye.
	procs[2].kill()
	start := time.Now()
	chattest.Eventually(t, 15*time.Second, func() error {
		users, n := presence(t, nodes[0].HTTP, room)
		if n != 1 || fmt.Sprint(users) != "[watcher]" {
			return fmt.Errorf("presence %v (%d) %v after the kill", users, n, time.Since(start))
		}
		return nil
	})
	if d := time.Since(start); d > 2*time.Second+3*time.Second {
		t.Errorf("a dead node's users took %v to disappear; the bound is the 2s TTL (plus polling)", d)
	}
}
