package main

import (
	"context"
	"embed"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/cli"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/gossip"
	"github.com/chiffon-dev/chiffon/internal/logging"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/worker"
	"github.com/chiffon-dev/chiffon/probe"
)

// devMetrics holds the synthetic GPU desktops' metrics files, copies of
// scripts/demo/gpu-desktop-{1,2}.json (a test keeps them equal).
//
//go:embed devdata/*.json
var devMetrics embed.FS

// devNodeSpec is one node of the dev cluster. The order is the start order;
// the index also picks the node's ports under -base-port.
type devNodeSpec struct {
	name string
	orch bool
	// metrics names the embedded metrics file of a synthetic desktop; ""
	// samples this machine.
	metrics string
}

var devSpecs = []devNodeSpec{
	{name: "orch-1", orch: true},
	{name: "orch-2", orch: true},
	{name: "orch-3", orch: true},
	{name: "local-desktop"},
	{name: "synthetic-gpu-1", metrics: "gpu-desktop-1.json"},
	{name: "synthetic-gpu-2", metrics: "gpu-desktop-2.json"},
}

// Port offsets from -base-port, as scripts/cluster.sh lays them out.
const (
	devOffGossip = 0
	devOffRPC    = 100
	devOffRaft   = 200
	devOffHTTP   = 300
	devOffWork   = 400
)

// devDefaultHandler is the dev desktops' work handler when -amqp-url is
// set; {node} becomes the desktop's name.
const devDefaultHandler = `echo "work $CHIFFON_WORK_ID ran on {node}, GPU ${CUDA_VISIBLE_DEVICES:-none}, payload: $(cat)"`

// devPersistentHandler stands in for devDefaultHandler with
// -work-handler-mode persistent: a shell loop that answers each request
// line (lines-v1, docs/API.md) without starting a process per item.
const devPersistentHandler = `while IFS= read -r line; do id=${line#*'"work_id":"'}; id=${id%%'"'*}; ` +
	`gpu=${line#*'"gpu_index":'}; gpu=${gpu%%[,\}]*}; ` +
	`printf '{"work_id":"%s","exit_code":0,"output":"work %s ran on {node} in a persistent handler, GPU index %s"}\n' "$id" "$id" "$gpu"; done`

// devCommand runs a whole cluster in one process, like `consul agent -dev`.
type devCommand struct {
	ui cli.Ui
	// signals, when set (tests), replaces SIGINT/SIGTERM: a value sent on
	// it stops the cluster as Ctrl-C does, a second one skips the leaves.
	signals chan os.Signal
	// ready, when set (tests), receives the cluster once it is up.
	ready func(*devCluster)
	// logOut receives the combined log stream (default os.Stderr).
	logOut io.Writer
}

// devSettings are the dev command's flags.
type devSettings struct {
	dataDir     string
	basePort    int
	amqpURL     string
	workHandler string
	handlerMode string
	token       string
	heartbeat   time.Duration
	logLevel    string
	logJSON     bool
}

func (s *devSettings) options() *options {
	*s = devSettings{heartbeat: 5 * time.Second, logLevel: "warn", workHandler: devDefaultHandler, handlerMode: worker.HandlerExec}
	o := &options{}
	o.str(&s.dataDir, "data-dir", "keep the nodes' data here (one directory per node) and keep it at exit (default: a temporary directory, removed at exit)")
	o.integer(&s.basePort, "base-port", "fixed ports: gossip BASE+0..5, serf RPC BASE+100.., raft BASE+200.., HTTP BASE+300.., work BASE+400.. (default 0: free ports)")
	o.str(&s.amqpURL, "amqp-url", "RabbitMQ URL: turns on the work bridge on the raft leader and a work handler on every desktop")
	o.str(&s.workHandler, "work-handler", "with -amqp-url: the desktops' work handler (sh -c, payload on stdin); {node} becomes the desktop's name; empty takes no work")
	o.str(&s.handlerMode, "work-handler-mode", "with -amqp-url: exec (a process per item) or persistent (long-lived handlers, a JSON line in and out per item); the default demo handler follows it")
	o.str(&s.token, "http-token", "require this token on the HTTP API (the CLI's -http-token / CHIFFON_HTTP_TOKEN)")
	o.duration(&s.heartbeat, "heartbeat-interval", "how often the desktops sample and gossip their resources")
	o.str(&s.logLevel, "log-level", "log level of the combined log stream: debug, info, warn or error (warn keeps the instructions readable)")
	o.boolean(&s.logJSON, "log-json", "log as JSON lines")
	return o
}

