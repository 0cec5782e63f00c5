package integration_test

import (
	"fmt"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
)

// TestManyRoomsOneStream: one gRPC stream and one WebSocket each receive
// 50 rooms, on two of three node processes on a real Redis, while a sender
// (one stream, the same 50 rooms) posts to every room in turn. The gRPC
// receiver's node is SIGKILLed mid-traffic: it resumes all 50 rooms on
// another node in one reconnect, each from its own point. Every message
// arrives once, in order per room, tagged with its room, at both.
func TestManyRoomsOneStream(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	procs, nodes := startProcs(t, bin, rs.Addr(), "mr", 3, "-history-size", "2000")
	base := newRoom()
	rooms := make([]string, 50)
	for i := range rooms {
		rooms[i] = fmt.Sprintf("%s-%02d", base, i)
	}
	join := func(user string, tr client.Transport, home int) *chattest.Member {
		return chattest.Join(t, client.Config{Addrs: chattest.Addrs(tr, chattest.Rotate(nodes, home)...), Transport: tr,
			User: user, Room: rooms[0], Rooms: rooms[1:]})
	}
	snd := join("snd", client.GRPC, 0)
	rg := join("r-grpc-n2", client.GRPC, 1)
	rw := join("r-ws-n3", client.WebSocket, 2)
	chattest.WaitLive(t, liveTimeout, snd, rg, rw)

	const perRoom = 10
	ctx := t.Context()
	acks := make(map[string][]*api.Message)
	total := 0
	for i := range perRoom {
		for _, room := range rooms {
			ack, err := snd.SendTo(ctx, room, fmt.Sprintf("%s#%d", room, i))
			if err != nil {
				t.Fatal(err)
			}
			if ack.GetRoom() != room {
				t.Fatalf("ack %v for a send to %s", ack, room)
			}
			acks[room] = append(acks[room], &api.Message{User: "snd", Text: fmt.Sprintf("%s#%d", room, i), Seq: ack.GetSeq(), Epoch: ack.GetEpoch()})
			if total++; total == len(rooms)*perRoom/3 {
				procs[1].kill()
			}
		}
	}
	for _, room := range rooms {
		last := acks[room][len(acks[room])-1]
		chattest.Eventually(t, 30*time.Second, func() error {
			for _, m := range []*chattest.Member{rg, rw} {
				if !hasStored(m, room, last) {
					return fmt.Errorf("%s has not got %s:%d", m.User, room, last.GetSeq())
				}
			}
			return nil
		})
	}
	for _, m := range []*chattest.Member{rg, rw} {
		lost, dups, untagged := 0, 0, 0
		for _, room := range rooms {
			l, d := roomTally(m, room, acks[room])
			lost += l
			dups += d
		}
		for _, got := range m.Stored("") {
			if got.GetRoom() == "" {
				untagged++
			}
		}
		t.Logf("%s: %d rooms, %d reconnects, %d lost, %d duplicated or out of order, %d untagged", m.User, len(rooms), m.Reconnects.Load(), lost, dups, untagged)
		if lost+dups+untagged > 0 {
			t.Errorf("%s: %d lost, %d duplicated or out of order, %d without a room", m.User, lost, dups, untagged)
		}
		if n := m.Count(api.Kind_KIND_TRUNCATED); n != 0 {
			t.Errorf("%s was told %d times that messages were lost", m.User, n)
		}
	}
	if rg.Reconnects.Load() == 0 {
		t.Error("the gRPC receiver's node was killed, but it never reconnected")
	}
}

func hasStored(m *chattest.Member, room string, ack *api.Message) bool {
	for _, got := range m.Stored("") {
		if got.GetRoom() == room && got.GetSeq() == ack.GetSeq() && got.GetEpoch() == ack.GetEpoch() {
			return true
		}
	}
	return false
}

// roomTally counts, in what m received of room, the acked messages
// missing, and the deliveries that repeat or go back in seq.
func roomTally(m *chattest.Member, room string, acks []*api.Message) (lost, dups int) {
	seen := make(map[uint64]string)
	var last uint64
	for _, got := range m.Stored("") {
		if got.GetRoom() != room {
			continue
		}
		if got.GetSeq() <= last {
			dups++
		}
		last = max(last, got.GetSeq())
		seen[got.GetSeq()] = got.GetText()
	}
	for _, a := range acks {
		if seen[a.GetSeq()] != a.GetText() {
			lost++
		}
	}
	return lost, dups
}
