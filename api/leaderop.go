package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/chiffon-dev/chiffon/api/apitype"
	"github.com/chiffon-dev/chiffon/consensus"
)

// Leader-forwarded operations: what the node itself asks of the cluster's
// leader (today removing a raft peer, when an orchestrator leaves). They
// run here when this node leads, else go to the leader's HTTP API over
// the same client, token and TLS as forwarded reads, so the node needs no
// HTTP plumbing of its own.

// RemovePeer takes raft server id out of the configuration, on the leader:
// here when this node leads, else as DELETE /v1/operator/raft/peers/{id}
// to the leader's HTTP API. It retries while no leader is known, the
// leader changes or cannot be reached, or the leader answers 5xx, until
// ctx ends or the server closes; removing is idempotent, so a retry after
// a lost answer is harmless. It returns nil once removed, an error
// wrapping ErrNoSuchPeer when id is not in the configuration (the leader
// removed it first), and otherwise the last error. It needs
// Config.RemovePeer.
func (s *Server) RemovePeer(ctx context.Context, id string) error {
	if s.cfg.RemovePeer == nil {
		return fmt.Errorf("%w: RemovePeer is nil", ErrInvalidConfig)
	}
	const minBackoff, maxBackoff = 20 * time.Millisecond, 500 * time.Millisecond
	backoff := minBackoff
	for attempt := 1; ; attempt++ {
		var (
			code int
			err  error
		)
		leader, _ := s.raft.Leader()
		switch {
		case s.raft.IsLeader():
			code, err = s.removePeerHere(id, false)
		case leader == "":
			code, err = http.StatusServiceUnavailable, ErrNoLeader
		default:
			code, err = s.removePeerAt(ctx, leader, id)
		}
		if err == nil || (code != 0 && code < 500 && code != http.StatusMisdirectedRequest) {
			return err // done, or an answer a retry will not change (404, 401, ...)
		}
		s.logger.Debug("remove raft peer: retrying", "id", id, "attempt", attempt, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("remove raft peer %s: %w (gave up: %w)", id, err, ctx.Err())
		case <-s.baseCtx.Done():
			t.Stop()
			return fmt.Errorf("remove raft peer %s: %w (gave up: %w)", id, err, ErrClosed)
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// removePeerHere removes id on this node, which should lead, and returns
// the HTTP status that says how it went (200 and nil when removed).
// forwarded says a follower sent the request: a node that no longer leads
// answers it 421, so that the follower looks for the new leader.
func (s *Server) removePeerHere(id string, forwarded bool) (int, error) {
	servers, err := s.raft.Servers()
	if err != nil {
		return http.StatusServiceUnavailable, fmt.Errorf("read raft configuration: %w", err)
	}
	found := false
	for _, srv := range servers {
		found = found || srv.ID == id
	}
	if !found {
		return http.StatusNotFound, fmt.Errorf("%w with id %q; see GET %s", ErrNoSuchPeer, id, pathOperatorPeers)
	}
	if err := s.cfg.RemovePeer(id); err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, consensus.ErrNotLeader) {
			code = http.StatusServiceUnavailable
			if forwarded {
				code = http.StatusMisdirectedRequest
			}
		}
		return code, fmt.Errorf("remove raft peer %s: %w", id, err)
	}
	s.logger.Info("removed raft peer", "id", id)
	return http.StatusOK, nil
}

// removePeerAt asks the leader (by raft ID) to remove id, in one attempt
// bounded by Config.ForwardTimeout, and returns its answer's status (0
// when there was none) and error.
func (s *Server) removePeerAt(ctx context.Context, leaderID, id string) (int, error) {
	addr, err := s.cfg.LeaderHTTPAddr(leaderID)
	if err != nil {
		return 0, fmt.Errorf("resolve leader %s's HTTP address: %w", leaderID, err)
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ForwardTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodDelete,
		s.scheme+"://"+addr+pathOperatorPeers+"/"+url.PathEscape(id), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set(apitype.HeaderForwardedBy, s.raft.ID())
	req.Header.Set("Accept", "application/json")
	if s.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("ask leader %s at %s: %w", leaderID, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, fmt.Errorf("read answer from leader %s at %s: %w", leaderID, addr, err)
	}
	if resp.StatusCode == http.StatusOK {
		return http.StatusOK, nil
	}
	var e apitype.Error
	msg := string(body)
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if resp.StatusCode == http.StatusNotFound {
		return resp.StatusCode, fmt.Errorf("%w: leader %s answered: %s", ErrNoSuchPeer, leaderID, msg)
	}
	return resp.StatusCode, fmt.Errorf("leader %s at %s answered %s: %s", leaderID, addr, resp.Status, msg)
}
