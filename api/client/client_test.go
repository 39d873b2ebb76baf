package client

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

func TestClient_QueryAndMeta(t *testing.T) {
	var got *http.Request
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		w.Header().Set(apitype.HeaderIndex, "42")
		w.Header().Set(apitype.HeaderLastContact, "15")
		w.Header().Set(apitype.HeaderKnownLeader, "true")
		w.Header().Set(apitype.HeaderServedBy, "n1")
		w.Write([]byte(`[{"agent_id":"a","gpu_vram_max_free_gb":20,"gpus":[]}]`))
	}))
	defer hs.Close()
	c, err := New(Config{Addr: hs.URL, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	caps, meta, err := c.AvailableCapacity(context.Background(),
		CapacityQuery{MinGPUVRAMGB: 16, MinCPUCores: 2.5, GPUType: "nvidia", VRAMTotal: true},
		&QueryOptions{Stale: true, WaitIndex: 40, WaitTime: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(caps) != 1 || caps[0].GPUVRAMMaxFreeGB != 20 {
		t.Fatalf("caps %+v", caps)
	}
	if *meta != (QueryMeta{Index: 42, LastContact: 15 * time.Millisecond, KnownLeader: true, ServedBy: "n1"}) {
		t.Fatalf("meta %+v", meta)
	}
	want := url.Values{"min_gpu_vram_gb": {"16"}, "min_cpu_cores": {"2.5"}, "gpu_type": {"nvidia"}, "vram": {"total"},
		"stale": {""}, "index": {"40"}, "wait": {"2s"}}
	if got.URL.Path != "/v1/agents/available-capacity" || got.URL.Query().Encode() != want.Encode() {
		t.Fatalf("request %s", got.URL)
	}
	if got.Header.Get("Authorization") != "Bearer tok" {
		t.Fatalf("auth %q", got.Header.Get("Authorization"))
	}
}

func TestClient_ErrorsCarryServerMessage(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			w.WriteHeader(503)
			w.Write([]byte(`{"ready":false,"reason":"no raft leader known","index":3}`))
		case "/v1/agents/x/capacity":
			w.WriteHeader(400)
			w.Write([]byte(`{"error":"agent id \"x\" is not a UUID"}`))
		default:
			w.WriteHeader(502)
			w.Write([]byte("<html>bad gateway</html>"))
		}
	}))
	defer hs.Close()
	c, _ := New(Config{Addr: hs.URL})
	_, _, err := c.AgentCapacity(context.Background(), "x", nil)
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 400 || e.Message != `agent id "x" is not a UUID` {
		t.Fatalf("err %v", err)
	}
	if _, err := c.Leader(context.Background()); !errors.As(err, &e) || e.StatusCode != 502 || e.Message != "<html>bad gateway</html>" {
		t.Fatalf("non-JSON error: %v", err)
	}
	rd, err := c.Ready(context.Background())
	if err != nil || rd.Ready || rd.Reason != "no raft leader known" {
		t.Fatalf("ready %+v %v", rd, err)
	}
}

func TestClient_Config(t *testing.T) {
	cases := []struct {
		cfg  Config
		base string
		ok   bool
	}{
		{Config{}, "http://127.0.0.1:8480", true},
		{Config{Addr: "10.0.0.1:9000"}, "http://10.0.0.1:9000", true},
		{Config{Addr: "https://h:1/"}, "https://h:1", true},
		{Config{Addr: "h:1", TLS: new(tls.Config)}, "https://h:1", true},
		{Config{Addr: "ftp://h:1"}, "", false},
		{Config{Addr: "http://"}, "", false},
	}
	for _, tc := range cases {
		c, err := New(tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("%+v: err %v", tc.cfg, err)
			continue
		}
		if err == nil && c.base.String() != tc.base {
			t.Errorf("%q: base %s, want %s", tc.cfg.Addr, c.base, tc.base)
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%q: %v is not ErrInvalidConfig", tc.cfg.Addr, err)
		}
	}
	if _, err := TLSConfig("", "cert.pem", ""); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("cert without key: %v", err)
	}
	if _, err := TLSConfig("/nonexistent", "", ""); err == nil {
		t.Error("missing CA accepted")
	}
}
