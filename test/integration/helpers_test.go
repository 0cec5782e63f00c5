// Package integration_test runs whole nodes (in-process through node.Run,
// or as cmd/node processes that can be SIGKILLed) against a real
// redis-server on loopback, with clients of pkg/client and raw streams,
// and checks the cluster's promise: every stored message reaches every
// other member of its room exactly once, in sequence order, across nodes,
// transports, node crashes and Redis faults.
//
// Each test starts its own redis-server (testutil.StartRedis, or REDIS_ADDR
// when set) and uses a room name of its own, so the tests run in parallel.
package integration_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		nodeBinary.Remove()
		os.Exit(code)
	}))
}

// liveTimeout bounds how long the clients of a chattest.WaitLive may take
// to go live.
const liveTimeout = 15 * time.Second

// newRoom returns a room name no other test or run uses, so that tests may
// share a Redis (REDIS_ADDR).
func newRoom() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "r-" + hex.EncodeToString(b[:])
}

// startNodes runs n nodes in-process on loopback, on the Redis rs, named
// n0, n1, ...; they are drained and stopped at cleanup.
func startNodes(t *testing.T, rs *testutil.RedisServer, n int, extra ...string) []node.Addrs {
	t.Helper()
	out := make([]node.Addrs, n)
	for i := range out {
		out[i] = chattest.StartNode(t, "redis://"+rs.Addr()+"/0", "n"+strconv.Itoa(i), extra...)
	}
	return out
}

// seqs returns the seq of each message.
func seqs(msgs []*api.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

// seqRange returns from, from+1, ..., to.
func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
