package pubsub_test

import (
	"errors"
	"testing"
	"time"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/pubsub/pubsubtest"
)

// TestRedisClusterMinReplicas: on a Redis Cluster, the WAIT of MinReplicas
// goes to the room's own master, on the connection that ran the script: a
// publish is acknowledged while that master's replica keeps up, fails
// with ErrNotReplicated within about the timeout while it is stopped, and
// its retry is acknowledged once it is back. Rooms of other masters are
// not affected.
func TestRedisClusterMinReplicas(t *testing.T) {
	t.Parallel()
	c := testutil.StartCluster(t, 3, 1)
	cc := newClusterClient(t, c)
	// Long enough for a live replica on a loaded machine to answer the
	// WAIT (a 300 ms one timed out once in CI with the replica running),
	// and below the test clients' 2 s read timeout.
	const timeout = time.Second
	b := pubsub.NewRedisCluster(pubsub.RedisClusterConfig{
		Client:         cc,
		Prefix:         testutil.UniquePrefix(t),
		HistorySize:    pubsubtest.HistorySize,
		MinReplicas:    1,
		ReplicaTimeout: timeout,
		Logger:         testutil.Logger(t),
	})
	t.Cleanup(func() { _ = b.Close() })
	master := c.Masters()[0]
	on, off := roomsOn(t, c, master, "w-", 1)
	replicas := c.ReplicasOf(master)
	if len(replicas) != 1 {
		t.Fatalf("master %s has replicas %v; want one", master, replicas)
	}
	publish := func(room, data, key string) (pubsub.PublishResult, error) {
		return b.Publish(t.Context(), room, []byte(data), pubsub.PublishOptions{IdempotencyKey: key})
	}
	if res, err := publish(on[0], "one", "k1"); err != nil || res.Seq != 1 {
		t.Fatalf("publish with the replica running: %+v, %v", res, err)
	}

	c.Pause(replicas[0])
	start := time.Now()
	_, err := publish(on[0], "two", "k2")
	took := time.Since(start)
	if !errors.Is(err, pubsub.ErrNotReplicated) || !errors.Is(err, pubsub.ErrUnavailable) {
		t.Fatalf("publish with the replica stopped: %v; want ErrNotReplicated", err)
	}
	if took < timeout { // it waited for the replicas; how long beyond is not asserted
		t.Errorf("the unreplicated publish took %v; want about %v", took, timeout)
	}
	if res, err := publish(off[0], "other", "k3"); err != nil || res.Seq != 1 {
		t.Errorf("publish to a room of another master: %+v, %v; want acknowledged", res, err)
	}
	c.Resume(replicas[0])
	res, err := publish(on[0], "two", "k2")
	if err != nil || res.Seq != 2 || !res.Duplicate {
		t.Fatalf("retry with the replica back: %+v, %v; want the duplicate of seq 2", res, err)
	}
}
