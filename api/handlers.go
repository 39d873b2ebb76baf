package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// answerFunc writes an answer from this node's state. It runs where the
// data lives: on the leader in the default and consistent modes, on the
// receiving node with ?stale.
type answerFunc func(w http.ResponseWriter, r *http.Request)

// prepareFunc validates an endpoint's own parameters (before any
// forwarding, so that bad input is answered 400 without a leader) and
// returns the answer to run.
type prepareFunc func(r *http.Request, q url.Values) (answerFunc, *httpError)

// read runs a read endpoint: parameter checks, then the consistency mode
// decides where the answer comes from. registry is true for endpoints whose
// answer depends on the registry alone (and the request), so that a
// follower whose replica has caught up with the leader's read index may
// render it (see readIndexLocal).
func (s *Server) read(registry bool, allowed []string, prepare prepareFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := checkParams(q, allowed); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		opts, err := parseQueryOptions(q, s.cfg.DefaultBlockingWait, s.cfg.MaxBlockingWait)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		ans, herr := prepare(r, q)
		if herr != nil {
			writeError(w, herr.code, herr.msg)
			return
		}
		s.dispatch(w, r, opts, registry, ans)
	}
}

// dispatch answers locally or forwards to the leader, per opts.mode.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request, opts queryOptions, registry bool, ans answerFunc) {
	if opts.mode == modeStale {
		why := s.tooStale(opts)
		if why == "" {
			s.local(w, r, opts, registry, ans)
			return
		}
		// Too stale for the caller: the leader's answer, as a default
		// read, or a 503 that says why (see forward).
		opts.mode, opts.tooStale = modeDefault, why
	}
	if s.canServeAsLeader(opts.mode) {
		s.leaderLocal(w, r, opts, registry, ans)
		return
	}
	if by := r.Header.Get(apitype.HeaderForwardedBy); by != "" {
		// The follower that sent this believes we lead; we do not (any
		// more). Tell it to look again rather than forward in circles.
		writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf("%s is not the raft leader (request forwarded by %s)", s.raft.ID(), by))
		return
	}
	s.forward(w, r, opts, registry, ans)
}

// tooStale says why this node's replica is too stale for a ?max_stale
// read: its last contact with the leader is older than the bound, or it
// has none; "" when it may answer (also on the leader, and without
// ?max_stale). The last contact is the X-Chiffon-Last-Contact figure: a
// follower that cannot persist its log counts from when that began.
func (s *Server) tooStale(opts queryOptions) string {
	if !opts.hasMaxStale || s.raft.IsLeader() {
		return ""
	}
	hl := s.health()
	if hl.LastContact.IsZero() {
		return fmt.Sprintf("%s=%s: this node has never heard from a leader", apitype.ParamMaxStale, opts.maxStale)
	}
	if age := time.Since(hl.LastContact); age > opts.maxStale {
		return fmt.Sprintf("%s=%s: this node last heard from the leader %s ago", apitype.ParamMaxStale, opts.maxStale,
			age.Round(time.Millisecond))
	}
	return ""
}

// canServeAsLeader reports whether this node may answer a default or
// consistent read from its own state: it leads, has applied everything its
// predecessors committed, and, for consistent reads, a quorum confirms it
// still leads.
func (s *Server) canServeAsLeader(mode consistency) bool {
	if !s.leaderReady() {
		return false
	}
	if mode == modeConsistent {
		if err := s.raft.VerifyLeader(); err != nil {
			s.logger.Debug("consistent read: leadership not confirmed", "err", err)
			return false
		}
	}
	return true
}

// leaderReady reports whether this node leads and its leadership is
// established (the node ran the term's Barrier; see
// Config.LeaderEstablished).
func (s *Server) leaderReady() bool {
	return s.raft.IsLeader() && s.cfg.LeaderEstablished()
}

