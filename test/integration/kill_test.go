package integration_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/client"
	"example.com/chat/pkg/node"
)

// nodeBinary is the cmd/node binary, built once per test binary (with
// -race when the tests run with it, so that the nodes' races fail the test
// too).
var nodeBinary = testutil.NodeBinary{Race: raceEnabled}

func buildNode(t *testing.T) string { return nodeBinary.Path(t) }

// procNode is a cmd/node process.
type procNode struct {
	node.Addrs
	id      string
	cmd     *exec.Cmd
	logs    *testutil.TailBuffer // stdout: JSON log lines
	stderr  *testutil.TailBuffer
	exited  chan struct{}
	started chan node.Addrs // from the "node started" line
}

// startProc runs the node binary on loopback ports; waitStarted reads
// them from its "node started" log line. At cleanup it is stopped with
// SIGTERM (SIGKILL after 30 s); a data race reported by a -race node fails
// the test.
// startProcs starts n node processes (ids prefix1, prefix2, ...) at
// once and waits until all serve.
func startProcs(t *testing.T, bin, redisAddr, prefix string, n int, extra ...string) ([]*procNode, []node.Addrs) {
	t.Helper()
	procs := make([]*procNode, n)
	for i := range procs {
		procs[i] = startProc(t, bin, redisAddr, fmt.Sprintf("%s%d", prefix, i+1), extra...)
	}
	nodes := make([]node.Addrs, n)
	for i, p := range procs {
		p.waitStarted(t)
		nodes[i] = p.Addrs
	}
	return procs, nodes
}

func startProc(t *testing.T, bin, redisAddr, id string, extra ...string) *procNode {
	t.Helper()
	args := append([]string{
		"-grpc-addr", "127.0.0.1:0", "-http-addr", "127.0.0.1:0",
		"-redis-url", "redis://" + redisAddr + "/0",
		"-send-rate", "100000", // the tests' senders are fast on purpose
		"-conn-rate-per-ip", "0", // and their clients all come from loopback
		// Info: the "node started" line is what tells the ports.
		"-node-id", id, "-log-level", "info", "-shutdown-timeout", "10s",
	}, extra...)
	p := &procNode{id: id, logs: new(testutil.TailBuffer), stderr: new(testutil.TailBuffer), exited: make(chan struct{}), started: make(chan node.Addrs, 1)}
	started := p.started
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout = &testutil.LineWriter{W: p.logs, Line: func(b []byte) {
		var l struct{ Msg, GRPC, HTTP string }
		if json.Unmarshal(b, &l) == nil && l.Msg == "node started" {
			select {
			case started <- node.Addrs{GRPC: l.GRPC, HTTP: l.HTTP}:
			default:
			}
		}
	}}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start node %s: %v", id, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				t.Errorf("node %s did not stop within 30s of SIGTERM", id)
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if strings.Contains(p.stderr.String(), "DATA RACE") {
			t.Errorf("node %s reported a data race:\n%s", id, p.stderr)
		}
		if t.Failed() {
			t.Logf("node %s stdout:\n%s\nstderr:\n%s", id, p.logs, p.stderr)
		}
	})
	return p
}

// waitStarted waits for the node's addresses.
func (p *procNode) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case p.Addrs = <-p.started:
	case <-p.exited:
		t.Fatalf("node %s exited at start: %s", p.id, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s did not start within 30s", p.id)
	}
}

// kill ends the node with SIGKILL, as a crash would, and waits for it.
func (p *procNode) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// TestKillNodeMidBurst: three node processes; a sender on node 1 sends 500
// messages while a sender on node 2 sends 150, and node 2 is SIGKILLed
// during the burst. Its clients fail over to node 3 and resume; the
// sender on it retries what was not acknowledged. Every stored message is
// stored once, every ack matches the log, and every member receives every
// message of the others exactly once, in order.
func TestKillNodeMidBurst(t *testing.T) {
	t.Parallel()
	bin := buildNode(t)
	rs := testutil.StartRedis(t)
	procs, nodes := startProcs(t, bin, rs.Addr(), "p", 3, "-history-size", "2000")
	room := newRoom()

	// home is the node index; each client lists all three, home first.
	dial := func(user string, tr client.Transport, home int) *chattest.Member {
		return chattest.JoinHome(t, nodes, home, tr, user, room)
	}
	s1 := dial("s1-grpc-n1", client.GRPC, 0)
	s2 := dial("s2-ws-n2", client.WebSocket, 1)
	onKilled := []*chattest.Member{
		s2,
		dial("r-grpc-n2", client.GRPC, 1),
		dial("r-ws-n2", client.WebSocket, 1),
	}
	members := append([]*chattest.Member{
		s1,
		dial("r-ws-n1", client.WebSocket, 0),
		dial("r-grpc-n3", client.GRPC, 2),
		dial("r-ws-n3", client.WebSocket, 2),
	}, onKilled...)
	chattest.WaitLive(t, liveTimeout, members...)

	ctx := t.Context()
	const n1, n2 = 500, 150
	send1 := chattest.StartSender(ctx, s1, "s1", n1)
	send2 := chattest.StartSender(ctx, s2, "s2", n2)
	send2.WaitAcked(t, n2/3)
	procs[1].kill()
	killed1, killed2 := len(send1.Acked()), len(send2.Acked())
	acks1 := send1.Wait(t)
	acks2 := send2.Wait(t)
	if killed1 >= n1 || killed2 >= n2 || len(acks1) != n1 || len(acks2) != n2 {
		t.Fatalf("node 2 killed after %d/%d and %d/%d acks; want both mid-burst; acks %d/%d and %d/%d", killed1, n1, killed2, n2, len(acks1), n1, len(acks2), n2)
	}

	// Fences: each sender's last message, received by everyone else,
	// means all earlier ones were delivered (or never will be).
	others1, others2 := chattest.Except(members, s1), chattest.Except(members, s2)
	chattest.WaitHas(t, 30*time.Second, acks1[n1-1], others1...)
	chattest.WaitHas(t, 30*time.Second, acks2[n2-1], others2...)

	log := chattest.RoomLog(t, nodes[0].GRPC, room)
	if len(log) != n1+n2 {
		t.Errorf("log holds %d messages; want %d, each send stored once", len(log), n1+n2)
	}
	chattest.CheckStoredOnce(t, log)
	chattest.CheckAcksInLog(t, append(acks1, acks2...), log)
	for _, m := range members {
		if err := chattest.CheckDelivery(m, log, chattest.SkipOtherEpochs); err != nil {
			t.Error(err)
		}
		// The log held everything: every resume was exact.
		if n := m.Count(api.Kind_KIND_TRUNCATED); n != 0 {
			t.Errorf("%s was told %d times that messages were lost", m.User, n)
		}
	}
	for _, m := range onKilled {
		if m.Reconnects.Load() == 0 {
			t.Errorf("%s was on the killed node but never reconnected", m.User)
		}
	}
	for _, m := range members[:4] {
		if n := m.Reconnects.Load(); n != 0 {
			t.Errorf("%s reconnected %d times; its node stayed up", m.User, n)
		}
	}
}
