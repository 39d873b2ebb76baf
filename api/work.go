package api

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// WorkReader is the registry's work items, read side: GET /v1/work and
// GET /v1/work/{work_id} answer from it. *consensus.FSM implements it; its
// methods must be safe for concurrent use and return copies.
type WorkReader interface {
	// GetWork returns one item, with its payload and output.
	GetWork(workID string) (consensus.WorkItem, bool)
	// WorkPage returns up to limit items after the key (in any of the
	// statuses, all when none), the number that match in all, and whether
	// more follow.
	WorkPage(after consensus.WorkKey, limit int, statuses ...consensus.WorkStatus) ([]consensus.WorkItem, int, bool)
	// WorkCounts returns the number of items in each status.
	WorkCounts() map[consensus.WorkStatus]int
}

var _ WorkReader = (*consensus.FSM)(nil)

// Work paths; the unversioned ones are aliases, as for /agents.
const (
	pathWork     = "/work"
	pathWorkItem = "/work/{work_id}"
)

// workParams are accepted by GET /work.
var workParams = append(slices.Clone(commonParams), apitype.ParamStatus, apitype.ParamLimit, apitype.ParamNextToken)

// noWork answers the work endpoints of a server without Config.Work.
func noWork(w http.ResponseWriter, _ *http.Request) {
	writeError(w, http.StatusNotFound, "this server keeps no work items")
}

// handleWorkItem is GET /work/{work_id}: one item with payload and output.
// Like every work read it is a registry read: a follower answers once it
// has caught up with the leader, so a result a client has just received
// reads as finished on every orchestrator.
func (s *Server) handleWorkItem() http.HandlerFunc {
	return s.read(true, commonParams, func(r *http.Request, _ url.Values) (answerFunc, *httpError) {
		if s.cfg.Work == nil {
			return noWork, nil
		}
		id := r.PathValue("work_id")
		return func(w http.ResponseWriter, _ *http.Request) {
			item, ok := s.cfg.Work.GetWork(id)
			if !ok {
				writeError(w, http.StatusNotFound, "unknown work_id "+id)
				return
			}
			writeJSON(w, http.StatusOK, workOf(&item))
		}, nil
	})
}

// handleWork is GET /work?status=S&limit=N&next_token=T: items (all, or in
// status S), oldest submission first, without payload and output, N a page.
func (s *Server) handleWork() http.HandlerFunc {
	return s.read(true, workParams, func(_ *http.Request, q url.Values) (answerFunc, *httpError) {
		if s.cfg.Work == nil {
			return noWork, nil
		}
		var statuses []consensus.WorkStatus
		if v := q.Get(apitype.ParamStatus); v != "" {
			if !consensus.WorkStatus(v).Valid() {
				return nil, &httpError{http.StatusBadRequest, "status " + v + ": allowed: " + strings.Join(apitype.WorkStatuses, ", ")}
			}
			statuses = append(statuses, consensus.WorkStatus(v))
		}
		limit := apitype.DefaultWorkPage
		if v := q.Get(apitype.ParamLimit); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > apitype.MaxWorkPage {
				return nil, &httpError{http.StatusBadRequest, fmt.Sprintf("limit %q: allowed: an integer from 1 to %d", v, apitype.MaxWorkPage)}
			}
			limit = n
		}
		var after consensus.WorkKey
		if v := q.Get(apitype.ParamNextToken); v != "" {
			k, err := consensus.ParseWorkKey(v)
			if err != nil {
				return nil, &httpError{http.StatusBadRequest, "next_token: " + err.Error()}
			}
			after = k
		}
		return func(w http.ResponseWriter, _ *http.Request) {
			// Indexed: a page costs O(matching items) to order and
			// O(limit) to copy, however many finished items are retained.
			items, total, more := s.cfg.Work.WorkPage(after, limit, statuses...)
			list := apitype.WorkList{Count: len(items), Total: total, Work: make([]apitype.WorkItem, len(items))}
			for i := range items {
				list.Work[i] = workOf(&items[i])
				list.Work[i].Payload, list.Work[i].Output = nil, ""
			}
			if more {
				list.NextToken = consensus.KeyOf(&items[len(items)-1]).String()
			}
			writeJSON(w, http.StatusOK, list)
		}, nil
	})
}
