package ui

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w
}

func TestHandler_ServesEveryFile(t *testing.T) {
	h := Handler(http.NotFoundHandler())
	names, err := fs.Glob(static, "static/*")
	if err != nil || len(names) == 0 {
		t.Fatalf("embedded files: %v %v", names, err)
	}
	for _, n := range names {
		n = strings.TrimPrefix(n, "static/")
		t.Run(n, func(t *testing.T) {
			w := get(t, h, Prefix+n)
			if w.Code != http.StatusOK || w.Body.Len() == 0 {
				t.Fatalf("%d, %d bytes", w.Code, w.Body.Len())
			}
			if ct := w.Header().Get("Content-Type"); ct == "application/octet-stream" || ct == "" {
				t.Errorf("Content-Type %q", ct)
			}
			if w.Header().Get("ETag") == "" || w.Header().Get("Content-Security-Policy") == "" {
				t.Errorf("headers %v", w.Header())
			}
		})
	}
}

func TestHandler_IndexAndMisses(t *testing.T) {
	misses := 0
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		misses++
		w.WriteHeader(http.StatusTeapot)
	}))
	w := get(t, h, Prefix)
	if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("%s: %d %q", Prefix, w.Code, w.Header().Get("Content-Type"))
	}
	for _, p := range []string{Prefix + "nope.js", Prefix + "static/app.js", "/app.js", Prefix + "index.html/"} {
		if w := get(t, h, p); w.Code != http.StatusTeapot {
			t.Errorf("%s: %d, want the notFound handler", p, w.Code)
		}
	}
	if misses != 4 {
		t.Errorf("notFound called %d times, want 4", misses)
	}
}

// TestIndex_ReferencesEmbeddedFiles keeps index.html and the embedded files
// in step: every local src or href must be served.
func TestIndex_ReferencesEmbeddedFiles(t *testing.T) {
	h := Handler(http.NotFoundHandler())
	body := get(t, h, Prefix).Body.String()
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(body, -1)
	if len(refs) < 2 {
		t.Fatalf("index.html references %v", refs)
	}
	for _, m := range refs {
		ref := m[1]
		if strings.HasPrefix(ref, "data:") {
			continue
		}
		if strings.Contains(ref, "//") || strings.HasPrefix(ref, "/") {
			t.Errorf("%q: the page must load only its own files, relative to %s", ref, Prefix)
			continue
		}
		if w := get(t, h, Prefix+ref); w.Code != http.StatusOK {
			t.Errorf("%s: %d", ref, w.Code)
		}
	}
}
