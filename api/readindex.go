package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/chiffon-dev/chiffon/api/apitype"
)

// Default and consistent reads on a follower use raft's read-index idea
// (etcd's linearizable reads) over HTTP: the follower asks the leader for
// its read index (GET /v1/internal/read-index: the leader's registry index
// once that has applied raft's commit index), waits until its
// own replica has applied that index, and renders the answer itself. The
// answer then reflects at least every change the leader had applied when
// the request arrived, which is what relaying the leader's own answer
// gives, without moving the body twice. Concurrent requests share one
// round trip: a request joins the next round trip to start after it
// arrived, never one already in flight, so that the index it gets is never
// older than its arrival. A follower that cannot catch up within
// ForwardTimeout relays the leader's full answer instead. A round trip
// ends early, and the read is retried, when raft reports another leader
// (leaderwatch.go), and after Config.ReadIndexTimeout.

// pathReadIndex is the internal endpoint that followers ask the leader.
const pathReadIndex = "/v1/internal/read-index"

// readBatch is one round trip to the leader and the requests waiting on it.
type readBatch struct {
	done chan struct{}
	// The fields below are valid once done is closed.
	res readIndexResult
	err error
}

// readIndexResult is what one round trip learnt.
type readIndexResult struct {
	index    uint64 // the leader's registry index
	leaderID string // the leader asked
	addr     string // its HTTP address
}

// readIndexBatcher coalesces concurrent read-index requests of one mode.
type readIndexBatcher struct {
	mu sync.Mutex
	// next collects requests for the round trip after the running one;
	// running is true while a round trip is in flight. Both guarded by mu.
	next    *readBatch
	running bool
}

// get returns the leader's read index from a round trip that started after
// get was called. fetch makes the round trip; it runs in the batch's own
// goroutine, bounded by its own context, as several requests share it.
func (b *readIndexBatcher) get(ctx context.Context, fetch func() (readIndexResult, error)) (readIndexResult, error) {
	b.mu.Lock()
	if b.next == nil {
		b.next = &readBatch{done: make(chan struct{})}
	}
	mine := b.next
	if !b.running {
		b.running, b.next = true, nil
		go b.run(mine, fetch)
	}
	b.mu.Unlock()
	select {
	case <-mine.done:
		return mine.res, mine.err
	case <-ctx.Done():
		return readIndexResult{}, ctx.Err()
	}
}

// run makes round trips until no request is waiting for another.
func (b *readIndexBatcher) run(batch *readBatch, fetch func() (readIndexResult, error)) {
	for {
		batch.res, batch.err = fetch()
		close(batch.done)
		b.mu.Lock()
		if b.next == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		batch, b.next = b.next, nil
		b.mu.Unlock()
	}
}

// fetchReadIndex asks the current leader for its read index. It resolves
// the leader afresh on every round trip: a batcher under steady load keeps
// running across a change of leader.
func (s *Server) fetchReadIndex(mode consistency) (readIndexResult, error) {
	id, _ := s.raft.Leader()
	switch id {
	case "":
		return readIndexResult{}, ErrNoLeader
	case s.raft.ID():
		return readIndexResult{}, fmt.Errorf("this node became the leader")
	}
	addr, err := s.cfg.LeaderHTTPAddr(id)
	if err != nil {
		return readIndexResult{}, fmt.Errorf("resolve leader %s's HTTP address: %w", id, err)
	}
	idx, err := s.fetchReadIndexFrom(id, addr, mode)
	return readIndexResult{index: idx, leaderID: id, addr: addr}, err
}

