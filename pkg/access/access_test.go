package access_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/history"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stores runs the contract over Memory and over a real redis-server.
// hasLog is the room that has messages already.
func stores(t *testing.T, run func(t *testing.T, s access.Store, hasLog string)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		run(t, access.NewMemory(func(room string) bool { return room == "busy" }), "busy")
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		srv := testutil.StartRedis(t)
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		t.Cleanup(func() { c.Close() })
		prefix := testutil.UniquePrefix(t)
		// A room with a log, as the publish script leaves it.
		if err := c.HSet(context.Background(), history.NewKeys(prefix).Meta("busy"), "epoch", "e1", "seq", 3).Err(); err != nil {
			t.Fatal(err)
		}
		run(t, access.NewRedis(c, prefix), "busy")
	})
}

func TestNames(t *testing.T) {
	if access.DirectRoom("alice", "bob") != access.DirectRoom("bob", "alice") {
		t.Fatal("DirectRoom depends on the order")
	}
	if access.DirectRoom("alice", "bob") == access.DirectRoom("alice", "bo") || access.DirectRoom("a\x00b", "c") == access.DirectRoom("a", "b\x00c") {
		t.Fatal("two pairs share a direct room")
	}
	for _, r := range []string{access.DirectRoom("Zoë", "李"), access.PersonalRoom("Zoë")} {
		if len(r) > 64 {
			t.Fatalf("%q is longer than a room name may be", r)
		}
	}
	if access.KindOfName(access.DirectRoom("a", "b")) != access.Direct || access.KindOfName(access.PersonalRoom("a")) != access.Personal || access.KindOfName("general") != access.Public {
		t.Fatal("KindOfName")
	}
}

func TestStore(t *testing.T) {
	stores(t, func(t *testing.T, s access.Store, busy string) {
		ctx := context.Background()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		check := func(room, user string, want access.Decision) {
			t.Helper()
			got, err := s.Check(ctx, room, user)
			if err != nil || got != want {
				t.Fatalf("Check(%s, %s) = %+v, %v; want %+v", room, user, got, err, want)
			}
		}
		check("general", "anyone", access.Decision{Kind: access.Public, Member: true})
		check(access.PersonalRoom("alice"), "alice", access.Decision{Kind: access.Personal, Member: true})
		check(access.PersonalRoom("alice"), "bob", access.Decision{Kind: access.Personal})

		// Private rooms.
		must(s.CreatePrivate(ctx, "team", "alice"))
		if err := s.CreatePrivate(ctx, "team", "bob"); !errors.Is(err, access.ErrExists) {
			t.Fatalf("second CreatePrivate = %v; want ErrExists", err)
		}
		if err := s.CreatePrivate(ctx, busy, "bob"); !errors.Is(err, access.ErrExists) {
			t.Fatalf("CreatePrivate of a room with a log = %v; want ErrExists", err)
		}
		if err := s.CreatePrivate(ctx, access.DirectRoom("a", "b"), "a"); !errors.Is(err, access.ErrReserved) {
			t.Fatalf("CreatePrivate of a reserved name = %v; want ErrReserved", err)
		}
		check("team", "alice", access.Decision{Kind: access.Private, Member: true, Owner: "alice"})
		check("team", "bob", access.Decision{Kind: access.Private, Owner: "alice"})
		if err := s.AddMember(ctx, "team", "bob", "bob"); !errors.Is(err, access.ErrForbidden) {
			t.Fatalf("AddMember by a non-owner = %v; want ErrForbidden", err)
		}
		if err := s.AddMember(ctx, "nope", "alice", "bob"); !errors.Is(err, access.ErrNotFound) {
			t.Fatalf("AddMember to a public room = %v; want ErrNotFound", err)
		}
		must(s.AddMember(ctx, "team", "alice", "bob"))
		must(s.AddMember(ctx, "team", "alice", "bob"))
		check("team", "bob", access.Decision{Kind: access.Private, Member: true, Owner: "alice"})
		if m, err := s.Members(ctx, "team"); err != nil || !slices.Equal(m, []string{"alice", "bob"}) {
			t.Fatalf("Members = %v, %v", m, err)
		}
		if err := s.RemoveMember(ctx, "team", "alice", "alice"); !errors.Is(err, access.ErrForbidden) {
			t.Fatalf("removing the owner = %v; want ErrForbidden", err)
		}
		must(s.Touch(ctx, "bob", "team", 5))
		must(s.RemoveMember(ctx, "team", "alice", "bob"))
		check("team", "bob", access.Decision{Kind: access.Private, Owner: "alice"})
		if c, _ := s.Conversations(ctx, "bob", 0); slices.Contains(c, "team") {
			t.Fatalf("a removed member still lists the room: %v", c)
		}

		// Direct conversations.
		dm := access.DirectRoom("alice", "carol")
		check(dm, "alice", access.Decision{Kind: access.Direct})
		room, created, err := s.Direct(ctx, "carol", "alice")
		if err != nil || room != dm || !created {
			t.Fatalf("Direct = %q, %v, %v; want %q, created", room, created, err, dm)
		}
		if _, created, _ := s.Direct(ctx, "alice", "carol"); created {
			t.Fatal("Direct created the conversation twice")
		}
		check(dm, "alice", access.Decision{Kind: access.Direct, Member: true})
		check(dm, "carol", access.Decision{Kind: access.Direct, Member: true})
		check(dm, "mallory", access.Decision{Kind: access.Direct})
		if err := s.AddMember(ctx, dm, "alice", "mallory"); !errors.Is(err, access.ErrNotFound) {
			t.Fatalf("AddMember to a direct conversation = %v; want ErrNotFound", err)
		}

		// Conversations, most recent first, bounded.
		must(s.Touch(ctx, "dave", "a", 10))
		must(s.Touch(ctx, "dave", "b", 30))
		must(s.Touch(ctx, "dave", "c", 20))
		must(s.Touch(ctx, "dave", "a", 5)) // older: no change
		if c, err := s.Conversations(ctx, "dave", 0); err != nil || !slices.Equal(c, []string{"b", "c", "a"}) {
			t.Fatalf("Conversations = %v, %v", c, err)
		}
		if c, _ := s.Conversations(ctx, "dave", 2); !slices.Equal(c, []string{"b", "c"}) {
			t.Fatalf("Conversations limit 2 = %v", c)
		}
		for i := range access.MaxConversations + 5 {
			must(s.Touch(ctx, "erin", fmt.Sprint("r", i), int64(100+i)))
		}
		c, _ := s.Conversations(ctx, "erin", 0)
		if len(c) != access.MaxConversations || c[0] != fmt.Sprint("r", access.MaxConversations+4) || slices.Contains(c, "r0") {
			t.Fatalf("Conversations keeps %d (first %q); want the newest %d", len(c), c[0], access.MaxConversations)
		}
	})
}
