package client

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/georep/georep/internal/certs"
	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testbuf"
	"github.com/georep/georep/internal/testproxy"
	"github.com/georep/georep/internal/testsshd"
	pb "github.com/georep/georep/proto/georep/v1"
)

// benchTransport opens a real connection to a slave serving root.
type benchTransport struct {
	name string
	dial func(b *testing.B, root string) *Conn
}

// benchTransports are the ways into a slave the benchmarks compare: a
// local child over stdio, ssh through a real sshd, the same ssh with a
// 50 ms round trip added by toxiproxy (25 ms each way) for a WAN, and a
// `georep slave --listen` daemon over mTLS.
func benchTransports() []benchTransport {
	return []benchTransport{
		{"local", func(b *testing.B, root string) *Conn {
			u, err := ParseSlaveURL(root)
			if err != nil {
				b.Fatal(err)
			}
			return benchDial(b, u, Options{LocalGeorep: georepBin})
		}},
		{"ssh", func(b *testing.B, root string) *Conn {
			s := testsshd.Start(b, testsshd.Options{AuthorizedKeysOptions: forcedCommand(georepBin, root)})
			u, err := ParseSlaveURL(fmt.Sprintf("ssh://%s@%s:%d%s", s.User, s.Host, s.Port, root))
			if err != nil {
				b.Fatal(err)
			}
			return benchDial(b, u, Options{SSHCommand: s.SSHCommand()})
		}},
		{"ssh+50ms", func(b *testing.B, root string) *Conn {
			s := testsshd.Start(b, testsshd.Options{AuthorizedKeysOptions: forcedCommand(georepBin, root)})
			p := testproxy.Start(b, fmt.Sprintf("%s:%d", s.Host, s.Port))
			p.AddLatency(b, 25*time.Millisecond)
			u, sshCmd := sshThroughProxy(b, s, p, root)
			return benchDial(b, u, Options{SSHCommand: sshCmd})
		}},
		{"mtls", func(b *testing.B, root string) *Conn {
			pki := mtlsPKI{dir: b.TempDir()}
			if err := certs.Generate(pki.dir, []string{"127.0.0.1"}, []string{"m1"}); err != nil {
				b.Fatalf("generate certificates: %v", err)
			}
			addr := benchListenSlave(b, append(pki.serverArgs(), "--allow", "m1", "--root", root)...)
			u, err := ParseSlaveURL("grpcs://" + addr)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := DialTLS(ctx, u, pki.clientOptions("m1"))
			if err != nil {
				b.Fatalf("dial %s: %v", u, err)
			}
			b.Cleanup(func() { c.Close() })
			return c
		}},
	}
}

// benchListenSlave runs `georep slave --listen 127.0.0.1:0 args...` until
// the benchmark ends and returns the address it bound. (startListenSlave
// does the same for tests but takes a *testing.T.)
func benchListenSlave(b *testing.B, args ...string) string {
	b.Helper()
	stderr := &testbuf.Buffer{}
	cmd := exec.Command(georepBin, append([]string{"slave", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start georep slave --listen: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := listeningRE.FindStringSubmatch(stderr.String()); m != nil {
			return m[1]
		}
		select {
		case <-exited:
			b.Fatalf("georep slave --listen exited before listening; stderr:\n%s", stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("georep slave --listen did not report its address within 30s; stderr:\n%s", stderr.String())
		}
	}
}

func benchDial(b *testing.B, u SlaveURL, opts Options) *Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, u, opts)
	if err != nil {
		b.Fatalf("dial %s: %v", u, err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkKeepAliveRTT is one KeepAlive round trip: the floor under every
// RPC on that transport.
func BenchmarkKeepAliveRTT(b *testing.B) {
	for _, tr := range benchTransports() {
		b.Run(tr.name, func(b *testing.B) {
			c := tr.dial(b, b.TempDir())
			ctx := context.Background()
			req := &pb.KeepAliveRequest{}
			start := time.Now()
			n := 0
			for b.Loop() {
				if _, err := c.Slave.KeepAlive(ctx, req); err != nil {
					b.Fatalf("keep-alive: %v", err)
				}
				n++
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(n), "ms/rtt")
		})
	}
}

// BenchmarkEntryOpsBatch applies batches of 1000 new entries in one
// EntryOps each and reports entries applied per second.
func BenchmarkEntryOpsBatch(b *testing.B) {
	const perBatch = 1000
	ops := []struct {
		name string
		op   pb.EntryOp
		mode uint32
	}{
		{"mkdir", pb.EntryOp_ENTRY_OP_MKDIR, 0o40755},
		{"create", pb.EntryOp_ENTRY_OP_CREATE, 0o100644},
	}
	for _, tr := range benchTransports() {
		for _, op := range ops {
			b.Run(tr.name+"/"+op.name, func(b *testing.B) {
				c := tr.dial(b, b.TempDir())
				ctx := context.Background()
				batch := 0
				var applied time.Duration
				for b.Loop() {
					b.StopTimer()
					entries := make([]*pb.Entry, perBatch)
					for i := range entries {
						entries[i] = &pb.Entry{Op: op.op, Gfid: gfid.New().Bytes(), ParentGfid: gfid.Root.Bytes(),
							Name: []byte(fmt.Sprintf("%s-%05d-%04d", op.name, batch, i)), Stat: &pb.Stat{Mode: op.mode}}
					}
					batch++
					b.StartTimer()
					t0 := time.Now()
					resp, err := c.Slave.EntryOps(ctx, &pb.EntryOpsRequest{Entries: entries})
					applied += time.Since(t0)
					if err != nil {
						b.Fatalf("EntryOps: %v", err)
					}
					for i, r := range resp.GetResults() {
						if r.GetErrno() != 0 {
							b.Fatalf("entry %d: %s", i, r.GetMessage())
						}
					}
				}
				b.ReportMetric(float64(batch*perBatch)/applied.Seconds(), "entries/s")
			})
		}
	}
}
