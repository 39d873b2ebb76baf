// Package dispatch is the raft leader's work machinery: the RabbitMQ bridge
// that turns work requests into registry work items and results back into
// messages, placement of work on desktops (pure code: Plan, Place,
// Reserved), and delivery of assignments to desktops' work endpoints
// (node/worker). See DESIGN.md for the lifecycle and the guarantees.
//
// A Dispatcher is built once per node with New and run with Run(ctx) while
// the node leads; every decision it makes goes through raft, so a new
// leader's Run resumes where the old one stopped.
package dispatch
