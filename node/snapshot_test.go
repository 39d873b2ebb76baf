package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/nodetest"
)

// noRedirect is a client that shows 307s instead of following them.
var noRedirect = &http.Client{Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func snapshotCall(t *testing.T, method, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestSnapshotEndpoint_LeaderFollowerAndErrors(t *testing.T) {
	tc := nodetest.Start(t, nodetest.Config{Orchestrators: nodetest.Names("orch", 3), Desktops: []string{"desk-a"}})
	leader := tc.WaitLeader(10 * time.Second)
	var follower *node.Node
	for _, o := range tc.Orchestrators() {
		if o != leader {
			follower = o
		}
	}
	url := func(n *node.Node) string { return "http://" + n.APIAddr() + apitype.PathSnapshot }
	waitFor(t, 10*time.Second, "the registry on the leader", func() bool { return leader.Store().FSM().Len() == 4 })

	// The leader answers with the snapshot.
	resp, snap := snapshotCall(t, http.MethodGet, url(leader), nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/octet-stream" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), ".snap") || !bytes.Contains(snap, []byte(`"nodes"`)) {
		t.Fatalf("leader GET: %d %v %.200s", resp.StatusCode, resp.Header, snap)
	}

	// A follower sends the client to the leader, for GET and PUT alike.
	for _, m := range []string{http.MethodGet, http.MethodPut} {
		resp, b := snapshotCall(t, m, url(follower), snap)
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != url(leader) ||
			!strings.Contains(string(b), leader.APIAddr()) {
			t.Errorf("follower %s: %d Location %q: %s", m, resp.StatusCode, resp.Header.Get("Location"), b)
		}
	}
	// ?stale answers from the follower's replica.
	if resp, b := snapshotCall(t, http.MethodGet, url(follower)+"?stale", nil); resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"nodes"`)) {
		t.Errorf("follower GET ?stale: %d %.200s", resp.StatusCode, b)
	}

	// A restore on the leader replaces the registry and says what it holds.
	st := leader.Store()
	if _, err := st.Apply(consensus.SubmitWork{At: time.Now(), Items: []consensus.WorkItem{
		{WorkID: "later", MaxAttempts: 1, GPUIndex: consensus.NoGPU}}}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	for i, o := range tc.Orchestrators() { // so that its absence after the restore means something
		waitFor(t, 10*time.Second, fmt.Sprintf("work \"later\" on orch%d", i), func() bool {
			_, ok := o.Store().FSM().GetWork("later")
			return ok
		})
	}
	resp, b := snapshotCall(t, http.MethodPut, url(leader), snap)
	var out apitype.SnapshotRestored
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || out.Nodes != 4 || out.Work != 0 {
		t.Fatalf("leader PUT: %d %s", resp.StatusCode, b)
	}
	for i, o := range tc.Orchestrators() {
		waitFor(t, 10*time.Second, fmt.Sprintf("the restore on orch%d", i), func() bool {
			_, ok := o.Store().FSM().GetWork("later")
			return !ok
		})
	}

	// Errors are JSON with a status that says what went wrong.
	for _, c := range []struct {
		method, query string
		body          []byte
		want          int
	}{
		{http.MethodPut, "", []byte("{not json"), http.StatusBadRequest},
		{http.MethodPut, "", []byte(`{"version":99}`), http.StatusBadRequest},
		{http.MethodPut, "?stale", snap, http.StatusBadRequest},
		{http.MethodGet, "?consistent", nil, http.StatusBadRequest},
		{http.MethodDelete, "", nil, http.StatusMethodNotAllowed},
		{http.MethodPost, "", snap, http.StatusMethodNotAllowed},
	} {
		resp, b := snapshotCall(t, c.method, url(leader)+c.query, c.body)
		var e apitype.Error
		if resp.StatusCode != c.want || json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("%s %s: %d %s, want %d with a JSON error", c.method, c.query, resp.StatusCode, b, c.want)
		}
	}
	if _, ok := st.FSM().GetWork("later"); ok {
		t.Error("a rejected restore changed the registry")
	}
}