// handler is the desktops' work handler: the one given, or the demo
// handler for the handler mode.
func (s devSettings) handler() string {
	if s.workHandler == devDefaultHandler && s.handlerMode == worker.HandlerPersistent {
		return devPersistentHandler
	}
	return s.workHandler
}

func (c *devCommand) Synopsis() string {
	return "Run a whole local cluster in one process (3 orchestrators, 3 desktops)"
}

func (c *devCommand) Help() string {
	var s devSettings
	return `Usage: chiffon dev [options]

  Runs a complete Chiffon cluster in this one process, on 127.0.0.1, to try
  things out: three orchestrators (raft, HTTP API, bootstrap-expect 3) and
  three desktops — local-desktop samples this machine, synthetic-gpu-1 and
  synthetic-gpu-2 read made-up GPU metrics from files you may edit while it
  runs. It prints the addresses and commands to try (curl, chiffon capacity,
  serf members, the dashboard). Nothing is secured: no gossip key, no TLS.

  The logs of every node go to stderr as one stream, each line with
  node=NAME; -log-level info shows them all. Ctrl-C (SIGINT or SIGTERM)
  stops it within seconds: the desktops leave, then the orchestrators, then
  everything closes in reverse order; a second Ctrl-C skips the leaves.

Options:

` + s.options().help()
}

// Run starts the cluster, prints how to use it and waits for a signal.
func (c *devCommand) Run(args []string) int {
	var s devSettings
	_, code, done := parseCommon(c.ui, "dev", s.options(), args, func(rest []string) error {
		if len(rest) > 0 {
			return fmt.Errorf("unexpected arguments %q", rest)
		}
		if s.basePort != 0 && (s.basePort < 1024 || s.basePort+devOffWork+len(devSpecs) > 65535) {
			return fmt.Errorf("-base-port: %d; want 0 (free ports) or 1024 to %d", s.basePort, 65535-devOffWork-len(devSpecs))
		}
		if s.heartbeat <= 0 {
			return fmt.Errorf("-heartbeat-interval: must be positive")
		}
		if err := worker.CheckHandlerMode(s.handlerMode); err != nil {
			return err
		}
		_, err := logging.ParseLevel(s.logLevel)
		return err
	})
	if done {
		return code
	}
	level, _ := logging.ParseLevel(s.logLevel)

	sigCh := c.signals
	if sigCh == nil {
		sigCh = make(chan os.Signal, 2)
		signal.Notify(sigCh, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigCh)
	}
	logOut := c.logOut
	if logOut == nil {
		logOut = os.Stderr
	}

	dir, keep := s.dataDir, s.dataDir != ""
	if !keep {
		var err error
		if dir, err = os.MkdirTemp("", "chiffon-dev-"); err != nil {
			c.ui.Error("chiffon dev: " + err.Error())
			return 1
		}
		defer os.RemoveAll(dir)
	}
	dc := &devCluster{dir: dir, s: s, level: level, logOut: &lockedWriter{w: logOut}, done: make(chan struct{})}
	c.ui.Output(fmt.Sprintf("Starting a Chiffon dev cluster in %s ...", dir))
	if err := dc.start(context.Background()); err != nil {
		c.ui.Error("chiffon dev: " + err.Error())
		dc.stop(nil)
		return 1
	}
	errCh := dc.errors()
	waitCtx, cancelWait := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelWait()
	waitErr := make(chan error, 1)
	go func() { waitErr <- dc.waitReady(waitCtx) }()
	code = 0
	select {
	case err := <-waitErr:
		if err != nil {
			c.ui.Warn("chiffon dev: " + err.Error() + " (the instructions below may not work yet)")
		}
		c.ui.Output(dc.banner(cliName(), keep))
		if c.ready != nil {
			c.ready(dc)
		}
		select {
		case <-sigCh:
		case err := <-errCh:
			c.ui.Error("chiffon dev: " + err.Error())
			code = 1
		}
	case <-sigCh:
	case err := <-errCh:
		c.ui.Error("chiffon dev: " + err.Error())
		code = 1
	}
	cancelWait()
	c.ui.Output("Stopping: the desktops leave, then the orchestrators (Ctrl-C again to skip the leaves) ...")
	begin := time.Now()
	dc.stop(sigCh)
	c.ui.Output(fmt.Sprintf("Stopped in %s.", time.Since(begin).Round(10*time.Millisecond)))
	return code
}

// devNode is one started node.
type devNode struct {
	spec devNodeSpec
	n    *node.Node
	// sampler is a desktop's probe (nil on orchestrators); closed after
	// the node.
	sampler *freezableSampler
}

