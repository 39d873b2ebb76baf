package worker

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/internal/httpjson"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
)

// Paths of the desktop's work endpoint.
const (
	// PathWork takes assignments: POST PathWork.
	PathWork = "/v1/work"
	// MaxWait bounds a long poll (GET ...?wait=).
	MaxWait = time.Minute
)

// Handler returns the desktop's work API, to be served on the node's work
// address:
//
//	POST   /v1/work                               assign (Assignment) → 202 new, 200 known; State
//	GET    /v1/work                               every State held (the leader's reachability probe)
//	GET    /v1/work/{id}?attempt=N&wait=D&not=S   State; with wait, blocks up to D (≤ 1m) while the status is S
//	DELETE /v1/work/{id}?attempt=N                forget a finished result → 204
//	DELETE /v1/work/{id}?attempt=N&drop=1         the attempt is superseded: never start it, kill it if running → 204
//
// 404 means the runner does not have that work_id and attempt, 409 a
// stale (superseded) attempt, 410 an assignment whose lease had expired
// when it arrived, 401/403 a missing or wrong token or certificate, 503 a
// closed runner.
//
// With Config.TLS the handler runs a request only when it came over TLS
// from a peer whose certificate the cluster CA signed and that is a
// server (orchestrator) certificate of the domain: 401 without a
// certificate, 403 for any other (a desktop's). Any orchestrator of the
// domain may deliver work, not only the one that leads now: the desktop
// does not know the leader's name before it calls, and every server
// certificate is one the operator gave to an orchestrator. Serve it on
// Listener's listener. The bearer token (Config.Token) is checked as well
// when set. Every refusal is logged with the remote address and reason.
func (r *Runner) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathWork, r.handleSubmit)
	mux.HandleFunc("GET "+PathWork, r.handleList)
	mux.HandleFunc("GET "+PathWork+"/{id}", r.handleGet)
	mux.HandleFunc("DELETE "+PathWork+"/{id}", r.handleForget)
	return r.auth(mux)
}

func (r *Runner) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		refuse := func(code int, msg string, args ...any) {
			r.logRefusal(req.RemoteAddr, code, msg, append([]any{"method", req.Method, "path", req.URL.Path}, args...)...)
			httpjson.Error(w, code, msg)
		}
		if b := r.cfg.TLS; b != nil {
			switch {
			case req.TLS == nil:
				refuse(http.StatusUnauthorized, "HTTPS with an orchestrator's (server) certificate required")
				return
			case len(req.TLS.VerifiedChains) == 0:
				refuse(http.StatusUnauthorized, "a client certificate signed by the cluster CA is required: only an orchestrator (server certificate) may deliver work")
				return
			}
			if peer := req.TLS.VerifiedChains[0][0]; !tlsutil.IsServerCert(peer, b.Domain) {
				refuse(http.StatusForbidden, fmt.Sprintf("certificate %q is not an orchestrator's (server.%s): only an orchestrator may deliver work",
					peer.Subject.CommonName, b.Domain), "peer", peer.Subject.CommonName)
				return
			}
		}
		if r.cfg.Token != "" {
			scheme, tok, ok := strings.Cut(req.Header.Get("Authorization"), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				w.Header().Set("WWW-Authenticate", `Bearer realm="chiffon"`)
				refuse(http.StatusUnauthorized, "Authorization: Bearer <token> required")
				return
			}
			if subtle.ConstantTimeCompare([]byte(tok), []byte(r.cfg.Token)) != 1 {
				refuse(http.StatusForbidden, "wrong token")
				return
			}
		}
		next.ServeHTTP(w, req)
	})
}

// Listener returns ln ready to serve Handler on: ln itself without
// Config.TLS; with it, a TLS listener that serves the node's certificate,
// verifies a client certificate against the cluster CA when one is given
// (an untrusted one fails the handshake; a missing one reaches Handler,
// which answers 401 with the reason), and answers a plain-HTTP request on
// the TLS port with 403 and a log line instead of running it.
func (r *Runner) Listener(ln net.Listener) net.Listener {
	if r.cfg.TLS == nil {
		return ln
	}
	cfg := r.cfg.TLS.ServerConfig()
	cfg.ClientAuth = tls.VerifyClientCertIfGiven
	return tls.NewListener(&plainRefuser{Listener: ln, r: r}, cfg)
}

// logRefusal logs a refused request with the remote address and reason,
// at most once a minute per remote host and reason (with how many were
// held back since the last), so that a local user knocking on the port
// cannot flood the node's log.
func (r *Runner) logRefusal(remote string, code int, reason string, args ...any) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	ok, held := r.refusals.Allow(host + " " + strconv.Itoa(code) + " " + reason)
	if !ok {
		return
	}
	attrs := append([]any{"remote", remote, "code", code, "reason", reason}, args...)
	if held > 0 {
		attrs = append(attrs, "held_back", held)
	}
	r.logger.Warn("refused a work request", attrs...)
}

