package api

import (
	"bufio"
	"encoding/json"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// yamlNode is a mapping key of docs/openapi.yaml with its child keys. The
// checker reads only block-mapping keys by indentation, which is all the
// test needs and keeps the module free of a YAML dependency.
type yamlNode struct {
	children map[string]*yamlNode
	order    []string
}

func (n *yamlNode) child(k string) *yamlNode {
	if n == nil {
		return nil
	}
	return n.children[k]
}

func (n *yamlNode) keys() []string {
	if n == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(n.children))
}

var yamlKey = regexp.MustCompile(`^( *)("[^"]+"|[^\s:#"-][^:]*):(\s|$)`)

func parseYAMLKeys(t *testing.T, path string) *yamlNode {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root := &yamlNode{children: map[string]*yamlNode{}}
	type frame struct {
		indent int
		node   *yamlNode
	}
	stack := []frame{{-1, root}}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") || strings.HasPrefix(trimmed, "- ") {
			continue
		}
		m := yamlKey.FindStringSubmatch(line)
		if m == nil {
			continue // a continuation of a folded scalar
		}
		indent, key := len(m[1]), strings.Trim(m[2], `"`)
		for stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		parent := stack[len(stack)-1].node
		n := &yamlNode{children: map[string]*yamlNode{}}
		parent.children[key] = n
		parent.order = append(parent.order, key)
		stack = append(stack, frame{indent, n})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return root
}

// jsonKeys returns the keys of a JSON object.
func jsonKeys(t *testing.T, b []byte) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not an object: %s", b)
	}
	return slices.Sorted(maps.Keys(m))
}

func TestAPI_OpenAPIMatchesServer(t *testing.T) {
	doc := parseYAMLKeys(t, "../docs/openapi.yaml")
	paths := doc.child("paths")
	if paths == nil {
		t.Fatal("no paths in docs/openapi.yaml")
	}
	// Every documented path is routed, with its methods; every route is
	// documented.
	routed := map[string][]string{}
	for _, rt := range routeTable() {
		for _, p := range rt.patterns {
			routed[p] = rt.methods
		}
	}
	for _, p := range paths.keys() {
		methods, ok := routed[p]
		if !ok {
			t.Errorf("documented path %s is not routed", p)
			continue
		}
		for _, m := range paths.child(p).keys() {
			if !slices.Contains(methods, strings.ToUpper(m)) {
				t.Errorf("%s %s documented but the route allows %v", strings.ToUpper(m), p, methods)
			}
		}
	}
	for _, p := range Paths() {
		if paths.child(p) == nil {
			t.Errorf("route %s is not documented", p)
		}
	}

	// Real answers have exactly the documented properties.
	work := newWorkStore()
	if _, err := work.Apply(consensus.SubmitWork{At: baseTime, Items: []consensus.WorkItem{{WorkID: "a", MaxAttempts: 1}, {WorkID: "b", MaxAttempts: 1}}}, 0); err != nil {
		t.Fatal(err)
	}
	_, fr, _, base := leaderFixture(t, func(c *Config) {
		c.RemovePeer = func(string) error { return nil }
		c.Work = work.fsm
		c.Snapshots = fakeSnapshots{}
	})
	schemas := doc.child("components").child("schemas")
	props := func(name string) []string {
		p := schemas.child(name).child("properties").keys()
		if len(p) == 0 {
			t.Fatalf("schema %s has no properties", name)
		}
		return p
	}
	check := func(what, schema string, body []byte) {
		t.Helper()
		if got, want := jsonKeys(t, body), props(schema); !slices.Equal(got, want) {
			t.Errorf("%s keys\n got %v\nwant %v (schema %s)", what, got, want, schema)
		}
	}
	first := func(b []byte) []byte {
		var a []json.RawMessage
		if err := json.Unmarshal(b, &a); err != nil || len(a) == 0 {
			t.Fatalf("want a non-empty array: %s", b)
		}
		return a[0]
	}
	capBody := do(t, nil, "GET", base+"/agents/"+agentID(1)+"/capacity", nil).body
	check("capacity", "Capacity", capBody)
	avail := do(t, nil, "GET", base+"/v1/agents/available-capacity", nil).body
	check("available-capacity item", "Capacity", first(avail))
	var c struct{ GPUs []json.RawMessage }
	json.Unmarshal(capBody, &c)
	check("capacity gpu", "GPU", c.GPUs[0])

	agent := do(t, nil, "GET", base+"/agents/"+agentID(1), nil).body
	check("agent", "Agent", agent)
	check("agents item", "Agent", first(do(t, nil, "GET", base+"/agents", nil).body))
	var a struct {
		M json.RawMessage `json:"resource_metrics"`
	}
	json.Unmarshal(agent, &a)
	check("resource_metrics", "ResourceMetrics", a.M)

	// A page that is not the last has every key of WorkList.
	check("work list", "WorkList", do(t, nil, "GET", base+"/v1/work?limit=1", nil).body)

	check("snapshot restored", "SnapshotRestored", do(t, nil, "PUT", base+apitype.PathSnapshot, nil).body)

	check("leader", "Leader", do(t, nil, "GET", base+"/v1/status/leader", nil).body)
	check("peer", "Peer", first(do(t, nil, "GET", base+"/v1/operator/raft/peers", nil).body))
	check("read index", "ReadIndex", do(t, nil, "GET", base+pathReadIndex, nil).body)
	check("health", "Health", do(t, nil, "GET", base+"/healthz", nil).body)
	check("error", "Error", do(t, nil, "GET", base+"/nope", nil).body)
	fr.mu.Lock()
	fr.servers = append(fr.servers, consensus.Server{ID: "x", Address: "y", Voter: true})
	fr.mu.Unlock()
	check("removed peer", "RemovedPeer", do(t, nil, "DELETE", base+"/v1/operator/raft/peers/x", nil).body)
	// Ready omits reason when ready; a not-ready answer has every key.
	fr.mu.Lock()
	fr.commit = 1000
	fr.mu.Unlock()
	check("ready (not ready)", "Ready", do(t, nil, "GET", base+"/readyz", nil).body)
}

// fakeSnapshots saves "snapshot" and restores anything.
type fakeSnapshots struct{}

func (fakeSnapshots) SaveSnapshot(w io.Writer) error {
	_, err := io.WriteString(w, "snapshot")
	return err
}
func (fakeSnapshots) RestoreSnapshot(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
