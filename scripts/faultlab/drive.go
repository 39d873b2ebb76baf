package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	amqp "github.com/rabbitmq/amqp091-go"
)

// driveConfig is what one scenario's driver does.
type driveConfig struct {
	Dir         string        // histories go here
	Orchs       []string      // every orchestrator's HTTP address (watch)
	ReadNodes   []string      // orchestrators to read from
	ReadAgent   string        // name of the agent whose capacity is read
	MetricsFile string        // that agent's metrics file, rewritten to make writes
	Duration    time.Duration // how long to read and submit
	ReadTimeout time.Duration // a read that takes longer failed
	AMQPURL     string        // "" submits no work
	WorkEvery   time.Duration
	Drain       time.Duration // wait this long at most for the last results
}

// Watch is one observation of an orchestrator: its raft term, whether it
// leads and the leader it knows; or of an agent's status (Agent set).
type Watch struct {
	At       int64  `json:"at"`
	Node     string `json:"node"`
	Term     uint64 `json:"term,omitempty"`
	IsLeader bool   `json:"is_leader,omitempty"`
	Leader   string `json:"leader,omitempty"`
	Agent    string `json:"agent,omitempty"`
	Status   string `json:"status,omitempty"`
	// Unreachable: the agent was shown "reachable": false (the leader
	// could not reach its work endpoint for -work-unreachable-after).
	Unreachable bool `json:"unreachable,omitempty"`
}

// baseURL is the scheme the orchestrators are read with: "https://" once
// useTLS has been called (the product's default), "http://" against
// orchestrators started with -insecure.
var baseURL = "http://"

// clientTLS is the driver's TLS configuration (CA and client
// certificate), nil without TLS. Set once by useTLS before driving.
var clientTLS *tls.Config

// useTLS makes every client read over HTTPS, verifying the orchestrators
// with the CA in caFile and presenting the client certificate certFile
// (orchestrators require one).
func useTLS(caFile, certFile, keyFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("load client certificate: %w", err)
	}
	clientTLS = &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	baseURL = "https://"
	return nil
}

// newClient is an HTTP client with this timeout, over TLS when useTLS was
// called. Each has its own transport, so that one stalled orchestrator's
// connections do not hold the others'.
func newClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = clientTLS
	return &http.Client{Timeout: timeout, Transport: t}
}

// jsonl appends JSON lines to a file from several goroutines.
type jsonl struct {
	mu sync.Mutex // guards w
	w  *bufio.Writer
	f  *os.File
}

func newJSONL(path string) (*jsonl, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &jsonl{f: f, w: bufio.NewWriter(f)}, nil
}

func (j *jsonl) put(v any) {
	b, _ := json.Marshal(v)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.w.Write(b)
	j.w.WriteByte('\n')
}

func (j *jsonl) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return errorsJoin(j.w.Flush(), j.f.Close())
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// drive reads, writes the metrics file, submits work and watches the
// cluster until ctx ends or cfg.Duration passed, then waits up to
// cfg.Drain for the results of the work it submitted.
func drive(ctx context.Context, cfg driveConfig) error {
	reads, err := newJSONL(filepath.Join(cfg.Dir, "reads.jsonl"))
	if err != nil {
		return err
	}
	defer reads.close()
	watch, err := newJSONL(filepath.Join(cfg.Dir, "watch.jsonl"))
	if err != nil {
		return err
	}
	defer watch.close()

	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	client := newClient(cfg.ReadTimeout)
	var wg sync.WaitGroup

	wg.Go(func() { watchLoop(runCtx, cfg.Orchs, watch) })
	if cfg.MetricsFile != "" {
		wg.Go(func() { writeLoop(runCtx, cfg.MetricsFile) })
	}
	agentID := ""
	if cfg.ReadAgent != "" {
		agentID = findAgent(runCtx, cfg.Orchs, cfg.ReadAgent)
	}
	if agentID != "" {
		for i, node := range cfg.ReadNodes {
			wg.Go(func() { readLoop(runCtx, client, i, node, agentID, reads) })
		}
	}
	var workErr error
	if cfg.AMQPURL != "" {
		wg.Go(func() { workErr = work(ctx, runCtx, cfg) })
	}
	wg.Wait()
	if agentID == "" && cfg.ReadAgent != "" {
		return fmt.Errorf("agent %s never appeared in the registry", cfg.ReadAgent)
	}
	return workErr
}

