package main

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"example.com/chat/api"
)

// dangerous matches what must never reach the terminal from the network:
// C0 controls other than the newline the printer writes itself, DEL, C1
// controls (encoded or as raw bytes), bidi controls, line separators and
// invalid UTF-8.
var dangerous = regexp.MustCompile("[\x00-\x09\x0b-\x1f\x7f\u0080-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")

func checkInert(t *testing.T, out string) {
	t.Helper()
	if loc := dangerous.FindStringIndex(out); loc != nil {
		t.Fatalf("output carries %+q at %d:\n%+q", out[loc[0]:loc[1]], loc[0], out)
	}
	if !utf8Valid(out) {
		t.Fatalf("output is not valid UTF-8: %+q", out)
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// forged matches a line that looks like a chat message or an event of the
// client's own: what a sender must not be able to fake.
var forged = regexp.MustCompile(`(?m)^(\[\S+\] )?(\d\d:\d\d:\d\d \S+: |\* |! )`)

func TestRenderMessage(t *testing.T) {
	t.Parallel()
	ts := time.Date(2026, 1, 2, 12, 0, 0, 0, time.Local).UnixMilli()
	for _, tc := range []struct {
		name  string
		where string // the room's label, when not the current room
		m     *api.Message
		want  string
	}{
		{"plain", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "hi alice", Ts: ts}, "12:00:00 bob: hi alice\n"},
		{"unicode kept", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "Zoë", Text: "ça va? 👋", Ts: ts}, "12:00:00 Zoë: ça va? 👋\n"},
		{"title escape", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "\x1b]0;pwned\x07hi", Ts: ts}, `12:00:00 bob: \x1b]0;pwned\x07hi` + "\n"},
		{"clipboard escape", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "\x1b]52;c;cm0gLXJmIH4=\x1b\\", Ts: ts}, `12:00:00 bob: \x1b]52;c;cm0gLXJmIH4=\x1b\` + "\n"},
		{"c1 csi", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "a\u009b2Jb", Ts: ts}, `12:00:00 bob: a\u009b2Jb` + "\n"},
		{"bidi override", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "see \u202egnp.exe", Ts: ts}, `12:00:00 bob: see \u202egnp.exe` + "\n"},
		{"del and nul", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "a\x7fb\x00c", Ts: ts}, `12:00:00 bob: a\x7fb\x00c` + "\n"},
		{"invalid utf-8", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "a\xffb", Ts: ts}, "12:00:00 bob: a\uFFFDb\n"},
		{"carriage return", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "hi\r12:00:01 carol: fake", Ts: ts}, `12:00:00 bob: hi\r12:00:01 carol: fake` + "\n"},
		{"newlines indented", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "line one\n12:00:01 carol: fake\r\n* carol joined", Ts: ts},
			"12:00:00 bob: line one\n" + contIndent + "12:00:01 carol: fake\n" + contIndent + "* carol joined\n"},
		{"user with controls", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob\n12:00:01 carol", Text: "x", Ts: ts}, `12:00:00 bob\n12:00:01 carol: x` + "\n"},
		{"join", "", &api.Message{Kind: api.Kind_KIND_JOIN, User: "e\x1b[2Jve"}, `* e\x1b[2Jve joined` + "\n"},
		{"typing", "", &api.Message{Kind: api.Kind_KIND_TYPING, User: "\u202eeve"}, `* \u202eeve is typing…` + "\n"},
		{"error", "", &api.Message{Kind: api.Kind_KIND_ERROR, Error: &api.Error{Message: "bad\n* you were kicked\x1b[0m"}}, `! bad\n* you were kicked\x1b[0m` + "\n"},
		{"truncated", "", &api.Message{Kind: api.Kind_KIND_TRUNCATED, Text: "gap\x1b[A"}, `! some messages could not be replayed: gap\x1b[A` + "\n"},
		{"another room", "#dev", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "hi\n12:00:01 carol: fake", Ts: ts}, "[#dev] 12:00:00 bob: hi\n" + contIndent + "12:00:01 carol: fake\n"},
		{"a direct conversation", "@bob", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "psst", Ts: ts}, "[@bob] 12:00:00 bob: psst\n"},
		{"edit", "", &api.Message{Kind: api.Kind_KIND_EDIT, User: "bob", TargetSeq: 12, Seq: 14, Text: "new\x1b[2J\n12:00:01 carol: fake"},
			`* bob edited #12: new\x1b[2J` + "\n" + contIndent + "12:00:01 carol: fake\n"},
		{"delete in another room", "#dev", &api.Message{Kind: api.Kind_KIND_DELETE, User: "bob", TargetSeq: 12}, "* [#dev] bob deleted #12\n"},
		{"reaction added", "", &api.Message{Kind: api.Kind_KIND_REACTION, User: "bob", TargetSeq: 3, Text: "👍\u202e", Reacted: true}, `* bob reacted 👍\u202e to #3` + "\n"},
		{"reaction removed", "", &api.Message{Kind: api.Kind_KIND_REACTION, User: "bob", TargetSeq: 3, Text: "👍"}, "* bob took back 👍 from #3\n"},
		{"as it stands", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Text: "fixed", Ts: ts, Seq: 3, Edited: true,
			Reactions: []*api.Reaction{{Emoji: "👍", Count: 2}, {Emoji: "x\x1b", Count: 1}}}, `12:00:00 bob: fixed (edited)  [👍 2 x\x1b 1]` + "\n"},
		{"tombstone", "", &api.Message{Kind: api.Kind_KIND_MESSAGE, User: "bob", Ts: ts, Seq: 3, Deleted: true}, "12:00:00 (a message of bob, deleted)\n"},
		{"error of another room", "#dev", &api.Message{Kind: api.Kind_KIND_ERROR, Error: &api.Error{Message: "no\x1b[2J"}}, `! [#dev] no\x1b[2J` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b strings.Builder
			p := &printer{w: &b}
			p.message(tc.where, tc.m)
			got := b.String()
			if got != tc.want {
				t.Fatalf("got  %+q\nwant %+q", got, tc.want)
			}
			checkInert(t, got)
			if n := len(forged.FindAllString(got, -1)); n > 1 {
				t.Fatalf("%d lines look like messages or events:\n%s", n, got)
			}
		})
	}
}

// TestRenderPrintf: lines the client composes from network values (errors,
// presence) are inert too.
func TestRenderPrintf(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	p := &printer{w: &b}
	p.printf("! not sent: %v", errors.New("rpc error: desc = \x1b]0;x\x07\n12:00:00 eve: hi"))
	p.printf("* %d here: %s", 2, strings.Join([]string{"a\u202e", "b\x1b"}, ", "))
	want := `! not sent: rpc error: desc = \x1b]0;x\x07\n12:00:00 eve: hi` + "\n" + `* 2 here: a\u202e, b\x1b` + "\n"
	if got := b.String(); got != want {
		t.Fatalf("got  %+q\nwant %+q", got, want)
	}
	checkInert(t, b.String())
}