// leaderLocal answers a default or consistent read on the leader from its
// own registry, once that has applied the commit index (leaderCatchUp):
// the read index is the commit index, confirmed by canServeAsLeader's
// heartbeat round for ?consistent, and the read is served once applied.
func (s *Server) leaderLocal(w http.ResponseWriter, r *http.Request, opts queryOptions, registry bool, ans answerFunc) {
	if err := s.leaderCatchUp(r.Context()); err != nil {
		if r.Context().Err() != nil {
			s.cancelled(w)
			return
		}
		s.writeApplyBehind(w, err)
		return
	}
	s.local(w, r, opts, registry, ans)
}

// local answers from this node's registry, after waiting for a blocking
// query's index.
func (s *Server) local(w http.ResponseWriter, r *http.Request, opts queryOptions, registry bool, ans answerFunc) {
	if opts.blocking {
		ctx, cancel := context.WithTimeout(r.Context(), opts.wait)
		_, _ = s.reg.WaitIndex(ctx, opts.index) // a timeout is the normal end of a wait
		cancel()
		if r.Context().Err() != nil {
			s.cancelled(w)
			return
		}
	}
	s.setConsistencyHeaders(w.Header())
	s.render(w, r, ans)
}

// renderTries bounds how often render renders an answer again because the
// registry changed meanwhile.
const renderTries = 3