// findAgent returns the agent_id of the named agent, polling until ctx ends.
func findAgent(ctx context.Context, orchs []string, name string) string {
	c := newClient(2 * time.Second)
	for ctx.Err() == nil {
		for _, o := range orchs {
			var agents []apitype.Agent
			if getJSON(ctx, c, baseURL+o+"/v1/agents?stale", &agents) != nil {
				continue
			}
			for _, a := range agents {
				if a.Name == name {
					return a.AgentID
				}
			}
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return ""
}

func getJSON(ctx context.Context, c *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// readLoop reads the agent's registry record (its capacity and status,
// GET /v1/agents/{id}) from one orchestrator, one read at a time,
// alternating default and consistent reads. The record carries its
// modify_index, the version the checker's model needs.
func readLoop(ctx context.Context, c *http.Client, client int, node, agentID string, out *jsonl) {
	for i := 0; ctx.Err() == nil; i++ {
		mode, q := "default", ""
		if i%2 == 1 {
			mode, q = "consistent", "?consistent"
		}
		r := Read{Client: client, Node: node, Mode: mode, Start: time.Now().UnixNano()}
		req, _ := http.NewRequest(http.MethodGet, baseURL+node+"/v1/agents/"+agentID+q, nil)
		resp, err := c.Do(req)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode != http.StatusOK:
				err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
			default:
				var rec apitype.Agent
				if err = json.Unmarshal(body, &rec); err == nil {
					r.Index, err = strconv.ParseUint(resp.Header.Get(apitype.HeaderIndex), 10, 64)
				}
				r.Modify = rec.ModifyIndex
				r.Value = recordValue(rec)
			}
		}
		r.End = time.Now().UnixNano()
		r.OK = err == nil
		if err != nil {
			r.Err = err.Error()
		}
		out.put(r)
		sleep(ctx, 50*time.Millisecond)
	}
}

// writeLoop rewrites a desktop's metrics file every 500 ms with another
// free VRAM figure, so that the registry record the readers read changes
// at each of its heartbeats.
func writeLoop(ctx context.Context, path string) {
	for i := 0; ctx.Err() == nil; i++ {
		body := fmt.Sprintf(`{"cpu_load_1min": 0.5, "cpu_cores_physical": 16, "memory_percent": 40, "memory_available_gb": 32,
"gpu_type": "nvidia", "gpus": [{"index": 0, "name": "lab", "vram_total_gb": 24, "vram_free_gb": %d, "utilization_pct": 0}]}`, 8+i%16)
		tmp := path + ".tmp"
		if os.WriteFile(tmp, []byte(body), 0o644) == nil {
			os.Rename(tmp, path)
		}
		sleep(ctx, 500*time.Millisecond)
	}
}

// watchLoop records every orchestrator's term and leader every 250 ms,
// and every agent's status as the leader shows it. Each orchestrator is
// watched on its own, so that one that does not answer (blackholed: a
// 1 s timeout) does not delay what the others are seen to say: the time
// to a new leader is read from these observations.
func watchLoop(ctx context.Context, orchs []string, out *jsonl) {
	var wg sync.WaitGroup
	for _, o := range orchs {
		wg.Go(func() {
			c := newClient(time.Second)
			for ctx.Err() == nil {
				watchOnce(ctx, c, o, out)
				sleep(ctx, 250*time.Millisecond)
			}
		})
	}
	wg.Wait()
}

// watchOnce records what orchestrator o says of the leader and, when it
// is the leader, of every agent.
func watchOnce(ctx context.Context, c *http.Client, o string, out *jsonl) {
	w := Watch{Node: o}
	var l apitype.Leader
	if getJSON(ctx, c, baseURL+o+"/v1/status/leader", &l) != nil {
		return
	}
	w.Leader = l.ID
	w.Term, w.IsLeader = scrapeTerm(ctx, c, o)
	w.At = time.Now().UnixNano()
	out.put(w)
	if !w.IsLeader {
		return
	}
	var as []apitype.Agent
	if getJSON(ctx, c, baseURL+o+"/v1/agents?stale", &as) != nil {
		return
	}
	now := time.Now().UnixNano()
	for _, a := range as {
		out.put(Watch{At: now, Agent: a.Name, Status: a.Status, Unreachable: !a.Reachable})
	}
}

// scrapeTerm reads chiffon_raft_term and chiffon_raft_leader from /metrics.
func scrapeTerm(ctx context.Context, c *http.Client, node string) (term uint64, leader bool) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+node+"/metrics", nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "chiffon_raft_term "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			term = uint64(f)
		}
		if v, ok := strings.CutPrefix(line, "chiffon_raft_leader "); ok {
			leader = v == "1"
		}
	}
	return term, leader
}

