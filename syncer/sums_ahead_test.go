package syncer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/blocksum"
	"github.com/georep/georep/internal/gfid"
	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/treecmp"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/plan"
	"github.com/georep/georep/syncer/transfer"
)

// want picks the files the slave has that go as deltas, the biggest
// first, within the count and byte limits.
func TestSumsAheadWant(t *testing.T) {
	const mib = 1 << 20
	item := func(size int64) plan.DataItem { return plan.DataItem{GFID: gfid.New(), Size: size} }
	newFile, created, small := item(10*mib), item(10*mib), item(transfer.DeltaMin-1)
	newFile.New = true
	created.Create = &pb.Stat{Mode: 0o100644}
	huge := item(sumsAheadBytes + 1)
	var big []plan.DataItem
	for i := range sumsAheadFiles + 2 {
		big = append(big, item(int64(i+1)*mib))
	}
	tests := []struct {
		name string
		data []plan.DataItem
		want []plan.DataItem
	}{
		{name: "none worth it", data: []plan.DataItem{newFile, created, small}},
		{name: "biggest first, at most sumsAheadFiles", data: slices.Concat([]plan.DataItem{small}, big),
			want: reversed(big[2:])},
		{name: "one over the byte limit is passed over", data: []plan.DataItem{big[0], huge, big[1]},
			want: []plan.DataItem{big[1], big[0]}},
		{name: "exactly at the limit", data: []plan.DataItem{item(sumsAheadBytes)}, want: nil},
	}
	tests[3].want = tests[3].data
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newSumsAhead(context.Background(), &sync.WaitGroup{})
			a.want(tt.data)
			var got []gfid.GFID
			for _, w := range a.wants {
				got = append(got, w.g)
				if bs, _ := blocksum.BlockSize(sizeOf(tt.data, w.g)); w.bs != bs {
					t.Errorf("%s: block size %d, want %d", w.g, w.bs, bs)
				}
			}
			var want []gfid.GFID
			for _, d := range tt.want {
				want = append(want, d.GFID)
			}
			if !slices.Equal(got, want) {
				t.Errorf("wants %v, want %v", got, want)
			}
		})
	}
}

func reversed(d []plan.DataItem) []plan.DataItem {
	r := slices.Clone(d)
	slices.Reverse(r)
	return r
}

func sizeOf(data []plan.DataItem, g gfid.GFID) int64 {
	for _, d := range data {
		if d.GFID == g {
			return d.Size
		}
	}
	return -1
}

