package presence

import (
	"sort"
	"strings"
)

// distinct returns the sorted distinct users of "<user>\x00<node>" members.
func distinct(members []string) []string {
	seen := make(map[string]bool, len(members))
	var out []string
	for _, m := range members {
		u, _, _ := strings.Cut(m, "\x00")
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	sort.Strings(out)
	return out
}

// pattern is the ZSCAN MATCH pattern of user's members, with glob
// characters in the name escaped.
func pattern(user string) string {
	var b strings.Builder
	for _, r := range user {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteString("\x00*")
	return b.String()
}
