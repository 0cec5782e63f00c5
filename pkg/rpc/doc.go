// Package rpc is the gRPC edge: the chat.Chat service. Stream turns a
// bidirectional stream into a hub.Session; History and Send back the REST
// routes the gateway serves.
//
// Each stream uses three goroutines: the handler, which waits for the session
// to end and returns its status (returning is the only thing that releases a
// Send stuck on a client that stopped reading, grpc-go#3586); a reader doing
// Recv; and the session's writer, the only caller of Send.
package rpc
