package main

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"example.com/chat/api"
)

func TestFrameFields(t *testing.T) {
	cases := []struct {
		name, frame string
		text, room  string
		seq         uint64
		ok          bool
	}{
		{"typical", `{"user":"p1","text":"3:17:1732563000000000000:xx","ts":"1732563000000","room":"bench0","seq":"42","epoch":"ab12"}`,
			"3:17:1732563000000000000:xx", `bench0`, 42, true},
		{"protojson spaces", `{"user": "p1", "text": "1:2:3:", "seq": "7"}`, "1:2:3:", "", 7, true},
		{"spaces before colon", `{ "text" : "1:2:3:abc" , "seq" : "8" }`, "1:2:3:abc", "", 8, true},
		{"seq before text", `{"seq":"9","text":"1:2:3:"}`, "1:2:3:", "", 9, true},
		{"room before text", `{"room":"bench7","seq":"9","text":"1:2:3:"}`, "1:2:3:", "bench7", 9, true},
		{"room named seq before text", `{"room":"seq","text":"1:2:3:","seq":3}`, "1:2:3:", "seq", 3, true},
		{"seq as number", `{"text":"1:2:3:","seq":10}`, "1:2:3:", "", 10, true},
		{"no seq", `{"user":"a","text":"1:2:3:","ts":"1"}`, "1:2:3:", "", 0, true},
		{"escaped quotes in user", `{"user":"a\"text\":\"9:9:9:zz","text":"1:2:3:q","seq":"5"}`, "1:2:3:q", "", 5, true},
		{"user named text", `{"user":"text","text":"1:2:3:","room":"seq","seq":"6"}`, "1:2:3:", `seq`, 6, true},
		{"user ending in an escaped quote and text", `{"user":"x\"text","text":"4:5:6:","seq":"11"}`, "4:5:6:", "", 11, true},
		{"escaped backslash before key", `{"user":"x\\","text":"4:5:6:","seq":"12"}`, "4:5:6:", "", 12, true},
		{"key-like text inside room", `{"text":"4:5:6:","room":"r\",\"seq\":\"99","seq":"13"}`, "4:5:6:", `r\",\"seq\":\"99`, 13, true},
		{"escapes inside text kept raw", `{"text":"a\"b\\c","seq":"1"}`, `a\"b\\c`, "", 1, true},
		{"empty text", `{"text":"","seq":"1"}`, "", "", 1, true},
		{"error frame", `{"error":{"code":8,"message":"slow consumer"}}`, "", "", 0, false},
		{"unterminated", `{"text":"1:2:3`, "", "", 0, false},
		{"text not a string", `{"text":12}`, "", "", 0, false},
		{"empty", ``, "", "", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text, room, seq, ok := frameFields([]byte(c.frame))
			if ok != c.ok || string(text) != c.text || string(room) != c.room || seq != c.seq {
				t.Errorf("frameFields(%s) = %q, %q, %d, %v; want %q, %q, %d, %v", c.frame, text, room, seq, ok, c.text, c.room, c.seq, c.ok)
			}
		})
	}
}

// TestFrameFieldsOfRealFrames parses what the server's encoder (protojson,
// which may add spaces) really writes, with awkward users and rooms.
func TestFrameFieldsOfRealFrames(t *testing.T) {
	now := time.Now().UnixNano()
	for _, user := range []string{"p1", `we"ird`, `"text":"0:0:0:`, `back\slash`, "ünï", "tab\there"} {
		text := string(appendText(nil, 12, 345, now, 60))
		m := &api.Message{User: user, Text: text, Ts: 1732563000000, Room: "bench0", Seq: 987654321, Epoch: "e\"p"}
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, room, seq, ok := frameFields(b)
		if !ok || string(got) != text || string(room) != "bench0" || seq != 987654321 {
			t.Errorf("frameFields(%s) = %q, %q, %d, %v", b, got, room, seq, ok)
		}
		pub, ctr, at, ok := parseText(got)
		if !ok || pub != 12 || ctr != 345 || at != now {
			t.Errorf("parseText(%q) = %d, %d, %d, %v", got, pub, ctr, at, ok)
		}
	}
}

func TestText(t *testing.T) {
	for _, size := range []int{0, 10, 40, 100, 1000} {
		b := appendText(nil, 7, 99, 1732563000000000000, size)
		if len(b) < size || (len(b) > size && size >= 30) {
			t.Errorf("size %d: got %d bytes %q", size, len(b), b)
		}
		for _, c := range b {
			if !(c >= '0' && c <= '9' || c == ':' || c >= 'a' && c <= 'z') {
				t.Errorf("size %d: byte %q outside [0-9:a-z]", size, c)
			}
		}
		pub, ctr, at, ok := parseText(string(b))
		if !ok || pub != 7 || ctr != 99 || at != 1732563000000000000 {
			t.Errorf("parseText(%q) = %d %d %d %v", b, pub, ctr, at, ok)
		}
	}
	for _, bad := range []string{"", "hello", "1:2:3", "1:2", "a:2:3:", "1::3:", "1:2:3x:", "-1:2:3:",
		"1:2:99999999999999999999:", "1:2:9999999999999999999:", `1:2:3\":`, "9999999999:1:1:"} {
		if _, _, _, ok := parseText(bad); ok {
			t.Errorf("parseText(%q) ok, want not", bad)
		}
	}
}
