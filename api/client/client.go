// Package client is the Go client of Chiffon's HTTP API, used by the CLI.
// It imports only the wire types (api/apitype), never the server.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// ErrInvalidConfig is returned by New and TLSConfig for unusable settings.
var ErrInvalidConfig = errors.New("invalid api client config")

// Error is an answer with a 4xx or 5xx status. Its Message is the server's
// "error" text.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Message is the server's explanation.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Config configures a Client.
type Config struct {
	// Addr is the server: host:port, or a URL with http:// or https://.
	// Without a scheme, https is used when TLS is set. Default
	// 127.0.0.1:8480.
	Addr string
	// Token is sent as "Authorization: Bearer <token>" when set.
	Token string
	// TLS configures HTTPS (see TLSConfig).
	TLS *tls.Config
	// Timeout bounds each call without a blocking wait (a blocking query
	// gets its wait added). Default 30 s.
	Timeout time.Duration
	// HTTPClient, if set, is used as is (TLS and Timeout are then ignored).
	HTTPClient *http.Client
}

// Client calls one API server. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	token   string
	timeout time.Duration
	hc      *http.Client
}

// New returns a Client for cfg. It opens nothing.
func New(cfg Config) (*Client, error) {
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:8480"
	}
	if !strings.Contains(addr, "://") {
		scheme := "http"
		if cfg.TLS != nil {
			scheme = "https"
		}
		addr = scheme + "://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: address %q: want host:port or http(s)://host:port", ErrInvalidConfig, cfg.Addr)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	c := &Client{base: u, token: cfg.Token, timeout: cfg.Timeout, hc: cfg.HTTPClient}
	if c.timeout <= 0 {
		c.timeout = 30 * time.Second
	}
	if c.hc == nil {
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:     cfg.TLS,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		}
		c.hc = &http.Client{Transport: tr}
	}
	return c, nil
}

// TLSConfig builds a client TLS configuration from PEM files: caFile is
// the CA to trust (the system roots when ""), certFile and keyFile the
// client certificate to present (both or neither).
func TLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrInvalidConfig, caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load TLS client key pair: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case certFile != "" || keyFile != "":
		return nil, fmt.Errorf("%w: a client certificate needs both -tls-cert and -tls-key", ErrInvalidConfig)
	}
	return cfg, nil
}

// QueryOptions choose the consistency mode and make a query blocking.
type QueryOptions struct {
	// Stale answers from the receiving node's replica.
	Stale bool
	// Consistent has the leader confirm its leadership first.
	Consistent bool
	// MaxStale, when > 0, bounds a stale read (?max_stale; implies
	// Stale): a follower that last heard from the leader longer ago
	// forwards the read to the leader, or answers 503 when it cannot.
	MaxStale time.Duration
	// WaitIndex, when > 0, blocks until the registry index passes it.
	WaitIndex uint64
	// WaitTime bounds a blocking query (server default 5 min).
	WaitTime time.Duration
}

// QueryMeta is what the answer's headers said.
type QueryMeta struct {
	// Index is X-Chiffon-Index: pass it as WaitIndex to block for a change.
	Index uint64
	// LastContact is how long ago the answering node heard from the leader
	// (-1 ms: never).
	LastContact time.Duration
	// KnownLeader reports whether the answering node knew a leader.
	KnownLeader bool
	// ServedBy is the raft ID of the node whose state answered.
	ServedBy string
}

// CapacityQuery are the filters of AvailableCapacity; zero values do not
// filter.
type CapacityQuery struct {
	MinGPUVRAMGB         float64
	MinCPUCores          float64
	MinMemoryAvailableGB float64
	// GPUType is nvidia, amd, intel or none; "" for any.
	GPUType string
	// VRAMTotal compares MinGPUVRAMGB with all GPUs' free VRAM together
	// instead of the largest free VRAM on one GPU.
	VRAMTotal bool
}

