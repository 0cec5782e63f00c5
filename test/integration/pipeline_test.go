package integration_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
)

// TestPipelinedSendsKeepOrder: one stream sends 2000 messages as fast as
// it can, without waiting for any ack (the node pipelines them to Redis,
// up to -max-inflight-sends at once). The log holds them in send order,
// the acks come in send order and each names its message in the log
// (client_id, seq, epoch), and a member on another node receives them in
// that order.
func TestPipelinedSendsKeepOrder(t *testing.T) {
	t.Parallel()
	const n = 2000
	rs := testutil.StartRedis(t)
	nodes := startNodes(t, rs, 2, "-history-size", fmt.Sprint(n+100))
	for _, tr := range []client.Transport{client.GRPC, client.WebSocket} {
		t.Run(string(tr), func(t *testing.T) {
			t.Parallel()
			room := newRoom()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			addr := nodes[0].GRPC
			if tr == client.WebSocket {
				addr = nodes[0].HTTP
			}
			recv := dialRaw(t, ctx, client.GRPC, nodes[1].GRPC)
			if err := recv.Send(&api.Message{User: "reader", Room: room, Join: &api.Join{Events: true, NoHistory: true}}); err != nil {
				t.Fatal(err)
			}
			recvReplay(t, recv)
			sender := dialRaw(t, ctx, tr, addr)
			if err := sender.Send(&api.Message{User: "sender", Room: room, Join: &api.Join{Events: true, NoHistory: true}}); err != nil {
				t.Fatal(err)
			}
			recvReplay(t, sender)

			sent := make(chan error, 1)
			go func() {
				for i := 1; i <= n; i++ {
					if err := sender.Send(&api.Message{Text: fmt.Sprintf("m%d", i), ClientId: fmt.Sprintf("c%d", i)}); err != nil {
						sent <- fmt.Errorf("send %d: %w", i, err)
						return
					}
				}
				sent <- nil
			}()
			acks := make([]*api.Message, 0, n)
			for i := 1; i <= n; i++ {
				ack := recvNext(t, sender, api.Kind_KIND_ACK)
				if want := fmt.Sprintf("c%d", i); ack.GetClientId() != want {
					t.Fatalf("ack %d names %q (seq %d), want %q: out of send order", i, ack.GetClientId(), ack.GetSeq(), want)
				}
				if i > 1 && ack.GetSeq() <= acks[i-2].GetSeq() {
					t.Fatalf("ack %d has seq %d after seq %d", i, ack.GetSeq(), acks[i-2].GetSeq())
				}
				acks = append(acks, ack)
			}
			if err := <-sent; err != nil {
				t.Fatal(err)
			}

			log := chattest.RoomLog(t, nodes[1].GRPC, room)
			if len(log) != n {
				t.Fatalf("the log holds %d messages, want %d", len(log), n)
			}
			for i, m := range log {
				if m.GetText() != fmt.Sprintf("m%d", i+1) || m.GetClientId() != fmt.Sprintf("c%d", i+1) || m.GetUser() != "sender" {
					t.Fatalf("log entry %d (seq %d) is %s:%q (%s): out of send order", i, m.GetSeq(), m.GetUser(), m.GetText(), m.GetClientId())
				}
			}
			for i, ack := range acks {
				if ack.GetSeq() != uint64(i+1) || ack.GetEpoch() != log[i].GetEpoch() || ack.GetClientId() != log[i].GetClientId() {
					t.Fatalf("ack %d is %s:%d for %s; the log has %s:%d for %s", i+1,
						ack.GetEpoch(), ack.GetSeq(), ack.GetClientId(), log[i].GetEpoch(), log[i].GetSeq(), log[i].GetClientId())
				}
			}
			for i := 1; i <= n; i++ {
				m := recvNext(t, recv, api.Kind_KIND_MESSAGE)
				if m.GetSeq() != uint64(i) || m.GetText() != fmt.Sprintf("m%d", i) {
					t.Fatalf("member on the other node: message %d is %d:%q", i, m.GetSeq(), m.GetText())
				}
			}
		})
	}
}
