package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

// TestProcess_WorkOverMutualTLS runs a secured cluster with real binaries:
// three orchestrators with server certificates, a desktop with a client
// certificate, gossip encrypted, and a real broker. Work published to
// RabbitMQ runs on the desktop end to end, delivered over HTTPS with
// mutual TLS (the desktop advertises https://). POSTs straight to the
// desktop's work endpoint, as `curl` would send them — plain HTTP, HTTPS
// without a certificate, HTTPS with another desktop's certificate — are
// refused with 401/403 and a log line, and the handler never runs for
// them.
func TestProcess_WorkOverMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("process test with a real broker")
	}
	broker := dispatchtest.StartForTest(t)
	p := pki(t)
	out, errOut, err := runCmd(chiffonBinary(t), "keygen")
	if err != nil {
		t.Fatalf("chiffon keygen: %v: %s", err, errOut)
	}
	key := strings.TrimSpace(out)

	var orchs []*orchSpec
	for i := range 3 {
		join := ""
		if i > 0 {
			join = orchs[0].gossipAddr
		}
		s := newOrchSpec(t, fmt.Sprintf("mt-orch%d", i+1), fmt.Sprintf("127.0.6.%d", i+1), 3, join)
		s.args = append(append(append(s.args, "-amqp-url", broker.URL, "-encrypt", key), p.serverArgs(t, s.name)...), fastTimings...)
		orchs = append(orchs, s)
		s.start(t)
	}
	ran := filepath.Join(t.TempDir(), "ran")
	const deskIP = "127.0.6.4"
	desk := newNodeSpec(t, "mt-desk", deskIP).withMetrics(t, metricsJSON(t, 1, 16, 32, "nvidia", gpuJSON{0, "RTX 4090", 24, 20, 0}))
	workAddr := fmt.Sprintf("%s:%d", deskIP, freeTCPPort(t, deskIP))
	desk.args = append(append([]string{"-retry-join", orchs[0].gossipAddr, "-retry-interval", "200ms", "-encrypt", key,
		"-work-handler", `cat >/dev/null; echo "$CHIFFON_WORK_ID" >> '` + ran + `'; echo ok`, "-work-addr", workAddr},
		p.clientArgs(t, desk.name)...), fastTimings...)
	deskProc := desk.start(t)

	// The orchestrators' API takes HTTPS with a client certificate.
	hc := p.httpClient(t, "mt-cli")
	getTLS := func(url string, v any) error {
		resp, err := hc.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(v)
	}
	waitFor(t, 60*time.Second, "the desktop online with an https:// work address on every orchestrator", func() (bool, string) {
		for _, o := range orchs {
			var list []struct {
				Name     string `json:"name"`
				Status   string `json:"status"`
				WorkAddr string `json:"work_addr"`
			}
			if err := getTLS("https://"+o.httpAddr+"/v1/agents?stale", &list); err != nil {
				return false, o.name + ": " + err.Error()
			}
			found := false
			for _, a := range list {
				found = found || a.Name == desk.name && a.Status == "online" && a.WorkAddr == "https://"+workAddr
			}
			if !found {
				return false, fmt.Sprintf("%s: %+v", o.name, list)
			}
		}
		return true, ""
	})

	// Work through the broker, end to end.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	results := &noLossResults{byID: map[string][]apitype.WorkResult{}}
	done := make(chan struct{})
	rctx, stopResults := context.WithCancel(ctx)
	go func() {
		defer close(done)
		results.run(rctx, broker.URL)
	}()
	defer func() { stopResults(); <-done }()
	prod := &noLossProducer{url: broker.URL}
	defer prod.close()
	var reqs []noLossRequest
	for i := range 5 {
		id := fmt.Sprintf("mt-%d", i)
		reqs = append(reqs, noLossRequest{workID: id, body: []byte(fmt.Sprintf(`{"work_id":%q,"payload":{"i":%d}}`, id, i))})
	}
	if err := prod.publish(ctx, reqs); err != nil {
		t.Fatalf("publish: %v", err)
	}
	waitFor(t, 60*time.Second, "5 results from the desktop", func() (bool, string) {
		return results.distinct() == 5, fmt.Sprintf("%d results", results.distinct())
	})
	results.mu.Lock()
	for _, r := range reqs {
		if got := results.byID[r.workID]; len(got) == 0 || got[0].Status != "succeeded" || got[0].Output != "ok\n" {
			t.Errorf("%s: %+v", r.workID, got)
		}
	}
	results.mu.Unlock()

	// Straight to the desktop's work endpoint, without a server
	// certificate.
	rogue, rogueKey := p.cert(t, tlsutil.RoleClient, "mt-rogue")
	rogueCert, err := tls.LoadX509KeyPair(rogue, rogueKey)
	if err != nil {
		t.Fatal(err)
	}
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: certs}}}
	}
	attempts := []struct {
		name, url string
		hc        *http.Client
		code      int
		logWants  string
	}{
		{"plain HTTP", "http://" + workAddr, client(), http.StatusForbidden, "plain HTTP on the TLS work endpoint"},
		{"HTTPS without a certificate", "https://" + workAddr, client(), http.StatusUnauthorized, "a client certificate signed by the cluster CA is required"},
		{"HTTPS with a desktop's certificate", "https://" + workAddr, client(rogueCert), http.StatusForbidden, "mt-rogue.client.chiffon"},
	}
	for i, a := range attempts {
		body := fmt.Sprintf(`{"work_id":"rogue-%d","attempt":1,"payload":{}}`, i)
		resp, err := a.hc.Post(a.url+"/v1/work", "application/json", strings.NewReader(body))
		if err != nil {
			t.Errorf("%s: %v, want %d", a.name, err, a.code)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != a.code || !strings.Contains(string(b), `"error"`) {
			t.Errorf("%s: %s %s, want %d with a JSON error", a.name, resp.Status, b, a.code)
		}
		waitFor(t, 10*time.Second, a.name+": a refusal logged with the remote address", func() (bool, string) {
			for l := range strings.Lines(deskProc.logText()) {
				if strings.Contains(l, "refused a work request") && strings.Contains(l, a.logWants) && strings.Contains(l, "remote=127.") {
					return true, ""
				}
			}
			return false, tail(deskProc.logText(), 10)
		})
	}
	b, err := os.ReadFile(ran)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(b)); len(got) != 5 || strings.Contains(string(b), "rogue") {
		t.Fatalf("the handler ran %q; want the 5 brokered items only", got)
	}
}