// close closes the node, then its probe. Safe to call more than once.
func (d *devNode) close() {
	_ = d.n.Close()
	d.closeSampler()
}

func (d *devNode) closeSampler() {
	if d.sampler != nil {
		_ = d.sampler.inner.Close()
	}
}

// devCluster is the running dev cluster.
type devCluster struct {
	dir    string
	s      devSettings
	level  slog.Level
	logOut io.Writer
	// nodes are the started nodes in start order.
	nodes []*devNode
	// done is closed by stop; it ends the error watchers.
	done     chan struct{}
	stopOnce sync.Once
}

// addr is the node's address for a port offset: a fixed port under
// -base-port, else port 0 (the node reports what it bound).
func (dc *devCluster) addr(i, off int) string {
	if dc.s.basePort == 0 {
		return "127.0.0.1:0"
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(dc.s.basePort+off+i))
}

// config builds node i's configuration; seeds are the gossip addresses of
// the orchestrators already started. A desktop also gets its sampler,
// which the caller owns (node.Config.Sampler is not closed by the node).
func (dc *devCluster) config(i int, sp devNodeSpec, seeds []string) (node.Config, *freezableSampler, error) {
	c := node.DefaultConfig()
	c.NodeName = sp.name
	c.DataDir = filepath.Join(dc.dir, sp.name)
	c.HeartbeatInterval = dc.s.heartbeat
	c.LeaveTimeout = 3 * time.Second
	g := &c.Gossip
	g.BindAddr = dc.addr(i, devOffGossip)
	g.RPCAddr = dc.addr(i, devOffRPC)
	g.Join = seeds
	// memberlist's leave has already been sent when this delay starts, and
	// loopback delivers it at once; a short delay also keeps a desktop's
	// heartbeat from ticking while it has left but not yet closed.
	g.LeavePropagateDelay = 100 * time.Millisecond
	c.API.Token = dc.s.token // desktops send it when they call back (work)
	if sp.orch {
		c.Roles = []string{gossip.RoleOrchestrator}
		o := &c.Orchestrator
		o.RaftAddr = dc.addr(i, devOffRaft)
		o.BootstrapExpect = 3
		c.API.HTTPAddr = dc.addr(i, devOffHTTP)
		c.Work.Bridge.AMQPURL = dc.s.amqpURL
	} else {
		c.Roles = []string{gossip.RoleDesktop}
		if handler := dc.s.handler(); dc.s.amqpURL != "" && handler != "" {
			c.Work.Handler = strings.ReplaceAll(handler, "{node}", sp.name)
			c.Work.HandlerMode = dc.s.handlerMode
			c.Work.Addr = dc.addr(i, devOffWork)
		}
	}
	if sp.metrics != "" {
		path, err := dc.writeMetrics(sp.metrics, sp.name+".json")
		if err != nil {
			return c, nil, err
		}
		c.MetricsFile = path
	}
	logger, tee := logging.New(dc.logOut, dc.level, dc.s.logJSON)
	c.Logger = logger.With("node", sp.name)
	c.Monitor = tee // `serf monitor` on this node's RPC streams its logs
	if sp.orch {
		return c, nil, nil
	}
	pc := probe.DefaultConfig()
	pc.MetricsFile = c.MetricsFile
	pc.Logger = c.Logger
	p, err := probe.New(pc)
	if err != nil {
		return c, nil, fmt.Errorf("probe: %w", err)
	}
	fs := &freezableSampler{inner: p}
	c.Sampler = fs
	return c, fs, nil
}

// freezableSampler wraps a desktop's probe. Once frozen, just before the
// desktop leaves, it repeats the sample it returned last, so a heartbeat
// that runs during or after the leave changes no tags: serf's tag update
// would otherwise wait out its broadcast timeout (5 s) once the node has
// left, and hold up its Close.
type freezableSampler struct {
	inner *probe.Prober
	mu    sync.Mutex // guards last and frozen
	last  probe.Sample
	// frozen is set by freeze; Sample then answers last.
	frozen bool
}

func (f *freezableSampler) Sample(ctx context.Context) (probe.Sample, error) {
	f.mu.Lock()
	if f.frozen {
		defer f.mu.Unlock()
		return f.last, nil
	}
	f.mu.Unlock()
	s, err := f.inner.Sample(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.frozen { // froze while sampling: the fresh sample would change the tags
		return f.last, nil
	}
	f.last = s
	return s, err
}

func (f *freezableSampler) freeze() {
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
}

var _ node.Sampler = (*freezableSampler)(nil)

// writeMetrics copies an embedded metrics file into the data dir, keeping
// one that is already there (edited in an earlier run with -data-dir).
func (dc *devCluster) writeMetrics(embedded, name string) (string, error) {
	path := filepath.Join(dc.dir, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	b, err := devMetrics.ReadFile("devdata/" + embedded)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dc.dir, 0o755); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b, 0o644)
}

