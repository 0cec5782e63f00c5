package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"example.com/chat/pkg/auth"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims, hdr map[string]any) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	for k, v := range hdr {
		tok.Header[k] = v
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, exp time.Duration) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": time.Now().Add(exp).Unix()}
}

func writePEM(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "pub.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHS256(t *testing.T) {
	t.Parallel()
	v, err := auth.NewVerifier(auth.Config{HMACSecret: secret, Audience: "chat", Issuer: "me"})
	if err != nil {
		t.Fatal(err)
	}
	good := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "aud": "chat", "iss": "me", "rooms": []string{"a"}}
	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"valid", sign(t, jwt.SigningMethodHS256, secret, good, nil), nil},
		{"missing", "", auth.ErrMissing},
		{"garbage", "not.a.jwt", auth.ErrMalformed},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(-time.Hour).Unix(), "aud": "chat", "iss": "me"}, nil), auth.ErrExpired},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a", "aud": "chat", "iss": "me"}, nil), auth.ErrInvalid},
		{"bad signature", sign(t, jwt.SigningMethodHS256, []byte("another secret another secret 12"), good, nil), auth.ErrSignature},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good, nil), auth.ErrAlgorithm},
		{"HS384", sign(t, jwt.SigningMethodHS384, secret, good, nil), auth.ErrAlgorithm},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix(), "aud": "other", "iss": "me"}, nil), auth.ErrAudience},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "a", "exp": time.Now().Add(time.Hour).Unix(), "aud": "chat", "iss": "eve"}, nil), auth.ErrIssuer},
		{"no subject", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "aud": "chat", "iss": "me"}, nil), auth.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token)
			if tc.want == nil {
				if err != nil || c.User != "alice" || !c.MayJoin("a") || c.MayJoin("b") {
					t.Fatalf("got %+v, %v", c, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRS256AndKeyConfusion(t *testing.T) {
	t.Parallel()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	path := writePEM(t, &key.PublicKey)
	v, err := auth.NewVerifier(auth.Config{PublicKeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(sign(t, jwt.SigningMethodRS256, key, claims("bob", time.Hour), nil)); err != nil || c.User != "bob" {
		t.Fatalf("valid RS256: %v", err)
	}
	// The classic confusion: HS256 signed with the RSA public key as secret.
	pemBytes, _ := os.ReadFile(path)
	forged := sign(t, jwt.SigningMethodHS256, pemBytes, claims("mallory", time.Hour), nil)
	if _, err := v.Verify(forged); !errors.Is(err, auth.ErrAlgorithm) {
		t.Fatalf("HS256 with public key as secret: %v", err)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	if _, err := v.Verify(sign(t, jwt.SigningMethodRS256, other, claims("eve", time.Hour), nil)); !errors.Is(err, auth.ErrSignature) {
		t.Fatalf("other key: %v", err)
	}
}

func TestES256ViaJWKS(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc := func(b *big.Int) string { return base64.RawURLEncoding.EncodeToString(b.FillBytes(make([]byte, 32))) }
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "kid": "k1", "crv": "P-256", "x": enc(key.X), "y": enc(key.Y)}}})
	path := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(path, set, 0o600)
	v, err := auth.NewVerifier(auth.Config{JWKSFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := v.Verify(sign(t, jwt.SigningMethodES256, key, claims("carol", time.Hour), map[string]any{"kid": "k1"})); err != nil || c.User != "carol" {
		t.Fatalf("valid ES256: %v", err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodES256, key, claims("carol", time.Hour), map[string]any{"kid": "nope"})); err == nil {
		t.Fatal("unknown kid accepted")
	}
}

func TestConfigNeedsOneKey(t *testing.T) {
	t.Parallel()
	if _, err := auth.NewVerifier(auth.Config{}); err == nil {
		t.Fatal("no key accepted")
	}
	if _, err := auth.NewVerifier(auth.Config{HMACSecret: []byte("short")}); err == nil {
		t.Fatal("short secret accepted")
	}
}

func TestFromRequestCarriers(t *testing.T) {
	t.Parallel()
	v, _ := auth.NewVerifier(auth.Config{HMACSecret: secret})
	tok, err := auth.Mint(secret, "dave", nil, time.Minute, "", "")
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/v1/chat/stream", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	if c, err := v.FromRequest(r); err != nil || c.User != "dave" {
		t.Fatalf("header: %v", err)
	}
	r = httptest.NewRequest("GET", "/v1/chat/stream", nil)
	r.Header.Set("Sec-WebSocket-Protocol", "chat.v1, bearer."+tok)
	if c, err := v.FromRequest(r); err != nil || c.User != "dave" {
		t.Fatalf("subprotocol: %v", err)
	}
	r = httptest.NewRequest("GET", "/v1/chat/stream?access_token="+tok, nil)
	if c, err := v.FromRequest(r); err != nil || c.User != "dave" {
		t.Fatalf("query: %v", err)
	}
	r = httptest.NewRequest("GET", "/v1/chat/stream", nil)
	if _, err := v.FromRequest(r); !errors.Is(err, auth.ErrMissing) {
		t.Fatalf("none: %v", err)
	}
}
