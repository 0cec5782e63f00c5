package integration_test

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
)

// TestRollingRestart restarts the three nodes of a cluster one after the
// other while a gRPC and a WebSocket sender send without pause, and clients
// of both transports sit on every node. With SIGTERM the nodes drain
// (not-ready, then clients told to go elsewhere, in-flight sends answered);
// with SIGKILL they just die. Either way every acknowledged message is
// stored once and delivered exactly once, in order, to every member.
func TestRollingRestart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) { rollingRestart(t, sig) })
	}
}

func rollingRestart(t *testing.T, sig syscall.Signal) {
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	extra := []string{"-history-size", "100000", "-drain-delay", "200ms", "-drain-spread", "300ms"}
	procs, nodes := startProcs(t, bin, rs.Addr(), "r", 3, extra...)
	room := newRoom()
	dial := func(user string, tr client.Transport, home int) *chattest.Member {
		return chattest.JoinHome(t, nodes, home, tr, user, room)
	}
	sg := dial("s-grpc", client.GRPC, 0)
	sw := dial("s-ws", client.WebSocket, 1)
	members := []*chattest.Member{sg, sw}
	for i := range nodes {
		members = append(members, dial(fmt.Sprint("r-grpc-", i), client.GRPC, i), dial(fmt.Sprint("r-ws-", i), client.WebSocket, i))
	}
	chattest.WaitLive(t, liveTimeout, members...)

	ctx := t.Context()
	s1 := chattest.StartSender(ctx, sg, "g", 0)
	s2 := chattest.StartSender(ctx, sw, "w", 0)
	for i, p := range procs {
		before1, before2 := len(s1.Acked()), len(s2.Acked())
		if sig == syscall.SIGKILL {
			p.kill()
		} else {
			_ = p.cmd.Process.Signal(sig)
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("node %d did not drain within 30s of SIGTERM", i)
			}
		}
		// Back on the same ports, so the clients' address lists hold.
		procs[i] = startProc(t, bin, rs.Addr(), fmt.Sprintf("r%d-again", i+1),
			append([]string{"-grpc-addr", nodes[i].GRPC, "-http-addr", nodes[i].HTTP}, extra...)...)
		procs[i].waitStarted(t)
		// Traffic kept flowing through the restart.
		s1.WaitAcked(t, before1+20)
		s2.WaitAcked(t, before2+20)
	}
	acks1 := s1.Stop(t)
	acks2 := s2.Stop(t)

	others1, others2 := chattest.Except(members, sg), chattest.Except(members, sw)
	chattest.WaitHas(t, 30*time.Second, acks1[len(acks1)-1], others1...)
	chattest.WaitHas(t, 30*time.Second, acks2[len(acks2)-1], others2...)

	log := chattest.RoomLog(t, nodes[0].GRPC, room)
	if len(log) != len(acks1)+len(acks2) {
		t.Errorf("log holds %d messages; %d were acknowledged", len(log), len(acks1)+len(acks2))
	}
	chattest.CheckStoredOnce(t, log)
	for _, ack := range append(acks1, acks2...) {
		if ack.GetSeq() == 0 || ack.GetSeq() > uint64(len(log)) || log[ack.GetSeq()-1].GetText() != ack.GetText() {
			t.Errorf("ack %d for %q does not match the log", ack.GetSeq(), ack.GetText())
		}
	}
	moved := 0
	for _, m := range members {
		if err := chattest.CheckDelivery(m, log, chattest.SkipOtherEpochs); err != nil {
			t.Error(err)
		}
		if n := m.Count(api.Kind_KIND_TRUNCATED); n != 0 {
			t.Errorf("%s was told %d times that messages were lost", m.User, n)
		}
		if m.Reconnects.Load() > 0 {
			moved++
		}
	}
	if moved < len(members)/2 {
		t.Errorf("only %d of %d clients reconnected during the roll", moved, len(members))
	}
	t.Logf("%s: %d messages acknowledged during the roll, %d clients moved", sig, len(log), moved)
}