// render runs ans and sends its answer with an X-Chiffon-Index that
// matches its body. The answer functions read the registry (Get, List, a
// capacity view) apart from its index, so an index read before them can
// be older than the body and one read after can be newer. render reads
// the index before and after rendering into a buffer: when both agree, no
// change landed in between and the body is the registry at that index
// (the same view); when they differ it renders again, up to renderTries
// times, and under a steady stream of writes sends the last index read
// after the body, so the header is never older than the body (a reader
// that took a body at index i never sees a header below i). Buffering
// costs one copy of the answer, which writeJSON builds in memory anyway.
func (s *Server) render(w http.ResponseWriter, r *http.Request, ans answerFunc) {
	var (
		bw  *bufferedWriter
		idx uint64
	)
	// The answer is buffered in a pooled slice: at 10,000 agents a fresh
	// buffer per request (megabytes, zeroed by the allocator) cost more
	// than the rest of the request.
	bp := getBytes()
	defer putBytes(bp)
	for try := 0; try < renderTries; try++ {
		before := s.reg.Index()
		bw = &bufferedWriter{header: http.Header{}, body: (*bp)[:0]}
		ans(bw, r)
		*bp = bw.body // keep the grown slice for the pool
		idx = s.reg.Index()
		if idx == before {
			break
		}
	}
	h := w.Header()
	for k, v := range bw.header {
		h[k] = v
	}
	h.Set(apitype.HeaderIndex, strconv.FormatUint(idx, 10))
	if bw.code == 0 {
		bw.code = http.StatusOK
	}
	// Large answers go gzip-compressed to clients that ask (gzip.go),
	// unless the answer came compressed already.
	h.Add("Vary", "Accept-Encoding")
	body := bw.body
	if h.Get("Content-Encoding") == "" && len(body) >= gzipMinBytes && acceptsGzip(r) {
		body = gzipBytes(body)
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(bw.code)
	_, _ = w.Write(body)
}

// bufferedWriter holds an answer until render sends it.
type bufferedWriter struct {
	header http.Header
	code   int    // the first status written; 0 before
	body   []byte // the answer so far, in render's pooled slice
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	b.body = append(b.body, p...)
	return len(p), nil
}

// setConsistencyHeaders sets the index, index-lag, last-contact,
// known-leader and served-by headers from this node's state (a read's
// answer gets its index again from render, to match its body). A follower
// that cannot persist its log does not claim a leader, and its last
// contact is when its appends started failing (see consensus.Health).
// wrap sets them on every response first, errors included, as Consul
// does; a read sets them again when it answers, and a forwarded answer
// carries the leader's.
func (s *Server) setConsistencyHeaders(h http.Header) {
	hl := s.health()
	h.Set(apitype.HeaderIndex, strconv.FormatUint(s.reg.Index(), 10))
	h.Set(apitype.HeaderServedBy, s.raft.ID())
	h.Set(apitype.HeaderIndexLag, strconv.FormatUint(hl.Lag(), 10))
	if s.raft.IsLeader() {
		h.Set(apitype.HeaderKnownLeader, "true")
		h.Set(apitype.HeaderLastContact, "0")
		return
	}
	id, _ := s.raft.Leader()
	h.Set(apitype.HeaderKnownLeader, strconv.FormatBool(id != "" && hl.CanPersist))
	ms := int64(-1) // never heard from a leader
	if !hl.LastContact.IsZero() {
		ms = time.Since(hl.LastContact).Milliseconds()
	}
	h.Set(apitype.HeaderLastContact, strconv.FormatInt(ms, 10))
}

// forward sends r to the leader's HTTP API and copies its answer back,
// waiting for a leader during an election and retrying when the leader dies
// on the way. It gives up with 503 once LeaderWait (plus a blocking query's
// wait) has passed.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, opts queryOptions, registry bool, ans answerFunc) {
	budget := s.cfg.LeaderWait
	if opts.blocking {
		budget += opts.wait
	}
	deadline := time.Now().Add(budget)
	ctx := r.Context()
	const minBackoff, maxBackoff = 5 * time.Millisecond, 100 * time.Millisecond
	backoff := minBackoff
	var (
		lastErr  error
		knownLdr bool
	)
	for attempt := 0; ; attempt++ {
		id, _ := s.raft.Leader()
		knownLdr = id != ""
		switch {
		case id == "":
			lastErr = ErrNoLeader
		case id == s.raft.ID():
			if s.canServeAsLeader(opts.mode) {
				s.leaderLocal(w, r, opts, registry, ans)
				return
			}
			lastErr = errors.New("this node was elected but is not ready to answer yet")
		case registry && !opts.blocking:
			// Read index, shared with concurrent requests; it resolves the
			// leader's address once per round trip, not per request.
			done, err := s.readIndexLocal(ctx, w, r, opts, ans)
			if done {
				s.metrics.forwarded(attempt)
				return
			}
			lastErr = err
			s.logger.Debug("read index from leader failed; retrying", "leader", id, "err", err)
		default:
			addr, err := s.cfg.LeaderHTTPAddr(id)
			if err != nil {
				lastErr = fmt.Errorf("resolve leader %s's HTTP address: %w", id, err)
				break
			}
			done, err := s.forwardOnce(ctx, w, r, id, addr, opts)
			if done {
				s.metrics.forwarded(attempt)
				return
			}
			lastErr = err
			s.logger.Debug("forward to leader failed; retrying", "leader", id, "addr", addr, "err", err)
		}
		if ctx.Err() != nil {
			s.cancelled(w)
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if errors.Is(lastErr, ErrLeaderChanged) {
			backoff = minBackoff // raft follows another leader: ask it now
			continue
		}
		// Wait before the next attempt, but no longer than until raft
		// reports another leader (one elected while none was known).
		wctx, wcancel := s.leaderContext(ctx, id)
		t := time.NewTimer(min(backoff, left))
		select {
		case <-t.C:
			backoff = min(2*backoff, maxBackoff)
		case <-wctx.Done():
			backoff = minBackoff
		}
		t.Stop()
		wcancel()
		if ctx.Err() != nil {
			s.cancelled(w)
			return
		}
	}
	s.metrics.forwardFailed()
	s.logger.Warn("no leader answered in time", "path", r.URL.Path, "wait", budget, "err", lastErr)
	h := w.Header()
	h.Set("Retry-After", "1")
	h.Set(apitype.HeaderKnownLeader, strconv.FormatBool(knownLdr))
	if opts.tooStale != "" {
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"replica too stale for %s, and no raft leader answered within %s to forward the read to (last error: %v); retry, raise %s, or drop it to read this replica as it is",
			opts.tooStale, budget, lastErr, apitype.ParamMaxStale))
		return
	}
	writeError(w, http.StatusServiceUnavailable, fmt.Sprintf(
		"no raft leader answered within %s (last error: %v); retry, or ask this node's replica with ?stale", budget, lastErr))
}

