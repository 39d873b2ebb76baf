package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// TestAPI_DashboardRoutes checks how the API mounts the dashboard: its
// files without the token, the API behind it, JSON 404 everywhere else.
func TestAPI_DashboardRoutes(t *testing.T) {
	const token = "s3cret-token"
	_, _, _, base := leaderFixture(t, func(c *Config) { c.Token = token })
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		code               int
		ctype              string // prefix of Content-Type
		location           string
	}{
		{"page without token", "GET", "/ui/", nil, 200, "text/html", ""},
		{"page by name", "GET", "/ui/index.html", nil, 200, "text/html", ""},
		{"script", "GET", "/ui/app.js", nil, 200, "text/javascript", ""},
		{"style", "HEAD", "/ui/style.css", nil, 200, "text/css", ""},
		{"no slash redirects", "GET", "/ui", nil, 301, "", "/ui/"},
		{"missing file is a JSON 404", "GET", "/ui/nope.js", nil, 404, "application/json", ""},
		{"unclean path", "GET", "/ui/../agents", map[string]string{apitype.HeaderToken: token}, 404, "application/json", ""},
		{"wrong method", "POST", "/ui/", nil, 405, "application/json", ""},
		{"API still needs the token", "GET", "/v1/agents", nil, 401, "application/json", ""},
		{"API with the page's header", "GET", "/v1/agents", map[string]string{apitype.HeaderToken: token}, 200, "application/json", ""},
		{"near miss needs the token", "GET", "/uix", nil, 401, "application/json", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, noRedirect, tc.method, base+tc.path, tc.hdr)
			if r.code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, r.code, r.body, tc.code)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %s…", ct, tc.ctype)
			}
			if got := r.header.Get("Location"); got != tc.location {
				t.Errorf("Location %q, want %q", got, tc.location)
			}
			if tc.code == 404 {
				contains(t, errorBody(t, r), "no such path")
			}
		})
	}

	// The page revalidates with its ETag and may not be framed.
	r := do(t, nil, "GET", base+"/ui/", nil)
	etag := r.header.Get("ETag")
	if etag == "" || r.header.Get("Cache-Control") != "no-cache" || !strings.Contains(r.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("headers %v", r.header)
	}
	contains(t, string(r.body), `src="app.js"`, `href="style.css"`)
	if r := do(t, nil, "GET", base+"/ui/", map[string]string{"If-None-Match": etag}); r.code != http.StatusNotModified {
		t.Errorf("If-None-Match: %d, want 304", r.code)
	}
}
