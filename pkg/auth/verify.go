package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors a Verifier returns; their text is safe to show a client.
var (
	ErrMissing   = errors.New("auth: missing token")
	ErrExpired   = errors.New("auth: token expired")
	ErrSignature = errors.New("auth: bad token signature")
	ErrAlgorithm = errors.New("auth: token algorithm not allowed")
	ErrAudience  = errors.New("auth: wrong token audience")
	ErrIssuer    = errors.New("auth: wrong token issuer")
	ErrMalformed = errors.New("auth: malformed token")
	ErrInvalid   = errors.New("auth: invalid token")
)

// Claims is an authenticated identity.
type Claims struct {
	// User is the token's subject.
	User string
	// AllRooms is set when the token has no "rooms" claim: it may join
	// every room. A token with a "rooms" claim may join only the rooms
	// listed there, so `"rooms": []` allows none. The zero Claims allows
	// none either: a room grant is always explicit.
	AllRooms bool
	// Rooms are the rooms the token may join when AllRooms is false. It is
	// nil when AllRooms is set.
	Rooms []string
	// Expires is when the token stops being valid.
	Expires time.Time
}

// MayJoin reports whether the claims allow joining (and reading) room. It
// is the one rule for every edge; room should be normalised first.
func (c *Claims) MayJoin(room string) bool {
	return c.AllRooms || slices.Contains(c.Rooms, room)
}

// tokenClaims is the JWT payload: registered claims plus "rooms".
type tokenClaims struct {
	jwt.RegisteredClaims
	Rooms roomsClaim `json:"rooms,omitzero"`
}

// roomsClaim is the "rooms" claim. Absent and empty mean opposite things
// (every room, no room), a distinction a plain []string keeps only by
// accident (nil vs empty after decoding), so it is recorded explicitly:
// encoding/json calls UnmarshalJSON only when the key is present.
type roomsClaim struct {
	present bool
	names   []string
}

// errRoomsNull reports a "rooms": null claim, which could mean either.
var errRoomsNull = errors.New(`"rooms" must be a list of room names, not null`)

// UnmarshalJSON records that the claim is present. null is refused: an
// issuer that meant "every room" must leave the claim out, and one that
// meant "none" must send [].
func (r *roomsClaim) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		return errRoomsNull
	}
	var names []string
	if err := json.Unmarshal(b, &names); err != nil {
		return err
	}
	*r = roomsClaim{present: true, names: names}
	return nil
}

// MarshalJSON writes the listed rooms; an empty list is [] (no room).
func (r roomsClaim) MarshalJSON() ([]byte, error) {
	if r.names == nil {
		return []byte("[]"), nil
	}
	return json.Marshal(r.names)
}

// IsZero reports an absent claim, which omitzero leaves out.
func (r roomsClaim) IsZero() bool { return !r.present }

// Config configures a Verifier. Exactly one key source must be set.
type Config struct {
	// HMACSecret enables HS256 with this shared secret.
	HMACSecret []byte
	// PublicKeyFile is a PEM file with an RSA (RS256) or ECDSA P-256 (ES256)
	// public key.
	PublicKeyFile string
	// JWKSFile is a JSON Web Key Set file; tokens name their key with "kid".
	JWKSFile string
	// Issuer and Audience, when set, must match the token's.
	Issuer   string
	Audience string
	// Leeway tolerates clock skew between the issuer and this node on the
	// token's start ("nbf", and "iat" if it is ever checked): a token
	// issued by a clock a little ahead is usable at once. It never extends
	// the expiry: a token is refused from its "exp" on, by every edge
	// alike, so that REST calls and streams follow one rule. Zero means
	// 30 s.
	Leeway time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Verifier checks tokens. It is safe for concurrent use.
type Verifier struct {
	cfg     Config
	methods []string
	key     jwt.Keyfunc
}

// NewVerifier returns a Verifier for cfg.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	v := &Verifier{cfg: cfg}
	sources := 0
	if len(cfg.HMACSecret) > 0 {
		sources++
		if len(cfg.HMACSecret) < 32 {
			return nil, fmt.Errorf("auth: HMAC secret must be at least 32 bytes")
		}
		secret := cfg.HMACSecret
		v.methods = []string{"HS256"}
		v.key = func(*jwt.Token) (any, error) { return secret, nil }
	}
	if cfg.PublicKeyFile != "" {
		sources++
		pub, err := readPublicKey(cfg.PublicKeyFile)
		if err != nil {
			return nil, err
		}
		v.methods = methodsFor(pub)
		v.key = func(*jwt.Token) (any, error) { return pub, nil }
	}
	if cfg.JWKSFile != "" {
		sources++
		keys, err := readJWKS(cfg.JWKSFile)
		if err != nil {
			return nil, err
		}
		v.methods = []string{"RS256", "ES256"}
		v.key = func(t *jwt.Token) (any, error) {
			kid, _ := t.Header["kid"].(string)
			k, ok := keys[kid]
			if !ok {
				return nil, fmt.Errorf("unknown key id %q", kid)
			}
			if !slices.Contains(methodsFor(k), t.Method.Alg()) {
				return nil, ErrAlgorithm
			}
			return k, nil
		}
	}
	if sources != 1 {
		return nil, errors.New("auth: configure exactly one of an HMAC secret, a public key file or a JWKS file")
	}
	return v, nil
}

