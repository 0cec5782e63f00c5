// Package auth turns JWTs into identities. A Verifier checks a token's
// signature (HS256 with a shared secret, or RS256/ES256 with a public key or
// a JWKS file), its expiry (required and exact: the clock-skew leeway
// applies to nbf only, so every edge refuses a token from its exp on), and
// optionally its issuer and audience, and returns Claims: the user (the
// token's subject) and the rooms it may join.
//
// Claims travel in a context.Context (NewContext, FromContext). The gRPC
// interceptors and the HTTP helpers here are the only places a token is
// read; the package knows nothing about chat.
package auth
