package api

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Large read answers are offered gzip-compressed to clients that ask
// (Accept-Encoding: gzip): an available-capacity answer at 10,000 agents is
// megabytes of repetitive JSON that compresses about tenfold. Small answers
// stay plain, since compressing them saves less than it costs, and every
// read answer says Vary: Accept-Encoding so that caches keep the two apart.
// An available-capacity answer is compressed once per view and filter, like
// its plain bytes (capacityView.availableGzip); other reads are compressed
// per request.

// gzipMinBytes is the smallest answer sent compressed: about one Ethernet
// frame's payload, below which compression saves no packet.
const gzipMinBytes = 1400

// acceptsGzip reports whether r's Accept-Encoding admits gzip: gzip (or
// x-gzip, or *) listed with a non-zero quality, and gzip not refused.
func acceptsGzip(r *http.Request) bool {
	ok := false
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name != "gzip" && name != "x-gzip" && name != "*" {
				continue
			}
			refused := zeroQuality(params)
			if name != "*" && refused {
				return false // an explicit gzip;q=0 wins over *
			}
			if !refused {
				ok = true
			}
		}
	}
	return ok
}

// zeroQuality reports whether an Accept-Encoding entry's parameters
// (";q=0", ";q=0.000") refuse it.
func zeroQuality(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && q == 0
		}
	}
	return false
}

// gzipWriters recycles compressors (each holds about 1 MiB of state).
var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return w
}}

// gzipBytes returns b compressed with gzip at BestSpeed: most of the
// saving on this JSON (see docs/PERFORMANCE.md) for a fraction of the CPU.
func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(b)/8 + 64)
	zw := gzipWriters.Get().(*gzip.Writer)
	zw.Reset(&buf)
	_, _ = zw.Write(b) // a bytes.Buffer does not fail
	_ = zw.Close()
	gzipWriters.Put(zw)
	return buf.Bytes()
}
