package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/cli"
)

// operatorSnapshotCommand only groups the snapshot subcommands.
type operatorSnapshotCommand struct{ ui cli.Ui }

func (c *operatorSnapshotCommand) Synopsis() string { return "Save and restore registry backups" }
func (c *operatorSnapshotCommand) Help() string {
	return `Usage: chiffon operator snapshot <save|restore> [options] FILE

  Backs up the orchestrators' registry (nodes, their last metrics and
  statuses, work items) over the HTTP API, and restores such a backup.

    save FILE      write the leader's registry to FILE
    restore FILE   replace the whole cluster's registry with FILE`
}
func (c *operatorSnapshotCommand) Run(args []string) int {
	return groupRun(c.ui, "operator snapshot", args)
}

// operatorSnapshotSaveCommand is `chiffon operator snapshot save FILE`.
type operatorSnapshotSaveCommand struct{ ui cli.Ui }

type snapshotSaveSettings struct {
	http  httpSettings
	stale bool
}

func (s *snapshotSaveSettings) options() *options {
	*s = snapshotSaveSettings{}
	o := &options{}
	s.http.add(o)
	o.boolean(&s.stale, "stale", "save the contacted orchestrator's own replica, leader or not (e.g. without a quorum)")
	return o
}

func (c *operatorSnapshotSaveCommand) Synopsis() string { return "Save a backup of the registry" }

func (c *operatorSnapshotSaveCommand) Help() string {
	var s snapshotSaveSettings
	return `Usage: chiffon operator snapshot save [options] FILE

  Writes a snapshot of the registry to FILE (mode 0600; written to a
  temporary file first, then renamed): GET /v1/operator/snapshot. Any
  orchestrator may be given; a follower sends the CLI on to the leader. With
  -stale the contacted orchestrator answers from its own replica, which may
  lag the leader but needs no quorum.

Options:

` + s.options().help()
}

func (c *operatorSnapshotSaveCommand) Run(args []string) int {
	var s snapshotSaveSettings
	var file string
	_, code, done := parseCommon(c.ui, "operator snapshot save", s.options(), args, func(rest []string) error {
		if len(rest) != 1 || strings.TrimSpace(rest[0]) == "" {
			return fmt.Errorf("give exactly one FILE to write the snapshot to, got %q", rest)
		}
		file = rest[0]
		return nil
	})
	if done {
		return code
	}
	cl, err := s.http.client()
	if err != nil {
		c.ui.Error("chiffon operator snapshot save: " + err.Error())
		return 2
	}
	// Write beside the target and rename, so a failed save never leaves a
	// truncated backup under the real name.
	f, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		c.ui.Error("chiffon operator snapshot save: " + err.Error())
		return 1
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	n, err := cl.SaveSnapshot(ctx, f, s.stale)
	if err != nil {
		f.Close()
		c.ui.Error("chiffon operator snapshot save: " + apiErrorText(s.http.addr, err))
		return 1
	}
	if err := f.Sync(); err != nil {
		f.Close()
		c.ui.Error("chiffon operator snapshot save: " + err.Error())
		return 1
	}
	if err := f.Close(); err != nil {
		c.ui.Error("chiffon operator snapshot save: " + err.Error())
		return 1
	}
	if err := os.Rename(tmp, file); err != nil {
		c.ui.Error("chiffon operator snapshot save: " + err.Error())
		return 1
	}
	c.ui.Output(fmt.Sprintf("Saved registry snapshot to %s (%d bytes)", file, n))
	return 0
}

// operatorSnapshotRestoreCommand is `chiffon operator snapshot restore FILE`.
type operatorSnapshotRestoreCommand struct{ ui cli.Ui }

func (c *operatorSnapshotRestoreCommand) Synopsis() string {
	return "Restore the registry from a backup"
}

func (c *operatorSnapshotRestoreCommand) Help() string {
	var s httpSettings
	o := &options{}
	s.add(o)
	return `Usage: chiffon operator snapshot restore [options] FILE

  Replaces the whole cluster's registry with FILE, a backup written by
  'chiffon operator snapshot save': PUT /v1/operator/snapshot, applied by the
  leader (a follower sends the CLI on to it) and replicated to every
  orchestrator. The backup is checked before anything changes. Nodes alive
  in gossip are brought up to date by the leader within a second or two;
  work items come back as they were saved. For disaster recovery, not
  routine use.

Options:

` + o.help()
}

func (c *operatorSnapshotRestoreCommand) Run(args []string) int {
	var s httpSettings
	o := &options{}
	s.add(o)
	var file string
	_, code, done := parseCommon(c.ui, "operator snapshot restore", o, args, func(rest []string) error {
		if len(rest) != 1 || strings.TrimSpace(rest[0]) == "" {
			return fmt.Errorf("give exactly one snapshot FILE to restore, got %q", rest)
		}
		file = rest[0]
		return nil
	})
	if done {
		return code
	}
	snap, err := os.ReadFile(file)
	if err != nil {
		c.ui.Error("chiffon operator snapshot restore: " + err.Error())
		return 1
	}
	cl, err := s.client()
	if err != nil {
		c.ui.Error("chiffon operator snapshot restore: " + err.Error())
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	out, err := cl.RestoreSnapshot(ctx, snap)
	if err != nil {
		c.ui.Error("chiffon operator snapshot restore: " + apiErrorText(s.addr, err))
		return 1
	}
	c.ui.Output(fmt.Sprintf("Restored registry from %s: %d nodes, %d work items (index %d)", file, out.Nodes, out.Work, out.Index))
	return 0
}
