package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"example.com/chat/internal/testutil"
)

// TestTTYEditReactMore, with two panes: alice's /edit of her own line is
// seen changed in bob's pane; bob's /edit and /delete of it are refused
// in words; bob's /react shows in alice's; alice's /delete shows in
// bob's; /more prints the older messages before the ones shown, with
// their #N, page by page to the start of the room.
func TestTTYEditReactMore(t *testing.T) {
	t.Parallel()
	a := testutil.StartNode(t)
	carol := observer(t, a.GRPC, "carol", "st", "")
	ctx := context.Background()
	for i := range 30 {
		if _, err := carol.Send(ctx, fmt.Sprintf("old%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	alice := startPane(t, nil, "-addr", a.GRPC, "-user", "alice", "-room", "st", "-history", "5")
	bob := startPane(t, nil, "-addr", a.GRPC, "-user", "bob", "-room", "st", "-history", "5")
	for _, p := range []*pane{alice, bob} {
		p.waitText("* live in #st on " + a.GRPC)
	}
	alice.wait("the last 5 of the history", func(s string) bool {
		return msgLine("carol", "old25").MatchString(s) && !strings.Contains(s, "old24")
	})

	alice.enter("my tpyo")
	m := nextText(t, carol)
	if m.GetText() != "my tpyo" {
		t.Fatalf("carol got %q, want alice's line", m.GetText())
	}
	n := m.GetSeq()
	alice.enter(fmt.Sprintf("/edit %d my typo", n))
	want := fmt.Sprintf("* alice edited #%d: my typo", n)
	bob.waitText(want)
	alice.waitText(want)

	bob.enter(fmt.Sprintf("/edit #%d bob was here", n))
	bob.waitText(fmt.Sprintf("! /edit #%d: not allowed: only the author of message %d may edit it", n, n))
	bob.enter(fmt.Sprintf("/delete %d", n))
	bob.waitText(fmt.Sprintf("! /delete #%d: not allowed: only the author of message %d may delete it", n, n))
	bob.enter(fmt.Sprintf("/react %d +1", n))
	alice.waitText(fmt.Sprintf("* bob reacted +1 to #%d", n))
	bob.enter(fmt.Sprintf("/react %d +1", n))
	alice.waitText(fmt.Sprintf("* bob took back +1 from #%d", n))
	bob.enter("/edit x y")
	bob.waitText(`! /edit: "x" is not a message number`)
	bob.enter("/react 3")
	bob.waitText("! usage: /react N emoji")
	// bob's stream is still up after the refusals.
	bob.enter("still here")
	if m := nextText(t, carol); m.GetText() != "still here" {
		t.Fatalf("carol got %q, want bob's line", m.GetText())
	}

	alice.enter(fmt.Sprintf("/delete %d", n))
	bob.waitText(fmt.Sprintf("* alice deleted #%d", n))

	// /more: the 20 before old25 (seq 26), with their seqs, then the rest.
	line := func(seq int, text string) *regexp.Regexp {
		return regexp.MustCompile(fmt.Sprintf(`(?m)^#%d \d\d:\d\d:\d\d carol: %s$`, seq, text))
	}
	alice.enter("/more")
	s := alice.wait("the older page", func(s string) bool { return strings.Contains(s, "* /more for older ones") })
	page := after(s, "* 20 older messages in #st:")
	if !line(6, "old05").MatchString(page) || !line(25, "old24").MatchString(page) || strings.Contains(page, "old04") || strings.Contains(page, "old25") {
		t.Fatalf("the first /more page is not old05..old24 with their seqs:\n%s", page)
	}
	alice.enter("/more")
	s = alice.waitText("* that is the start of #st")
	page = after(s, "* 5 older messages in #st:")
	if !line(1, "old00").MatchString(page) || !line(5, "old04").MatchString(page) || strings.Contains(page, "old05") {
		t.Fatalf("the second /more page is not old00..old04:\n%s", page)
	}
	alice.enter("/more")
	alice.waitText("* nothing older in #st")

	// /help names the commands.
	alice.enter("/help")
	for _, c := range []string{"/more", "/seqs", "/edit N text", "/delete N", "/react N emoji"} {
		alice.waitText("*   " + c)
	}
}
