package hostile_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"example.com/chat/api"
	"example.com/chat/internal/testutil"
)

// TestSmallHoles is attack 12: the smaller holes, end to end.
func TestSmallHoles(t *testing.T) {
	t.Parallel()
	t.Run("duplicate-node-id", testDuplicateNodeID)
	t.Run("token-help-hides-secret", testTokenHelp)
	t.Run("jwt", testJWTHoles)
	t.Run("user-names", testUserNames)
}

// testDuplicateNodeID: two nodes started with the same -node-id on one
// Redis silently dropped each other's messages; the second must refuse
// to start, saying why.
func testDuplicateNodeID(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedis(t)
	startNode(t, nodeOpts{mode: openRedis, redis: rs, id: "twin"})
	p, err := launchNode(t, nodeOpts{mode: openRedis, redis: rs, id: "twin"})
	switch {
	case err == nil:
		t.Errorf("a second node with -node-id twin on the same Redis started (%s): want it refused at start", p.HTTP)
	case !strings.Contains(p.stderr.String()+p.logs.String(), "twin"):
		t.Errorf("the second twin refused to start without naming the node id: %v", err)
	default:
		t.Logf("second twin refused: %s", lastLines(p.stderr.String(), 2))
	}
}

// testTokenHelp: `node token -h` printed the secret as the default of
// -secret (from CHAT_JWT_SECRET), and exited 1.
func testTokenHelp(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(buildNode(t), "token", "-h")
	cmd.Env = append(os.Environ(), "CHAT_JWT_SECRET="+secret)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		t.Errorf("node token -h: %v, want exit 0", err)
	}
	if strings.Contains(out.String(), secret) {
		t.Errorf("node token -h prints the CHAT_JWT_SECRET value:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "-secret") {
		t.Errorf("node token -h does not document -secret:\n%s", out.String())
	}
}

// testJWTHoles: a `rooms: []` claim meant every room (now: none); a token
// expired 5 s ago was still good for REST within the verifier's leeway
// (streams refused it).
func testJWTHoles(t *testing.T) {
	t.Parallel()
	p := startNode(t, nodeOpts{mode: jwtMemory})
	room := newRoom()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	now := time.Now()
	noRooms, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "roomless", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "rooms": []string{},
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	cc := grpcConn(t, p)
	_, err = joinStream(ctx, t, cc, noRooms, "roomless", room, true)
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("gRPC join of %s with a rooms: [] token: %v; want PermissionDenied (an empty list is no room)", room, err)
	}
	w, resp, err := dialWS(ctx, t, p, noRooms, false)
	if err == nil {
		if err := w.send(ctx, &api.Message{Room: room, Join: &api.Join{Events: true}}); err == nil {
			if err := w.waitLive(ctx); err == nil {
				t.Errorf("WebSocket join of %s with a rooms: [] token went live; want it refused", room)
			}
		}
	} else if resp == nil || resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
		t.Logf("WebSocket with a rooms: [] token refused at the upgrade: %v", err)
	}

	expired := mint(t, "late", -5*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTP+"/v1/rooms/"+room+"/messages", nil)
	req.Header.Set("Authorization", "Bearer "+expired)
	r, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusUnauthorized {
		t.Errorf("REST history with a token expired 5s ago: %s; want 401, as streams refuse it", r.Status)
	}
	_, err = joinStream(ctx, t, cc, expired, "late", room, true)
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC join with a token expired 5s ago: %v; want Unauthenticated", err)
	}
	p.checkAlive(t)
	checkChat(t, p, jwtMemory, room)
}

// testUserNames: user names with bidi overrides, only zero-width
// characters or only whitespace were accepted.
func testUserNames(t *testing.T) {
	t.Parallel()
	p := startNode(t, nodeOpts{mode: openMemory})
	room := newRoom()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cc := grpcConn(t, p)
	for _, name := range []string{"\u202egnp.exe", "ali\u2066ce", "\u200b\u200b", "\u200d", "   ", "\u3000\t"} {
		_, err := joinStream(ctx, t, cc, "", name, room, true)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("join as %+q: %v; want InvalidArgument", name, err)
		}
	}
	p.checkAlive(t)
	checkChat(t, p, openMemory, room)
}
