package httpjson

import (
	"encoding/json"
	"math"
	"net/http/httptest"
	"strconv"
	"testing"
)

func TestWrite_BodyHeadersAndErrors(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, 201, map[string]int{"n": 1})
	if rec.Code != 201 || rec.Body.String() != "{\"n\":1}\n" || rec.Header().Get("Content-Type") != "application/json" ||
		rec.Header().Get("Content-Length") != strconv.Itoa(rec.Body.Len()) {
		t.Errorf("Write: %d %q %v", rec.Code, rec.Body, rec.Header())
	}

	// What JSON cannot carry is a 500 with the error body, not a 200
	// with half an answer.
	rec = httptest.NewRecorder()
	Write(rec, 200, math.NaN())
	var e struct{ Error string }
	if rec.Code != 500 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
		t.Errorf("Write(NaN): %d %q", rec.Code, rec.Body)
	}

	rec = httptest.NewRecorder()
	Error(rec, 404, "no such thing")
	if rec.Code != 404 || rec.Body.String() != "{\"error\":\"no such thing\"}\n" {
		t.Errorf("Error: %d %q", rec.Code, rec.Body)
	}
}
