package consensus_test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/chiffon-dev/chiffon/consensus"
	"github.com/chiffon-dev/chiffon/internal/testlog"
	"github.com/chiffon-dev/chiffon/internal/testwait"
	"github.com/chiffon-dev/chiffon/internal/tlsutil"
	"github.com/chiffon-dev/chiffon/internal/tlsutil/tlstest"
)

// tlsStore opens an in-memory-log store whose transport is TCP on
// loopback, over TLS with b (plain TCP when b is nil).
func tlsStore(t *testing.T, id string, b *tlsutil.Bundle, logger *slog.Logger) *consensus.Store {
	t.Helper()
	cfg := consensus.DefaultConfig()
	cfg.NodeID, cfg.InMemory, cfg.BindAddr, cfg.TLS, cfg.Logger = id, true, "127.0.0.1:0", b, logger
	cfg.TransportTimeout = 2 * time.Second
	st, err := consensus.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestTLSTransport_OnlyServerCertsJoin: orchestrators with server
// certificates form a cluster over mutual TLS; a peer holding a desktop's
// client certificate (from the same CA), or speaking plain TCP, cannot
// reach raft — the listener refuses it in the handshake and says so — and
// a dial to it is refused too.
func TestTLSTransport_OnlyServerCertsJoin(t *testing.T) {
	pki := tlstest.New(t)
	var logs testlog.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	s1 := tlsStore(t, "s1", pki.Bundle(t, tlsutil.RoleServer, "s1"), logger.With("node", "s1"))
	s2 := tlsStore(t, "s2", pki.Bundle(t, tlsutil.RoleServer, "s2"), logger.With("node", "s2"))
	rogue := tlsStore(t, "rogue", pki.Bundle(t, tlsutil.RoleClient, "rogue"), logger.With("node", "rogue"))
	plain := tlsStore(t, "plain", nil, logger.With("node", "plain"))

	if err := s1.Bootstrap(nil); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "s1 leads", testwait.Bool(s1.IsLeader))
	if err := s1.ProbePeer(s2.ID(), s2.Addr()); err != nil {
		t.Fatalf("server to server probe over TLS: %v", err)
	}
	if err := s1.AddVoter(s2.ID(), s2.Addr()); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.Apply(upsert("a"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "s2 replicates over TLS", testwait.Bool(func() bool { return s2.FSM().Len() == 1 }))

	// The client-certificate peer dials in: refused.
	if err := rogue.ProbePeer(s1.ID(), s1.Addr()); err == nil {
		t.Fatal("a peer with a client certificate reached raft over TLS")
	}
	testwait.Until(t, 10*time.Second, "the refusal is logged", testwait.Bool(func() bool {
		return strings.Contains(logs.String(), "refused raft connection: peer certificate is not a server certificate")
	}))
	// The leader dials the client-certificate peer: refused by the dial.
	if err := s1.ProbePeer(rogue.ID(), rogue.Addr()); err == nil {
		t.Fatal("a dial accepted a peer with a client certificate")
	}
	// Plain TCP either way: refused.
	if err := plain.ProbePeer(s1.ID(), s1.Addr()); err == nil {
		t.Fatal("a plain-TCP peer reached raft over TLS")
	}
	if err := s1.ProbePeer(plain.ID(), plain.Addr()); err == nil {
		t.Fatal("a TLS dial accepted a plain-TCP raft listener")
	}

	// A raw handshake with the client certificate fails at the handshake
	// or the first read after it, with the server's certificate alert.
	cfg := pki.Bundle(t, tlsutil.RoleClient, "raw").ClientConfig("server." + tlsutil.DefaultDomain)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", s1.Addr(), cfg)
	if err == nil {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("raw TLS connection with a client certificate was accepted (read: %v)", err)
	}
	t.Logf("client certificate refused: %v", err)
	if got := s1.FSM().Len(); got != 1 {
		t.Fatalf("registry has %d records, want 1", got)
	}
}

// TestConfig_TLSNeedsCA: raft over TLS without the cluster CA would trust
// nobody; New refuses it.
func TestConfig_TLSNeedsCA(t *testing.T) {
	pki := tlstest.New(t)
	b := pki.Bundle(t, tlsutil.RoleServer, "s1")
	b.Roots = nil
	cfg := consensus.DefaultConfig()
	cfg.NodeID, cfg.InMemory, cfg.BindAddr, cfg.TLS = "s1", true, "127.0.0.1:0", b
	if _, err := consensus.New(cfg); !errors.Is(err, consensus.ErrInvalidConfig) {
		t.Fatalf("New = %v, want ErrInvalidConfig", err)
	}
}

// TestCluster_FailoverTLSvsPlain measures the cost of raft over mutual
// TLS on failover: three stores on loopback TCP with DefaultConfig's
// timings, the leader closed, the time until a survivor leads; plain TCP
// and TLS trials alternate so both see the same machine load. Set
// CHIFFON_FAILOVER_TRIALS for more trials (docs/PERFORMANCE.md).
func TestCluster_FailoverTLSvsPlain(t *testing.T) {
	trials := 2
	if s := os.Getenv("CHIFFON_FAILOVER_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("CHIFFON_FAILOVER_TRIALS=%q", s)
		}
		trials = n
	}
	pki := tlstest.New(t)
	bundles := map[string]*tlsutil.Bundle{}
	for _, id := range []string{"n0", "n1", "n2"} {
		bundles[id] = pki.Bundle(t, tlsutil.RoleServer, id)
	}
	took := map[bool][]time.Duration{}
	for trial := range 2 * trials {
		secure := trial%2 == 1
		var stores []*consensus.Store
		var servers []raft.Server
		for _, id := range []string{"n0", "n1", "n2"} {
			var b *tlsutil.Bundle
			if secure {
				b = bundles[id]
			}
			cfg := consensus.DefaultConfig()
			cfg.NodeID, cfg.InMemory, cfg.BindAddr, cfg.TLS = id, true, "127.0.0.1:0", b
			st, err := consensus.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Open(); err != nil {
				t.Fatal(err)
			}
			stores = append(stores, st)
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(id), Address: raft.ServerAddress(st.Addr())})
		}
		for _, st := range stores {
			if err := st.Bootstrap(servers); err != nil {
				t.Fatal(err)
			}
		}
		leaderOf := func(skip *consensus.Store) *consensus.Store {
			for _, st := range stores {
				if st != skip && st.IsLeader() {
					return st
				}
			}
			return nil
		}
		// A leader that has committed an entry (on a busy machine a fresh
		// one may lose its lease first: try again).
		var old *consensus.Store
		testwait.Until(t, 30*time.Second, "a leader that commits", testwait.Err(func() error {
			if old = leaderOf(nil); old == nil {
				return errors.New("no leader")
			}
			_, err := old.Apply(upsert(fmt.Sprint("t", trial)), 5*time.Second)
			return err
		}))
		start := time.Now()
		old.Close()
		testwait.Until(t, 20*time.Second, "a new leader", testwait.Bool(func() bool { return leaderOf(old) != nil }))
		d := time.Since(start)
		took[secure] = append(took[secure], d)
		t.Logf("trial %d tls=%t: new leader after %v", trial/2, secure, d)
		for _, st := range stores {
			st.Close()
		}
	}
	for _, secure := range []bool{false, true} {
		d := slices.Clone(took[secure])
		slices.Sort(d)
		t.Logf("tls=%t: %d trials, min %v, median %v, max %v", secure, len(d), d[0], d[len(d)/2], d[len(d)-1])
	}
}
