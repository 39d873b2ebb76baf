package dispatch_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/node/dispatch"
	"github.com/chiffon-dev/chiffon/node/dispatch/dispatchtest"
)

func TestStatusHandler(t *testing.T) {
	st := dispatchtest.NewStore()
	items := []consensus.WorkItem{{WorkID: "a", MaxAttempts: 1, Payload: json.RawMessage(`1`)}, {WorkID: "b", MaxAttempts: 1}}
	if _, err := st.Apply(consensus.SubmitWork{At: t0, Items: items}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(consensus.UpdateWork{At: t0, Transitions: []consensus.WorkTransition{{WorkID: "b", To: consensus.WorkFailed, Error: "x"}}}, 0); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(dispatch.StatusHandler(st.FSM()))
	t.Cleanup(srv.Close)
	tests := []struct {
		path  string
		code  int
		count int // for lists; -1 for one item
		id    string
	}{
		{"/work/a", 200, -1, "a"},
		{"/v1/work/b", 200, -1, "b"},
		{"/work/zzz", 404, 0, ""},
		{"/work", 200, 2, ""},
		{"/v1/work?status=failed", 200, 1, ""},
		{"/work?status=pending", 200, 1, ""},
		{"/work?status=bogus", 400, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.code {
				t.Fatalf("code %d, want %d", resp.StatusCode, tt.code)
			}
			if tt.code != 200 {
				return
			}
			if tt.count < 0 {
				var w consensus.WorkItem
				if err := json.NewDecoder(resp.Body).Decode(&w); err != nil || w.WorkID != tt.id {
					t.Fatalf("item %+v, %v", w, err)
				}
				return
			}
			var l dispatch.WorkList
			if err := json.NewDecoder(resp.Body).Decode(&l); err != nil || l.Count != tt.count || len(l.Work) != tt.count {
				t.Fatalf("list %+v, %v", l, err)
			}
			for _, w := range l.Work {
				if w.Payload != nil {
					t.Fatal("list carries payloads")
				}
			}
		})
	}
}
