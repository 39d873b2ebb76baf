package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// maxSnapshotBytes bounds a restore's body. A registry of 10,000 desktops
// with their work history is a few tens of MB; this is far above that and
// still fits in memory (RestoreSnapshot reads the whole backup to check it
// before raft sees it).
const maxSnapshotBytes = 512 << 20

// SnapshotStore is what the operator snapshot endpoint needs of raft
// beyond Raft; *consensus.Store implements it.
type SnapshotStore interface {
	// SaveSnapshot writes this node's registry in snapshot form.
	SaveSnapshot(w io.Writer) error
	// RestoreSnapshot replaces the cluster's registry (leader only).
	RestoreSnapshot(r io.Reader) error
}

var _ SnapshotStore = (*consensus.Store)(nil)

// snapshotHandler serves apitype.PathSnapshot: GET streams a backup of the
// registry, PUT restores one. Both run on the leader only. The server does
// not forward them: a restore must not be relayed through a follower's
// memory, so a follower answers 307 with the leader's address and the CLI
// (and curl -L) repeat the request there.
type snapshotHandler struct {
	s     *Server
	store SnapshotStore
}

// handleSnapshot is GET and PUT /v1/operator/snapshot; without
// Config.Snapshots it answers 404, as a server without the endpoint did
// (the CLI says so).
func (s *Server) handleSnapshot() http.HandlerFunc {
	if s.cfg.Snapshots == nil {
		return func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusNotFound, "this server cannot save or restore snapshots")
		}
	}
	return (&snapshotHandler{s: s, store: s.cfg.Snapshots}).ServeHTTP
}

// restored counts what the registry holds after a restore.
func (h *snapshotHandler) restored() apitype.SnapshotRestored {
	out := apitype.SnapshotRestored{Index: h.s.reg.Index()}
	for _, c := range h.s.reg.Counts() {
		out.Nodes += c
	}
	if h.s.cfg.Work != nil {
		for _, c := range h.s.cfg.Work.WorkCounts() {
			out.Work += c
		}
	}
	return out
}

func (h *snapshotHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != apitype.ParamStale || r.Method != http.MethodGet {
			writeError(w, http.StatusBadRequest, "unknown query parameter "+strconv.Quote(k)+
				"; GET takes only ?stale, PUT none")
			return
		}
	}
	_, stale := q[apitype.ParamStale]
	if !stale && !h.s.raft.IsLeader() {
		h.redirect(w, r)
		return
	}
	if r.Method == http.MethodPut {
		h.restore(w, r)
		return
	}
	h.save(w)
}

// save buffers the snapshot before answering, so that a failure is a
// proper error status rather than a truncated 200.
func (h *snapshotHandler) save(w http.ResponseWriter) {
	var b bytes.Buffer
	if err := h.store.SaveSnapshot(&b); err != nil {
		h.s.logger.Warn("operator snapshot failed", "err", err)
		writeError(w, storeErrorStatus(err), "snapshot: "+err.Error())
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.Itoa(b.Len()))
	hd.Set("Content-Disposition", `attachment; filename="chiffon-`+time.Now().UTC().Format("20060102T150405Z")+`.snap"`)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
	h.s.logger.Info("operator snapshot saved", "bytes", b.Len())
}

func (h *snapshotHandler) restore(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, maxSnapshotBytes)
	err := h.store.RestoreSnapshot(body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, "snapshot larger than "+strconv.Itoa(maxSnapshotBytes>>20)+" MiB")
		return
	case errors.Is(err, consensus.ErrNotLeader):
		h.redirect(w, r) // leadership moved while we read the body
		return
	case err != nil:
		h.s.logger.Warn("operator restore failed", "err", err)
		writeError(w, storeErrorStatus(err), err.Error())
		return
	}
	out := h.restored()
	h.s.logger.Warn("registry restored from an operator snapshot", "nodes", out.Nodes, "work", out.Work, "index", out.Index)
	writeJSON(w, http.StatusOK, out)
}

// redirect sends the client to the leader (307 keeps the method and body),
// or answers 503 while no leader is known.
func (h *snapshotHandler) redirect(w http.ResponseWriter, r *http.Request) {
	id, _ := h.s.raft.Leader()
	if id == "" {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "no raft leader known (an election may be running, or there is no quorum); "+
			"retry, or save this node's own copy with ?stale (chiffon operator snapshot save -stale)")
		return
	}
	addr, err := h.s.cfg.LeaderHTTPAddr(id)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "this orchestrator is not the raft leader and cannot resolve the leader's HTTP address: "+err.Error())
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	w.Header().Set("Location", scheme+"://"+addr+r.URL.RequestURI())
	writeError(w, http.StatusTemporaryRedirect, "this orchestrator is not the raft leader; repeat the request on the leader at "+addr)
}

// storeErrorStatus maps a consensus error to an HTTP status.
func storeErrorStatus(err error) int {
	switch {
	case errors.Is(err, consensus.ErrBadSnapshot):
		return http.StatusBadRequest
	case errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrTimeout),
		errors.Is(err, consensus.ErrClosed), errors.Is(err, consensus.ErrNotOpen):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
