package pubsub_test

import (
	"errors"
	"testing"
	"time"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/pubsub"
	"example.com/chat/pkg/pubsub/pubsubtest"
)

// TestMinReplicas: with MinReplicas 1, a publish is acknowledged while the
// replica keeps up, fails with ErrNotReplicated within about the timeout
// while the replica is stopped (SIGSTOP), and its retry with the same
// idempotency key is acknowledged (as a duplicate of the stored message)
// once the replica is back, because the retry's own write proves the
// original replicated.
func TestMinReplicas(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedis(t)
	srv.RequireOwn()
	replica := testutil.StartReplica(t, srv.Addr())
	c := newClient(t, srv)
	// Long enough for a live replica on a loaded machine to answer the
	// WAIT (a 300 ms one timed out once in CI with the replica running),
	// and below the test clients' 2 s read timeout.
	const timeout = time.Second
	b := pubsub.NewRedis(pubsub.RedisConfig{
		Client:         c,
		Prefix:         testutil.UniquePrefix(t),
		HistorySize:    pubsubtest.HistorySize,
		MinReplicas:    1,
		ReplicaTimeout: timeout,
		Logger:         testutil.Logger(t),
	})
	t.Cleanup(func() { _ = b.Close() })

	res, err := b.Publish(t.Context(), "r", []byte("one"), pubsub.PublishOptions{IdempotencyKey: "k1"})
	if err != nil || res.Seq != 1 {
		t.Fatalf("publish with the replica running: %+v, %v; want seq 1", res, err)
	}

	replica.Pause()
	start := time.Now()
	_, err = b.Publish(t.Context(), "r", []byte("two"), pubsub.PublishOptions{IdempotencyKey: "k2"})
	took := time.Since(start)
	if !errors.Is(err, pubsub.ErrNotReplicated) || !errors.Is(err, pubsub.ErrUnavailable) {
		t.Fatalf("publish with the replica stopped: %v; want ErrNotReplicated (an ErrUnavailable)", err)
	}
	if took < timeout { // it waited for the replicas; how long beyond is not asserted
		t.Errorf("the unreplicated publish took %v; want about %v", took, timeout)
	}
	t.Logf("unreplicated publish answered in %v: %v", took, err)
	// A retry while still stopped fails the same way, and stores nothing.
	if _, err := b.Publish(t.Context(), "r", []byte("two"), pubsub.PublishOptions{IdempotencyKey: "k2"}); !errors.Is(err, pubsub.ErrNotReplicated) {
		t.Fatalf("retry with the replica stopped: %v; want ErrNotReplicated", err)
	}

	replica.Resume()
	res, err = b.Publish(t.Context(), "r", []byte("two"), pubsub.PublishOptions{IdempotencyKey: "k2"})
	if err != nil || res.Seq != 2 || !res.Duplicate {
		t.Fatalf("retry with the replica back: %+v, %v; want the duplicate of seq 2", res, err)
	}
	res, err = b.Publish(t.Context(), "r", []byte("three"), pubsub.PublishOptions{})
	if err != nil || res.Seq != 3 {
		t.Fatalf("publish with the replica back: %+v, %v; want seq 3", res, err)
	}
}
