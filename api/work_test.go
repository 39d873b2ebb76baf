package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// workStore applies work commands to an FSM, as raft would.
type workStore struct {
	fsm   *consensus.FSM
	index uint64
}

func newWorkStore() *workStore { return &workStore{fsm: consensus.NewFSM()} }

func (s *workStore) Apply(c consensus.Command, _ time.Duration) (any, error) {
	b, err := consensus.EncodeCommand(c)
	if err != nil {
		return nil, err
	}
	s.index++
	return s.fsm.Apply(&raft.Log{Type: raft.LogCommand, Index: s.index, Data: b}), nil
}

// workServer serves the store's work items from a leader.
func workServer(t *testing.T, st *workStore) *httptest.Server {
	_, hs := newTestServer(t, st.fsm, newLeaderRaft("l"), func(c *Config) { c.Work = st.fsm })
	return hs
}

var t0 = baseTime

func TestAPI_Work(t *testing.T) {
	st := newWorkStore()
	items := []consensus.WorkItem{{WorkID: "a", MaxAttempts: 1, Payload: json.RawMessage(`1`)}, {WorkID: "b", MaxAttempts: 1}}
	if _, err := st.Apply(consensus.SubmitWork{At: t0, Items: items}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(consensus.UpdateWork{At: t0, Transitions: []consensus.WorkTransition{{WorkID: "b", To: consensus.WorkFailed, Error: "x"}}}, 0); err != nil {
		t.Fatal(err)
	}
	srv := workServer(t, st)
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
				var w apitype.WorkItem
				if err := json.NewDecoder(resp.Body).Decode(&w); err != nil || w.WorkID != tt.id || (tt.id == "a" && string(w.Payload) != "1") {
					t.Fatalf("item %+v, %v", w, err)
				}
				return
			}
			var l apitype.WorkList
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

// TestAPI_WorkPaging walks GET /work page by page, as a user with
// many retained items would, and checks the bad inputs' answers.
func TestAPI_WorkPaging(t *testing.T) {
	st := newWorkStore()
	var want []string
	for batch := range 3 { // items share a CreateIndex within a batch
		var items []consensus.WorkItem
		for i := range 4 {
			id := fmt.Sprintf("w%d-%d", batch, 3-i) // submitted out of name order
			items = append(items, consensus.WorkItem{WorkID: id, MaxAttempts: 1, Payload: json.RawMessage(`{"big":true}`)})
		}
		if _, err := st.Apply(consensus.SubmitWork{At: t0, Items: items}, 0); err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			want = append(want, fmt.Sprintf("w%d-%d", batch, i))
		}
	}
	if _, err := st.Apply(consensus.UpdateWork{At: t0, Transitions: []consensus.WorkTransition{{WorkID: "w1-2", To: consensus.WorkFailed, Error: "x"}}}, 0); err != nil {
		t.Fatal(err)
	}
	srv := workServer(t, st)
	get := func(t *testing.T, query string) (int, apitype.WorkList, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + "/v1/work?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var l apitype.WorkList
		if resp.StatusCode == 200 {
			if err := json.Unmarshal(body, &l); err != nil {
				t.Fatalf("%s: %v in %s", query, err, body)
			}
		}
		return resp.StatusCode, l, string(body)
	}
	walk := func(t *testing.T, query string) []string {
		var got []string
		token := ""
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatalf("%s: more pages than items", query)
			}
			q := query
			if token != "" {
				q += "&next_token=" + url.QueryEscape(token)
			}
			code, l, body := get(t, q)
			if code != 200 || l.Count != len(l.Work) {
				t.Fatalf("%s: %d %s", q, code, body)
			}
			for _, w := range l.Work {
				if w.Payload != nil {
					t.Fatalf("%s: the list carries payloads", q)
				}
				got = append(got, w.WorkID)
			}
			if token = l.NextToken; token == "" {
				return got
			}
		}
	}
	for _, limit := range []int{1, 2, 5, 12, 13} {
		if got := walk(t, fmt.Sprintf("limit=%d", limit)); !slices.Equal(got, want) {
			t.Fatalf("pages of %d: %v, want %v", limit, got, want)
		}
	}
	if got := walk(t, "status=pending&limit=3"); len(got) != 11 || slices.Contains(got, "w1-2") {
		t.Fatalf("pending pages: %v", got)
	}
	if code, l, _ := get(t, "limit=5"); code != 200 || l.Count != 5 || l.Total != 12 || l.NextToken == "" {
		t.Fatalf("first page: %d %+v", code, l)
	}
	if code, l, _ := get(t, ""); code != 200 || l.Count != 12 || l.Total != 12 || l.NextToken != "" {
		t.Fatalf("default page: %d %+v", code, l)
	}
	for _, bad := range []struct{ query, msg string }{
		{"limit=0", "from 1 to 10000"},
		{"limit=10001", "from 1 to 10000"},
		{"limit=ten", "from 1 to 10000"},
		{"next_token=nope", "next_token"},
		{"status=bogus", "allowed: pending"},
	} {
		code, _, body := get(t, bad.query)
		var e struct{ Error string }
		if code != 400 || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Error, bad.msg) {
			t.Fatalf("%s: %d %s; want 400 with a JSON error mentioning %q", bad.query, code, body, bad.msg)
		}
	}
}