// start builds and starts the nodes in order: orchestrators first (each
// later one joins those before it), then the desktops, which join every
// orchestrator.
func (dc *devCluster) start(ctx context.Context) error {
	var seeds []string
	for i, sp := range devSpecs {
		c, fs, err := dc.config(i, sp, append([]string(nil), seeds...))
		if err != nil {
			return fmt.Errorf("%s: %w", sp.name, err)
		}
		d := &devNode{spec: sp, sampler: fs}
		if d.n, err = node.New(c); err == nil {
			err = d.n.Start(ctx)
		}
		if err != nil {
			d.closeSampler()
			return fmt.Errorf("start %s: %w", sp.name, err)
		}
		dc.nodes = append(dc.nodes, d)
		n := d.n
		if sp.orch {
			seeds = append(seeds, n.Gossip().Addr())
		}
	}
	return nil
}

// errors merges the nodes' fatal background errors.
func (dc *devCluster) errors() <-chan error {
	out := make(chan error, len(dc.nodes))
	for _, d := range dc.nodes {
		go func() {
			select {
			case err, ok := <-d.n.Err():
				if ok && err != nil {
					out <- fmt.Errorf("%s: %w", d.spec.name, err)
				}
			case <-dc.done:
			}
		}()
	}
	return out
}

// orchs and desktops return the started nodes of each kind.
func (dc *devCluster) orchs() []*devNode    { return dc.kind(true) }
func (dc *devCluster) desktops() []*devNode { return dc.kind(false) }

func (dc *devCluster) kind(orch bool) []*devNode {
	var out []*devNode
	for _, d := range dc.nodes {
		if d.spec.orch == orch {
			out = append(out, d)
		}
	}
	return out
}

// leader returns the orchestrator that leads raft now, or nil.
func (dc *devCluster) leader() *devNode {
	for _, d := range dc.orchs() {
		if d.n.Store().IsLeader() {
			return d
		}
	}
	return nil
}

// waitReady polls until a leader's registry has every node online, or ctx
// ends.
func (dc *devCluster) waitReady(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		online := 0
		if l := dc.leader(); l != nil {
			for _, d := range dc.nodes {
				if r, ok := l.n.Store().FSM().Get(d.n.AgentID()); ok && r.Status == consensus.StatusOnline {
					online++
				}
			}
		}
		if online == len(dc.nodes) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("only %d of %d nodes are online in the registry yet", online, len(dc.nodes))
		case <-t.C:
		}
	}
}

// stop leaves gracefully and closes every node, desktops before
// orchestrators (the reverse of the start order). The desktops leave
// together, so the leader records them as left, and each closes as soon as
// it has left: its heartbeat must not tick after the leave (serf's tag
// update would then wait out its broadcast timeout, 5 s). Then the
// follower orchestrators leave together: the leader records them and
// removes them from raft, which leaves a valid one-voter configuration (a
// restart with -data-dir grows it back: the leader adds the others as they
// rejoin). The leader itself only closes: nobody is left to tell, and
// serf's leave would wait out its timeout for acks. A signal on force
// skips the rest of the leaves.
func (dc *devCluster) stop(force <-chan os.Signal) {
	dc.stopOnce.Do(func() { close(dc.done) })
	l := dc.leader()
	followers := slices.DeleteFunc(dc.orchs(), func(d *devNode) bool { return d == l })
	if leaveAll(dc.desktops(), true, force) {
		leaveAll(followers, false, force)
	}
	for i := len(dc.nodes) - 1; i >= 0; i-- {
		dc.nodes[i].close() // idempotent: the desktops may be closed already
	}
}

// leaveAll has the nodes leave in parallel, each closing right after when
// closeAfter; it returns false when a signal on force cut the wait short.
func leaveAll(nodes []*devNode, closeAfter bool, force <-chan os.Signal) bool {
	var wg sync.WaitGroup
	for _, d := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d.sampler != nil {
				d.sampler.freeze()
			}
			_ = d.n.Leave() // bounded by the LeaveTimeout
			if closeAfter {
				d.close()
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-force:
		return false
	}
}

