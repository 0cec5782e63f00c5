package node_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"example.com/chat/pkg/node"
)

// TestSubcommandHelp: -h on any subcommand prints its usage and exits 0,
// and never prints a secret from the environment.
func TestSubcommandHelp(t *testing.T) {
	t.Parallel()
	const secret = "do-not-print-me-0123456789abcdef0123"
	env := map[string]string{"CHAT_JWT_SECRET": secret, "CHAT_METRICS_TOKEN": secret}
	for _, args := range [][]string{{"token", "-h"}, {"certs", "-h"}, {"healthcheck", "-h"}, {"-h"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			if err := node.Main(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut); err != nil {
				t.Errorf("exit error %v, want nil", err)
			}
			all := out.String() + errOut.String()
			if !strings.Contains(all, "Usage") && !strings.Contains(all, "-") {
				t.Errorf("no usage printed: %q", all)
			}
			if strings.Contains(all, secret) {
				t.Errorf("help printed the secret:\n%s", all)
			}
		})
	}
}
