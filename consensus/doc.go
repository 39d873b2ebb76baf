// Package consensus keeps Chiffon's node registry in a raft-replicated state
// machine.
//
// Orchestrator nodes run a [Store]: hashicorp/raft with a BoltDB log and stable
// store and file snapshots under the data directory. Only the leader writes,
// by applying [Command] values ([UpsertNodes], [DeleteNodes]) that it computed
// from gossip; every orchestrator applies the same log to its [FSM], which
// answers registry reads ([FSM.Get], [FSM.List], [FSM.Counts]) and blocking
// queries ([FSM.WaitIndex]) locally.
//
// The FSM is deterministic: it never reads the clock and does no I/O. Every
// time it records comes from the command, stamped by the leader, so that all
// replicas hold byte-for-byte the same registry.
//
// Of Chiffon's packages it imports only the leaf internal/fleet (role and
// GPU-type names). Its test harness lives in
// package consensustest.
package consensus