// cancelled answers a request whose context ended: the server is closing
// (a follower that forwarded it will retry elsewhere) or the client left
// (then nobody reads this). Without it the handler would return nothing,
// which net/http sends as an empty 200.
func (s *Server) cancelled(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "request cancelled: the server is shutting down (or the client left)")
}

// forwardedHeaders are the answer headers copied from the leader.
var forwardedHeaders = []string{
	"Content-Type", "Allow", "Retry-After", "WWW-Authenticate",
	apitype.HeaderIndex, apitype.HeaderLastContact, apitype.HeaderKnownLeader, apitype.HeaderServedBy,
}

// forwardOnce relays one attempt to the leader id at addr. It returns true
// when the leader's answer has been written, and false with the reason
// when the caller should try again: the connection failed, the answer was
// cut short, raft's leader changed on the way (ErrLeaderChanged), or the
// node no longer leads (421) or has no leader itself (503). The whole body
// is read before anything is written, so a leader dying mid-answer leaves
// nothing half-sent.
func (s *Server) forwardOnce(ctx context.Context, w http.ResponseWriter, r *http.Request, id, addr string, opts queryOptions) (bool, error) {
	timeout := s.cfg.ForwardTimeout
	if opts.blocking {
		timeout += opts.wait
	}
	lctx, lcancel := s.leaderContext(ctx, id)
	defer lcancel()
	actx, cancel := context.WithTimeout(lctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, r.Method, s.scheme+"://"+addr+r.URL.RequestURI(), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set(apitype.HeaderForwardedBy, s.raft.ID())
	req.Header.Set("Accept", "application/json")
	if s.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return false, roundTripErr(actx, id, err) // the caller sees ctx's end and answers
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusMisdirectedRequest || resp.StatusCode == http.StatusServiceUnavailable {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return false, fmt.Errorf("%s answered %s", addr, resp.Status)
	}
	bp := getBytes()
	defer putBytes(bp)
	buf := *bp
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = buf
			return false, fmt.Errorf("read answer from %s: %w", addr, roundTripErr(actx, id, err))
		}
		if len(buf) > maxForwardBodyBuffer {
			*bp = buf
			return false, fmt.Errorf("answer from %s is over %d bytes", addr, maxForwardBodyBuffer)
		}
	}
	*bp = buf
	h := w.Header()
	for _, k := range forwardedHeaders {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(buf)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(buf)
	return true, nil
}

