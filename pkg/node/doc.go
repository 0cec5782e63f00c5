// Package node wires a chat node together: flags and environment, the
// backends (embedded memory or Redis), the hub, the gRPC server, and the HTTP
// mux (grpc-gateway, WebSocket, health, metrics, the browser page). It is the
// only package that reads configuration; cmd/node is a thin main around Run,
// and the integration tests call Run too.
//
// It also owns what bounds a connection before any edge sees it, so that a
// node can face the internet:
//
//   - HTTP (http.go): header timeout, idle timeout and header size per
//     connection; per REST request (every route but the WebSocket, whose
//     connection outlives its request) a read and a write deadline, a body
//     limit, and in JWT mode the token checked before the body is read.
//   - gRPC (node.go): streams per connection, header list size and message
//     size, enforced by the transport before any handler or token check.
//   - Connections (iplimit.go): in open mode, a per-IP token bucket on
//     both listeners.
//   - Metrics (metrics.go): an optional bearer token and listener of their
//     own, and a cluster-wide figure read at most every few seconds.
//   - Node ids (nodeid.go): an explicit -node-id is claimed in Redis for as
//     long as the node runs; a second node with it fails at start.
//
// Every goroutine Run starts is owned by its errgroup and ends before Run
// returns.
package node
