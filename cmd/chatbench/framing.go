package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"example.com/chat/pkg/auth"
	chatws "example.com/chat/pkg/ws"
)

// subprotocol is the Sec-WebSocket-Protocol a WebSocket subscriber
// offers for -ws-framing, "" for none: the fast client with JSON offers
// nothing, as a seed client (and as it always did).
func (c *config) subprotocol() string {
	switch c.wsFraming {
	case framingNDJSON:
		return chatws.SubprotocolNDJSON
	case framingProto:
		return chatws.SubprotocolProto
	}
	if c.wsClient == wsClientStd {
		return auth.Subprotocol
	}
	return ""
}

// checkSubprotocol fails unless the node selected the subprotocol
// offered (compared as the node compares, without case), so that a run
// never measures another framing than the one asked for.
func checkSubprotocol(offered, selected string) error {
	if strings.EqualFold(offered, selected) {
		return nil
	}
	return fmt.Errorf("the node selected WebSocket subprotocol %q, not %q as -ws-framing asks (a node without packed frames?)", selected, offered)
}

// splitNDJSON calls fn with each message of a chat.v1.ndjson frame: the
// parts of b between '\n's (the node writes none after the last). An
// empty part is an error: the node never sends one.
func splitNDJSON(b []byte, fn func(msg []byte)) error {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			fn(b)
			return nil
		}
		if i == 0 {
			return errors.New("ndjson frame with an empty message")
		}
		fn(b[:i])
		if b = b[i+1:]; len(b) == 0 {
			return errors.New("ndjson frame ends with a newline")
		}
	}
	return errors.New("empty ndjson frame")
}

// splitVarint calls fn with each message of a chat.v1.proto frame: each
// is its length as an unsigned varint followed by that many bytes. A
// broken prefix (truncated, over 64 bits, or longer than what is left)
// or an empty frame is an error, returned after fn saw the messages
// before it.
func splitVarint(b []byte, fn func(msg []byte)) error {
	if len(b) == 0 {
		return errors.New("empty proto frame")
	}
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return fmt.Errorf("proto frame: broken length prefix % x", b[:min(len(b), binary.MaxVarintLen64)])
		}
		if n > uint64(len(b)-k) {
			return fmt.Errorf("proto frame: message of %d bytes, %d left", n, len(b)-k)
		}
		fn(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	return nil
}
