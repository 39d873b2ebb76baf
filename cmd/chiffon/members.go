package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/serf/client"

	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/probe"
)

// membersCommand lists the cluster's members through a node's serf RPC,
// decoding Chiffon's tags into a human table or JSON.
type membersCommand struct{ ui cli.Ui }

type membersSettings struct {
	rpcAddr, rpcAuth, dataDir, format, status, role string
}

func (s *membersSettings) options() *options {
	*s = membersSettings{rpcAddr: "127.0.0.1:7373", dataDir: defaultDataDir(), format: "table"}
	o := &options{}
	o.str(&s.rpcAddr, "rpc-addr", "serf RPC address of any node")
	o.str(&s.rpcAuth, "rpc-auth", "serf RPC auth token (default: the one in -data-dir)")
	o.str(&s.dataDir, "data-dir", "data dir of the node at -rpc-addr, whose serf/rpc-auth file holds the token")
	o.str(&s.format, "format", "output format: table or json")
	o.str(&s.status, "status", "only members with this serf status: alive, leaving, left or failed")
	o.str(&s.role, "role", "only members with this role: desktop or orchestrator")
	return o
}

func (c *membersCommand) Synopsis() string { return "List cluster members with their resources" }

func (c *membersCommand) Help() string {
	var s membersSettings
	return `Usage: chiffon members [options]

  Lists the members of the cluster as seen by one node (serf RPC), with role,
  load, cores, memory and GPUs decoded from the gossip tags. The stock
  'serf members -rpc-addr ADDR -rpc-auth TOKEN' shows the same members with
  the raw tags.

  The serf RPC wants the node's token: -rpc-auth (or CHIFFON_RPC_AUTH) if
  given, else the one the node keeps in -data-dir (serf/rpc-auth), so on
  the node's own machine and account no flag is needed.

Options:

` + s.options().help()
}

// memberView is one member as `chiffon members -format json` prints it.
type memberView struct {
	Name      string            `json:"name"`
	Addr      string            `json:"addr"`
	Status    string            `json:"status"`
	AgentID   string            `json:"agent_id,omitempty"`
	Roles     []string          `json:"roles,omitempty"`
	APIAddr   string            `json:"api_addr,omitempty"`
	RaftAddr  string            `json:"raft_addr,omitempty"`
	Resources *probe.Sample     `json:"resources,omitempty"`
	MaxFree   float64           `json:"gpu_vram_max_free_gb"`
	GPUCount  int               `json:"gpu_count"`
	Tags      map[string]string `json:"tags"`
	Error     string            `json:"error,omitempty"`
}

