package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/node"
)

// TestMinReplicasFlag: with -redis-min-replicas 1, a REST send is stored
// and acknowledged (200) while the replica runs; while it is stopped
// (SIGSTOP) the answer is 503 "may or may not be stored" within about
// -redis-replica-timeout; its retry with the same client id after the
// replica is back is acknowledged with the same seq: stored once.
func TestMinReplicasFlag(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	rs.RequireOwn()
	replica := testutil.StartReplica(t, rs.Addr())
	a := start(t, "-redis-url", "redis://"+rs.Addr(), "-redis-min-replicas", "1", "-redis-replica-timeout", "2s")
	post := func(body string) (int, string, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, err := http.Post("http://"+a.HTTP+"/v1/rooms/wait/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
	if code, body, _ := post(`{"user":"u","text":"one","clientId":"c1"}`); code != http.StatusOK || !strings.Contains(body, `"seq":1`) {
		t.Fatalf("send with the replica running: %d %s", code, body)
	}
	replica.Pause()
	code, body, took := post(`{"user":"u","text":"two","clientId":"c2"}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "may or may not be stored") {
		t.Fatalf("send with the replica stopped: %d %s; want 503 'may or may not be stored'", code, body)
	}
	if took < 2*time.Second {
		t.Errorf("the unreplicated send was answered in %v, before the 2 s replica timeout", took)
	}
	t.Logf("answered in %v: %s", took.Round(time.Millisecond), strings.TrimSpace(body))
	replica.Resume()
	if code, body, _ := post(`{"user":"u","text":"two","clientId":"c2"}`); code != http.StatusOK || !strings.Contains(body, `"seq":2`) {
		t.Fatalf("retry with the replica back: %d %s; want seq 2", code, body)
	}
}

func TestMinReplicasFlagValidation(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-redis-min-replicas", "1"}, // no Redis
		{"-redis-url", "redis://127.0.0.1:1", "-redis-min-replicas", "-1"},
		{"-redis-url", "redis://127.0.0.1:1", "-redis-min-replicas", "1", "-redis-replica-timeout", "0s"},
	} {
		if _, err := node.ParseConfig(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("ParseConfig(%q) accepted", args)
		}
	}
}
