package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/internal/tlsutil/tlstest"
)

// serveTLS serves r's work endpoint as a node does (Listener, Handler,
// the handshake errors logged) on loopback and returns its address.
func serveTLS(t *testing.T, r *Runner, logs io.Writer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.NewTextHandler(logs, nil), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(r.Listener(ln))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// post sends a raw assignment with hc and returns the status code (0 and
// the error when the request failed, the handshake included).
func post(hc *http.Client, url string) (int, error) {
	resp, err := hc.Post(url, "application/json", strings.NewReader(`{"work_id":"w","attempt":1}`))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func tlsClient(cfg *tls.Config) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// TestHandler_TLSOnlyServerCertsRunWork: a desktop's work endpoint with TLS
// material runs an assignment only from a peer holding a server
// certificate. No certificate, a desktop's client certificate, a
// certificate from another CA and plain HTTP are refused, each with a log
// line naming the remote address, and the handler never runs for them.
func TestHandler_TLSOnlyServerCertsRunWork(t *testing.T) {
	pki := tlstest.New(t)
	desk := pki.Bundle(t, tlsutil.RoleClient, "desk-1")
	marker := filepath.Join(t.TempDir(), "ran")
	logs := &testlog.Buffer{}
	r := newRunner(t, "cat >/dev/null; echo ran >> "+marker, func(c *Config) {
		c.TLS = desk
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	addr := serveTLS(t, r, logs)
	url := "https://" + addr + PathWork

	other := tlstest.New(t).Bundle(t, tlsutil.RoleServer, "orch-1")
	otherDesk := pki.Bundle(t, tlsutil.RoleClient, "desk-2")
	noCert := &tls.Config{RootCAs: desk.Roots}
	refused := []struct {
		name     string
		hc       *http.Client
		url      string
		code     int    // 0: the request itself fails (the TLS handshake)
		logWants string // in the log line of this refusal
	}{
		{"no certificate", tlsClient(noCert), url, http.StatusUnauthorized, "a client certificate signed by the cluster CA is required"},
		{"desktop certificate", tlsClient(otherDesk.NodeClientConfig("desk-1")), url, http.StatusForbidden, "desk-2.client.chiffon"},
		{"another CA's server certificate", tlsClient(forceCert(desk.Roots, other.Cert)), url, 0, "TLS handshake error"},
		{"plain HTTP", &http.Client{Timeout: 10 * time.Second}, "http://" + addr + PathWork, http.StatusForbidden, "plain HTTP on the TLS work endpoint"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			code, err := post(tc.hc, tc.url)
			if code != tc.code {
				t.Fatalf("POST answered %d (%v), want %d", code, err, tc.code)
			}
			waitLog(t, logs, tc.logWants)
		})
	}
	if _, ok := r.Get("w", 1); ok {
		t.Fatal("a refused request was taken")
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the handler ran for a refused request: %v", err)
	}

	// An orchestrator's server certificate delivers work, through the
	// dispatcher's client, which checks the desktop's name in turn.
	orch := pki.Bundle(t, tlsutil.RoleServer, "orch-1")
	c := &Client{TLS: orch}
	defer c.CloseIdleConnections()
	ctx := context.Background()
	if _, err := c.Submit(ctx, "desk-1", SchemeHTTPS+addr, Assignment{WorkID: "w", Attempt: 1}); err != nil {
		t.Fatalf("server certificate: %v", err)
	}
	if st := result(t, r, "w", 1); st.Status != StatusSucceeded {
		t.Fatalf("work from the orchestrator: %+v", st)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "ran\n" {
		t.Fatalf("marker %q, %v; want one run", b, err)
	}
}

// TestClient_TLSVerifiesTheDesktop: the leader's client sends work over
// HTTPS only to an endpoint whose certificate names the node the work is
// for: another desktop's certificate (an address injected through gossip
// tags, say) is refused before the assignment is sent, and without TLS
// material an https:// address is not dialled at all.
func TestClient_TLSVerifiesTheDesktop(t *testing.T) {
	pki := tlstest.New(t)
	r := newRunner(t, "cat", func(c *Config) { c.TLS = pki.Bundle(t, tlsutil.RoleClient, "desk-1") })
	addr := SchemeHTTPS + serveTLS(t, r, io.Discard)
	orch := &Client{TLS: pki.Bundle(t, tlsutil.RoleServer, "orch-1")}
	defer orch.CloseIdleConnections()
	ctx := context.Background()
	a := Assignment{WorkID: "w", Attempt: 1}

	if _, err := orch.Submit(ctx, "desk-2", addr, a); !errors.Is(err, tlsutil.ErrNotNode) {
		t.Fatalf("desk-1's endpoint taken for desk-2: %v, want ErrNotNode", err)
	}
	if _, err := (&Client{}).Submit(ctx, "desk-1", addr, a); !errors.Is(err, ErrNoTLS) {
		t.Fatalf("no TLS material: %v, want ErrNoTLS", err)
	}
	if _, ok := r.Get("w", 1); ok {
		t.Fatal("the desktop got the work")
	}
	// The right name passes, and a desktop cannot deliver work to another.
	if _, err := orch.Submit(ctx, "desk-1", addr, a); err != nil {
		t.Fatal(err)
	}
	peer := &Client{TLS: pki.Bundle(t, tlsutil.RoleClient, "desk-3")}
	defer peer.CloseIdleConnections()
	if _, err := peer.Submit(ctx, "desk-1", addr, Assignment{WorkID: "x", Attempt: 1}); !errors.Is(err, ErrHTTP) || !strings.Contains(err.Error(), "403") {
		t.Fatalf("desktop to desktop: %v, want 403", err)
	}
}

// TestNew_TLSNeedsTheCA: a TLS work endpoint without the cluster CA could
// verify no orchestrator, so the runner refuses the config.
func TestNew_TLSNeedsTheCA(t *testing.T) {
	b := tlstest.New(t).Bundle(t, tlsutil.RoleClient, "desk-1")
	b.Roots, b.CA = nil, nil
	cfg := DefaultConfig()
	cfg.Handler, cfg.TLS = "cat", b
	if _, err := New(cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New: %v, want ErrInvalidConfig", err)
	}
}

// forceCert presents cert even where the server asks for another CA's
// (crypto/tls would otherwise send none).
func forceCert(roots *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: roots, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &cert, nil
	}}
}

// waitLog waits for a log line that contains want and the remote address
// ("remote=127.0.0.1:" from the handler, "from 127.0.0.1:" from a failed
// handshake).
func waitLog(t *testing.T, logs *testlog.Buffer, want string) {
	t.Helper()
	testwait.Until(t, 10*time.Second, "a log line with "+want, func() (bool, string) {
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, want) && (strings.Contains(l, "remote=127.0.0.1:") || strings.Contains(l, "from 127.0.0.1:")) {
				return true, ""
			}
		}
		return false, logs.String()
	})
}