func (q CapacityQuery) values() url.Values {
	v := url.Values{}
	f := func(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
	if q.MinGPUVRAMGB > 0 {
		v.Set(apitype.ParamMinGPUVRAMGB, f(q.MinGPUVRAMGB))
	}
	if q.MinCPUCores > 0 {
		v.Set(apitype.ParamMinCPUCores, f(q.MinCPUCores))
	}
	if q.MinMemoryAvailableGB > 0 {
		v.Set(apitype.ParamMinMemoryAvailableGB, f(q.MinMemoryAvailableGB))
	}
	if q.GPUType != "" {
		v.Set(apitype.ParamGPUType, q.GPUType)
	}
	if q.VRAMTotal {
		v.Set(apitype.ParamVRAM, apitype.VRAMTotal)
	}
	return v
}

// Agents lists every agent, or those with status when it is not "".
func (c *Client) Agents(ctx context.Context, status string, opts *QueryOptions) ([]apitype.Agent, *QueryMeta, error) {
	v := url.Values{}
	if status != "" {
		v.Set(apitype.ParamStatus, status)
	}
	var out []apitype.Agent
	meta, err := c.get(ctx, "/v1/agents", v, opts, &out)
	return out, meta, err
}

// Agent returns one agent's whole record.
func (c *Client) Agent(ctx context.Context, id string, opts *QueryOptions) (apitype.Agent, *QueryMeta, error) {
	var out apitype.Agent
	meta, err := c.get(ctx, "/v1/agents/"+url.PathEscape(id), nil, opts, &out)
	return out, meta, err
}

// Work returns one work item (GET /v1/work/{work_id}), with its payload
// and output.
func (c *Client) Work(ctx context.Context, workID string, opts *QueryOptions) (apitype.WorkItem, *QueryMeta, error) {
	var out apitype.WorkItem
	meta, err := c.get(ctx, "/v1/work/"+url.PathEscape(workID), nil, opts, &out)
	return out, meta, err
}

// WorkList returns one page of work items, oldest submission first: those
// in status (all when ""), at most limit (0: the server's default), after
// the page that gave nextToken ("" for the first).
func (c *Client) WorkList(ctx context.Context, status string, limit int, nextToken string, opts *QueryOptions) (apitype.WorkList, *QueryMeta, error) {
	v := url.Values{}
	if status != "" {
		v.Set(apitype.ParamStatus, status)
	}
	if limit > 0 {
		v.Set(apitype.ParamLimit, strconv.Itoa(limit))
	}
	if nextToken != "" {
		v.Set(apitype.ParamNextToken, nextToken)
	}
	var out apitype.WorkList
	meta, err := c.get(ctx, "/v1/work", v, opts, &out)
	return out, meta, err
}

// AgentCapacity returns one agent's capacity.
func (c *Client) AgentCapacity(ctx context.Context, id string, opts *QueryOptions) (apitype.Capacity, *QueryMeta, error) {
	var out apitype.Capacity
	meta, err := c.get(ctx, "/v1/agents/"+url.PathEscape(id)+"/capacity", nil, opts, &out)
	return out, meta, err
}

// AvailableCapacity returns the online desktops that meet q, most free VRAM
// on one GPU first.
func (c *Client) AvailableCapacity(ctx context.Context, q CapacityQuery, opts *QueryOptions) ([]apitype.Capacity, *QueryMeta, error) {
	var out []apitype.Capacity
	meta, err := c.get(ctx, "/v1/agents/available-capacity", q.values(), opts, &out)
	return out, meta, err
}

// Leader returns the leader as the server knows it.
func (c *Client) Leader(ctx context.Context) (apitype.Leader, error) {
	var out apitype.Leader
	_, err := c.get(ctx, "/v1/status/leader", nil, nil, &out)
	return out, err
}

// RaftPeers returns the raft configuration (from the leader unless
// opts.Stale).
func (c *Client) RaftPeers(ctx context.Context, opts *QueryOptions) ([]apitype.Peer, error) {
	var out []apitype.Peer
	_, err := c.get(ctx, "/v1/operator/raft/peers", nil, opts, &out)
	return out, err
}

// RemoveRaftPeer removes a server from the raft configuration.
func (c *Client) RemoveRaftPeer(ctx context.Context, id string) error {
	var out apitype.RemovedPeer
	_, err := c.do(ctx, http.MethodDelete, "/v1/operator/raft/peers/"+url.PathEscape(id), nil, 0, &out)
	return err
}

// Ready returns GET /readyz; a 503 is not an error, Ready is then false.
func (c *Client) Ready(ctx context.Context) (apitype.Ready, error) {
	var out apitype.Ready
	_, err := c.get(ctx, "/readyz", nil, nil, &out)
	var e *Error
	if errors.As(err, &e) && e.StatusCode == http.StatusServiceUnavailable && out.Reason != "" {
		err = nil
	}
	return out, err
}

func (c *Client) get(ctx context.Context, path string, v url.Values, opts *QueryOptions, out any) (*QueryMeta, error) {
	if v == nil {
		v = url.Values{}
	}
	var wait time.Duration
	if opts != nil {
		if opts.Stale {
			v.Set(apitype.ParamStale, "")
		}
		if opts.Consistent {
			v.Set(apitype.ParamConsistent, "")
		}
		if opts.MaxStale > 0 {
			v.Set(apitype.ParamMaxStale, opts.MaxStale.String())
		}
		if opts.WaitIndex > 0 {
			v.Set(apitype.ParamIndex, strconv.FormatUint(opts.WaitIndex, 10))
			wait = 5 * time.Minute
			if opts.WaitTime > 0 {
				v.Set(apitype.ParamWait, opts.WaitTime.String())
				wait = opts.WaitTime
			}
		}
	}
	return c.do(ctx, http.MethodGet, path, v, wait, out)
}

// do makes one call and decodes a 2xx JSON body into out. Other statuses
// become *Error; out is still filled when the error body decodes into it
// (readyz).
func (c *Client) do(ctx context.Context, method, path string, v url.Values, wait time.Duration, out any) (*QueryMeta, error) {
	u := *c.base
	u.Path += path
	u.RawQuery = v.Encode() // "stale=" means ?stale to the server
	ctx, cancel := context.WithTimeout(ctx, c.timeout+wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	meta := parseMeta(resp.Header)
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return meta, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e apitype.Error
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if out != nil {
			_ = json.Unmarshal(body, out)
		}
		return meta, &Error{StatusCode: resp.StatusCode, Message: msg}
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return meta, fmt.Errorf("decode answer from %s: %w", u.Path, err)
		}
	}
	return meta, nil
}

func parseMeta(h http.Header) *QueryMeta {
	m := &QueryMeta{ServedBy: h.Get(apitype.HeaderServedBy)}
	m.Index, _ = strconv.ParseUint(h.Get(apitype.HeaderIndex), 10, 64)
	if ms, err := strconv.ParseInt(h.Get(apitype.HeaderLastContact), 10, 64); err == nil {
		m.LastContact = time.Duration(ms) * time.Millisecond
	}
	m.KnownLeader = h.Get(apitype.HeaderKnownLeader) == "true"
	return m
}