func (c *membersCommand) Run(args []string) int {
	var s membersSettings
	o := s.options()
	rest, err := o.parse("members", args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil && len(rest) > 0 {
		err = fmt.Errorf("unexpected arguments %q", rest)
	}
	if err == nil {
		err = errors.Join(checkFormat(s.format), checkChoice("status", s.status, true, "alive", "leaving", "left", "failed"),
			checkChoice("role", s.role, true, gossip.RoleDesktop, gossip.RoleOrchestrator))
	}
	if err != nil {
		c.ui.Error("chiffon members: " + strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	auth, from, err := s.token()
	if err != nil {
		c.ui.Error("chiffon members: " + err.Error())
		return 1
	}
	rc, err := client.ClientFromConfig(&client.Config{Addr: s.rpcAddr, AuthKey: auth, Timeout: 5 * time.Second})
	if err != nil {
		c.ui.Error("chiffon members: " + rpcError(s.rpcAddr, from, err))
		return 1
	}
	defer rc.Close()
	members, err := rc.Members()
	if err != nil {
		c.ui.Error("chiffon members: " + rpcError(s.rpcAddr, from, err))
		return 1
	}
	views := make([]memberView, 0, len(members))
	for _, m := range members {
		v := toView(m)
		if s.status != "" && v.Status != s.status {
			continue
		}
		if s.role != "" && !slices.Contains(v.Roles, s.role) {
			continue
		}
		views = append(views, v)
	}
	sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })
	if s.format == "json" {
		b, _ := json.MarshalIndent(views, "", "  ")
		c.ui.Output(string(b))
		return 0
	}
	c.ui.Output(renderMembers(views))
	return 0
}

// token is the serf RPC token to present and where it came from:
// -rpc-auth or CHIFFON_RPC_AUTH, else the file in -data-dir. No file is
// not an error here (the node may run without a token); a file that other
// users can read is, as it is for the agent.
func (s *membersSettings) token() (key, from string, err error) {
	if s.rpcAuth != "" {
		return s.rpcAuth, "-rpc-auth", nil
	}
	key, err = gossip.ReadRPCAuthKey(s.dataDir)
	switch {
	case err == nil:
		return key, gossip.RPCAuthPath(s.dataDir), nil
	case errors.Is(err, fs.ErrNotExist):
		return "", "", nil
	}
	return "", "", err
}

// rpcError explains a failed serf RPC call, naming how to give the token
// when the node refused the one sent (or its absence).
func rpcError(addr, from string, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "Authentication required"):
		return fmt.Sprintf("the serf RPC at %s requires a token and none was found; give the node's token with -rpc-auth or CHIFFON_RPC_AUTH, or its data dir with -data-dir (the token is in DATA/%s)",
			addr, gossip.RPCAuthFile)
	case strings.Contains(msg, "Invalid authentication token"):
		return fmt.Sprintf("the serf RPC at %s refused the token from %s; give the node's token with -rpc-auth or CHIFFON_RPC_AUTH, or its data dir with -data-dir (the token is in DATA/%s)",
			addr, from, gossip.RPCAuthFile)
	}
	return fmt.Sprintf("cannot reach the serf RPC at %s: %v (is an agent running? see -rpc-addr)", addr, err)
}

func toView(m client.Member) memberView {
	v := memberView{Name: m.Name, Addr: net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))),
		Status: m.Status, Tags: m.Tags}
	info, err := gossip.DecodeTags(m.Tags)
	if err != nil {
		v.Error = err.Error()
		return v
	}
	v.AgentID, v.Roles, v.APIAddr, v.RaftAddr = info.AgentID, info.Roles, info.APIAddr, info.RaftAddr
	v.MaxFree, v.GPUCount = info.MaxFreeVRAMGB, info.GPUCount
	if info.HasRole(gossip.RoleDesktop) {
		smp := info.Sample
		v.Resources = &smp
	}
	return v
}

func renderMembers(views []memberView) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tADDRESS\tSTATUS\tROLE\tLOAD\tCORES\tMEM FREE\tGPUS\tVRAM FREE/TOTAL")
	for _, v := range views {
		role := strings.Join(v.Roles, ",")
		if v.Error != "" {
			role = "(not chiffon)"
		}
		load, cores, mem, gpus, vram := "-", "-", "-", "-", "-"
		if r := v.Resources; r != nil {
			load = fmt.Sprintf("%.2f", r.CPULoad1)
			cores = fmt.Sprintf("%g/%d", r.CPUCoresAvailable, r.CPUCoresPhysical)
			mem = fmt.Sprintf("%.1f GB", r.MemoryAvailableGB)
			gpus = "none"
			if v.GPUCount > 0 {
				gpus = fmt.Sprintf("%d× %s", v.GPUCount, r.GPUType)
				if len(r.GPUs) > 0 && r.GPUs[0].Name != "" {
					gpus += " " + r.GPUs[0].Name
				}
				vram = fmt.Sprintf("%g/%g GB (max %g on one)", r.GPUVRAMAvailableGB, r.GPUVRAMTotalGB, v.MaxFree)
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Addr, v.Status, role, load, cores, mem, gpus, vram)
	}
	w.Flush()
	return strings.TrimRight(b.String(), "\n")
}
