package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// maxLeaderHops bounds how many 307s (follower → leader) one snapshot call
// follows; more than one means leadership moved during the call.
const maxLeaderHops = 3

// SaveSnapshot writes a backup of the registry to w: the leader's (a
// follower redirects to it), or with stale the contacted node's own
// replica. It returns the number of bytes written.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer, stale bool) (int64, error) {
	v := url.Values{}
	if stale {
		v.Set(apitype.ParamStale, "")
	}
	resp, err := c.snapshotCall(ctx, http.MethodGet, v, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("read snapshot: %w", err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("snapshot truncated: %d of %d bytes", n, resp.ContentLength)
	}
	return n, nil
}

// RestoreSnapshot replaces the cluster's registry with a backup made by
// SaveSnapshot, on the leader (a follower redirects to it).
func (c *Client) RestoreSnapshot(ctx context.Context, snap []byte) (apitype.SnapshotRestored, error) {
	var out apitype.SnapshotRestored
	resp, err := c.snapshotCall(ctx, http.MethodPut, nil, snap)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return out, fmt.Errorf("decode answer from %s: %w", apitype.PathSnapshot, err)
	}
	return out, nil
}

// snapshotCall makes the call and follows the leader redirects itself:
// net/http drops the Authorization header when a redirect changes host,
// and the leader is usually another host. A 2xx answer is returned open.
func (c *Client) snapshotCall(ctx context.Context, method string, v url.Values, body []byte) (*http.Response, error) {
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	u := *c.base
	u.Path += apitype.PathSnapshot
	u.RawQuery = v.Encode()
	target := u.String()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	for hop := 0; ; hop++ {
		req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(body))
		if err != nil {
			cancel()
			return nil, err
		}
		if body == nil {
			req.Body, req.GetBody, req.ContentLength = nil, nil, 0
		} else {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			return nil, err
		}
		if resp.StatusCode == http.StatusTemporaryRedirect || resp.StatusCode == http.StatusPermanentRedirect {
			loc, lerr := resp.Location()
			resp.Body.Close()
			if lerr != nil {
				cancel()
				return nil, fmt.Errorf("redirect to the leader without a usable Location: %w", lerr)
			}
			if hop+1 >= maxLeaderHops {
				cancel()
				return nil, fmt.Errorf("redirected %d times (leadership keeps moving); last to %s", hop+1, loc)
			}
			target = loc.String()
			continue
		}
		if resp.StatusCode >= 300 {
			defer cancel()
			defer resp.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			msg := strings.TrimSpace(string(b))
			var e apitype.Error
			if json.Unmarshal(b, &e) == nil && e.Error != "" {
				msg = e.Error
			}
			return nil, &Error{StatusCode: resp.StatusCode, Message: msg}
		}
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
		return resp, nil
	}
}

// cancelOnClose releases the call's context when the body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
