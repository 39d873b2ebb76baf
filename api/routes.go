package api

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/api/ui"
	"github.com/chiffon-dev/chiffon/internal/httpjson"
)

// Paths. Everything lives under /v1/; the seed API's unversioned paths
// (/agents...) are kept as aliases of their /v1/ twins. /healthz, /readyz
// and /metrics are unversioned, as probes and scrapers expect.
const (
	pathAgents           = "/agents"
	pathAgent            = "/agents/{agent_id}"
	pathAgentCapacity    = "/agents/{agent_id}/capacity"
	pathAvailable        = "/agents/available-capacity"
	pathStatusLeader     = "/v1/status/leader"
	pathStatusPeers      = "/v1/status/peers"
	pathOperatorPeers    = "/v1/operator/raft/peers"
	pathOperatorPeer     = "/v1/operator/raft/peers/{id}"
	pathHealthz          = "/healthz"
	pathReadyz           = "/readyz"
	pathMetrics          = "/metrics"
	versionPrefix        = "/v1"
	routeNotFound        = "notfound"
	routeUI              = "ui"
	maxForwardBodyBuffer = 64 << 20
)

// Paths lists every path pattern the server routes, in Go ServeMux
// syntax, /v1/ aliases included. The OpenAPI test checks docs/openapi.yaml
// against it.
func Paths() []string {
	var out []string
	for _, rt := range routeTable() {
		out = append(out, rt.patterns...)
	}
	return out
}

// routeSpec is one endpoint.
type routeSpec struct {
	name     string   // metrics label
	patterns []string // paths it answers
	methods  []string // allowed methods
	noAuth   bool     // served without the token
	handler  func(*Server) http.HandlerFunc
}

func versioned(p string) []string { return []string{versionPrefix + p, p} }

func routeTable() []routeSpec {
	get := []string{http.MethodGet, http.MethodHead}
	return []routeSpec{
		{"agents", versioned(pathAgents), get, false, (*Server).handleAgents},
		{"agent", versioned(pathAgent), get, false, (*Server).handleAgent},
		{"agent_capacity", versioned(pathAgentCapacity), get, false, (*Server).handleAgentCapacity},
		{"available_capacity", versioned(pathAvailable), get, false, (*Server).handleAvailable},
		{"work", versioned(pathWork), get, false, (*Server).handleWork},
		{"work_item", versioned(pathWorkItem), get, false, (*Server).handleWorkItem},
		{"status_leader", []string{pathStatusLeader}, get, false, (*Server).handleStatusLeader},
		{"status_peers", []string{pathStatusPeers}, get, false, (*Server).handleStatusPeers},
		{"operator_raft_peers", []string{pathOperatorPeers}, get, false, (*Server).handleOperatorPeers},
		{"operator_raft_remove_peer", []string{pathOperatorPeer}, []string{http.MethodDelete}, false, (*Server).handleRemovePeer},
		{"operator_snapshot", []string{apitype.PathSnapshot}, []string{http.MethodGet, http.MethodPut}, false, (*Server).handleSnapshot},
		{"internal_read_index", []string{pathReadIndex}, get, false, (*Server).handleReadIndex},
		{"healthz", []string{pathHealthz}, get, true, (*Server).handleHealthz},
		{"readyz", []string{pathReadyz}, get, false, (*Server).handleReadyz},
		{"metrics", []string{pathMetrics}, get, false, (*Server).handleMetrics},
	}
}

