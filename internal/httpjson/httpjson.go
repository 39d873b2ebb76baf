// Package httpjson writes Chiffon's JSON HTTP answers. It is the one JSON
// writer that the public API (package api) and the desktop's work endpoint
// (package node/worker) share, so that both answer with the same headers
// and the same error body, apitype.Error.
package httpjson

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// Write writes v as the JSON body, with code. A v that cannot be encoded
// (a NaN, a channel) is answered 500 with an error body instead.
func Write(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		Error(w, http.StatusInternalServerError, "encode answer: "+err.Error())
		return
	}
	WriteBody(w, code, append(b, '\n'))
}

// WriteBody writes a JSON body that is already encoded, with code.
func WriteBody(w http.ResponseWriter, code int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

// Error writes {"error": msg} with code.
func Error(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(apitype.Error{Error: msg})
	WriteBody(w, code, append(b, '\n'))
}
