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

	"github.com/chiffon-dev/chiffon/internal/logging"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/nodetest"
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
  serf members, the dashboard). It runs secured, as production should:
  gossip encrypted with a key made at start, the HTTP API over HTTPS with
  client certificates of a cluster CA made at start (all under the data
  dir: gossip.key, tls/; with -data-dir they are reused and an existing CA
  is never replaced), the serf RPC behind each node's token. The banner
  prints the CHIFFON_TLS_* exports and curl flags the CLI needs.

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
	dc := &devCluster{dir: dir, s: s, level: level, logOut: logging.NewSyncWriter(logOut), done: make(chan struct{})}
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

// devNode is one node of the running cluster.
type devNode struct {
	spec devNodeSpec
	n    *node.Node
}

// devCluster is the dev cluster: a nodetest.Cluster (the in-process
// cluster the tests use too) with production timings and the dev
// command's ports, logs and probes.
type devCluster struct {
	dir    string
	s      devSettings
	level  slog.Level
	logOut io.Writer
	// c runs the nodes; nil until start.
	c *nodetest.Cluster
	// sec is the gossip key and TLS material; set by start.
	sec *devSecurity
	// samplers are the desktops' probes by node name, closed after the
	// nodes (node.Config.Sampler is not closed by the node). Written by
	// config during start only.
	samplers map[string]*freezableSampler
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

// config edits the config the cluster filled for node name (roles, data
// dir, join list, bootstrap-expect 3) with the dev command's settings. A
// desktop also gets its probe.
func (dc *devCluster) config(name string, c *node.Config) error {
	i := slices.IndexFunc(devSpecs, func(sp devNodeSpec) bool { return sp.name == name })
	if i < 0 {
		return fmt.Errorf("no dev node %q", name)
	}
	sp := devSpecs[i]
	c.HeartbeatInterval = dc.s.heartbeat
	c.LeaveTimeout = 3 * time.Second
	// The dev desktops ignore the owner: they share one machine, and
	// whoever types on it would make them all step aside.
	c.Owner.Idle = 0
	g := &c.Gossip
	g.BindAddr = dc.addr(i, devOffGossip)
	g.RPCAddr = dc.addr(i, devOffRPC)
	// memberlist's leave has already been sent when this delay starts, and
	// loopback delivers it at once; a short delay also keeps a desktop's
	// heartbeat from ticking while it has left but not yet closed.
	g.LeavePropagateDelay = 100 * time.Millisecond
	c.API.Token = dc.s.token // desktops send it when they call back (work)
	if sp.orch {
		c.Orchestrator.RaftAddr = dc.addr(i, devOffRaft)
		c.API.HTTPAddr = dc.addr(i, devOffHTTP)
		c.Work.Bridge.AMQPURL = dc.s.amqpURL
	} else if handler := dc.s.handler(); dc.s.amqpURL != "" && handler != "" {
		c.Work.Handler = strings.ReplaceAll(handler, "{node}", sp.name)
		c.Work.HandlerMode = dc.s.handlerMode
		c.Work.Addr = dc.addr(i, devOffWork)
	}
	if sp.metrics != "" {
		path, err := dc.writeMetrics(sp.metrics, sp.name+".json")
		if err != nil {
			return err
		}
		c.MetricsFile = path
	}
	if err := dc.sec.apply(sp.name, sp.orch, c); err != nil {
		return err
	}
	logger, tee := logging.New(dc.logOut, dc.level, dc.s.logJSON)
	c.Logger = logger.With("node", sp.name)
	c.Monitor = tee // `serf monitor` on this node's RPC streams its logs
	if sp.orch {
		return nil
	}
	pc := probe.DefaultConfig()
	pc.MetricsFile = c.MetricsFile
	pc.Logger = c.Logger
	p, err := probe.New(pc)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	fs := &freezableSampler{inner: p}
	dc.samplers[name] = fs
	c.Sampler = fs
	return nil
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
	cfg := nodetest.Config{Dir: dc.dir, Node: dc.config}
	for _, sp := range devSpecs {
		if sp.orch {
			cfg.Orchestrators = append(cfg.Orchestrators, sp.name)
		} else {
			cfg.Desktops = append(cfg.Desktops, sp.name)
		}
	}
	dc.samplers = map[string]*freezableSampler{}
	sec, err := newDevSecurity(dc.dir)
	if err != nil {
		return fmt.Errorf("gossip key and TLS material: %w", err)
	}
	if _, _, _, err := sec.cliFiles(); err != nil {
		return fmt.Errorf("the CLI's certificate: %w", err)
	}
	dc.sec = sec
	c, err := nodetest.New(cfg)
	if err != nil {
		return err
	}
	dc.c = c
	return c.Start(ctx)
}

// nodes returns the started nodes in start order.
func (dc *devCluster) nodes() []*devNode {
	var out []*devNode
	for _, sp := range devSpecs {
		if n := dc.c.Node(sp.name); n != nil {
			out = append(out, &devNode{spec: sp, n: n})
		}
	}
	return out
}

// errors merges the nodes' fatal background errors.
func (dc *devCluster) errors() <-chan error {
	nodes := dc.nodes()
	out := make(chan error, len(nodes))
	for _, d := range nodes {
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
	return slices.DeleteFunc(dc.nodes(), func(d *devNode) bool { return d.spec.orch != orch })
}

// leader returns the orchestrator that leads raft now, or nil.
func (dc *devCluster) leader() *devNode {
	name := dc.c.LeaderName()
	for _, d := range dc.orchs() {
		if d.spec.name == name {
			return d
		}
	}
	return nil
}

// waitReady polls until a leader's registry has every node online, or ctx
// ends.
func (dc *devCluster) waitReady(ctx context.Context) error { return dc.c.Ready(ctx) }

// stop leaves gracefully and closes every node, desktops before
// orchestrators (the reverse of the start order), as
// nodetest.Cluster.Shutdown does; a signal on force skips the rest of the
// leaves. The desktops' probes are frozen first and closed last.
func (dc *devCluster) stop(force <-chan os.Signal) {
	dc.stopOnce.Do(func() { close(dc.done) })
	for _, fs := range dc.samplers {
		fs.freeze()
	}
	if dc.c != nil {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-force:
				cancel()
			case <-ctx.Done():
			}
		}()
		_ = dc.c.Shutdown(ctx)
		cancel()
	}
	for _, fs := range dc.samplers {
		_ = fs.inner.Close()
	}
}