// routes builds the handler: a ServeMux whose every route, the dashboard
// (package ui, at /ui/) and the JSON 404 for everything else, goes through
// wrap (recover, metrics, index header, token, method).
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routeTable() {
		h := s.wrap(rt.name, rt.methods, !rt.noAuth, rt.handler(s))
		for _, p := range rt.patterns {
			mux.Handle(p, h)
		}
	}
	for _, m := range s.cfg.Mounts {
		methods := m.Methods
		if methods == nil {
			methods = []string{http.MethodGet, http.MethodHead}
		}
		handler := m.Handler.ServeHTTP
		if m.Registry {
			allowed := append(slices.Clone(commonParams), m.Params...)
			answer := answerFunc(m.Handler.ServeHTTP)
			handler = s.read(true, allowed, func(*http.Request, url.Values) (answerFunc, *httpError) { return answer, nil })
		}
		h := s.wrap(m.Name, methods, true, handler)
		for _, p := range m.Patterns {
			mux.Handle(p, h)
		}
	}
	noSuchPath := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such path %q; see docs/API.md for the endpoints", r.URL.Path))
	}
	notFound := s.wrap(routeNotFound, nil, true, noSuchPath)
	mux.Handle("/", notFound)
	// The dashboard's files need no token (the page asks for one and sends
	// it on its own API calls); a missing file is the usual JSON 404.
	get := []string{http.MethodGet, http.MethodHead}
	mux.Handle(ui.Prefix, s.wrap(routeUI, get, false, ui.Handler(http.HandlerFunc(noSuchPath)).ServeHTTP))
	mux.Handle(strings.TrimSuffix(ui.Prefix, "/"), s.wrap(routeUI, get, false, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ui.Prefix, http.StatusMovedPermanently)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux answers an unclean path with an HTML redirect; we want
		// JSON everywhere, and no such path is a route anyway (the
		// dashboard's own root, with its slash, is).
		if p := r.URL.Path; p == "" || p[0] != '/' || (p != "/" && p != ui.Prefix && path.Clean(p) != p) {
			notFound.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// statusWriter records the status code for metrics and recover.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var statusWriterPool = sync.Pool{New: func() any { return new(statusWriter) }}

// wrap adds what every route shares. methods nil allows any method.
func (s *Server) wrap(name string, methods []string, auth bool, h http.HandlerFunc) http.HandlerFunc {
	obs := s.metrics.route(name)
	allow := strings.Join(methods, ", ")
	return func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.metrics.inFlight.Inc()
		defer s.metrics.inFlight.Dec()
		w := statusWriterPool.Get().(*statusWriter)
		*w = statusWriter{ResponseWriter: rw}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.logger.Error("handler panicked", "route", name, "path", r.URL.Path, "panic", p)
				if w.code == 0 {
					writeError(w, http.StatusInternalServerError, "internal error; the server log has the details")
				}
			}
			code := w.code
			if code == 0 {
				code = http.StatusOK
			}
			obs.observe(code, time.Since(start))
			*w = statusWriter{}
			statusWriterPool.Put(w)
		}()
		s.setConsistencyHeaders(w.Header())
		if auth && s.cfg.Token != "" {
			if code, msg := s.checkToken(r); code != 0 {
				if code == http.StatusUnauthorized {
					w.Header().Set("WWW-Authenticate", `Bearer realm="chiffon"`)
				}
				writeError(w, code, msg)
				return
			}
		}
		if methods != nil && !slices.Contains(methods, r.Method) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s; allowed: %s", r.Method, r.URL.Path, allow))
			return
		}
		h(w, r)
	}
}

// checkToken returns 0 when r carries the token, else 401 (none given) or
// 403 (a wrong one) and a message. Both sides are hashed first so that the
// constant-time comparison does not leak the token's length either.
func (s *Server) checkToken(r *http.Request) (int, string) {
	got := r.Header.Get(apitype.HeaderToken)
	if got == "" {
		if a := r.Header.Get("Authorization"); a != "" {
			scheme, tok, ok := strings.Cut(a, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				return http.StatusUnauthorized, "Authorization header must be \"Bearer <token>\""
			}
			got = strings.TrimSpace(tok)
		}
	}
	if got == "" {
		return http.StatusUnauthorized, "this server needs a token: send \"Authorization: Bearer <token>\" or \"" + apitype.HeaderToken + ": <token>\" (the CLI's -http-token / CHIFFON_HTTP_TOKEN)"
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(s.cfg.Token))
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return http.StatusForbidden, "wrong token"
	}
	return 0, ""
}

// Every answer goes through package httpjson, the one JSON writer (the
// desktop's work endpoint uses it too).
var (
	// writeJSON writes v as the JSON body with code.
	writeJSON = httpjson.Write
	// writeBody writes a JSON body that is already encoded.
	writeBody = httpjson.WriteBody
	// writeError writes {"error": msg} with code.
	writeError = httpjson.Error
)

// httpError is an error with the status code to answer it with.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(err error) *httpError { return &httpError{http.StatusBadRequest, err.Error()} }

// bufPool recycles answer buffers.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuf() *bytes.Buffer {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func putBuf(b *bytes.Buffer) {
	if b.Cap() <= 1<<20 { // do not pin huge answers
		bufPool.Put(b)
	}
}
