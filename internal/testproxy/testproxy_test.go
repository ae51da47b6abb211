package testproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer answers each line it reads with the same line, on 127.0.0.1.
func echoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if err != nil {
		t.Fatalf("dial proxy %s: %v", p.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one line and waits up to wait for the echo.
func roundTrip(c net.Conn, wait time.Duration) (time.Duration, error) {
	start := time.Now()
	if err := c.SetDeadline(start.Add(wait)); err != nil {
		return 0, err
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "ping\n" {
		return 0, errors.New("echo garbled: " + line)
	}
	return time.Since(start), nil
}

func TestProxyFaults(t *testing.T) {
	cases := []struct {
		name  string
		fault func(t *testing.T, p *Proxy)
		// check runs on a connection opened before the fault.
		check func(t *testing.T, p *Proxy, old net.Conn)
	}{
		{
			name:  "cut drops connections and refuses new ones",
			fault: func(t *testing.T, p *Proxy) { p.Cut() },
			check: func(t *testing.T, p *Proxy, old net.Conn) {
				if _, err := roundTrip(old, 2*time.Second); err == nil {
					t.Error("a connection through a cut proxy still echoes")
				} else if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("a cut connection hung instead of closing: %v", err)
				}
				if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
					c.Close()
					t.Error("a cut proxy accepted a new connection")
				}
			},
		},
		{
			name:  "blackhole stalls without closing",
			fault: func(t *testing.T, p *Proxy) { p.Blackhole(t) },
			check: func(t *testing.T, p *Proxy, old net.Conn) {
				if _, err := roundTrip(old, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("round trip through a black hole: %v, want a timeout", err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Start(t, echoServer(t))
			old := dial(t, p)
			if _, err := roundTrip(old, 2*time.Second); err != nil {
				t.Fatalf("echo before the fault: %v", err)
			}
			tc.fault(t, p)
			tc.check(t, p, old)
			p.Restore(t)
			// A fresh connection works again on the same address.
			if _, err := roundTrip(dial(t, p), 2*time.Second); err != nil {
				t.Fatalf("echo after Restore: %v", err)
			}
		})
	}
}

func TestProxyLatency(t *testing.T) {
	p := Start(t, echoServer(t))
	c := dial(t, p)
	base, err := roundTrip(c, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const oneWay = 40 * time.Millisecond
	p.AddLatency(t, oneWay)
	// The toxic joins existing links asynchronously; use a new connection.
	slow, err := roundTrip(dial(t, p), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if slow < 2*oneWay {
		t.Fatalf("round trip with %v each way took %v (without: %v), want at least %v", oneWay, slow, base, 2*oneWay)
	}
	if slow > 2*oneWay+time.Second {
		t.Fatalf("round trip with %v each way took %v, far more than the latency added", oneWay, slow)
	}
}
