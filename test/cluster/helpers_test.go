// Package cluster_test runs three in-process nodes (node.Run) against a
// real Redis Cluster (testutil.StartCluster: redis-server processes in
// cluster mode, sharded pub/sub) with clients of pkg/client, and checks
// that rooms spread over the cluster's masters keep the promise of a
// single Redis: every stored message reaches every other member of its
// room exactly once, in sequence order, also across a master's failover
// and a slot migration.
package cluster_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"example.com/chat/api"
	"example.com/chat/internal/chattest"
	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

func TestMain(m *testing.M) {
	// go-redis logs each failed dial to a killed master on its own global
	// logger: noise here (the tests kill masters on purpose).
	redis.SetLogger(discardLogger{})
	goleak.VerifyTestMain(m,
		// After dials to a killed master fail PoolSize times in a row,
		// go-redis starts a probe goroutine per connection pool that
		// notices the pool's Close only at its next attempt, up to a
		// second later: it outlives the node that closed its client.
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// liveTimeout bounds how long the clients of a chattest.WaitLive may take
// to go live.
const liveTimeout = 20 * time.Second

// roomsOnMasters returns one room name per master of c (prefix p), each
// owned by a different master, and the masters in the same order.
func roomsOnMasters(t *testing.T, c *testutil.Cluster, p string) (rooms, masters []string) {
	t.Helper()
	masters = c.Masters()
	byMaster := map[string]string{}
	for i := 0; len(byMaster) < len(masters); i++ {
		if i > 10000 {
			t.Fatal("no room names found for every master")
		}
		room := p + strconv.Itoa(i)
		if m := c.MasterFor(room); byMaster[m] == "" {
			byMaster[m] = room
		}
	}
	for _, m := range masters {
		rooms = append(rooms, byMaster[m])
	}
	return rooms, masters
}

// startNodes runs three nodes in-process on loopback against the cluster
// c, each given a different seed first; they are drained and stopped at
// cleanup.
func startNodes(t *testing.T, c *testutil.Cluster, extra ...string) []node.Addrs {
	t.Helper()
	seeds := c.Addrs()
	out := make([]node.Addrs, 3)
	for i := range out {
		url := "redis-cluster://" + strings.Join(chattest.Rotate(seeds, i), ",")
		out[i] = chattest.StartNode(t, url, "n"+strconv.Itoa(i), extra...)
	}
	return out
}

// checkAcks checks that the room's log holds exactly the sender's acked
// messages, each once, at the seqs of their acks: a send retried during an
// outage (same client id) was stored once, and no acknowledged message was
// lost.
func checkAcks(t *testing.T, log, acks []*api.Message) {
	t.Helper()
	if len(log) != len(acks) {
		t.Errorf("the log holds %d messages; the sender has %d acks", len(log), len(acks))
	}
	for i, ack := range acks {
		switch {
		case ack.GetSeq() != uint64(i+1):
			t.Errorf("ack %d (%q) has seq %d; want %d", i+1, ack.GetText(), ack.GetSeq(), i+1)
		case i >= len(log):
		case log[i].GetText() != ack.GetText() || log[i].GetEpoch() != ack.GetEpoch():
			t.Errorf("log seq %d is %q in epoch %s; the ack says %q in %s", i+1, log[i].GetText(), log[i].GetEpoch(), ack.GetText(), ack.GetEpoch())
		}
	}
}

// subscribers returns, per node address, PUBSUB SHARDNUMSUB and PUBSUB
// NUMSUB of channel there.
func subscribers(t *testing.T, c *testutil.Cluster, channel string) (sharded, classic map[string]int64) {
	t.Helper()
	sharded, classic = map[string]int64{}, map[string]int64{}
	for _, addr := range c.Live() {
		rc := c.Client(addr)
		s, err := rc.PubSubShardNumSub(t.Context(), channel).Result()
		if err != nil {
			t.Fatalf("PUBSUB SHARDNUMSUB on %s: %v", addr, err)
		}
		n, err := rc.PubSubNumSub(t.Context(), channel).Result()
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB on %s: %v", addr, err)
		}
		sharded[addr], classic[addr] = s[channel], n[channel]
	}
	return sharded, classic
}

// checkSubscribers fails unless exactly want sharded subscriptions of
// channel are on owner, none elsewhere, and no classic one anywhere.
func checkSubscribers(c *testutil.Cluster, t *testing.T, channel, owner string, want int64) error {
	sharded, classic := subscribers(t, c, channel)
	for addr, n := range sharded {
		w := int64(0)
		if addr == owner {
			w = want
		}
		if n != w {
			return fmt.Errorf("%s has %d sharded subscribers on %s; want %d (owner %s)", channel, n, addr, w, owner)
		}
		if classic[addr] != 0 {
			return fmt.Errorf("%s has %d classic subscribers on %s", channel, classic[addr], addr)
		}
	}
	return nil
}
