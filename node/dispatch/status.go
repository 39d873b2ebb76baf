package dispatch

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/chiffon-dev/chiffon/consensus"
)

// WorkReader is the registry's work, read side; *consensus.FSM implements
// it.
type WorkReader interface {
	GetWork(workID string) (consensus.WorkItem, bool)
	ListWork(keep func(*consensus.WorkItem) bool) []consensus.WorkItem
	WorkByStatus(statuses ...consensus.WorkStatus) []consensus.WorkItem
}

var _ WorkReader = (*consensus.FSM)(nil)

// WorkList is the answer of GET /work.
type WorkList struct {
	Count int                  `json:"count"`
	Work  []consensus.WorkItem `json:"work"`
}

// StatusHandler serves the work status API from r (the local replica: on a
// follower it is as fresh as that follower; mount it behind the API's
// leader forwarding for leader reads):
//
//	GET /work/{work_id}     one item, with payload and output; 404 if unknown
//	GET /work?status=S      items (all, or in status S), oldest first,
//	                        without payload and output
//
// Both also answer under /v1 (/v1/work, /v1/work/{work_id}). Mount the
// handler at "/work", "/work/", "/v1/work" and "/v1/work/" (or give it the
// whole mux); it does no authentication of its own.
func StatusHandler(r WorkReader) http.Handler {
	mux := http.NewServeMux()
	for _, prefix := range []string{"", "/v1"} {
		mux.HandleFunc("GET "+prefix+"/work/{id}", func(w http.ResponseWriter, req *http.Request) {
			item, ok := r.GetWork(req.PathValue("id"))
			if !ok {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown work_id " + req.PathValue("id")})
				return
			}
			writeJSON(w, http.StatusOK, item)
		})
		mux.HandleFunc("GET "+prefix+"/work", func(w http.ResponseWriter, req *http.Request) {
			status := consensus.WorkStatus(req.URL.Query().Get("status"))
			if status != "" && !status.Valid() {
				var names []string
				for _, s := range consensus.WorkStatuses {
					names = append(names, string(s))
				}
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "status " + string(status) +
					": allowed: " + strings.Join(names, ", ")})
				return
			}
			var items []consensus.WorkItem
			if status == "" {
				items = r.ListWork(nil)
			} else {
				items = r.WorkByStatus(status) // indexed: no scan of retained results
			}
			for i := range items {
				items[i].Payload, items[i].Output = nil, ""
			}
			if items == nil {
				items = []consensus.WorkItem{}
			}
			writeJSON(w, http.StatusOK, WorkList{Count: len(items), Work: items})
		})
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