// A --once incremental whose plan is ready before the slave is up (here
// a slave that takes a second to start, as an ssh login does) asks for
// the changed large file's block sums alongside the Handshake, and the
// delta uses them: the slave ends up exact.
func TestOnceAsksSumsAlongsideHandshake(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	slow := filepath.Join(t.TempDir(), "slow-georep")
	script := fmt.Sprintf("#!/bin/sh\nsleep 1\nexec %s \"$@\"\n", bin)
	if err := os.WriteFile(slow, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t, "d")
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i*31 + i>>11)
	}
	if err := os.WriteFile(filepath.Join(tr.master, "d", "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := os.WriteFile(filepath.Join(tr.master, "d", fmt.Sprintf("s%02d", i)), []byte(strings.Repeat("x", i+1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := tr.config(slow)
	const asked = `"msg":"deltas began with block sums asked alongside the Handshake","files":1`
	if logs := tr.mustConverge(t, cfg, "initial"); strings.Contains(logs, "alongside the Handshake") {
		t.Errorf("initial: new files have no sums to ask for, yet the log says\n%s", logs)
	}
	f, err := os.OpenFile(filepath.Join(tr.master, "d", "big"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("changed in the middle"), 3<<19); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.WriteFile(filepath.Join(tr.master, "d", "s03"), []byte("rewritten"), 0o644); err != nil {
		t.Fatal(err)
	}
	if logs := tr.mustConverge(t, cfg, "incremental"); !strings.Contains(logs, asked) {
		t.Errorf("incremental: the log does not say %s\n%s", asked, logs)
	}
}

// take hands each call's answer out once, and only in the block size it
// was asked in; drop forgets the rest. The calls go to a real slave.
func TestSumsAheadTake(t *testing.T) {
	bin, err := testbin.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tr := newTrees(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A file on the slave to sum, sent by a first run.
	content := make([]byte, 1<<20)
	for i := range content {
		content[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(tr.master, "f"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	if logs, err := runOnce(tr.config(bin)); err != nil {
		t.Fatalf("seed the slave: %v\n%s", err, logs)
	}
	g := slaveGFID(t, filepath.Join(tr.slave, "f"))
	bs, _ := blocksum.BlockSize(int64(len(content)))

	var bg sync.WaitGroup
	defer bg.Wait()
	a := newSumsAhead(ctx, &bg)
	a.want([]plan.DataItem{{GFID: g, Size: int64(len(content))}, {GFID: gfid.New(), Size: 1 << 20}})
	c, err := client.Dial(ctx, tr.url, client.Options{LocalGeorep: bin, Alongside: a.start})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a.mu.Lock()
	if len(a.calls) != 2 || len(a.wants) != 0 {
		t.Errorf("after the Handshake: %d calls, %d wants left; want 2 calls, none left", len(a.calls), len(a.wants))
	}
	a.mu.Unlock()
	if a.take(ctx, g, bs*2) != nil {
		t.Errorf("take in another block size answered")
	}
	// That take used the call up.
	if a.take(ctx, g, bs) != nil {
		t.Errorf("a call was handed out twice")
	}

	a.want([]plan.DataItem{{GFID: g, Size: int64(len(content))}})
	a.start(c.Slave)
	awaitBegun(t, a, g)
	resp := a.take(ctx, g, bs)
	if resp.GetBlockSize() != uint32(bs) || len(resp.GetBlocks()) != len(content)/bs || resp.GetSize() != int64(len(content)) {
		t.Fatalf("take: %d blocks of %d bytes for %d bytes, want %d of %d", len(resp.GetBlocks()), resp.GetBlockSize(),
			resp.GetSize(), len(content)/bs, bs)
	}
	if first := resp.GetBlocks()[0]; first.GetWeak() != blocksum.Weak(content[:bs]) {
		t.Errorf("first block's weak sum %#x, want %#x", first.GetWeak(), blocksum.Weak(content[:bs]))
	}
	if a.take(ctx, g, bs) != nil {
		t.Errorf("a call was handed out twice")
	}

	// Unknown GFID: the call fails (NotFound) and take says nothing.
	lost := gfid.New()
	a.want([]plan.DataItem{{GFID: lost, Size: 1 << 20}})
	a.start(c.Slave)
	awaitBegun(t, a, lost)
	if a.take(ctx, lost, bs) != nil {
		t.Errorf("take answered for a GFID the slave does not have")
	}

	// Not begun when taken (here its context ended first): nil at once,
	// where waiting would be longer than asking.
	dead, stop := context.WithCancel(ctx)
	stop()
	d := newSumsAhead(dead, &bg)
	d.want([]plan.DataItem{{GFID: g, Size: int64(len(content))}})
	d.start(c.Slave)
	if d.take(ctx, g, bs) != nil {
		t.Errorf("take answered for a call that was not made")
	}

	// Once the data phase has begun, a connection coming up asks nothing.
	a.drop() // the first connection's call for the other GFID was not taken
	a.want([]plan.DataItem{{GFID: g, Size: int64(len(content))}})
	a.late()
	a.start(c.Slave)
	if len(a.calls) != 0 {
		t.Errorf("start after late asked: %d calls", len(a.calls))
	}

	a.want([]plan.DataItem{{GFID: g, Size: int64(len(content))}})
	a.start(c.Slave)
	a.drop()
	if a.take(ctx, g, bs) != nil {
		t.Errorf("take answered after drop")
	}
	a.start(c.Slave)
	if len(a.calls) != 0 {
		t.Errorf("start after drop asked again: %d calls", len(a.calls))
	}
}

// slaveGFID reads the GFID the slave gave the file at p.
func slaveGFID(t *testing.T, p string) gfid.GFID {
	t.Helper()
	b := make([]byte, 64)
	n, err := unix.Lgetxattr(p, treecmp.GFIDXattr, b)
	if err != nil {
		t.Fatalf("GFID of %s: %v", p, err)
	}
	g, err := gfid.FromBytes(b[:n])
	if err != nil {
		t.Fatalf("GFID of %s: %v", p, err)
	}
	return g
}

// awaitBegun waits, for up to 10s, until the call for g has been made.
func awaitBegun(t *testing.T, a *sumsAhead, g gfid.GFID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.mu.Lock()
		c := a.calls[g]
		begun := c != nil && c.begun
		a.mu.Unlock()
		if begun {
			return
		}
		if c == nil || time.Now().After(deadline) {
			t.Fatalf("the call for %s was not made (it exists: %v)", g, c != nil)
		}
		time.Sleep(time.Millisecond)
	}
}
