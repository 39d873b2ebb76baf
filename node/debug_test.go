package node_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/node"
	"github.com/chiffon-dev/chiffon/node/nodetest"
)

// TestAPI_EnableDebugServesProfilerBehindToken: -enable-debug serves Go's
// profiler at /debug/pprof/, behind the API token; without it the path is
// a JSON 404.
func TestAPI_EnableDebugServesProfilerBehindToken(t *testing.T) {
	get := func(url, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, enabled := range []bool{true, false} {
		tc := nodetest.Start(t, nodetest.Config{Orchestrators: []string{"debug-orch"}, Node: func(_ string, c *node.Config) error {
			c.API.Token, c.API.EnableDebug = "s3cret", enabled
			return nil
		}})
		n := tc.Node("debug-orch")
		base := "http://" + n.APIAddr() + "/debug/pprof/"
		code, body := get(base+"goroutine?debug=1", "s3cret")
		switch {
		case enabled && (code != http.StatusOK || !strings.Contains(body, "goroutine profile")):
			t.Fatalf("enabled, with token: %d %.200s", code, body)
		case !enabled && (code != http.StatusNotFound || !strings.Contains(body, `"error"`)):
			t.Fatalf("disabled: %d %.200s, want a JSON 404", code, body)
		}
		if code, body := get(base, ""); code != http.StatusUnauthorized && code != http.StatusForbidden {
			t.Fatalf("enabled=%v, no token: %d %.200s, want it refused", enabled, code, body)
		}
		tc.Kill("debug-orch")
	}
}
