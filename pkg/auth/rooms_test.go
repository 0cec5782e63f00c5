package auth_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"example.com/chat/pkg/auth"
)

// TestRoomsClaim: an absent "rooms" claim allows every room, a present one
// only the rooms it lists, so an empty list allows none. A null or
// non-list claim is refused rather than guessed at.
func TestRoomsClaim(t *testing.T) {
	t.Parallel()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	withRooms := func(rooms any) jwt.MapClaims {
		c := claims("alice", time.Hour)
		c["rooms"] = rooms
		return c
	}
	for _, tc := range []struct {
		name    string
		claims  jwt.MapClaims
		all     bool
		mayJoin []string
		mayNot  []string
		wantErr error
	}{
		{"absent", claims("alice", time.Hour), true, []string{"general", "a"}, nil, nil},
		{"empty", withRooms([]string{}), false, nil, []string{"general", "a", ""}, nil},
		{"listed", withRooms([]string{"a", "b"}), false, []string{"a", "b"}, []string{"general", "c"}, nil},
		{"null", withRooms(nil), false, nil, nil, auth.ErrInvalid},
		{"string", withRooms("a"), false, nil, nil, auth.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, tc.claims, nil))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %+v, %v; want %v", c, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.AllRooms != tc.all {
				t.Errorf("AllRooms = %v, want %v", c.AllRooms, tc.all)
			}
			for _, r := range tc.mayJoin {
				if !c.MayJoin(r) {
					t.Errorf("MayJoin(%q) = false, want true", r)
				}
			}
			for _, r := range tc.mayNot {
				if c.MayJoin(r) {
					t.Errorf("MayJoin(%q) = true, want false", r)
				}
			}
		})
	}
}

// TestMintRooms: Mint without rooms leaves the claim out (every room);
// with rooms it lists exactly them.
func TestMintRooms(t *testing.T) {
	t.Parallel()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		rooms []string
		want  string // the payload's rooms claim, "" when absent
	}{
		{"nil", nil, ""},
		{"empty", []string{}, ""},
		{"two", []string{"a", "b"}, `["a","b"]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok, err := auth.Mint(secret, "alice", tc.rooms, time.Minute, "", "")
			if err != nil {
				t.Fatal(err)
			}
			raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
			if err != nil {
				t.Fatal(err)
			}
			var payload map[string]json.RawMessage
			if err := json.Unmarshal(raw, &payload); err != nil {
				t.Fatal(err)
			}
			if got := string(payload["rooms"]); got != tc.want {
				t.Fatalf("rooms claim %q, want %q (payload %s)", got, tc.want, raw)
			}
			c, err := v.Verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			if c.AllRooms != (tc.want == "") || c.MayJoin("a") != true || c.MayJoin("c") != (tc.want == "") {
				t.Fatalf("claims %+v", c)
			}
		})
	}
}

// TestZeroClaimsMayJoinNothing: Claims built by hand without AllRooms
// fail closed.
func TestZeroClaimsMayJoinNothing(t *testing.T) {
	t.Parallel()
	if (&auth.Claims{User: "x"}).MayJoin("general") {
		t.Fatal("zero Claims may join general")
	}
	if !(&auth.Claims{User: "x", AllRooms: true}).MayJoin("general") {
		t.Fatal("AllRooms may not join general")
	}
}
