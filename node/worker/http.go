package worker

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/internal/httpjson"
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
// when it arrived, 401/403 a missing or wrong token, 503 a closed runner.
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
		if r.cfg.Token != "" {
			scheme, tok, ok := strings.Cut(req.Header.Get("Authorization"), " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				w.Header().Set("WWW-Authenticate", `Bearer realm="chiffon"`)
				httpjson.Error(w, http.StatusUnauthorized, "Authorization: Bearer <token> required")
				return
			}
			if subtle.ConstantTimeCompare([]byte(tok), []byte(r.cfg.Token)) != 1 {
				httpjson.Error(w, http.StatusForbidden, "wrong token")
				return
			}
		}
		next.ServeHTTP(w, req)
	})
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
type Client struct {
	// HTTP is the client to use; nil means http.DefaultClient. Its timeout
	// must exceed the long-poll wait.
	HTTP *http.Client
	// Token is sent as a bearer token when set.
	Token string
}

// ErrHTTP wraps an unexpected HTTP answer from a desktop.
var ErrHTTP = errors.New("work endpoint error")

func (c *Client) do(ctx context.Context, method, u string, body any, out any) (int, error) {
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
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
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

func workURL(addr string, parts ...string) string {
	u := "http://" + addr + PathWork
	for _, p := range parts {
		u += "/" + url.PathEscape(p)
	}
	return u
}

// Submit POSTs an assignment to the desktop at addr (host:port).
func (c *Client) Submit(ctx context.Context, addr string, a Assignment) (State, error) {
	var st State
	_, err := c.do(ctx, http.MethodPost, workURL(addr), a, &st)
	return st, err
}

// Get returns the state of an attempt; with wait > 0 it long-polls while
// the status is notStatus. ErrUnknownWork means the desktop does not have
// it.
func (c *Client) Get(ctx context.Context, addr, workID string, attempt int, notStatus string, wait time.Duration) (State, error) {
	q := url.Values{"attempt": {strconv.Itoa(attempt)}}
	if wait > 0 {
		q.Set("wait", wait.String())
		q.Set("not", notStatus)
	}
	var st State
	_, err := c.do(ctx, http.MethodGet, workURL(addr, workID)+"?"+q.Encode(), nil, &st)
	return st, err
}

// Forget tells the desktop that a finished result was recorded.
func (c *Client) Forget(ctx context.Context, addr, workID string, attempt int) error {
	_, err := c.do(ctx, http.MethodDelete, workURL(addr, workID)+"?attempt="+strconv.Itoa(attempt), nil, nil)
	return err
}

// Drop tells the desktop that attempt of workID is superseded: it must not
// start it, and kills it if it runs.
func (c *Client) Drop(ctx context.Context, addr, workID string, attempt int) error {
	_, err := c.do(ctx, http.MethodDelete, workURL(addr, workID)+"?drop=1&attempt="+strconv.Itoa(attempt), nil, nil)
	return err
}

// List returns every assignment the desktop holds. Any HTTP answer means
// the desktop is reachable; the leader uses it as its probe.
func (c *Client) List(ctx context.Context, addr string) ([]State, error) {
	var out []State
	_, err := c.do(ctx, http.MethodGet, workURL(addr), nil, &out)
	return out, err
}