// banner is what the dev command prints once the cluster is up.
func (dc *devCluster) banner(self string, keep bool) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  NODE\tROLE\tGOSSIP\tSERF RPC\tRAFT\tHTTP API")
	for _, d := range dc.nodes {
		role, raft, api := "desktop", "-", "-"
		if d.spec.orch {
			role, raft, api = "orchestrator", d.n.Store().Addr(), d.n.APIAddr()
		} else if d.spec.metrics != "" {
			role = "desktop (synthetic)"
		}
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\t%s\t%s\n", d.spec.name, role, d.n.Gossip().Addr(), d.n.Gossip().RPCAddr(), raft, api)
	}
	w.Flush()
	orchs := dc.orchs()
	h1, h2 := orchs[0].n.APIAddr(), orchs[1].n.APIAddr()
	rpc := orchs[0].n.Gossip().RPCAddr()
	leader := "none yet"
	if l := dc.leader(); l != nil {
		leader = l.spec.name + " (" + l.n.APIAddr() + ")"
	}
	data := dc.dir + " (removed at exit)"
	if keep {
		data = dc.dir + " (kept)"
	}
	tok, curlTok := "", ""
	if dc.s.token != "" {
		tok = " -http-token " + shellQuote(dc.s.token)
		curlTok = " -H " + shellQuote("Authorization: Bearer "+dc.s.token)
	}
	fmt.Fprintf(&b, `
Chiffon dev cluster is up: 3 orchestrators and 3 desktops in this process.
  raft leader: %s
  data:        %s
  dashboard:   http://%s/ui/
  logs:        stderr, level %s (-log-level info for every node's logs)

Any orchestrator answers the HTTP API. Try, in another terminal:
  curl -s%s 'http://%s/agents/available-capacity?min_gpu_vram_gb=8'
  %s capacity -http-addr %s%s -min-gpu-vram-gb 8
  %s agents -http-addr %s%s
  %s members -rpc-addr %s
  serf members -rpc-addr=%s -tag gpu_type=nvidia -detailed
  %s operator raft list-peers -http-addr %s%s
  %s operator snapshot save -http-addr %s%s registry.snap
  sed -i 's/"vram_free_gb": 21.5/"vram_free_gb": 3/' %s   # seen within a heartbeat (%s)
`, leader, data, h1, dc.s.logLevel,
		curlTok, h2,
		self, h2, tok,
		self, h1, tok,
		self, rpc,
		rpc,
		self, h1, tok,
		self, h1, tok,
		filepath.Join(dc.dir, "synthetic-gpu-1.json"), dc.s.heartbeat)
	if dc.s.amqpURL != "" {
		fmt.Fprintf(&b, `
Work bridge on %s (queue chiffon.work); the desktops run (%s): %s
  %s submit -amqp-url %s -min-gpu-vram-gb 8 -payload '{"hello":"world"}' -wait 60s
  CHIFFON_HTTP_ADDR=%s %s work status%s WORK_ID
  CHIFFON_HTTP_ADDR=%s %s work list%s -status failed
`, redactURL(dc.s.amqpURL), dc.s.handlerMode, dc.s.handler(), self, shellQuote(dc.s.amqpURL), h1, self, tok, h1, self, tok)
	} else {
		b.WriteString("\nWith -amqp-url URL (e.g. amqp://guest:guest@127.0.0.1:5672; `scripts/rabbitmq.sh start` starts a\n" +
			"private broker and prints its URL) the RabbitMQ work bridge and a demo work handler run too.\n")
	}
	fmt.Fprintf(&b, "\nThe dashboard and `%s agents -http-addr %s%s` show each node's status. To watch a desktop\n"+
		"go suspect (seconds) and offline (90 s) after a SIGKILL, or left after a SIGTERM, run the nodes as\n"+
		"processes: make demo-processes, then scripts/cluster.sh kill|stop NAME.\n", self, h1, tok)
	b.WriteString("\nPress Ctrl-C to stop.")
	return b.String()
}

// cliName is how to call this binary in printed commands: the path it was
// started by, or plain "chiffon" for a `go run` build in a temporary dir.
func cliName() string {
	self := os.Args[0]
	if strings.Contains(self, "go-build") || strings.HasSuffix(self, ".test") {
		return "chiffon"
	}
	return self
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@=,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// redactURL hides a URL's password for printing.
func redactURL(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		if j := strings.LastIndex(s, "@"); j > i {
			if k := strings.Index(s[i+3:j], ":"); k >= 0 {
				return s[:i+3+k+1] + "xxx" + s[j:]
			}
		}
	}
	return s
}

// lockedWriter serialises writes from the nodes' separate log handlers
// onto one stream, so lines never interleave.
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
