package ws_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"example.com/chat/api"
	"example.com/chat/pkg/ws"
)

func TestBrowserJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, in, want string }{
		{"message", `{"user":"a","text":"hi","ts":"1732563000000","seq":"42","epoch":"e"}`,
			`{"user":"a","text":"hi","ts":1732563000000,"seq":42,"epoch":"e"}`},
		{"protojson spaces kept", `{"user": "a", "ts": "7"}`, `{"user": "a", "ts": 7}`},
		{"nested history", `{"messages":[{"ts":"1","seq":"2"},{"seq":"3"}],"epoch":"x","truncated":false}`,
			`{"messages":[{"ts":1,"seq":2},{"seq":3}],"epoch":"x","truncated":false}`},
		{"error and join", `{"error":{"code":14,"message":"m","retryAfterMs":"250"},"join":{"afterSeq":"9"}}`,
			`{"error":{"code":14,"message":"m","retryAfterMs":250},"join":{"afterSeq":9}}`},
		{"largest safe seq", `{"seq":"9007199254740991"}`, `{"seq":9007199254740991}`},
		{"seq past 2^53 stays a string", `{"seq":"9007199254740992"}`, `{"seq":"9007199254740992"}`},
		{"negative ts", `{"ts":"-5"}`, `{"ts":-5}`},
		{"values named like keys untouched", `{"user":"seq","text":"ts","room":"r"}`, `{"user":"seq","text":"ts","room":"r"}`},
		{"digits as a user or text untouched", `{"user":"123","text":"456"}`, `{"user":"123","text":"456"}`},
		{"key-like text", `{"text":"\"seq\":\"5\"","seq":"6"}`, `{"text":"\"seq\":\"5\"","seq":6}`},
		{"strings in an array under seq untouched", `{"seq":["1"]}`, `{"seq":["1"]}`},
		{"not an integer", `{"ts":"x","seq":"1.5","afterSeq":"01"}`, `{"ts":"x","seq":"1.5","afterSeq":"01"}`},
		{"escaped digits untouched", `{"seq":"\u0031"}`, `{"seq":"\u0031"}`},
		{"already numbers", `{"ts":1,"seq":2}`, `{"ts":1,"seq":2}`},
		{"invalid json returned as is", `{"seq":"1"`, `{"seq":"1"`},
		{"not json", `hello`, `hello`},
		{"empty", ``, ``},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := string(ws.BrowserJSON([]byte(c.in))); got != c.want {
				t.Errorf("BrowserJSON(%s)\n got %s\nwant %s", c.in, got, c.want)
			}
		})
	}
}

// TestBrowserJSONRoundTrip: what BrowserJSON makes of protojson output
// decodes (protojson accepts numbers) to the same message.
func TestBrowserJSONRoundTrip(t *testing.T) {
	t.Parallel()
	m := &api.Message{User: "seq", Text: `"ts":"1" and 99`, Ts: 1732563000000, Seq: 1 << 60, Room: "r", ClientId: "c",
		Kind: api.Kind_KIND_ACK, Error: &api.Error{Code: 8, Message: "x", RetryAfterMs: 1500}, Join: &api.Join{AfterSeq: 77}}
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := ws.BrowserJSON(b)
	var back api.Message
	if err := protojson.Unmarshal(out, &back); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if !reflect.DeepEqual(protojson.Format(&back), protojson.Format(m)) {
		t.Fatalf("round trip changed the message:\n%s\n%s", protojson.Format(&back), protojson.Format(m))
	}
	var generic map[string]any
	if err := json.Unmarshal(out, &generic); err != nil {
		t.Fatal(err)
	}
	if _, ok := generic["ts"].(float64); !ok {
		t.Errorf("ts is %T in %s, want a number", generic["ts"], out)
	}
	if _, ok := generic["seq"].(string); !ok {
		t.Errorf("seq 2^60 is %T in %s, want a string (not exact as a number)", generic["seq"], out)
	}
}

// FuzzBrowserJSON: no input panics it; valid JSON stays valid and decodes
// to the same values, except that quoted integers may become numbers.
func FuzzBrowserJSON(f *testing.F) {
	for _, s := range []string{`{"ts":"1","seq":"2"}`, `{"a":[{"seq":"3"}],"ts":"x"}`, `{"seq":"9007199254740992"}`, `[]`, `"seq"`, `{"seq":{"ts":"4"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := ws.BrowserJSON(in)
		if !json.Valid(in) {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("valid %q became invalid %q", in, out)
		}
		norm := func(b []byte) any {
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber()
			var v any
			if err := d.Decode(&v); err != nil {
				return err.Error()
			}
			return strings.ReplaceAll(strings.ReplaceAll(mustJSON(v), `"`, ""), " ", "")
		}
		if a, b := norm(in), norm(out); !reflect.DeepEqual(a, b) {
			t.Fatalf("values changed: %q -> %q", in, out)
		}
	})
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// BenchmarkBrowserJSON: the rewrite's cost per frame (paid once per frame
// per node, shared by every WebSocket recipient, like the encoding).
func BenchmarkBrowserJSON(b *testing.B) {
	m := &api.Message{User: "p1", Text: strings.Repeat("x", 100), Ts: 1732563000000, Room: "bench0", Seq: 42, Epoch: "ab12cd34", ClientId: "c-1"}
	in, err := protojson.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		ws.BrowserJSON(in)
	}
}
