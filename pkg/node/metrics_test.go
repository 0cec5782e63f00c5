package node_test

import (
	"bufio"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// scrape returns the node's metrics as "name{labels}" -> value.
func scrape(t *testing.T, httpAddr string) map[string]float64 {
	t.Helper()
	_, body := get(t, "http://"+httpAddr+"/metrics")
	out := make(map[string]float64)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metric line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// waitMetric polls until cond holds for the metric, or fails.
func waitMetric(t *testing.T, httpAddr, name string, cond func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, ok := scrape(t, httpAddr)[name]
		if ok && cond(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metric %s = %v (present %v)", name, v, ok)
		}
		time.Sleep(20 * time.Millisecond) // polling a scrape
	}
}

func TestMetricsMove(t *testing.T) {
	t.Parallel()
	a := start(t)
	m0 := scrape(t, a.HTTP)
	for _, name := range []string{`chat_hub_messages_published_total`, `active_users`, `chat_cluster_active_users`} {
		if m0[name] != 0 {
			t.Fatalf("%s starts at %v", name, m0[name])
		}
	}
	cc := grpcClient(t, a.GRPC)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs := joinLive(ctx, t, cc, "g")
	wc, _, err := websocket.Dial(ctx, "ws://"+a.HTTP+"/v1/chat/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wc.CloseNow()
	wc.Write(ctx, websocket.MessageText, []byte(`{"user":"w","text":"hello"}`))
	for {
		m, err := gs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetText() == "hello" {
			break
		}
	}
	eq := func(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
	waitMetric(t, a.HTTP, `chat_hub_sessions{transport="grpc"}`, eq(1))
	waitMetric(t, a.HTTP, `chat_hub_sessions{transport="ws"}`, eq(1))
	waitMetric(t, a.HTTP, `active_users`, eq(2))
	waitMetric(t, a.HTTP, `chat_cluster_active_users`, eq(2))
	waitMetric(t, a.HTTP, `chat_hub_messages_published_total`, eq(1))
	waitMetric(t, a.HTTP, `chat_hub_publish_duration_seconds_count`, eq(1))
	waitMetric(t, a.HTTP, `chat_hub_fanout_lag_seconds_count`, eq(1))
	waitMetric(t, a.HTTP, `chat_hub_frames_delivered_total`, func(v float64) bool { return v >= 2 })
	waitMetric(t, a.HTTP, `grpc_server_started_total{grpc_method="Stream",grpc_service="chat.Chat",grpc_type="bidi_stream"}`, eq(1))
	// The browser leaves normally.
	wc.Close(websocket.StatusNormalClosure, "")
	waitMetric(t, a.HTTP, `chat_hub_disconnects_total{reason="normal"}`, eq(1))
	waitMetric(t, a.HTTP, `chat_hub_sessions{transport="ws"}`, eq(0))
	waitMetric(t, a.HTTP, `active_users`, eq(1))
}
