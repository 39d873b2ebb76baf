// Package ui is the orchestrators' live dashboard: one static page (plain
// HTML, CSS and JavaScript, embedded with go:embed; there is no build
// step) that package api serves at /ui/.
//
// The files themselves need no API token, so that a browser can load the
// page before it has one; the page then calls the API (GET /v1/agents as a
// blocking query, /v1/status/leader, /v1/operator/raft/peers, /v1/work)
// with the token the user typed into it, kept in the browser's
// localStorage and sent as X-Chiffon-Token. Nothing secret is embedded.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// Prefix is the path the API mounts the dashboard under.
const Prefix = "/ui/"

//go:embed static
var static embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

// contentTypes names the types of the extensions the dashboard uses; the
// page must not depend on the host's MIME tables.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// csp lets the page load only its own files and talk to orchestrators (its
// own, and the others it probes when its own is gone); it may not be
// framed, which keeps the token form out of other sites' pages.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// loadAssets reads every embedded file once, with its ETag (a hash of the
// content: embedded files have no modification time to revalidate with).
func loadAssets() (map[string]asset, error) {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, err
	}
	out := map[string]asset{}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		ctype, ok := contentTypes[path.Ext(p)]
		if !ok {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(b)
		out[p] = asset{name: p, body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return out, err
}

// Handler serves the dashboard for requests under Prefix: Prefix itself is
// index.html, Prefix+name an embedded file. A request for anything else is
// passed to notFound (the API answers it with its JSON 404). Answers carry
// an ETag and Cache-Control: no-cache, so a browser revalidates and picks
// up a new release at once, and a strict Content-Security-Policy.
func Handler(notFound http.Handler) http.Handler {
	assets, err := loadAssets()
	if err != nil {
		// The files are compiled in; failing to read them is a build defect.
		panic("ui: read embedded files: " + err.Error())
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, Prefix)
		if name == "" {
			name = "index.html"
		}
		a, found := assets[name]
		if !ok || !found {
			notFound.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", csp)
		// ServeContent answers If-None-Match (304), HEAD and ranges.
		http.ServeContent(w, r, a.name, time.Time{}, bytes.NewReader(a.body))
	})
}
