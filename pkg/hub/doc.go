// Package hub is the core of a node: it keeps the local sessions and the
// rooms they are in, runs the publish and join flows, and fans out what the
// bus delivers to local sessions.
//
// # Concurrency contract
//
// Fan-out never blocks and never does I/O under a lock: it appends a Frame
// to each member's bounded queue, or closes the member as a slow consumer.
// Each Session has at most one writer goroutine at a time, the only caller
// of its Transport's Write, and at most one completer, which answers its
// publishes in order. The Hub owns every writer and completer goroutine,
// counts every publish under way, and Shutdown waits for them.
//
// # Session lifecycle
//
// A connection's life has four stages; each says who starts and ends what.
//
//  1. Admission. The edge (pkg/ws, pkg/rpc) calls Admit when a connection
//     arrives, before reading anything from it. The Admission holds one of
//     the node's MaxSessions slots; its context ends at JoinTimeout or when
//     Shutdown begins, and the edge then closes the connection. The edge
//     owns the Admission until it passes it to Join.
//  2. Join, on the edge's goroutine. Join takes the Admission's slot over
//     (or releases it on failure), counts the user (addUser), adds the
//     session to its room as syncing (acquire: the node's first member
//     subscribes the room on the bus), reads the replay, queues it
//     (finishSync), counts the user in the room's presence, and only then
//     lets writers run (start). Everything a writer's end undoes is
//     registered before a writer can run. The presence store is written
//     after, and may lag the session's end by one round trip.
//  3. Live. The edge's reader goroutine calls PublishAsync (pipelined:
//     it returns once the message is handed to the bus, and the answer
//     comes later, in send order, from the session's completer; see
//     pipeline.go); fan-out (the bus receive loop) and the hub's own
//     goroutines (heartbeats, completers' acks) queue frames. The first frame queued on an idle session starts a writer
//     goroutine (wakeLocked, under the session's mu), which exits after
//     WriterIdle without work. Start and exit are decided under mu, so no
//     frame is left without a writer.
//  4. Close. Close(reason) runs once (closeLocked under mu; afterClose
//     outside it). A reason that does not flush (slow consumer, write
//     error) cancels the session's context at once: a blocked Write
//     returns, the gRPC handler returns, the WebSocket is dropped. A reason
//     that flushes (normal, shutdown, abuse, expiry, ...) lets the writer
//     write what is queued and wait for in-flight publishes' answers, for
//     at most FlushTimeout; then the session is cut as a write error. The
//     writer that finds the session closed and flushed finishes it, in
//     this order: the user's slot is freed (a client at its limit may
//     reconnect at once), the context is cancelled, Transport.Close is
//     called once, the session leaves its room's presence (after the leave
//     grace) and its room (the last member unsubscribes the bus).
//
// # Locks
//
// Lock order: room.subMu, then shard.mu, then room.mu, then Session.mu;
// Hub.usersMu and Hub.leavingMu are leaves (nothing is taken under them
// except the Admission's state). No I/O is done under room.mu or
// Session.mu; room.subMu is held across bus subscribe and unsubscribe.
//
// # Join versus Shutdown
//
// Shutdown sets the hub closed, then ends every Admission, then closes the
// sessions. Admit and Join check closed first; Admit checks again under
// usersMu, where Shutdown's sweep of the admissions runs, so no admission
// escapes it. A Join already past its check registers its session, then
// looks at closed again and closes the session itself if Shutdown began
// meanwhile (Shutdown may have listed the sessions before it registered).
//
// # Ordering
//
// Stored messages carry a per-room sequence id assigned by the log. A room
// remembers the last id it delivered; a jump triggers a backfill from
// history, an id already seen is dropped, and a change of epoch resets the
// room and tells its sessions. Each session also filters by id, so history
// replay on join and live delivery meet without a gap or a duplicate.
//
// # Bounds
//
// What one client can make the node hold is bounded: its queue by
// MaxQueueBytes (charged the frame's JSON length, escapes counted: Frame.Size), its replay by
// MaxReplayBytes (and shared with other joiners through the room's weak
// frame cache), what waits while it joins by MaxQueueBytes, what a room
// holds while it catches up by MaxReplayBytes, its publishes under way by
// MaxInflightSends (its reader waits beyond: back-pressure) and each by
// PublishTimeout, its close by FlushTimeout,
// its join by JoinTimeout, its room's join/leave events by
// PresenceEventRate.
package hub
