package presence_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"example.com/chat/internal/testutil"
	"example.com/chat/pkg/presence"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func stores(t *testing.T) map[string]func(t *testing.T) presence.Store {
	return map[string]func(t *testing.T) presence.Store{
		"memory": func(t *testing.T) presence.Store { return presence.NewMemory(nil) },
		"redis": func(t *testing.T) presence.Store {
			srv := testutil.StartRedis(t)
			c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { c.Close() })
			return presence.NewRedis(c, testutil.UniquePrefix(t))
		},
	}
}

func TestContract(t *testing.T) {
	for name, mk := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := mk(t)
			check := func(room string, want ...string) {
				t.Helper()
				users, n, err := s.List(ctx, room, 100)
				if err != nil {
					t.Fatal(err)
				}
				if n != len(want) || len(users) != len(want) {
					t.Fatalf("%s: got %v (%d), want %v", room, users, n, want)
				}
				for i := range want {
					if users[i] != want[i] {
						t.Fatalf("%s: got %v, want %v", room, users, want)
					}
				}
				if _, n2, _ := s.List(ctx, room, 0); n2 != n {
					t.Fatalf("count without listing %d != %d", n2, n)
				}
			}
			was, err := s.Join(ctx, "r", "alice", "n1", time.Minute)
			if err != nil || was {
				t.Fatalf("first join: %v %v", was, err)
			}
			// Second device on another node: already present.
			if was, _ := s.Join(ctx, "r", "alice", "n2", time.Minute); !was {
				t.Fatal("second device not seen as present")
			}
			s.Join(ctx, "r", "b*[ob]", "n1", time.Minute) // glob characters in a name
			s.Join(ctx, "other", "carol", "n1", time.Minute)
			check("r", "alice", "b*[ob]")
			if n, _ := s.ActiveUsers(ctx); n != 3 {
				t.Fatalf("active users %d", n)
			}
			// Leaving one node: still present through the other.
			if still, _ := s.Leave(ctx, "r", "alice", "n1"); !still {
				t.Fatal("alice gone while on n2")
			}
			if still, _ := s.Leave(ctx, "r", "alice", "n2"); still {
				t.Fatal("alice still present after leaving everywhere")
			}
			if still, _ := s.Leave(ctx, "r", "b*[ob]", "n1"); still {
				t.Fatal("glob user still present")
			}
			check("r")
			// A crashed node's users expire.
			s.Join(ctx, "x", "dave", "dead", 300*time.Millisecond)
			s.Join(ctx, "x", "erin", "live", time.Minute)
			deadline := time.Now().Add(5 * time.Second)
			for {
				users, _, _ := s.List(ctx, "x", 10)
				if len(users) == 1 && users[0] == "erin" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("dave did not expire: %v", users)
				}
				time.Sleep(50 * time.Millisecond) // polling a clock-driven expiry
			}
			// Refresh keeps a record alive.
			s.Join(ctx, "y", "frank", "n1", 300*time.Millisecond)
			for range 4 {
				if err := s.Refresh(ctx, "y", "n1", []string{"frank"}, 300*time.Millisecond); err != nil {
					t.Fatal(err)
				}
				time.Sleep(150 * time.Millisecond) // polling a clock-driven expiry
			}
			check("y", "frank")
		})
	}
}
