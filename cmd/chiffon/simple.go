package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"runtime"

	"github.com/hashicorp/cli"
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
	// The version as the build gave it: a tag keeps its own "v", a commit
	// hash or "dev" gets none.
	c.ui.Output(fmt.Sprintf("Chiffon %s (%s, %s/%s)", version, runtime.Version(), runtime.GOOS, runtime.GOARCH))
	return 0
}
