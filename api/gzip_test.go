package api

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/chiffon-dev/chiffon/consensus"
)

func TestAcceptsGzip(t *testing.T) {
	cases := []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"identity"}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZIP"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"br, gzip;q=0.5"}, true},
		{[]string{"gzip, deflate, br"}, true},
		{[]string{"br", "gzip"}, true},
		{[]string{"*"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.000"}, false},
		{[]string{"*;q=0"}, false},
		{[]string{"gzip;q=0, *"}, false},
		{[]string{"*, gzip;q=0"}, false},
		{[]string{"deflate, br"}, false},
	}
	for _, tc := range cases {
		r, _ := http.NewRequest("GET", "/", nil)
		for _, v := range tc.header {
			r.Header.Add("Accept-Encoding", v)
		}
		if got := acceptsGzip(r); got != tc.want {
			t.Errorf("Accept-Encoding %q: acceptsGzip = %v, want %v", tc.header, got, tc.want)
		}
	}
}

// plainClient sends no Accept-Encoding and decodes nothing, as curl does
// without --compressed.
var plainClient = &http.Client{Transport: &http.Transport{DisableCompression: true}}

// gunzip decodes a gzip body.
func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	return out
}

func TestAPI_GzipForLargeAnswersOnRequest(t *testing.T) {
	fsm := consensus.NewFSM()
	var recs []consensus.Record
	for i := range 50 {
		recs = append(recs, rec(i, consensus.StatusOnline, float64(i%25), float64(i%16), 32, "nvidia"))
	}
	applyFSM(t, fsm, 7, recs...)
	_, hs := newTestServer(t, fsm, newLeaderRaft("leader-1"), nil)
	gz := map[string]string{"Accept-Encoding": "gzip"}

	for _, path := range []string{
		"/agents/available-capacity",                    // cached per view
		"/agents/available-capacity?min_gpu_vram_gb=10", // another filter
		"/agents/available-capacity?stale",              // ?stale
		"/agents",                                       // compressed per request
	} {
		t.Run(path, func(t *testing.T) {
			plain := do(t, plainClient, "GET", hs.URL+path, nil)
			if plain.code != 200 {
				t.Fatalf("plain: %d %s", plain.code, plain.body)
			}
			if ce := plain.header.Get("Content-Encoding"); ce != "" {
				t.Fatalf("a client without Accept-Encoding got Content-Encoding %q", ce)
			}
			if len(plain.body) < gzipMinBytes {
				t.Fatalf("plain answer is %d bytes; the test needs a large one", len(plain.body))
			}
			for _, r := range []response{plain, do(t, plainClient, "GET", hs.URL+path, gz)} {
				if !slices.Contains(r.header.Values("Vary"), "Accept-Encoding") {
					t.Errorf("Vary = %q, want Accept-Encoding", r.header.Values("Vary"))
				}
			}
			for try := range 2 { // the second answer comes from the view's cache
				z := do(t, plainClient, "GET", hs.URL+path, gz)
				if z.code != 200 || z.header.Get("Content-Encoding") != "gzip" {
					t.Fatalf("try %d: %d, Content-Encoding %q, want 200 gzip", try, z.code, z.header.Get("Content-Encoding"))
				}
				if cl := z.header.Get("Content-Length"); cl != strconv.Itoa(len(z.body)) {
					t.Errorf("Content-Length %s for a %d-byte body", cl, len(z.body))
				}
				if len(z.body) >= len(plain.body) {
					t.Errorf("gzip answer %d bytes, plain %d", len(z.body), len(plain.body))
				}
				if got := gunzip(t, z.body); !bytes.Equal(got, plain.body) {
					t.Fatalf("decoded gzip answer differs from the plain one:\n%s\nvs\n%s", got, plain.body)
				}
				if z.header.Get("X-Chiffon-Index") != plain.header.Get("X-Chiffon-Index") {
					t.Errorf("index %q, plain %q", z.header.Get("X-Chiffon-Index"), plain.header.Get("X-Chiffon-Index"))
				}
			}
			// Go's default client asks for gzip and decodes it: callers
			// see the same answer either way.
			if d := do(t, nil, "GET", hs.URL+path, nil); !bytes.Equal(d.body, plain.body) {
				t.Fatalf("Go's default client read %d bytes, plain is %d", len(d.body), len(plain.body))
			}
		})
	}

	t.Run("small answers stay plain", func(t *testing.T) {
		z := do(t, plainClient, "GET", hs.URL+"/agents/available-capacity?min_gpu_vram_gb=24", gz)
		if z.code != 200 || z.header.Get("Content-Encoding") != "" {
			t.Fatalf("%d, Content-Encoding %q, want 200 plain", z.code, z.header.Get("Content-Encoding"))
		}
		if len(z.body) >= gzipMinBytes {
			t.Fatalf("answer is %d bytes; the test needs a small one", len(z.body))
		}
		if !slices.Contains(z.header.Values("Vary"), "Accept-Encoding") {
			t.Errorf("Vary = %q, want Accept-Encoding", z.header.Values("Vary"))
		}
	})
	t.Run("refused gzip stays plain", func(t *testing.T) {
		z := do(t, plainClient, "GET", hs.URL+"/agents", map[string]string{"Accept-Encoding": "gzip;q=0, *"})
		if z.code != 200 || z.header.Get("Content-Encoding") != "" {
			t.Fatalf("%d, Content-Encoding %q, want 200 plain", z.code, z.header.Get("Content-Encoding"))
		}
	})
}
