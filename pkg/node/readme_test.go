package node

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// readmeTableHead starts the README's flag table.
const readmeTableHead = "| flag | env | default | meaning |\n|---|---|---|---|\n"

// flagTable renders the README's flag table from the flag definitions: one
// row per flag, sorted by name (flag.VisitAll's order).
func flagTable() string {
	var c Config
	var origins, level string
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defineFlags(fs, &c, &origins, &level)
	var b strings.Builder
	b.WriteString(readmeTableHead)
	fs.VisitAll(func(f *flag.Flag) {
		def := "empty"
		if f.DefValue != "" {
			def = "`" + f.DefValue + "`"
		}
		fmt.Fprintf(&b, "| `-%s` | `%s` | %s | %s |\n", f.Name, EnvName(f.Name), def, strings.ReplaceAll(f.Usage, "|", `\|`))
	})
	return b.String()
}

// TestREADMEFlagTable keeps the README's flag table equal to the flags.
// Regenerate it with UPDATE_README=1 go test -run TestREADMEFlagTable ./pkg/node.
func TestREADMEFlagTable(t *testing.T) {
	t.Parallel()
	const path = "../../README.md"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	i := strings.Index(readme, readmeTableHead)
	if i < 0 {
		t.Fatalf("%s has no flag table (header %q)", path, readmeTableHead)
	}
	j := strings.Index(readme[i:], "\n\n")
	if j < 0 {
		t.Fatalf("%s: the flag table does not end with a blank line", path)
	}
	have, want := readme[i:i+j+1], flagTable()
	if have == want {
		return
	}
	if os.Getenv("UPDATE_README") != "" {
		if err := os.WriteFile(path, []byte(readme[:i]+want+readme[i+j+1:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the README's flag table is stale: run UPDATE_README=1 go test -run TestREADMEFlagTable ./pkg/node\nwant:\n%s", want)
}