// work publishes a work request every cfg.WorkEvery until runCtx ends,
// with reply_to a queue of the driver's, records each item's ID in
// items.txt and each result in results.jsonl, and then waits until every
// item has a result or cfg.Drain passed.
func work(ctx, runCtx context.Context, cfg driveConfig) error {
	itemsF, err := os.Create(filepath.Join(cfg.Dir, "items.txt"))
	if err != nil {
		return err
	}
	defer itemsF.Close()
	results, err := newJSONL(filepath.Join(cfg.Dir, "results.jsonl"))
	if err != nil {
		return err
	}
	defer results.close()

	conn, err := amqp.Dial(cfg.AMQPURL)
	if err != nil {
		return fmt.Errorf("amqp: %w", err)
	}
	defer conn.Close() // again after a failure below; Close is idempotent
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp channel: %w", err)
	}
	const replyQ = "faultlab.results"
	for _, q := range []string{"chiffon.work", replyQ} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare %s: %w", q, err)
		}
	}
	// Leftovers of an earlier scenario on the same broker are not ours.
	for _, q := range []string{"chiffon.work", replyQ} {
		if _, err := ch.QueuePurge(q, false); err != nil {
			return fmt.Errorf("purge %s: %w", q, err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm mode: %w", err)
	}
	deliveries, err := ch.Consume(replyQ, "", true, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	var mu sync.Mutex
	pending := map[string]bool{} // guarded by mu
	done := make(chan struct{})
	allIn := make(chan struct{})
	go func() {
		defer close(done)
		for d := range deliveries {
			var r Result
			if json.Unmarshal(d.Body, &r) != nil {
				continue
			}
			r.At = time.Now().UnixNano()
			results.put(r)
			mu.Lock()
			delete(pending, r.WorkID)
			empty := len(pending) == 0
			mu.Unlock()
			select {
			case <-allIn:
				if empty {
					return
				}
			default:
			}
		}
	}()

	run := fmt.Sprintf("%x", time.Now().UnixNano()&0xffffff)
	for i := 1; runCtx.Err() == nil; i++ {
		id := fmt.Sprintf("fl-%s-%04d", run, i)
		body, _ := json.Marshal(apitype.WorkRequest{WorkID: id, Payload: json.RawMessage(`{}`)})
		at := time.Now().UnixNano()
		conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", "chiffon.work", false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: id, ReplyTo: replyQ, Body: body})
		if err == nil && conf.Wait() {
			mu.Lock()
			pending[id] = true
			mu.Unlock()
			fmt.Fprintln(itemsF, id, at)
		}
		sleep(runCtx, cfg.WorkEvery)
	}
	close(allIn)
	mu.Lock()
	empty := len(pending) == 0
	mu.Unlock()
	if !empty {
		select {
		case <-done:
		case <-time.After(cfg.Drain):
		case <-ctx.Done():
		}
	}
	conn.Close() // ends deliveries, and so the consumer
	<-done
	return nil
}

// recordValue is what the checker compares of a record: the registry's
// state, without the figures an answer derives from the answering
// orchestrator's clock (sample_age_s, and flap_score decayed to the
// moment of the answer), which differ between two reads of one version.
func recordValue(rec apitype.Agent) string {
	rec.SampleAgeS, rec.FlapScore = nil, 0
	b, err := json.Marshal(rec)
	if err != nil {
		return "unencodable: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
