package hub_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"example.com/chat/pkg/hub"
)

func TestClientText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"short", "hello", 10, "hello"},
		{"exact", "hello", 5, "hello"},
		{"ascii cut", "hello world", 8, "hello…"},
		{"mid character", "ab€€€", 9, "ab€…"},
		{"on boundary", "ab€€€", 8, "ab€…"},
		{"invalid bytes", "a\xffb", 10, "a\uFFFDb"},
		{"truncated character", "ab\xe2\x82", 10, "ab\uFFFD"},
		{"max below ellipsis", "€€", 2, ""},
		{"max below ellipsis ascii", "abcdef", 2, "ab"},
		{"zero", "abc", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := hub.ClientText(tc.in, tc.max)
			if got != tc.want {
				t.Fatalf("ClientText(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

func FuzzClientText(f *testing.F) {
	f.Add("x"+strings.Repeat("€", 80), 123)
	f.Add("a\xffb\xe2\x82", 3)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 0 || max > 1<<16 {
			return
		}
		got := hub.ClientText(s, max)
		if !utf8.ValidString(got) || len(got) > max {
			t.Fatalf("ClientText(%q, %d) = %q", s, max, got)
		}
		if utf8.ValidString(s) && len(s) <= max && got != s {
			t.Fatalf("ClientText changed a fitting text: %q -> %q", s, got)
		}
	})
}