func methodsFor(k crypto.PublicKey) []string {
	switch k.(type) {
	case *rsa.PublicKey:
		return []string{"RS256"}
	case *ecdsa.PublicKey:
		return []string{"ES256"}
	}
	return nil
}

// Verify checks token and returns its claims. Errors wrap one of the Err
// values above. A token is valid strictly before its expiry (exp): from
// that instant on Verify returns ErrExpired, whatever the Leeway, so
// callers need no expiry check of their own.
func (v *Verifier) Verify(token string) (*Claims, error) {
	if token == "" {
		return nil, ErrMissing
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.cfg.Leeway),
		jwt.WithTimeFunc(v.cfg.Now),
	}
	if v.cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.cfg.Issuer))
	}
	if v.cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(v.cfg.Audience))
	}
	// Name a disallowed algorithm as such (golang-jwt reports it as a bad
	// signature): "none", or HS256 against an RSA key, is an attack, not a
	// typo.
	if t, _, err := jwt.NewParser().ParseUnverified(token, &tokenClaims{}); err == nil && !slices.Contains(v.methods, t.Method.Alg()) {
		return nil, ErrAlgorithm
	}
	var tc tokenClaims
	_, err := jwt.ParseWithClaims(token, &tc, v.key, opts...)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, ErrExpired
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, ErrSignature
	case errors.Is(err, jwt.ErrTokenUnverifiable), errors.Is(err, ErrAlgorithm):
		return nil, ErrAlgorithm
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return nil, ErrAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return nil, ErrIssuer
	case errors.Is(err, errRoomsNull):
		// Before ErrTokenMalformed, which wraps it: name the claim.
		return nil, fmt.Errorf("%w: %v", ErrInvalid, errRoomsNull)
	case errors.Is(err, jwt.ErrTokenMalformed):
		return nil, ErrMalformed
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return nil, fmt.Errorf("%w: expiry (exp) is required", ErrInvalid)
	default:
		return nil, ErrInvalid
	}
	// The parser applied the leeway to exp as well. Expiry is exact here:
	// a stream whose token is past exp would be closed by the hub at once,
	// and a REST call must not get what a stream is refused. This is the
	// one place that rule lives.
	if tc.ExpiresAt == nil || !v.cfg.Now().Before(tc.ExpiresAt.Time) {
		return nil, ErrExpired
	}
	if tc.Subject == "" {
		return nil, fmt.Errorf("%w: subject (sub) is required", ErrInvalid)
	}
	c := &Claims{User: tc.Subject, AllRooms: !tc.Rooms.present, Expires: tc.ExpiresAt.Time}
	if tc.Rooms.present {
		// Non-nil even when empty: a present claim is a restriction.
		c.Rooms = append([]string{}, tc.Rooms.names...)
	}
	return c, nil
}

// Mint signs a token for user with an HMAC secret: the development tokens of
// `node token`. With rooms the token may join only those; without (nil or
// empty) it has no "rooms" claim and may join every room. A token for no
// room at all cannot be minted here: it would be useless.
func Mint(secret []byte, user string, rooms []string, ttl time.Duration, issuer, audience string) (string, error) {
	now := time.Now()
	tc := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			Issuer:    issuer,
		},
	}
	if len(rooms) > 0 {
		tc.Rooms = roomsClaim{present: true, names: rooms}
	}
	if audience != "" {
		tc.Audience = jwt.ClaimStrings{audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, tc).SignedString(secret)
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read public key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("auth: %s holds no PEM block", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		if rk, err2 := x509.ParsePKCS1PublicKey(blk.Bytes); err2 == nil {
			return rk, nil
		}
		return nil, fmt.Errorf("auth: parse public key %s: %w", path, err)
	}
	if methodsFor(k) == nil {
		return nil, fmt.Errorf("auth: %s: only RSA and ECDSA keys are supported", path)
	}
	return k, nil
}

type ctxKey struct{}

// NewContext returns ctx carrying c.
func NewContext(ctx context.Context, c *Claims) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the claims in ctx, if any.
func FromContext(ctx context.Context) (*Claims, bool) {
	c, ok := ctx.Value(ctxKey{}).(*Claims)
	return c, ok
}
