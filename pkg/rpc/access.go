package rpc

import (
	"context"

	"google.golang.org/grpc/codes"

	"example.com/chat/api"
	"example.com/chat/pkg/access"
	"example.com/chat/pkg/auth"
	"example.com/chat/pkg/hub"
)

// caller returns who makes a unary call: the token's subject when the
// auth interceptor put claims in ctx (a request naming another user is
// PermissionDenied; naming none is fine), or, in open mode, the user the
// request names (claimed, not proven: open mode cannot keep rooms
// private). The hub normalises and validates the name.
func caller(ctx context.Context, named string) (string, error) {
	c, ok := auth.FromContext(ctx)
	if !ok {
		return named, nil
	}
	if named != "" {
		n, err := hub.NormalizeUser(named)
		if err != nil || n != c.User {
			return "", statusf(codes.PermissionDenied, "user %q does not match the authenticated user", named)
		}
	}
	return c.User, nil
}

// mayTouch refuses a room outside the token's "rooms" claim, as mayRead
// does for reads.
func mayTouch(ctx context.Context, room string) error { return mayClaim(ctx, room, "use") }

// Conversations implements chat.Chat. A token with a "rooms" claim lists
// only the rooms it may use.
func (s *Server) Conversations(ctx context.Context, req *api.ConversationsRequest) (*api.ConversationsResponse, error) {
	user, err := caller(ctx, req.GetUser())
	if err != nil {
		return nil, err
	}
	convs, err := s.cfg.Hub.Conversations(ctx, user, int(req.GetLimit()))
	if err != nil {
		return nil, Status(err)
	}
	if c, ok := auth.FromContext(ctx); ok && !c.AllRooms {
		kept := convs[:0]
		for _, cv := range convs {
			if c.MayJoin(cv.GetRoom()) {
				kept = append(kept, cv)
			}
		}
		convs = kept
	}
	return &api.ConversationsResponse{Conversations: convs}, nil
}

// Direct implements chat.Chat.
func (s *Server) Direct(ctx context.Context, req *api.DirectRequest) (*api.DirectResponse, error) {
	user, err := caller(ctx, req.GetUser())
	if err != nil {
		return nil, err
	}
	if c, ok := auth.FromContext(ctx); ok && !c.AllRooms {
		// The room is only known from the pair; a token bounded to
		// rooms must list it.
		u, uerr := hub.NormalizeUser(user)
		p, perr := hub.NormalizeUser(req.GetPeer())
		if uerr == nil && perr == nil {
			if err := mayTouch(ctx, access.DirectRoom(u, p)); err != nil {
				return nil, err
			}
		}
	}
	room, created, err := s.cfg.Hub.Direct(ctx, user, req.GetPeer())
	if err != nil {
		return nil, Status(err)
	}
	return &api.DirectResponse{Room: room, Created: created}, nil
}

// CreateRoom implements chat.Chat.
func (s *Server) CreateRoom(ctx context.Context, req *api.CreateRoomRequest) (*api.RoomInfo, error) {
	user, err := caller(ctx, req.GetUser())
	if err != nil {
		return nil, err
	}
	if err := mayTouch(ctx, req.GetRoom()); err != nil {
		return nil, err
	}
	info, err := s.cfg.Hub.CreateRoom(ctx, user, req.GetRoom())
	if err != nil {
		return nil, Status(err)
	}
	return info, nil
}

// AddMember implements chat.Chat.
func (s *Server) AddMember(ctx context.Context, req *api.MemberRequest) (*api.RoomInfo, error) {
	user, err := caller(ctx, req.GetUser())
	if err != nil {
		return nil, err
	}
	if err := mayTouch(ctx, req.GetRoom()); err != nil {
		return nil, err
	}
	info, err := s.cfg.Hub.AddMember(ctx, user, req.GetRoom(), req.GetMember())
	if err != nil {
		return nil, Status(err)
	}
	return info, nil
}

// RemoveMember implements chat.Chat.
func (s *Server) RemoveMember(ctx context.Context, req *api.MemberRequest) (*api.RoomInfo, error) {
	user, err := caller(ctx, req.GetUser())
	if err != nil {
		return nil, err
	}
	if err := mayTouch(ctx, req.GetRoom()); err != nil {
		return nil, err
	}
	info, err := s.cfg.Hub.RemoveMember(ctx, user, req.GetRoom(), req.GetMember())
	if err != nil {
		return nil, Status(err)
	}
	return info, nil
}

// MarkRead implements chat.Chat.
func (s *Server) MarkRead(ctx context.Context, req *api.MarkReadRequest) (*api.MarkReadResponse, error) {
	if err := mayRead(ctx, req.GetRoom()); err != nil {
		return nil, err
	}
	user, err := caller(ctx, req.GetUser())
	if err != nil {
		return nil, err
	}
	out, err := s.cfg.Hub.MarkRead(ctx, user, req.GetRoom(), req.GetEpoch(), req.GetSeq())
	if err != nil {
		return nil, Status(err)
	}
	return out, nil
}