// plainRefuser answers connections that start with plain HTTP instead of
// a TLS handshake: 403 with the JSON error, a log line, and close. The
// check happens on the connection's first read, in its own goroutine,
// so Accept never waits on a client.
type plainRefuser struct {
	net.Listener
	r *Runner
}

func (l *plainRefuser) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, r: l.r}, nil
}

// sniffConn checks the first byte a client sends: a TLS handshake record
// starts with 0x16; anything else is refused.
type sniffConn struct {
	net.Conn
	r       *Runner
	checked bool // owned by the one goroutine that reads the connection
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.checked || n == 0 {
		return n, err
	}
	c.checked = true
	if p[0] == 0x16 {
		return n, err
	}
	c.r.logRefusal(c.RemoteAddr().String(), http.StatusForbidden, "plain HTTP on the TLS work endpoint")
	body, _ := json.Marshal(apitype.Error{Error: "this work endpoint takes HTTPS with an orchestrator's (server) certificate, not plain HTTP"})
	_ = c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c.Conn, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		len(body)+1, body)
	_ = c.Conn.Close()
	return 0, io.EOF
}

func errCode(err error) int {
	switch {
	case errors.Is(err, ErrBadAssignment):
		return http.StatusBadRequest
	case errors.Is(err, ErrStaleAttempt):
		return http.StatusConflict
	case errors.Is(err, ErrLeaseExpired):
		return http.StatusGone
	case errors.Is(err, ErrUnknownWork):
		return http.StatusNotFound
	case errors.Is(err, ErrClosed):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (r *Runner) handleSubmit(w http.ResponseWriter, req *http.Request) {
	var a Assignment
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, r.cfg.MaxAssignmentBytes))
	if err := dec.Decode(&a); err != nil {
		httpjson.Error(w, http.StatusBadRequest, fmt.Sprintf("%v: %v", ErrBadAssignment, err))
		return
	}
	st, created, err := r.Submit(a)
	if err != nil {
		httpjson.Error(w, errCode(err), err.Error())
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusAccepted
	}
	httpjson.Write(w, code, st)
}

func attemptParam(req *http.Request) (int, error) {
	s := req.URL.Query().Get("attempt")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("attempt %q: want a whole number", s)
	}
	return n, nil
}

func (r *Runner) handleGet(w http.ResponseWriter, req *http.Request) {
	attempt, err := attemptParam(req)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	id := req.PathValue("id")
	var wait time.Duration
	if s := req.URL.Query().Get("wait"); s != "" {
		if wait, err = time.ParseDuration(s); err != nil || wait < 0 {
			httpjson.Error(w, http.StatusBadRequest, fmt.Sprintf("wait %q: want a duration such as 30s", s))
			return
		}
	}
	ctx, cancel := context.WithTimeout(req.Context(), min(wait, MaxWait))
	defer cancel()
	not := req.URL.Query().Get("not")
	if wait == 0 {
		not = "" // no wait: answer at once
	}
	st, err := r.Wait(ctx, id, attempt, not)
	if err != nil {
		httpjson.Error(w, errCode(err), fmt.Sprintf("%v: %s attempt %d", err, id, attempt))
		return
	}
	httpjson.Write(w, http.StatusOK, st)
}

func (r *Runner) handleList(w http.ResponseWriter, _ *http.Request) {
	httpjson.Write(w, http.StatusOK, r.List())
}

