package hub

import (
	"context"

	"example.com/chat/pkg/access"
)

// MayUse reports whether user may subscribe to, read and post in room: nil,
// or a KindForbidden *Error that names no member, or KindUnavailable when
// the access store cannot answer.
func (h *Hub) MayUse(ctx context.Context, room, user string) error {
	d, err := h.cfg.Access.Check(ctx, room, user)
	if err != nil {
		return &Error{Kind: KindUnavailable, Msg: "room access cannot be checked; retry", Err: err}
	}
	if d.Member {
		return nil
	}
	switch d.Kind {
	case access.Direct:
		return errorf(KindForbidden, "room %q is a direct conversation of two other users", room)
	case access.Personal:
		return errorf(KindForbidden, "room %q is another user's personal channel", room)
	default:
		return errorf(KindForbidden, "room %q is private: only its members may use it", room)
	}
}

// touch records room among user's conversations; a failure only costs the
// entry in their list.
func (h *Hub) touch(ctx context.Context, user, room string) {
	if access.KindOfName(room) == access.Personal {
		return
	}
	if err := h.cfg.Access.Touch(ctx, user, room, h.cfg.Now().UnixMilli()); err != nil {
		h.log.Debug("conversation not recorded", "room", room, "err", err)
	}
}
