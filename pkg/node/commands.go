package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/certs"
)

// subcommandsUsage is the subcommand list of `node -h`.
const subcommandsUsage = `Subcommands (each takes -h):
  token        mint a development JWT (HS256, with -secret or CHAT_JWT_SECRET)
  certs        generate a self-signed CA and server certificate (default into ./certs)
  healthcheck  exit 0 if a node's /readyz answers 200 (for container HEALTHCHECKs;
               by default this node's, as CHAT_HTTP_ADDR and CHAT_HTTP_TLS_CERT set it)
  version      print the version and build information
  help         print this help
`

// Main runs the node binary: with no subcommand (or flags first) a node,
// else one of the subcommands of subcommandsUsage. -h, on the node or on a
// subcommand, prints the usage and returns nil (exit 0).
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		var err error
		switch args[0] {
		case "token":
			err = tokenCmd(args[1:], getenv, stdout, stderr)
		case "certs":
			err = certsCmd(args[1:], stdout, stderr)
		case "healthcheck":
			err = healthcheckCmd(ctx, args[1:], getenv, stderr)
		case "version", "-version", "--version":
			err = versionCmd(args[1:], stdout, stderr)
		case "help":
			_, err = ParseConfig([]string{"-h"}, func(string) string { return "" }, stdout)
		default:
			if !strings.HasPrefix(args[0], "-") {
				return fmt.Errorf("node: unknown subcommand %q (node -h lists them)", args[0])
			}
			return runNode(ctx, args, getenv, stdout)
		}
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h printed the usage: a success, as for the node
		}
		return err
	}
	return runNode(ctx, args, getenv, stdout)
}

// runNode runs a node for the binary. go-redis's logger is process-wide
// (see redisLog): the binary routes it into the node's log, in-process test
// nodes (which call Run) do not.
func runNode(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	redisLoggerOnce.Do(func() { redis.SetLogger(redisLogger{}) })
	return Run(ctx, args, getenv, stdout, nil)
}

var redisLoggerOnce sync.Once

// versionCmd prints the module version and what the Go toolchain recorded
// in the binary (runtime/debug.ReadBuildInfo): Go version, target, and the
// VCS revision when the build had one.
func versionCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprint(stdout, versionText())
	return nil
}

func versionText() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "chat node: no build information in this binary\n"
	}
	var b strings.Builder
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	fmt.Fprintf(&b, "chat node %s\n", v)
	fmt.Fprintf(&b, "  module   %s\n", bi.Main.Path)
	fmt.Fprintf(&b, "  go       %s\n", bi.GoVersion)
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	fmt.Fprintf(&b, "  target   %s/%s\n", or(settings["GOOS"], runtime.GOOS), or(settings["GOARCH"], runtime.GOARCH))
	if rev := settings["vcs.revision"]; rev != "" {
		if settings["vcs.modified"] == "true" {
			rev += " (modified)"
		}
		fmt.Fprintf(&b, "  revision %s %s\n", rev, settings["vcs.time"])
	} else {
		fmt.Fprintf(&b, "  revision unknown (built without VCS information)\n")
	}
	return b.String()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func tokenCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "", "the token's subject: the user name (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	// The environment is read after parsing, never as a flag default:
	// -h prints the defaults, and the secret must not appear there.
	secret := fs.String("secret", "", "HS256 secret, as the node's -jwt-secret (default: env CHAT_JWT_SECRET)")
	rooms := fs.String("rooms", "", "comma-separated rooms the token may join (empty: any)")
	issuer := fs.String("issuer", "", "issuer (iss) (default: env CHAT_JWT_ISSUER)")
	audience := fs.String("audience", "", "audience (aud) (default: env CHAT_JWT_AUDIENCE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, f := range []struct {
		v   *string
		env string
	}{{secret, "CHAT_JWT_SECRET"}, {issuer, "CHAT_JWT_ISSUER"}, {audience, "CHAT_JWT_AUDIENCE"}} {
		if *f.v == "" {
			*f.v = getenv(f.env)
		}
	}
	if *user == "" || *secret == "" {
		return errors.New("token: -user and -secret (or CHAT_JWT_SECRET) are required")
	}
	if len(*secret) < 32 {
		return errors.New("token: the secret must be at least 32 bytes, as the node requires")
	}
	var rs []string
	for _, r := range strings.Split(*rooms, ",") {
		if r = strings.TrimSpace(r); r != "" {
			rs = append(rs, r)
		}
	}
	tok, err := auth.Mint([]byte(*secret), *user, rs, *ttl, *issuer, *audience)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func certsCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "certs", "output directory")
	hosts := fs.String("hosts", strings.Join(certs.DefaultHosts, ","), "comma-separated DNS names and IPs the server certificate covers")
	validity := fs.Duration("validity", 365*24*time.Hour, "validity of the CA and the certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var hs []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hs = append(hs, h)
		}
	}
	if len(hs) == 0 {
		return errors.New("certs: -hosts is empty")
	}
	if err := certs.Generate(*dir, hs, *validity); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s/{%s,%s,%s,%s} for %s\n", *dir, certs.CAFile, certs.CAKeyFile, certs.ServerFile, certs.ServerKeyFile, strings.Join(hs, ", "))
	return nil
}

func healthcheckCmd(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "", "URL that must answer 200 (default: this node's /readyz on 127.0.0.1, over https when CHAT_HTTP_TLS_CERT is set, on the port of CHAT_HTTP_ADDR)")
	caFile := fs.String("cacert", "", "PEM CA certificate that signed the server's certificate, to verify an https -url (for example certs/ca.pem from `node certs`; not the server's own certificate or key)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	hc := http.DefaultClient
	switch {
	case *caFile != "":
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("healthcheck: no certificate in %s", *caFile)
		}
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	case *url == "" && getenv("CHAT_HTTP_TLS_CERT") != "":
		tc, err := ownCertTLS(getenv("CHAT_HTTP_TLS_CERT"))
		if err != nil {
			return err
		}
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	if *url == "" {
		*url = localReadyz(getenv)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", *url, resp.Status)
	}
	return nil
}

// localReadyz is the /readyz of the node configured by the environment,
// as a container's HEALTHCHECK sees it: on loopback unless CHAT_HTTP_ADDR
// names a host, on its port (8080 by default), over https when
// CHAT_HTTP_TLS_CERT is set.
func localReadyz(getenv func(string) string) string {
	host, port := "127.0.0.1", "8080"
	if addr := getenv("CHAT_HTTP_ADDR"); addr != "" {
		if h, p, err := net.SplitHostPort(addr); err == nil {
			if p != "" {
				port = p
			}
			if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
				host = h
			}
		}
	}
	scheme := "http"
	if getenv("CHAT_HTTP_TLS_CERT") != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/readyz"
}

// ownCertTLS trusts exactly the node's own certificate (the first in
// certFile): the probe talks to its own node on loopback, an address the
// certificate need not name, so the chain and name checks are replaced by
// comparing the certificate the server presents with the file's.
func ownCertTLS(certFile string) (*tls.Config, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("healthcheck: %w", err)
	}
	var own []byte
	for block, rest := pem.Decode(b); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == "CERTIFICATE" {
			own = block.Bytes
			break
		}
	}
	if own == nil {
		return nil, fmt.Errorf("healthcheck: no certificate in %s", certFile)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the exact match below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], own) {
				return errors.New("healthcheck: the server's certificate is not CHAT_HTTP_TLS_CERT's")
			}
			return nil
		},
	}, nil
}
