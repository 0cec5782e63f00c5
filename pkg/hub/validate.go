package hub

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// DefaultRoom is the room of clients that name none (every seed client).
const DefaultRoom = "general"

// Limits on names; part of the public contract, documented in the README.
const (
	MaxUserRunes    = 64
	MaxRoomBytes    = 64
	MaxClientIDSize = 128
)

// maxUserInputBytes bounds the work NormalizeUser does on hostile input:
// longer names are refused before they are normalised. It leaves room for
// a decomposed (NFD) name that composes to MaxUserRunes characters.
const maxUserInputBytes = 4 * utf8.UTFMax * MaxUserRunes

// NormalizeUser returns name in Unicode normalization form C, the form
// names are compared and stored in, so that "Zoë" typed precomposed or
// decomposed is one user. It refuses, with a KindInvalid error that does
// not quote the name:
//
//   - an empty name, invalid UTF-8, or more than MaxUserRunes characters
//     once normalised;
//   - control characters (C0, DEL, C1) and line or paragraph separators,
//     which break lines on a reader's screen;
//   - bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E,
//     U+2066-U+2069), which reorder what is displayed around them;
//   - zero-width characters with no use in a name (U+200B zero-width
//     space, U+2060 word joiner, U+FEFF byte order mark, U+2061-U+2064
//     invisible operators, U+180E), anywhere: "al\u200bice" would pass for
//     "alice";
//   - names without a visible character: only whitespace (unicode.Zs),
//     format characters (Cf, for example joiners and the soft hyphen),
//     combining marks, or blank-looking letters (Hangul fillers, the
//     blank Braille pattern);
//   - whitespace or an invisible character at either end. Such names are
//     refused rather than trimmed: a name is an identity, and a server
//     that silently rewrote " alice" into "alice" would let one user
//     claim another's name in one place and not in another.
//
// Joiners inside a name stay allowed (U+200D in emoji sequences, U+200C
// in Persian or Indic names), as do emoji tag sequences.
func NormalizeUser(name string) (string, error) {
	switch {
	case name == "":
		return "", errorf(KindInvalid, "user name is empty")
	case len(name) > maxUserInputBytes:
		return "", errorf(KindInvalid, "user name is longer than %d characters", MaxUserRunes)
	case !utf8.ValidString(name):
		return "", errorf(KindInvalid, "user name is not valid UTF-8")
	}
	name = norm.NFC.String(name)
	if utf8.RuneCountInString(name) > MaxUserRunes {
		return "", errorf(KindInvalid, "user name is longer than %d characters", MaxUserRunes)
	}
	visible := false
	for _, r := range name {
		switch {
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			return "", errorf(KindInvalid, "user name contains a control character")
		case isBidiControl(r):
			return "", errorf(KindInvalid, "user name contains a bidirectional control character")
		case isZeroWidth(r):
			return "", errorf(KindInvalid, "user name contains an invisible character")
		case !isBlank(r) && unicode.In(r, unicode.L, unicode.N, unicode.P, unicode.S):
			visible = true
		}
	}
	if !visible {
		return "", errorf(KindInvalid, "user name has no visible character")
	}
	first, _ := utf8.DecodeRuneInString(name)
	last, _ := utf8.DecodeLastRuneInString(name)
	if isEdgeInvisible(first) || isEdgeInvisible(last) {
		return "", errorf(KindInvalid, "user name starts or ends with whitespace or an invisible character")
	}
	return name, nil
}

// ValidateUser checks that user is a valid name already in the form
// NormalizeUser returns: it accepts exactly the names NormalizeUser leaves
// unchanged. Callers that receive a name from a client should call
// NormalizeUser and use its result instead; ValidateUser is for names that
// must not be rewritten (stored or already normalised ones).
func ValidateUser(user string) error {
	n, err := NormalizeUser(user)
	if err != nil {
		return err
	}
	if n != user {
		return errorf(KindInvalid, "user name is not in Unicode normalization form C")
	}
	return nil
}

// isBidiControl reports the characters that change the display order of
// the text around them (Unicode Bidi_Control).
func isBidiControl(r rune) bool {
	return r == '\u061C' || r == '\u200E' || r == '\u200F' ||
		r >= '\u202A' && r <= '\u202E' || r >= '\u2066' && r <= '\u2069'
}

// isZeroWidth reports invisible characters that have no use in a name.
func isZeroWidth(r rune) bool {
	return r == '\u200B' || r == '\u2060' || r == '\uFEFF' || r == '\u180E' ||
		r >= '\u2061' && r <= '\u2064'
}

// isBlank reports letters and symbols that render as empty space.
func isBlank(r rune) bool {
	return r == '\u115F' || r == '\u1160' || r == '\u3164' || r == '\uFFA0' || r == '\u2800'
}

// isEdgeInvisible reports what a name may not start or end with:
// whitespace, format characters (joiners, the soft hyphen; tag characters
// excepted, since an emoji tag sequence ends with U+E007F) and blanks.
func isEdgeInvisible(r rune) bool {
	if r >= 0xE0020 && r <= 0xE007F {
		return false
	}
	return unicode.IsSpace(r) || unicode.In(r, unicode.Zs, unicode.Cf) || isBlank(r)
}

// NormalizeRoom returns the room to use for name (empty means DefaultRoom)
// or an error when the name is not 1 to 64 of [A-Za-z0-9_.-] starting with a
// letter or digit.
func NormalizeRoom(name string) (string, error) {
	if name == "" {
		return DefaultRoom, nil
	}
	if len(name) > MaxRoomBytes {
		return "", errorf(KindInvalid, "room name is longer than %d characters", MaxRoomBytes)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '-' && c != '.') {
			return "", errorf(KindInvalid, "room name %q is invalid: use 1-%d of A-Z a-z 0-9 _ - . starting with a letter or digit", name, MaxRoomBytes)
		}
	}
	return name, nil
}

// validateText checks a chat message's text against the size limit.
func validateText(text string, max int) error {
	if len(text) > max {
		return errorf(KindTooLarge, "text is %d bytes, over the limit of %d bytes", len(text), max)
	}
	if !utf8.ValidString(text) {
		return errorf(KindInvalid, "text is not valid UTF-8")
	}
	return nil
}

func validateClientID(id string) error {
	if len(id) > MaxClientIDSize {
		return errorf(KindInvalid, "client_id is longer than %d bytes", MaxClientIDSize)
	}
	return nil
}
