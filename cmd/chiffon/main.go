// Command chiffon runs a Chiffon node (`chiffon agent`) and the clients that
// talk to one (`members`, `keygen`, `version`, ...).
//
// Size: about 2,500 lines, over the house's ~1,500, because it holds every
// subcommand: one file per command, as serf's cmd/serf/command does (agent,
// agents, capacity, members, operator, snapshot, submit, work, probe, dev, tls,
// and the simple ones in simple.go), each 50–300 lines, with the flag
// parsing they share in options.go. The largest, dev.go, only configures a
// node/nodetest cluster and prints its banner. Growth here means more
// commands, not bigger ones.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/cli"
)

// version is set at build time with -ldflags "-X main.version=..." to
// scripts/version.sh's SemVer (the Makefile does); a plain go build says
// it is the next release in development (scripts/releases.txt).
var version = "0.2.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one subcommand and returns the process exit code: 0 success,
// 1 runtime failure, 2 bad usage (an invalid flag or value), 127 an
// unknown command.
func run(args []string, stdout, stderr io.Writer) int {
	ui := &cli.BasicUi{Reader: os.Stdin, Writer: stdout, ErrorWriter: stderr}
	c := cli.NewCLI("chiffon", version)
	c.Args = args
	c.HelpWriter, c.ErrorWriter = stderr, stderr
	c.Autocomplete = true
	c.AutocompleteInstall = "autocomplete-install"
	c.AutocompleteUninstall = "autocomplete-uninstall"
	c.HiddenCommands = []string{"sim-orchestrator"} // started by `chiffon sim -orchestrators process`
	c.Commands = map[string]cli.CommandFactory{
		"agent":                     func() (cli.Command, error) { return &agentCommand{ui: ui}, nil },
		"agents":                    func() (cli.Command, error) { return &agentsCommand{ui: ui}, nil },
		"capacity":                  func() (cli.Command, error) { return &capacityCommand{ui: ui}, nil },
		"dev":                       func() (cli.Command, error) { return &devCommand{ui: ui}, nil },
		"operator":                  func() (cli.Command, error) { return &operatorCommand{ui: ui}, nil },
		"operator raft":             func() (cli.Command, error) { return &operatorRaftCommand{ui: ui}, nil },
		"operator raft list-peers":  func() (cli.Command, error) { return &operatorRaftListPeersCommand{ui: ui}, nil },
		"operator raft remove-peer": func() (cli.Command, error) { return &operatorRaftRemovePeerCommand{ui: ui}, nil },
		"operator snapshot":         func() (cli.Command, error) { return &operatorSnapshotCommand{ui: ui}, nil },
		"operator snapshot save":    func() (cli.Command, error) { return &operatorSnapshotSaveCommand{ui: ui}, nil },
		"operator snapshot restore": func() (cli.Command, error) { return &operatorSnapshotRestoreCommand{ui: ui}, nil },
		"members":                   func() (cli.Command, error) { return &membersCommand{ui: ui}, nil },
		"owner":                     func() (cli.Command, error) { return &ownerCommand{ui: ui}, nil },
		"keygen":                    func() (cli.Command, error) { return &keygenCommand{ui: ui}, nil },
		"probe":                     func() (cli.Command, error) { return &probeCommand{ui: ui}, nil },
		"power":                     func() (cli.Command, error) { return &powerCommand{ui: ui}, nil },
		"sim":                       func() (cli.Command, error) { return &simCommand{ui: ui, out: stdout}, nil },
		"sim-orchestrator":          func() (cli.Command, error) { return &simOrchestratorCommand{ui: ui}, nil },
		"submit":                    func() (cli.Command, error) { return &submitCommand{ui: ui}, nil },
		"work":                      func() (cli.Command, error) { return &workCommand{ui: ui}, nil },
		"work status":               func() (cli.Command, error) { return &workStatusCommand{ui: ui}, nil },
		"work list":                 func() (cli.Command, error) { return &workListCommand{ui: ui}, nil },
		"version":                   func() (cli.Command, error) { return &versionCommand{ui: ui}, nil },
		"tls":                       func() (cli.Command, error) { return &tlsCommand{ui: ui}, nil },
		"tls ca":                    func() (cli.Command, error) { return &tlsCACommand{ui: ui}, nil },
		"tls ca create":             func() (cli.Command, error) { return &tlsCACreateCommand{ui: ui}, nil },
		"tls cert":                  func() (cli.Command, error) { return &tlsCertCommand{ui: ui}, nil },
		"tls cert create":           func() (cli.Command, error) { return &tlsCertCreateCommand{ui: ui}, nil },
	}
	// The cli package answers an unknown command with the usage alone:
	// name it first. (Not while the shell asks for completions.)
	if sub := c.Subcommand(); sub != "" && c.Commands[sub] == nil && !c.IsHelp() && !c.IsVersion() &&
		os.Getenv("COMP_LINE") == "" {
		fmt.Fprintf(stderr, "chiffon: unknown command %q\n\n", sub)
	}
	code, err := c.Run()
	if err != nil {
		fmt.Fprintf(stderr, "chiffon: %v\n", err)
		return 1
	}
	return code
}

// groupRun is Run for a command that only groups subcommands (operator,
// work, ...): it names an unknown subcommand, and the cli package then
// prints the group's help and exits 1.
func groupRun(ui cli.Ui, group string, args []string) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		ui.Error(fmt.Sprintf("chiffon: unknown command %q\n", group+" "+args[0]))
	}
	return cli.RunResultHelp
}