// bytesPool recycles answer buffers.
var bytesPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBytes() *[]byte {
	b := bytesPool.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

func putBytes(b *[]byte) {
	if cap(*b) <= 4<<20 { // do not pin huge answers
		bytesPool.Put(b)
	}
}

// handleAgents is GET /agents[?status=]: every record, any status.
func (s *Server) handleAgents() http.HandlerFunc {
	return s.read(true, agentsParams, func(_ *http.Request, q url.Values) (answerFunc, *httpError) {
		status, err := parseStatus(q)
		if err != nil {
			return nil, badRequest(err)
		}
		return func(w http.ResponseWriter, _ *http.Request) {
			recs := s.reg.List()
			out := recs[:0]
			now := time.Now()
			for _, rec := range recs {
				if status == "" || string(rec.Status) == status {
					s.flapScoreNow(&rec, now)
					out = append(out, rec)
				}
			}
			writeJSON(w, http.StatusOK, agentsOf(out))
		}, nil
	})
}

// agentIDFrom validates the {agent_id} path segment.
func agentIDFrom(r *http.Request) (string, *httpError) {
	id, err := parseAgentID(r.PathValue("agent_id"))
	if err != nil {
		return "", badRequest(err)
	}
	return id, nil
}

func notFoundAgent(w http.ResponseWriter, id string) {
	writeError(w, http.StatusNotFound, fmt.Sprintf("no agent with id %s in the registry", id))
}

// handleAgent is GET /agents/{agent_id}: the whole record.
func (s *Server) handleAgent() http.HandlerFunc {
	return s.readAgent(func(w http.ResponseWriter, rec consensus.Record) {
		s.flapScoreNow(&rec, time.Now())
		writeJSON(w, http.StatusOK, agentOf(&rec))
	})
}

// flapScoreNow decays rec's flap score, which the registry keeps as of
// its last status change, to now (Config.FlapHalfLife).
func (s *Server) flapScoreNow(rec *consensus.Record, now time.Time) {
	if s.cfg.FlapHalfLife > 0 {
		rec.FlapScore = rec.FlapScoreAt(now, s.cfg.FlapHalfLife)
	}
}

// handleAgentCapacity is GET /agents/{agent_id}/capacity, for an agent in
// any status.
func (s *Server) handleAgentCapacity() http.HandlerFunc {
	return s.readAgent(func(w http.ResponseWriter, rec consensus.Record) {
		var res *Reservation
		if r, ok := s.views.reservations()[rec.AgentID]; ok {
			res = &r
		}
		writeJSON(w, http.StatusOK, capacityAnswer(&rec, res, time.Now()))
	})
}

// readAgent serves a read of the one agent named by {agent_id}: a 404
// when the registry has no such agent, else answer with its record.
func (s *Server) readAgent(answer func(w http.ResponseWriter, rec consensus.Record)) http.HandlerFunc {
	return s.read(true, commonParams, func(r *http.Request, _ url.Values) (answerFunc, *httpError) {
		id, herr := agentIDFrom(r)
		if herr != nil {
			return nil, herr
		}
		return func(w http.ResponseWriter, _ *http.Request) {
			rec, ok := s.reg.Get(id)
			if !ok {
				notFoundAgent(w, id)
				return
			}
			answer(w, rec)
		}, nil
	})
}

// handleAvailable is GET /agents/available-capacity: the online desktops
// that meet every bound, in the view's order.
func (s *Server) handleAvailable() http.HandlerFunc {
	return s.read(true, capacityParams, func(_ *http.Request, q url.Values) (answerFunc, *httpError) {
		f, err := parseCapacityFilter(q)
		if err != nil {
			return nil, badRequest(err)
		}
		return func(w http.ResponseWriter, r *http.Request) {
			v := s.views.get()
			w.Header().Set(apitype.HeaderIndex, strconv.FormatUint(v.index, 10))
			a := v.available(f, time.Now())
			if acceptsGzip(r) {
				if gz := a.compressed(); gz != nil {
					w.Header().Set("Content-Encoding", "gzip")
					writeBody(w, http.StatusOK, gz)
					return
				}
			}
			writeBody(w, http.StatusOK, a.plain)
		}, nil
	})
}

// staleOnly is what the always-local status endpoints accept: ?stale is
// allowed (they are always answered locally) but changes nothing.
var staleOnly = []string{apitype.ParamStale}

// handleStatusLeader is GET /v1/status/leader: the leader as this node
// knows it, answered locally.
func (s *Server) handleStatusLeader() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := checkParams(r.URL.Query(), staleOnly); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.setConsistencyHeaders(w.Header())
		id, raftAddr := s.raft.Leader()
		out := apitype.Leader{ID: id, RaftAddr: raftAddr}
		if id != "" {
			if addr, err := s.cfg.LeaderHTTPAddr(id); err == nil {
				out.HTTPAddr = addr
			}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleStatusPeers is GET /v1/status/peers: the voters' raft addresses
// as this node knows them, answered locally (as Consul's).
func (s *Server) handleStatusPeers() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := checkParams(r.URL.Query(), staleOnly); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.setConsistencyHeaders(w.Header())
		servers, err := s.raft.Servers()
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "read raft configuration: "+err.Error())
			return
		}
		out := []string{}
		for _, srv := range servers {
			if srv.Voter {
				out = append(out, srv.Address)
			}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// peersOf converts the raft configuration to its wire form.
func peersOf(servers []consensus.Server) []apitype.Peer {
	out := make([]apitype.Peer, 0, len(servers))
	for _, srv := range servers {
		st := apitype.PeerFollower
		if srv.Leader {
			st = apitype.PeerLeader
		}
		out = append(out, apitype.Peer{ID: srv.ID, Address: srv.Address, State: st, Voter: srv.Voter})
	}
	return out
}

// handleOperatorPeers is GET /v1/operator/raft/peers: the raft
// configuration, from the leader unless ?stale.
func (s *Server) handleOperatorPeers() http.HandlerFunc {
	return s.read(false, commonParams, func(*http.Request, url.Values) (answerFunc, *httpError) {
		return func(w http.ResponseWriter, _ *http.Request) {
			servers, err := s.raft.Servers()
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, "read raft configuration: "+err.Error())
				return
			}
			writeJSON(w, http.StatusOK, peersOf(servers))
		}, nil
	})
}

