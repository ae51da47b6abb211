// Package testproxy puts a controllable TCP proxy (Shopify's toxiproxy, run
// in-process) between a test's client and a real server on 127.0.0.1, so
// tests can cut the network, black-hole it, or add WAN latency. This
// kernel has no netem qdisc, and a proxy on loopback needs no privileges.
package testproxy

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"
)

// Proxy forwards 127.0.0.1:Port to an upstream address until the test ends.
type Proxy struct {
	// Host and Port are where clients connect instead of the upstream.
	Host string
	Port int

	proxy *toxiproxy.Proxy
}

// Start runs a proxy on a free 127.0.0.1 port forwarding to upstream
// (host:port); it stops when the test ends.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	// toxiproxy logs through zerolog; a test wants none of it on stdout.
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	name := fmt.Sprintf("georep-%s", strings.ReplaceAll(t.Name(), "/", "-"))
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := srv.Collection.Add(p, true); err != nil {
		t.Fatalf("start toxiproxy in front of %s: %v", upstream, err)
	}
	t.Cleanup(func() {
		if err := srv.Collection.Clear(); err != nil {
			t.Errorf("stop toxiproxy: %v", err)
		}
	})
	// Listen now holds the bound port; pin it, so Restore listens on the
	// same address the client was told.
	p.Lock()
	listen := p.Listen
	p.Unlock()
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("toxiproxy listens on %q: %v", listen, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("toxiproxy listens on %q: %v", listen, err)
	}
	return &Proxy{Host: host, Port: n, proxy: p}
}

// Addr is host:port of the proxy's listener.
func (p *Proxy) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// Cut disables the proxy: its listener closes (new connections are
// refused) and every connection through it is closed at once.
func (p *Proxy) Cut() { p.proxy.Stop() }

// Blackhole keeps connections open but drops every byte both ways, as a
// dead route does: peers notice only through their own keep-alives. New
// connections are accepted and then stall.
func (p *Proxy) Blackhole(t testing.TB) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		p.addToxic(t, "blackhole_"+dir, "timeout", dir, `{"timeout":0}`)
	}
}

// BlackholeReplies drops every byte from the upstream to clients while
// clients' bytes still reach it: a peer that can no longer answer, or
// whose answers never arrive. Restore undoes it.
func (p *Proxy) BlackholeReplies(t testing.TB) {
	t.Helper()
	p.addToxic(t, "blackhole_downstream", "timeout", "downstream", `{"timeout":0}`)
}

// AddLatency delays data by oneWay in each direction, so a round trip
// grows by twice oneWay (25ms gives a 50ms RTT).
func (p *Proxy) AddLatency(t testing.TB, oneWay time.Duration) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		p.addToxic(t, "latency_"+dir, "latency", dir, fmt.Sprintf(`{"latency":%d}`, oneWay.Milliseconds()))
	}
}

// Restore undoes Cut and Blackhole: the listener is back on the same port
// and data flows again. Latency toxics stay. Connections that lived
// through a black hole have lost bytes and should be treated as dead.
func (p *Proxy) Restore(t testing.TB) {
	t.Helper()
	for _, dir := range []string{"upstream", "downstream"} {
		name := "blackhole_" + dir
		if p.proxy.Toxics.GetToxic(name) == nil {
			continue
		}
		if err := p.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
			t.Fatalf("remove toxic %s: %v", name, err)
		}
	}
	p.proxy.Lock()
	enabled := p.proxy.Enabled
	p.proxy.Unlock()
	if enabled {
		return
	}
	// The port was just released; another process may grab it in between,
	// so retry briefly before failing.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := p.proxy.Start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("restart toxiproxy on %s: %v", p.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *Proxy) addToxic(t testing.TB, name, typ, stream, attrs string) {
	t.Helper()
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := p.proxy.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		t.Fatalf("add %s toxic %s: %v", typ, name, err)
	}
}
