// Package ws is the WebSocket edge: it upgrades browser connections at
// /v1/chat/stream, turns JSON frames (the gateway's protojson mapping of
// chat.Message) into hub calls, and writes the hub's frames back.
//
// Every frame a client receives is one JSON object: a chat.Message, or an
// error in the gateway's shape {"error":{"code":N,"message":"..."}}.
//
// Writes are batched: when a client's queue holds several frames, they are
// encoded as separate WebSocket messages but leave in one system call (see
// corkConn), which is what lets one node fan out a million frames a second.
package ws
