// Command benchserver is the server side of scripts/bench-http.sh: in one
// process it builds a 3-node raft cluster (package consensus, real TCP
// transport on loopback, registry in memory), loads -agents agents of which
// about 10 % match the benchmark's query, starts an HTTP API server on every
// node, and a bare net/http handler as the baseline. The bare handler
// writes the same bytes as Chiffon's answer to -query (read from the
// follower once at start): the plain body, or with Accept-Encoding: gzip
// the gzip body Chiffon sends, with the same Content-Type, Content-Length
// and Content-Encoding, so that a ratio measures Chiffon's work and not a
// difference in bytes. Every node also has a second API server over TLS
// (a test CA made at start; followers forward to the leader over mutual
// TLS, as orchestrators do), so plain and TLS reads are measured on the
// same registry in the same run. It prints the addresses as KEY=URL lines,
// the answer's sizes (BARE_BYTES, BARE_GZIP_BYTES, MATCHED agents), then
// READY, and runs until SIGINT or SIGTERM.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with -pprof
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

func main() {
	agents := flag.Int("agents", 1000, "agents to register")
	query := flag.String("query", "/agents/available-capacity?min_gpu_vram_gb=16&min_cpu_cores=4", "the answer the bare handler copies")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060) for profiling")
	flag.Parse()
	if *pprofAddr != "" {
		go func() { log.Println(http.ListenAndServe(*pprofAddr, nil)) }()
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(*agents, *query, logger); err != nil {
		log.Fatal(err)
	}
}

func run(n int, query string, logger *slog.Logger) error {
	// Build in order: raft stores, bootstrap, leader, data, API servers,
	// baseline; tear down in reverse (deferred), so no server outlives the
	// store it reads.
	const nodes = 3
	stores := make([]*consensus.Store, nodes)
	for i := range nodes {
		cfg := consensus.DefaultConfig()
		cfg.NodeID = fmt.Sprintf("bench-%d", i)
		cfg.InMemory = true
		cfg.BindAddr = "127.0.0.1:0"
		cfg.Logger = logger
		s, err := consensus.New(cfg)
		if err != nil {
			return err
		}
		if err := s.Open(); err != nil {
			return err
		}
		defer s.Close()
		stores[i] = s
	}
	var servers []raft.Server
	for _, s := range stores {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(s.ID()), Address: raft.ServerAddress(s.Addr())})
	}
	for _, s := range stores {
		if err := s.Bootstrap(servers); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	leader, err := waitLeader(stores, 20*time.Second)
	if err != nil {
		return err
	}
	idx, err := stores[leader].Apply(consensus.UpsertNodes{At: time.Now(), Nodes: makeAgents(n)}, 10*time.Second)
	if err != nil {
		return fmt.Errorf("load agents: %w", err)
	}
	if err := waitIndex(stores, idx, 20*time.Second); err != nil {
		return err
	}

	var (
		mu    sync.Mutex
		addrs = map[string]string{} // raft ID → HTTP address; guarded by mu
	)
	resolve := func(id string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if a, ok := addrs[id]; ok {
			return a, nil
		}
		return "", fmt.Errorf("unknown node %s", id)
	}
	tlsAddrs := map[string]string{} // raft ID → HTTPS address; guarded by mu
	resolveTLS := func(id string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if a, ok := tlsAddrs[id]; ok {
			return a, nil
		}
		return "", fmt.Errorf("unknown node %s", id)
	}
	serverTLS, forwardTLS, err := benchTLS()
	if err != nil {
		return fmt.Errorf("test CA: %w", err)
	}
	apis := make([]*api.Server, nodes)
	tlsAPIs := make([]*api.Server, nodes)
	for i, s := range stores {
		for _, secure := range []bool{false, true} {
			cfg := api.DefaultConfig()
			cfg.Addr = "127.0.0.1:0"
			cfg.Registry, cfg.Raft, cfg.LeaderHTTPAddr = s.FSM(), s, resolve
			// No leadership owner here: the leader was elected and has
			// applied the agents before any server starts.
			cfg.LeaderEstablished = func() bool { return true }
			if secure {
				cfg.LeaderHTTPAddr, cfg.TLS, cfg.ForwardTLS = resolveTLS, serverTLS, forwardTLS
			}
			cfg.Logger = logger
			srv, err := api.New(cfg)
			if err != nil {
				return err
			}
			if err := srv.Start(context.Background()); err != nil {
				return err
			}
			defer srv.Close()
			mu.Lock()
			if secure {
				tlsAPIs[i] = srv
				tlsAddrs[s.ID()] = srv.Addr()
			} else {
				apis[i] = srv
				addrs[s.ID()] = srv.Addr()
			}
			mu.Unlock()
		}
	}

	follower := (leader + 1) % nodes
	// The bare handler's bytes: Chiffon's answer, plain and gzip.
	plain, err := fetch("http://"+apis[follower].Addr()+query, "")
	if err != nil {
		return err
	}
	gz, err := fetch("http://"+apis[follower].Addr()+query, "gzip")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bare := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		body := plain
		if gz != nil && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			body = gz
			h.Set("Content-Encoding", "gzip")
		}
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go bare.Serve(ln)
	defer bare.Close()

	fmt.Printf("BARE=http://%s\n", ln.Addr())
	fmt.Printf("LEADER=http://%s\n", apis[leader].Addr())
	fmt.Printf("FOLLOWER=http://%s\n", apis[follower].Addr())
	fmt.Printf("TLS_FOLLOWER=https://%s\n", tlsAPIs[follower].Addr())
	fmt.Printf("BARE_BYTES=%d\nBARE_GZIP_BYTES=%d\nMATCHED=%d\n", len(plain), len(gz), bytes.Count(plain, []byte(`"agent_id"`)))
	fmt.Printf("AGENTS=%d\nREADY\n", n)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

