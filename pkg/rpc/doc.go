// Package rpc is the gRPC edge: the chat.Chat service. Stream turns a
// bidirectional stream into a hub.Session; History and Send back the REST
// routes the gateway serves.
//
// Each stream uses three goroutines: the handler, which waits for the session
// to end and returns its status (returning is the only thing that releases a
// Send stuck on a client that stopped reading, grpc-go#3586); a reader doing
// Recv; and the session's writer, the only caller of Send; plus, while
// answers from the bus are due, the session's completer.
//
// Sends are pipelined: the reader hands each message to the hub
// (hub.Session.PublishAsync) and reads the next without waiting for the
// bus, with at most the hub's MaxInflightSends (-max-inflight-sends) on
// their way; past it the reader stops reading and HTTP/2 flow control
// holds the client back. Each stream's messages are stored in the order
// they were sent, and their acks (client_id, seq, epoch) and error events
// (client_id) come in that order. A send that fails does not stop the
// next ones, which may already be stored: a retry lands after them. A
// stream without events is ended by a failed send, with its status; when
// the client closes its side, the stream ends once every send is
// answered, so a failure among its last sends still sets the status.
//
// What a stream may hold is bounded. It is admitted (hub.Hub.Admit) before
// its first message, so it counts against the node's connection limit
// (ResourceExhausted when full, Unavailable while draining); one whose first
// message does not arrive within the hub's JoinTimeout ends with
// DeadlineExceeded, and a drain ends it with Unavailable. Each batch the
// writer sends must leave within the hub's WriteTimeout: past it, the
// session closes (write_error) and the handler returns, which frees the
// stream, the writer, the session and the user's slot. Invalid input ends
// the stream at once with InvalidArgument (or ResourceExhausted for a text
// over the limit), including bytes that are not a chat.Message (see Codec):
// a gRPC client is a program, which has no use for the WebSocket edge's
// budget of mistakes. Only retryable refusals (rate limit, backend outage)
// keep the stream of a client that asked for events. Every status text is
// valid UTF-8 and at most MaxErrorText bytes (ClientText).
package rpc
