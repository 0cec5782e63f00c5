package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// claims are what the client reads from its token, unverified: the node
// verifies it. The client only needs the subject (its user name: the node
// refuses any other) and the expiry (to say so before the node does).
type claims struct {
	Subject string   `json:"sub"`
	Expires *float64 `json:"exp"`
}

// peekToken decodes a JWT's claims without checking its signature.
func peekToken(tok string) (claims, error) {
	var c claims
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return c, errors.New("the token is not a JWT (want three dot-separated parts)")
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return c, fmt.Errorf("the token's claims are not base64url: %w", err)
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("the token's claims are not JSON: %w", err)
	}
	return c, nil
}

func (c claims) expiry() time.Time {
	if c.Expires == nil {
		return time.Time{}
	}
	return time.Unix(int64(*c.Expires), 0)
}

// expired reports whether the token's exp has passed at now (as the node
// sees it: from the second exp names).
func (c claims) expired(now time.Time) bool {
	return c.Expires != nil && !now.Before(c.expiry())
}
