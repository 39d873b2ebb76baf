package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/chiffon-dev/chiffon/api"
	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// maxSnapshotBytes bounds a restore's body. A registry of 10,000 desktops
// with their work history is a few tens of MB; this is far above that and
// still fits in memory (RestoreSnapshot reads the whole backup to check it
// before raft sees it).
const maxSnapshotBytes = 512 << 20

// snapshotStore is what the operator snapshot endpoint needs of raft;
// *consensus.Store implements it.
type snapshotStore interface {
	// IsLeader and Leader say whether this node leads, and who does.
	IsLeader() bool
	Leader() (id, addr string)
	// SaveSnapshot writes this node's registry in snapshot form.
	SaveSnapshot(w io.Writer) error
	// RestoreSnapshot replaces the cluster's registry (leader only).
	RestoreSnapshot(r io.Reader) error
}

var _ snapshotStore = (*consensus.Store)(nil)

// snapshotHandler serves apitype.PathSnapshot: GET streams a backup of the
// registry, PUT restores one. Both run on the leader only. The API server
// does not forward mounted endpoints, and a restore must not be relayed
// through a follower's memory anyway, so a follower answers 307 with the
// leader's address: the CLI (and curl -L) repeat the request there.
type snapshotHandler struct {
	store snapshotStore
	// httpAddr maps the leader's raft ID to its HTTP address.
	httpAddr func(id string) (string, error)
	// counts reports the registry after a restore.
	counts func() apitype.SnapshotRestored
	logger *slog.Logger
}

// snapshotMount is the API mount of the snapshot endpoint.
func (n *Node) snapshotMount() api.Mount {
	fsm := n.store.FSM()
	h := &snapshotHandler{store: n.store, httpAddr: n.apiAddrOf, logger: n.cfg.Logger.With("component", "snapshot"),
		counts: func() apitype.SnapshotRestored {
			work := 0
			for _, c := range fsm.WorkCounts() {
				work += c
			}
			return apitype.SnapshotRestored{Nodes: fsm.Len(), Work: work, Index: fsm.Index()}
		}}
	return api.Mount{Name: "operator_snapshot", Patterns: []string{apitype.PathSnapshot},
		Methods: []string{http.MethodGet, http.MethodPut}, Handler: h}
}

func (h *snapshotHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		if k != apitype.ParamStale || r.Method != http.MethodGet {
			snapshotError(w, http.StatusBadRequest, "unknown query parameter "+strconv.Quote(k)+
				"; GET takes only ?stale, PUT none")
			return
		}
	}
	_, stale := q[apitype.ParamStale]
	if !stale && !h.store.IsLeader() {
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
		h.logger.Warn("operator snapshot failed", "err", err)
		snapshotError(w, storeErrorStatus(err), "snapshot: "+err.Error())
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.Itoa(b.Len()))
	hd.Set("Content-Disposition", `attachment; filename="chiffon-`+time.Now().UTC().Format("20060102T150405Z")+`.snap"`)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.Bytes())
	h.logger.Info("operator snapshot saved", "bytes", b.Len())
}

func (h *snapshotHandler) restore(w http.ResponseWriter, r *http.Request) {
	body := http.MaxBytesReader(w, r.Body, maxSnapshotBytes)
	err := h.store.RestoreSnapshot(body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		snapshotError(w, http.StatusRequestEntityTooLarge, "snapshot larger than "+strconv.Itoa(maxSnapshotBytes>>20)+" MiB")
		return
	case errors.Is(err, consensus.ErrNotLeader):
		h.redirect(w, r) // leadership moved while we read the body
		return
	case err != nil:
		h.logger.Warn("operator restore failed", "err", err)
		snapshotError(w, storeErrorStatus(err), err.Error())
		return
	}
	out := h.counts()
	h.logger.Warn("registry restored from an operator snapshot", "nodes", out.Nodes, "work", out.Work, "index", out.Index)
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
}

// redirect sends the client to the leader (307 keeps the method and body),
// or answers 503 while no leader is known.
func (h *snapshotHandler) redirect(w http.ResponseWriter, r *http.Request) {
	id, _ := h.store.Leader()
	if id == "" {
		w.Header().Set("Retry-After", "1")
		snapshotError(w, http.StatusServiceUnavailable, "no raft leader known (an election may be running, or there is no quorum); "+
			"retry, or save this node's own copy with ?stale (chiffon operator snapshot save -stale)")
		return
	}
	addr, err := h.httpAddr(id)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		snapshotError(w, http.StatusServiceUnavailable, "this orchestrator is not the raft leader and cannot resolve the leader's HTTP address: "+err.Error())
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	w.Header().Set("Location", scheme+"://"+addr+r.URL.RequestURI())
	snapshotError(w, http.StatusTemporaryRedirect, "this orchestrator is not the raft leader; repeat the request on the leader at "+addr)
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

// snapshotError writes the API's JSON error body.
func snapshotError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(apitype.Error{Error: msg})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
