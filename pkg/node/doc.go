// Package node wires a chat node together: flags and environment, the
// backends (embedded memory or Redis), the hub, the gRPC server, and the HTTP
// mux (grpc-gateway, WebSocket, health, metrics, the browser page). It is the
// only package that reads configuration; cmd/node is a thin main around Run,
// and the integration tests call Run too.
package node
