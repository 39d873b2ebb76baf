package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"runtime"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/node/worker"
)

// keygenCommand prints a new gossip encryption key.
type keygenCommand struct{ ui cli.Ui }

func (c *keygenCommand) Synopsis() string { return "Generate a gossip encryption key" }
func (c *keygenCommand) Help() string {
	return `Usage: chiffon keygen

  Prints a new random 32-byte gossip encryption key, base64 encoded, for
  'chiffon agent -encrypt KEY' (the same format as 'serf keygen').`
}
func (c *keygenCommand) Run(args []string) int {
	if len(args) > 0 {
		c.ui.Error("keygen takes no arguments\n\n" + c.Help())
		return 2
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		c.ui.Error(fmt.Sprintf("reading random bytes: %v", err))
		return 1
	}
	c.ui.Output(base64.StdEncoding.EncodeToString(key))
	return 0
}

// versionCommand prints the build's version.
type versionCommand struct{ ui cli.Ui }

func (c *versionCommand) Synopsis() string { return "Print the Chiffon version" }
func (c *versionCommand) Help() string     { return "Usage: chiffon version" }
func (c *versionCommand) Run(args []string) int {
	// The version as the build gave it (scripts/version.sh's SemVer, or
	// whatever -ldflags set).
	c.ui.Output(fmt.Sprintf("Chiffon %s (%s, %s/%s)", version, runtime.Version(), runtime.GOOS, runtime.GOARCH))
	// The versions of the formats that cross builds in a mixed cluster
	// (docs/OPERATIONS.md, "Versions and rolling upgrades").
	c.ui.Output(wireVersions())
	return 0
}

// wireVersions says which version of each wire format this build speaks.
func wireVersions() string {
	return fmt.Sprintf("Wire formats: gossip tags cv=%d, raft commands 1-%d, raft snapshots v%d, work API %s, AMQP %s %d",
		gossip.CodecVersion, consensus.MaxCommandType(), consensus.SnapshotVersion, worker.PathWork,
		apitype.AMQPSchemaHeader, apitype.AMQPSchemaVersion)
}
