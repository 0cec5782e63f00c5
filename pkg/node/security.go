package node

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"example.com/chat/pkg/auth"
)

// verifier returns the token verifier the flags ask for, or nil for open
// development mode (with a warning).
func verifier(cfg Config, log *slog.Logger) (*auth.Verifier, error) {
	if cfg.JWTSecret == "" && cfg.JWTPublicKey == "" && cfg.JWTJWKS == "" {
		log.Warn("no JWT key configured: OPEN DEVELOPMENT MODE, any client may claim any user name; set -jwt-secret, -jwt-public-key or -jwt-jwks in production")
		return nil, nil
	}
	v, err := auth.NewVerifier(auth.Config{
		HMACSecret:    []byte(cfg.JWTSecret),
		PublicKeyFile: cfg.JWTPublicKey,
		JWKSFile:      cfg.JWTJWKS,
		Issuer:        cfg.JWTIssuer,
		Audience:      cfg.JWTAudience,
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	return v, nil
}

// grpcServerCreds returns the gRPC listener's TLS option, if configured.
func grpcServerCreds(cfg Config) ([]grpc.ServerOption, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("node: -tls-cert/-tls-key: %w", err)
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
	}))}, nil
}

// gatewayCreds returns how the gateway dials the node's own gRPC server:
// TLS verified against -tls-ca (or the system roots) when the server serves
// TLS, never skipping verification.
func gatewayCreds(cfg Config) (grpc.DialOption, error) {
	if cfg.TLSCert == "" {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("node: -tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("node: -tls-ca %s holds no certificate", cfg.TLSCA)
		}
		tc.RootCAs = pool
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(tc)), nil
}
