// Package hub is the core of a node: it keeps the local sessions and the
// rooms they are in, runs the publish and join flows, and fans out what the
// bus delivers to local sessions.
//
// # Concurrency contract
//
// Fan-out never blocks and never does I/O under a lock: it appends a Frame
// to each member's bounded queue, or closes the member as a slow consumer.
// Each Session has exactly one writer goroutine, the only caller of its
// Transport's Write. The Hub owns every writer goroutine and Shutdown waits
// for them.
//
// # Ordering
//
// Stored messages carry a per-room sequence id assigned by the log. A room
// remembers the last id it delivered; a jump triggers a backfill from
// history, an id already seen is dropped, and a change of epoch resets the
// room and tells its sessions. Each session also filters by id, so history
// replay on join and live delivery meet without a gap or a duplicate.
package hub
