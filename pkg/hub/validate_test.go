package hub_test

import (
	"strings"
	"testing"

	"example.com/chat/pkg/hub"
)

// TestNormalizeUser: names come back in NFC; names a reader could not see,
// or that reorder or break the text around them, are refused.
func TestNormalizeUser(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in, want string // want "" means refused
	}{
		{"ascii", "alice", "alice"},
		{"inner space", "alice bob", "alice bob"},
		{"nfc kept", "Zoë", "Zoë"},
		{"nfd composed", "Zoe\u0308", "Zoë"},
		{"hangul jamo composed", "\u1100\u1161", "\uac00"},
		{"max length", strings.Repeat("é", hub.MaxUserRunes), strings.Repeat("é", hub.MaxUserRunes)},
		{"max length once composed", strings.Repeat("e\u0301", hub.MaxUserRunes), strings.Repeat("é", hub.MaxUserRunes)},
		{"emoji zwj sequence", "\U0001F469\u200D\U0001F4BB dev", "\U0001F469\u200D\U0001F4BB dev"},
		{"persian zwnj", "\u0645\u06CC\u200C\u062E\u0648\u0627\u0647\u0645", "\u0645\u06CC\u200C\u062E\u0648\u0627\u0647\u0645"},
		{"flag tag sequence", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F"},
		{"emoji with variation selector", "\u2764\uFE0F", "\u2764\uFE0F"},

		{"empty", "", ""},
		{"invalid utf-8", "al\xffice", ""},
		{"too long", strings.Repeat("x", hub.MaxUserRunes+1), ""},
		{"huge", strings.Repeat("x", 1<<20), ""},
		{"nul", "a\x00", ""},
		{"esc", "a\x1b[31m", ""},
		{"newline", "alice\nbob: hi", ""},
		{"del", "a\x7f", ""},
		{"c1", "a\u0085", ""},
		{"line separator", "a\u2028b", ""},
		{"rlo", "alice\u202Egnp.exe", ""},
		{"lre", "\u202Aalice", ""},
		{"pdf", "alice\u202C", ""},
		{"rli", "a\u2067b", ""},
		{"pdi", "a\u2069b", ""},
		{"lrm", "a\u200Eb", ""},
		{"rlm", "a\u200Fb", ""},
		{"alm", "a\u061Cb", ""},
		{"space only", " ", ""},
		{"nbsp only", "\u00A0\u00A0", ""},
		{"ideographic space only", "\u3000", ""},
		{"zwsp only", "\u200B", ""},
		{"zwj only", "\u200D\u200C", ""},
		{"word joiner only", "\u2060", ""},
		{"bom only", "\uFEFF", ""},
		{"soft hyphen only", "\u00AD", ""},
		{"spaces and zero-width", " \u200B\u00A0", ""},
		{"hangul filler only", "\u3164", ""},
		{"braille blank only", "\u2800\u2800", ""},
		{"combining mark only", "\u0301", ""},
		{"leading space", " alice", ""},
		{"trailing space", "alice ", ""},
		{"trailing nbsp", "alice\u00A0", ""},
		{"trailing zwsp", "alice\u200B", ""},
		{"leading bom", "\uFEFFalice", ""},
		{"inner zwsp", "al\u200Bice", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := hub.NormalizeUser(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("NormalizeUser(%+q) = %+q, want an error", tc.in, got)
				}
				if e := hub.AsError(err); e == nil || e.Kind != hub.KindInvalid {
					t.Fatalf("NormalizeUser(%+q): %v is not a KindInvalid error", tc.in, err)
				}
				if len(tc.in) >= 4 && len(tc.in) < 100 && strings.Contains(err.Error(), tc.in) {
					t.Fatalf("the error %q echoes the refused name", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("NormalizeUser(%+q) = %+q, %v; want %+q", tc.in, got, err, tc.want)
			}
			// ValidateUser accepts exactly the names already normalised.
			if err := hub.ValidateUser(tc.in); (err == nil) != (tc.in == tc.want) {
				t.Fatalf("ValidateUser(%+q) = %v", tc.in, err)
			}
		})
	}
}
