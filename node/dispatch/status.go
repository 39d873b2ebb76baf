package dispatch

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// WorkReader is the registry's work, read side; *consensus.FSM implements
// it.
type WorkReader interface {
	GetWork(workID string) (consensus.WorkItem, bool)
	WorkPage(after consensus.WorkKey, limit int, statuses ...consensus.WorkStatus) ([]consensus.WorkItem, int, bool)
}

var _ WorkReader = (*consensus.FSM)(nil)

// WorkList is the answer of GET /work: one page of items.
type WorkList struct {
	// Count is the number of items in this page, Total the number that
	// match the query in all.
	Count int                  `json:"count"`
	Total int                  `json:"total"`
	Work  []consensus.WorkItem `json:"work"`
	// NextToken, when set, asks for the next page (?next_token=); it is
	// absent on the last page.
	NextToken string `json:"next_token,omitempty"`
}

// StatusParams are the query parameters of GET /work (the API server adds
// its consistency modes' and refuses any other).
var StatusParams = []string{apitype.ParamStatus, apitype.ParamLimit, apitype.ParamNextToken}

// StatusHandler serves the work status API from r (the local replica: on a
// follower it is as fresh as that follower; mount it as an api.Mount with
// Registry set, and StatusParams, for the API's consistency modes):
//
//	GET /work/{work_id}     one item, with payload and output; 404 if unknown
//	GET /work?status=S&limit=N&next_token=T
//	                        items (all, or in status S), oldest first,
//	                        without payload and output, N a page (default
//	                        apitype.DefaultWorkPage); next_token in the answer asks
//	                        for the next page
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
			q := req.URL.Query()
			status := consensus.WorkStatus(q.Get(apitype.ParamStatus))
			if status != "" && !status.Valid() {
				var names []string
				for _, s := range consensus.WorkStatuses {
					names = append(names, string(s))
				}
				badRequest(w, "status "+string(status)+": allowed: "+strings.Join(names, ", "))
				return
			}
			limit := apitype.DefaultWorkPage
			if v := q.Get(apitype.ParamLimit); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > apitype.MaxWorkPage {
					badRequest(w, fmt.Sprintf("limit %q: allowed: an integer from 1 to %d", v, apitype.MaxWorkPage))
					return
				}
				limit = n
			}
			var after consensus.WorkKey
			if v := q.Get(apitype.ParamNextToken); v != "" {
				k, err := consensus.ParseWorkKey(v)
				if err != nil {
					badRequest(w, "next_token: "+err.Error())
					return
				}
				after = k
			}
			var statuses []consensus.WorkStatus
			if status != "" {
				statuses = append(statuses, status)
			}
			// Indexed: a page costs O(matching items) to order and
			// O(limit) to copy, however many finished items are retained.
			items, total, more := r.WorkPage(after, limit, statuses...)
			for i := range items {
				items[i].Payload, items[i].Output = nil, ""
			}
			list := WorkList{Count: len(items), Total: total, Work: items}
			if list.Work == nil {
				list.Work = []consensus.WorkItem{}
			}
			if more {
				list.NextToken = consensus.KeyOf(&items[len(items)-1]).String()
			}
			writeJSON(w, http.StatusOK, list)
		})
	}
	return mux
}

func badRequest(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
