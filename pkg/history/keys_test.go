package history

import (
	"strings"
	"testing"
)

func TestKeysShareTheRoomHashTag(t *testing.T) {
	t.Parallel()
	for _, k := range []Keys{{}, NewKeys(""), NewKeys("staging:chat:")} {
		room := "general-1.x_y"
		names := []string{k.Meta(room), k.Log(room), k.Idempotency(room, "u1:42"), k.Channel(room)}
		for _, name := range names {
			if !strings.HasPrefix(name, k.Prefix()+"{"+room+"}:") {
				t.Errorf("%q lacks the prefix and hash tag", name)
			}
		}
		if got, ok := k.RoomOfChannel(k.Channel(room)); !ok || got != room {
			t.Errorf("RoomOfChannel(Channel(%q)) = %q, %v", room, got, ok)
		}
		for _, bad := range []string{k.Meta(room), "other:{a}:ch", k.Prefix() + "{}:ch", k.Prefix() + "{a}b}:ch"} {
			if got, ok := k.RoomOfChannel(bad); ok {
				t.Errorf("RoomOfChannel(%q) = %q, want no room", bad, got)
			}
		}
	}
	if NewKeys("").Meta("a") != "chat:{a}:meta" {
		t.Errorf("default layout changed: %q", NewKeys("").Meta("a"))
	}
}

func TestParseEntry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		seq  uint64
		data string
		ok   bool
	}{
		{"1:hello", 1, "hello", true},
		{"42:a:b:c", 42, "a:b:c", true},
		{"7:", 7, "", true},
		{"hello", 0, "", false},
		{":x", 0, "", false},
		{"0:x", 0, "", false},
		{"-1:x", 0, "", false},
	} {
		e, err := ParseEntry([]byte(tc.in))
		if (err == nil) != tc.ok || tc.ok && (e.Seq != tc.seq || string(e.Data) != tc.data) {
			t.Errorf("ParseEntry(%q) = %+v, %v", tc.in, e, err)
		}
	}
}