// fetchReadIndexFrom asks the leader id, at addr, for its read index,
// within Config.ReadIndexTimeout and only while raft follows that leader
// (see leaderContext).
func (s *Server) fetchReadIndexFrom(id, addr string, mode consistency) (uint64, error) {
	lctx, lcancel := s.leaderContext(s.baseCtx, id)
	defer lcancel()
	ctx, cancel := context.WithTimeout(lctx, s.cfg.ReadIndexTimeout)
	defer cancel()
	u := s.scheme + "://" + addr + pathReadIndex
	if mode == modeConsistent {
		u += "?" + apitype.ParamConsistent
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set(apitype.HeaderForwardedBy, s.raft.ID())
	if s.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.Token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, roundTripErr(ctx, id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, fmt.Errorf("read index from %s: %w", addr, roundTripErr(ctx, id, err))
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("read index from %s: %s: %s", addr, resp.Status, body)
	}
	var ri apitype.ReadIndex
	if err := json.Unmarshal(body, &ri); err != nil {
		return 0, fmt.Errorf("read index from %s: %w", addr, err)
	}
	return ri.Index, nil
}

// roundTripErr names why a round trip to leader id ended early: the leader
// changed (ErrLeaderChanged) or err itself.
func roundTripErr(ctx context.Context, id string, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrLeaderChanged) {
		return fmt.Errorf("asking %s: %w", id, cause)
	}
	return err
}

// readIndexLocal answers a default or consistent registry read on a
// follower: read index from the leader, catch up, render locally. It
// returns false with the reason when the caller should try again (the
// leader failed or is not the leader any more).
func (s *Server) readIndexLocal(ctx context.Context, w http.ResponseWriter, r *http.Request, opts queryOptions, ans answerFunc) (bool, error) {
	b := &s.readDefault
	if opts.mode == modeConsistent {
		b = &s.readConsistent
	}
	res, err := b.get(ctx, func() (readIndexResult, error) { return s.fetchReadIndex(opts.mode) })
	if err != nil {
		return false, err
	}
	idx := res.index
	if s.reg.Index() < idx {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.ForwardTimeout)
		for cur := s.reg.Index(); cur < idx; cur = s.reg.Index() {
			if _, err := s.reg.WaitIndex(wctx, cur); err != nil {
				break
			}
		}
		cancel()
		if s.reg.Index() < idx {
			// Too far behind (or the index went down with a restore):
			// relay the leader's own answer.
			return s.forwardOnce(ctx, w, r, res.leaderID, res.addr, opts)
		}
	}
	s.setConsistencyHeaders(w.Header())
	w.Header().Set(apitype.HeaderServedBy, res.leaderID)
	w.Header().Set(apitype.HeaderKnownLeader, "true")
	s.metrics.renderedLocally()
	s.render(w, r, ans)
	return true, nil
}

// handleReadIndex is the leader's side: its registry index once it may
// answer reads (after its barrier, and a quorum check with ?consistent)
// and its registry has applied raft's commit index (503 when it does not
// within ReadIndexTimeout);
// 421 when it does not lead, so that the follower looks again.
func (s *Server) handleReadIndex() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := checkParams(q, []string{apitype.ParamConsistent}); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		consistent, err := parseFlag(q, apitype.ParamConsistent)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		mode := modeDefault
		if consistent {
			mode = modeConsistent
		}
		if !s.canServeAsLeader(mode) {
			writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf("%s is not the raft leader", s.raft.ID()))
			return
		}
		// The read index is raft's commit index (after this term's
		// barrier, and a quorum check with ?consistent): wait until the
		// registry has applied it, then hand out the registry's index,
		// which covers every registry command up to it. Raft's own index
		// would not do: a follower waits on its registry's index, which
		// raft's no-ops and configuration entries never move.
		if err := s.leaderCatchUp(r.Context()); err != nil {
			if r.Context().Err() != nil {
				s.cancelled(w)
				return
			}
			s.writeApplyBehind(w, err)
			return
		}
		idx := s.reg.Index()
		w.Header().Set(apitype.HeaderIndex, strconv.FormatUint(idx, 10))
		writeJSON(w, http.StatusOK, apitype.ReadIndex{Index: idx})
	}
}