// banner is what the dev command prints once the cluster is up.
func (dc *devCluster) banner(self string, keep bool) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  NODE\tROLE\tGOSSIP\tSERF RPC\tRAFT\tHTTP API")
	for _, d := range dc.nodes() {
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
	// The serf RPC wants orch-1's token: chiffon members reads it from the
	// node's data dir, the stock serf CLI gets it from the file by $(cat),
	// so the commands work pasted and the token stays off the screen.
	rpcDir := filepath.Join(dc.dir, orchs[0].spec.name)
	rpcAuth := `"$(cat ` + shellQuote(orchs[0].n.Gossip().RPCAuthFile()) + `)"`
	leader := "none yet"
	if l := dc.leader(); l != nil {
		leader = l.spec.name + " (" + l.n.APIAddr() + ")"
	}
	data := dc.dir + " (removed at exit)"
	if keep {
		data = dc.dir + " (kept)"
	}
	caFile, certFile, keyFile, _ := dc.sec.cliFiles() // made at start
	tlsEnv := "export CHIFFON_TLS_CA=" + shellQuote(caFile) + " CHIFFON_TLS_CERT=" + shellQuote(certFile) +
		" CHIFFON_TLS_KEY=" + shellQuote(keyFile)
	curlTLS := " --cacert " + shellQuote(caFile) + " --cert " + shellQuote(certFile) + " --key " + shellQuote(keyFile)
	tok, curlTok := "", ""
	if dc.s.token != "" {
		tok = " -http-token " + shellQuote(dc.s.token)
		curlTok = " -H " + shellQuote("Authorization: Bearer "+dc.s.token)
	}
	fmt.Fprintf(&b, `
Chiffon dev cluster is up: 3 orchestrators and 3 desktops in this process.
  raft leader: %s
  data:        %s
  dashboard:   https://%s/ui/ (the browser needs the client certificate below, as PKCS#12)
  logs:        stderr, level %s (-log-level info for every node's logs)
  secured:     gossip encrypted (%s), HTTPS with client certificates (%s)

Any orchestrator answers the HTTP API, over HTTPS to holders of a client certificate
of this cluster's CA. Try, in another terminal, after giving chiffon the CLI's certificate:
  %s
  curl -s%s%s 'https://%s/agents/available-capacity?min_gpu_vram_gb=8'
  %s capacity -http-addr %s%s -min-gpu-vram-gb 8
  %s agents -http-addr %s%s
  %s members -rpc-addr %s -data-dir %s
  serf members -rpc-addr=%s -rpc-auth=%s -tag gpu_type=nvidia -detailed
  %s operator raft list-peers -http-addr %s%s
  %s operator snapshot save -http-addr %s%s registry.snap
  sed -i 's/"vram_free_gb": 21.5/"vram_free_gb": 3/' %s   # seen within a heartbeat (%s)
`, leader, data, h1, dc.s.logLevel, dc.sec.keyFile, dc.sec.dir,
		tlsEnv,
		curlTLS, curlTok, h2,
		self, h2, tok,
		self, h1, tok,
		self, rpc, shellQuote(rpcDir),
		rpc, rpcAuth,
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
