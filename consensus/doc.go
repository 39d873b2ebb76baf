// Package consensus keeps Chiffon's registry — its nodes and its work
// items — in a raft-replicated state machine.
//
// Orchestrator nodes run a [Store]: hashicorp/raft with a BoltDB log and
// stable store and file snapshots under the data directory (or everything in
// memory, [Config].InMemory, for tests). Only the leader writes, by applying
// [Command] values: [UpsertNodes] and [DeleteNodes], computed from gossip, and
// [SubmitWork], [UpdateWork], [MarkWorkPublished] and [DeleteWork], written
// by the work dispatcher. Every orchestrator applies the same log to its
// [FSM], which answers reads locally: the nodes ([FSM.Get], [FSM.List],
// [FSM.Counts]), the work ([FSM.GetWork], [FSM.ListWork], [FSM.WorkPage],
// [FSM.WorkCounts]) and blocking queries ([FSM.WaitIndex]).
//
// The FSM is deterministic: it never reads the clock and does no I/O. Every
// time it records comes from the command (its At, stamped by the leader, or
// a time the command carries), so that all replicas hold the same registry.
//
// Of Chiffon's packages it imports only the stdlib-only leaves
// internal/fleet (role and GPU-type names), internal/atomicfile and
// internal/tlsutil (raft over mutual TLS, [Config].TLS). Its
// test harness lives in package consensustest.
// DESIGN.md beside this file explains the log format, indexes and timings.
//
// Size: about 2,400 lines, over the house's ~1,500, on purpose. raft has one
// FSM per log, so the registry's two kinds of record (nodes, types 1–2, and
// work items, types 3–6) share one Apply, one snapshot format and one index
// space; the Store (store.go) is the raft plumbing around it. A split would
// cut the FSM in the middle or export its internals to a sibling package.
// The work-item half lives in its own files (work.go, workindex.go).
package consensus
