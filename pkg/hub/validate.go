package hub

import (
	"unicode"
	"unicode/utf8"
)

// DefaultRoom is the room of clients that name none (every seed client).
const DefaultRoom = "general"

// Limits on names; part of the public contract, documented in the README.
const (
	MaxUserRunes    = 64
	MaxRoomBytes    = 64
	MaxClientIDSize = 128
)

// ValidateUser checks a user name: 1 to 64 characters, valid UTF-8, no
// control characters.
func ValidateUser(user string) error {
	switch {
	case user == "":
		return errorf(KindInvalid, "user name is empty")
	case !utf8.ValidString(user):
		return errorf(KindInvalid, "user name is not valid UTF-8")
	case utf8.RuneCountInString(user) > MaxUserRunes:
		return errorf(KindInvalid, "user name is longer than %d characters", MaxUserRunes)
	}
	for _, r := range user {
		if unicode.IsControl(r) {
			return errorf(KindInvalid, "user name contains a control character")
		}
	}
	return nil
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