// fetch GETs url with the given Accept-Encoding (none when empty) and
// returns the body as sent: for "gzip", the compressed bytes, or nil when
// the answer came plain.
func fetch(url, encoding string) ([]byte, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	if encoding != "" {
		req.Header.Set("Accept-Encoding", encoding)
	}
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 30 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	if encoding != "" && resp.Header.Get("Content-Encoding") != encoding {
		return nil, nil
	}
	return b, nil
}

// makeAgents returns n online desktops; every tenth has 24 GB free on one
// GPU and 8 free cores, the rest 6 GB and 2 cores, so that
// min_gpu_vram_gb=16&min_cpu_cores=4 matches 10 %.
func makeAgents(n int) []consensus.Record {
	now := time.Now()
	out := make([]consensus.Record, n)
	for i := range n {
		vram, cores := 6.0, 2.0
		if i%10 == 0 {
			vram, cores = 24, 8
		}
		out[i] = consensus.Record{
			AgentID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Name: fmt.Sprintf("desk-%04d", i),
			Roles: []string{"desktop"}, GossipAddr: fmt.Sprintf("10.0.%d.%d:7946", i/250, i%250),
			Status: consensus.StatusOnline, LastHeartbeatAt: now,
			Metrics: consensus.ResourceMetrics{
				CPULoad1Min: 1, CPUCoresPhysical: 16, CPUCoresAvailable: cores, MemoryAvailableGB: 32,
				GPUVRAMTotalGB: 24, GPUVRAMAvailableGB: vram, GPUVRAMMaxFreeGB: vram, GPUCount: 1, GPUType: "nvidia",
				GPUs: []consensus.GPU{{Index: 0, Name: "NVIDIA GeForce RTX 4090", VRAMTotalGB: 24, VRAMFreeGB: vram}},
			},
		}
	}
	return out
}

// waitLeader polls until one store leads and all know it.
func waitLeader(stores []*consensus.Store, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for i, s := range stores {
			if s.IsLeader() && slices.IndexFunc(stores, func(o *consensus.Store) bool { id, _ := o.Leader(); return id != s.ID() }) < 0 {
				return i, nil
			}
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no leader within %s", within)
		}
		<-tick.C
	}
}

// waitIndex polls until every store has applied idx.
func waitIndex(stores []*consensus.Store, idx uint64, within time.Duration) error {
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var behind []string
		for _, s := range stores {
			if s.FSM().Index() < idx {
				behind = append(behind, s.ID())
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not at index %d within %s", strings.Join(behind, ", "), idx, within)
		}
		<-tick.C
	}
}

// benchTLS makes a CA and one server certificate, and returns the API
// servers' TLS config and the forwarding side's. The servers verify a
// client certificate when one is given (forwarded requests carry the
// node's) but do not require one, because wrk cannot present one; with
// keep-alive connections the steady-state cost measured is the same
// record encryption either way, the handshake (where mutual TLS adds a
// signature) being paid once per connection.
func benchTLS() (server, forward *tls.Config, err error) {
	caPEM, caKey, err := tlsutil.GenerateCA(tlsutil.DefaultDomain, 2)
	if err != nil {
		return nil, nil, err
	}
	ca, err := tlsutil.ParseCA(caPEM, caKey)
	if err != nil {
		return nil, nil, err
	}
	certPEM, keyPEM, err := ca.Sign(tlsutil.CertRequest{Role: tlsutil.RoleServer, Node: "bench", Days: 1})
	if err != nil {
		return nil, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	forward = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		RootCAs: ca.Pool(), ServerName: "server." + tlsutil.DefaultDomain}
	return server, forward, nil
}