// handleRemovePeer is DELETE /v1/operator/raft/peers/{id}: run on the
// leader (forwarded like a default-mode read; removing is idempotent, so
// a retry after a lost answer is harmless).
func (s *Server) handleRemovePeer() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := checkParams(r.URL.Query(), nil); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		id := r.PathValue("id")
		if id == "" {
			writeError(w, http.StatusBadRequest, "give the raft ID of the server to remove (see GET /v1/operator/raft/peers)")
			return
		}
		if s.cfg.RemovePeer == nil {
			writeError(w, http.StatusNotImplemented, "this server cannot remove raft peers")
			return
		}
		s.dispatch(w, r, queryOptions{}, false, func(w http.ResponseWriter, r *http.Request) {
			code, err := s.removePeerHere(id, r.Header.Get(apitype.HeaderForwardedBy) != "")
			if err != nil {
				if errors.Is(err, consensus.ErrNotLeader) {
					w.Header().Set("Retry-After", "1")
				}
				writeError(w, code, err.Error())
				return
			}
			writeJSON(w, http.StatusOK, apitype.RemovedPeer{Removed: id})
		})
	}
}

// handleHealthz is GET /healthz: 200 while the process serves.
func (s *Server) handleHealthz() http.HandlerFunc {
	body, _ := json.Marshal(apitype.Health{Status: "ok"})
	body = append(body, '\n')
	return func(w http.ResponseWriter, _ *http.Request) { writeBody(w, http.StatusOK, body) }
}

// handleReadyz is GET /readyz: 200 when this node can persist its raft
// log, knows a leader, has heard from it within ReadyMaxStale while
// keeping up (or is it, past its Barrier) and has applied all but
// ReadyMaxLag of the committed log it knows of; else 503 with the reason.
func (s *Server) handleReadyz() http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		s.setConsistencyHeaders(w.Header())
		out := apitype.Ready{Index: s.reg.Index()}
		out.Leader, _ = s.raft.Leader()
		out.Reason = s.notReadyReason(out.Leader)
		if out.Reason != "" {
			writeJSON(w, http.StatusServiceUnavailable, out)
			return
		}
		out.Ready = true
		writeJSON(w, http.StatusOK, out)
	}
}

func (s *Server) notReadyReason(leader string) string {
	hl := s.health()
	if !hl.CanPersist {
		return fmt.Sprintf("cannot persist the raft log for %s: %v", time.Since(hl.FailingSince).Round(time.Millisecond), hl.AppendError)
	}
	switch {
	case leader == "":
		return "no raft leader known"
	case leader == s.raft.ID():
		if !s.leaderReady() {
			return "elected leader, but has not yet applied its predecessors' log"
		}
	default:
		lc := hl.LastContact
		if lc.IsZero() {
			return "never heard from the leader"
		}
		if since := time.Since(lc); since > s.cfg.ReadyMaxStale {
			return fmt.Sprintf("last heard from the leader %s ago (more than %s)", since.Round(time.Millisecond), s.cfg.ReadyMaxStale)
		}
	}
	if lag := hl.Lag(); lag > s.cfg.ReadyMaxLag {
		return fmt.Sprintf("behind: applied %d of %d committed log entries, %d behind (more than %d)",
			hl.AppliedIndex, hl.CommitIndex, lag, s.cfg.ReadyMaxLag)
	}
	return ""
}

// handleMetrics is GET /metrics, Prometheus text format.
func (s *Server) handleMetrics() http.HandlerFunc {
	h := promhttp.HandlerFor(s.prom, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return h.ServeHTTP
}
