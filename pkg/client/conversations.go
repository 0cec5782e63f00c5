package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"example.com/chat/api"
)

// This file holds the client's calls about conversations that are not
// stream messages: starting a direct conversation (Direct) and listing
// the user's conversations (Conversations). Both ask the node the client
// is live on, as the client's user and with its token: on gRPC with the
// unary RPC over the stream's own connection, on WebSocket with the
// node's REST API on the same address. Their errors are gRPC status
// errors on both transports (status.Code and errors.As find them), so a
// caller handles one kind.

// ErrNotConnected is returned by Direct and Conversations while the client
// is not live on a node (connecting, or between connections): they are
// asked of the node the client is live on. Retry once it is (WaitLive).
var ErrNotConnected = errors.New("client: not connected to a node")

// maxRESTAnswer bounds a REST answer the client reads.
const maxRESTAnswer = 4 << 20

// Rooms returns the rooms the client keeps on its stream: the primary room
// (Config.Room, "general" when empty) first, then the others (Config.Rooms
// and Subscribe's, less those unsubscribed by Unsubscribe or by the
// server, or refused) sorted. The personal channel is not among them.
func (c *Client) Rooms() []string {
	c.mu.Lock()
	others := make([]string, 0, len(c.rooms))
	for r := range c.rooms {
		others = append(others, r)
	}
	c.mu.Unlock()
	slices.Sort(others)
	return append([]string{c.primaryRoom()}, others...)
}

// Direct returns the direct conversation of the client's user and peer:
// its room (a "dm." name derived from the pair, the same for both) and
// whether this call started it, in which case the node has told peer on
// their personal channel (KIND_INVITE). The conversation joins both
// users' Conversations. Direct does not subscribe the stream to the room:
// Subscribe does. A user cannot talk to themselves (InvalidArgument). It
// returns ErrNotConnected while the client is not live; a connection that
// ends during the call fails it (retry).
func (c *Client) Direct(ctx context.Context, peer string) (*api.DirectResponse, error) {
	req := &api.DirectRequest{User: c.cfg.User, Peer: peer}
	r := new(api.DirectResponse)
	err := c.unary(ctx,
		func(ctx context.Context, cl api.ChatClient) (err error) {
			r, err = cl.Direct(ctx, req)
			return err
		},
		http.MethodPost, "/v1/direct", req, r)
	if err != nil {
		return nil, fmt.Errorf("client: direct conversation with %q: %w", peer, err)
	}
	return r, nil
}

// Conversations returns up to limit (zero: the node's default, 100) of the
// user's conversations, the most recent first: the rooms they created,
// were added to, started a direct conversation in or posted in, each with
// its kind ("public", "private" or "direct"), the other user of a direct
// conversation (Peer), and its log's newest seq and epoch, which a client
// compares with RoomPosition to show what it missed, and the user's read
// marker (ReadSeq, see MarkRead) with how many messages follow it
// (Unread). It returns ErrNotConnected while the client is not live.
func (c *Client) Conversations(ctx context.Context, limit int) ([]*api.Conversation, error) {
	req := &api.ConversationsRequest{User: c.cfg.User, Limit: int32(limit)}
	r := new(api.ConversationsResponse)
	path := "/v1/users/" + url.PathEscape(c.cfg.User) + "/conversations"
	if limit != 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	err := c.unary(ctx,
		func(ctx context.Context, cl api.ChatClient) (err error) {
			r, err = cl.Conversations(ctx, req)
			return err
		},
		http.MethodGet, path, nil, r)
	if err != nil {
		return nil, fmt.Errorf("client: conversations: %w", err)
	}
	return r.GetConversations(), nil
}

// unary makes one call on the node the client is live on: rpc over the
// gRPC connection, or the REST route (method, path, with body as JSON
// unless nil) answered into out on WebSocket.
func (c *Client) unary(ctx context.Context, rpc func(context.Context, api.ChatClient) error, method, path string, body, out proto.Message) error {
	c.mu.Lock()
	l := c.conn
	c.mu.Unlock()
	if l == nil {
		return ErrNotConnected
	}
	switch cn := l.conn.(type) {
	case *grpcConn:
		if c.cfg.Token != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.cfg.Token)
		}
		return rpc(ctx, api.NewChatClient(cn.cc))
	case *wsConn:
		return c.rest(ctx, l.addr, method, path, body, out)
	}
	return fmt.Errorf("client: no unary calls on a %T connection", l.conn)
}

// rest makes one REST call to the node at addr (its HTTP listener) and
// decodes the answer into out. An error answer becomes a status error
// with the gateway's code and message.
func (c *Client) rest(ctx context.Context, addr, method, path string, body, out proto.Message) error {
	scheme := "http"
	if c.cfg.TLS != nil {
		scheme = "https"
	}
	var rd io.Reader
	if body != nil {
		b, err := protojson.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, scheme+"://"+addr+path, rd)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	// One connection per call, closed after it: these calls are rare,
	// and an idle pool would outlive the client.
	tr := &http.Transport{TLSClientConfig: c.cfg.TLS, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRESTAnswer))
	if err != nil {
		return status.Error(codes.Unavailable, "reading the answer: "+err.Error())
	}
	if resp.StatusCode != http.StatusOK {
		// The gateway's shape: {"code": N, "message": "..."}.
		var e struct {
			Code    int32  `json:"code"`
			Message string `json:"message"`
		}
		if json.Unmarshal(data, &e) != nil || e.Code == 0 {
			return status.Errorf(codes.Unknown, "HTTP %s", resp.Status)
		}
		return status.Error(codes.Code(e.Code), e.Message)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, out); err != nil {
		return fmt.Errorf("bad answer: %w", err)
	}
	return nil
}
