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
// Of Chiffon's packages it imports only the leaf internal/fleet (role and
// GPU-type names). Its test harness lives in package consensustest.
// DESIGN.md beside this file explains the log format, indexes and timings.
package consensus