func (r *Runner) handleForget(w http.ResponseWriter, req *http.Request) {
	attempt, err := attemptParam(req)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	switch drop := req.URL.Query().Get("drop"); drop {
	case "", "0", "false":
		r.Forget(req.PathValue("id"), attempt)
	case "1", "true":
		if attempt < 1 {
			httpjson.Error(w, http.StatusBadRequest, "drop needs attempt >= 1")
			return
		}
		r.Drop(req.PathValue("id"), attempt)
	default:
		httpjson.Error(w, http.StatusBadRequest, fmt.Sprintf("drop %q: want 1 or 0", drop))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Client calls desktops' work endpoints; the leader's dispatcher uses it.
// A desktop that serves TLS advertises its address as "https://host:port"
// (SchemeHTTPS); a bare "host:port" is plain HTTP.
type Client struct {
	// HTTP is the client to use for plain HTTP, and the template (timeout,
	// transport settings) for HTTPS; nil means http.DefaultClient. Its
	// timeout must exceed the long-poll wait.
	HTTP *http.Client
	// Token is sent as a bearer token when set.
	Token string
	// TLS is the caller's certificate (an orchestrator's) for desktops that
	// serve HTTPS: the desktop's certificate must chain to TLS's CA and
	// name the node the work is for (tlsutil.VerifyNode). Without it, an
	// https:// address fails with ErrNoTLS.
	TLS *tlsutil.Bundle

	// mu guards tlsClients, one HTTPS client per desktop node name, so a
	// kept-alive connection verified for one node never carries another
	// node's work.
	mu         sync.Mutex
	tlsClients map[string]*http.Client
}

// SchemeHTTPS prefixes the advertised work address of a desktop that
// serves its work endpoint over TLS.
const SchemeHTTPS = "https://"

// ErrNoTLS: a desktop serves HTTPS but the caller has no TLS material.
var ErrNoTLS = errors.New("the desktop's work endpoint takes HTTPS with a server certificate, and this node has none (-tls-cert, -tls-key, -tls-ca)")

// httpClient returns the client for a desktop named node at addr, and the
// URL base for addr.
func (c *Client) httpClient(node, addr string) (*http.Client, string, error) {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	hostPort, secure := strings.CutPrefix(addr, SchemeHTTPS)
	if !secure {
		return hc, "http://" + addr, nil
	}
	if c.TLS == nil {
		return nil, "", ErrNoTLS
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tc, ok := c.tlsClients[node]; ok {
		return tc, SchemeHTTPS + hostPort, nil
	}
	var tr *http.Transport
	if t, ok := hc.Transport.(*http.Transport); ok {
		tr = t.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	tr.TLSClientConfig = c.TLS.NodeClientConfig(node)
	tc := &http.Client{Timeout: hc.Timeout, Transport: tr}
	if c.tlsClients == nil {
		c.tlsClients = map[string]*http.Client{}
	}
	c.tlsClients[node] = tc
	return tc, SchemeHTTPS + hostPort, nil
}

// CloseIdleConnections closes the kept-alive connections to desktops and
// forgets the per-node HTTPS clients (a later call makes them afresh).
func (c *Client) CloseIdleConnections() {
	if c.HTTP != nil {
		c.HTTP.CloseIdleConnections()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tc := range c.tlsClients {
		tc.CloseIdleConnections()
	}
	c.tlsClients = nil
}

// ErrHTTP wraps an unexpected HTTP answer from a desktop.
var ErrHTTP = errors.New("work endpoint error")

func (c *Client) do(ctx context.Context, method, node, addr, path string, body any, out any) (int, error) {
	hc, base, err := c.httpClient(node, addr)
	if err != nil {
		return 0, err
	}
	u := base + path
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusAccepted:
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				return resp.StatusCode, fmt.Errorf("%w: decode answer: %v", ErrHTTP, err)
			}
		}
		return resp.StatusCode, nil
	case http.StatusNoContent:
		return resp.StatusCode, nil
	case http.StatusNotFound:
		return resp.StatusCode, ErrUnknownWork
	case http.StatusConflict:
		return resp.StatusCode, ErrStaleAttempt
	case http.StatusGone:
		return resp.StatusCode, ErrLeaseExpired
	case http.StatusBadRequest:
		return resp.StatusCode, fmt.Errorf("%w: %s", ErrBadAssignment, bytes.TrimSpace(b))
	}
	return resp.StatusCode, fmt.Errorf("%w: %s %s: %s: %s", ErrHTTP, method, u, resp.Status, bytes.TrimSpace(b))
}

func workPath(parts ...string) string {
	u := PathWork
	for _, p := range parts {
		u += "/" + url.PathEscape(p)
	}
	return u
}

// Submit POSTs an assignment to the desktop named node at addr (its
// advertised work address: host:port, or https://host:port).
func (c *Client) Submit(ctx context.Context, node, addr string, a Assignment) (State, error) {
	var st State
	_, err := c.do(ctx, http.MethodPost, node, addr, workPath(), a, &st)
	return st, err
}

// Get returns the state of an attempt; with wait > 0 it long-polls while
// the status is notStatus. ErrUnknownWork means the desktop does not have
// it.
func (c *Client) Get(ctx context.Context, node, addr, workID string, attempt int, notStatus string, wait time.Duration) (State, error) {
	q := url.Values{"attempt": {strconv.Itoa(attempt)}}
	if wait > 0 {
		q.Set("wait", wait.String())
		q.Set("not", notStatus)
	}
	var st State
	_, err := c.do(ctx, http.MethodGet, node, addr, workPath(workID)+"?"+q.Encode(), nil, &st)
	return st, err
}

// Forget tells the desktop that a finished result was recorded.
func (c *Client) Forget(ctx context.Context, node, addr, workID string, attempt int) error {
	_, err := c.do(ctx, http.MethodDelete, node, addr, workPath(workID)+"?attempt="+strconv.Itoa(attempt), nil, nil)
	return err
}

// Drop tells the desktop that attempt of workID is superseded: it must not
// start it, and kills it if it runs.
func (c *Client) Drop(ctx context.Context, node, addr, workID string, attempt int) error {
	_, err := c.do(ctx, http.MethodDelete, node, addr, workPath(workID)+"?drop=1&attempt="+strconv.Itoa(attempt), nil, nil)
	return err
}

// List returns every assignment the desktop holds. Any HTTP answer means
// the desktop is reachable; the leader uses it as its probe.
func (c *Client) List(ctx context.Context, node, addr string) ([]State, error) {
	var out []State
	_, err := c.do(ctx, http.MethodGet, node, addr, workPath(), nil, &out)
	return out, err
}
