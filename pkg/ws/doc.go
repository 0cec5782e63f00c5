// Package ws is the WebSocket edge: it upgrades browser connections at
// /v1/chat/stream, turns JSON frames (the gateway's protojson mapping of
// chat.Message) into hub calls, and writes the hub's frames back.
//
// By default every frame a client receives is one JSON object: a
// chat.Message, or an error in the gateway's shape
// {"error":{"code":N,"message":"..."}}. Every text in it, and every close
// reason, is valid UTF-8, cut on a character boundary (hub.ClientText):
// error texts may quote the client's input.
//
// A client may opt in to packed frames by offering a subprotocol (beside
// its "bearer.<jwt>" token, if any); the server selects the first it
// speaks in the client's order, never a token, and chat.v1 or none means
// the default. SubprotocolNDJSON: text frames of the same JSON objects
// separated by "\n". SubprotocolProto: binary frames of chat.Messages, each
// after its varint length. A packed frame holds at most MaxPackedBytes
// unless one message is bigger; a batch beyond it is several frames. In
// either packed mode the client may send text frames of ndjson or binary
// frames of length-prefixed protobuf, each message answered and counted
// (invalid-frame budget) on its own, the whole frame under the read limit.
//
// What a client may hold is bounded. A connection is admitted
// (hub.Hub.Admit) before it is upgraded, so it counts against the node's
// connection limit from the start; a full or draining node answers 503 with
// a Retry-After instead. One that has not sent its first message within the
// hub's JoinTimeout is closed (1008 "join timeout: ..."), and on drain
// (1012). Malformed frames and messages refused as invalid are answered with
// an error frame until the hub's MaxInvalidFrames, the last of which closes
// the connection (1008 "too many invalid frames"); rate-limited sends have
// their own limit in the hub. A frame over the read limit closes it at once
// (1009), and each batch of writes must leave within the hub's WriteTimeout
// (or Config.WriteTimeout).
//
// Sends are pipelined: each message read is handed to the hub
// (hub.Session.PublishAsync) and the next is read without waiting for the
// bus, with at most the hub's MaxInflightSends (-max-inflight-sends) on
// their way; past it the connection is not read (TCP holds the browser
// back). A connection's messages are stored in the order they were sent,
// and every answer (an ack with client_id, seq and epoch for event
// clients; an error frame with the client_id for everyone) comes in that
// order, error frames for malformed frames included. A send that fails does
// not stop the next ones, which may already be stored: a retry lands after
// them.
//
// Writes are batched: when a client's queue holds several frames, they are
// encoded as separate WebSocket messages (or packed, in a packed mode) but
// leave in one system call (see rawConn), which is what lets one node fan
// out a million frames a second. Packing copies no message: the frames
// share each message's cached encoding, and only headers, separators and
// length prefixes are written per connection.
package ws
