package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/georep/georep/proto/georep/v1"
)

// TestSendCompression: compressible content crosses in far fewer wire
// bytes with zstd; incompressible content costs at most 1% more than
// sending it plain; without compression chunks go as they are. Every file
// arrives intact either way.
func TestSendCompression(t *testing.T) {
	text := bytes.Repeat([]byte("georep replicates file trees by identity. "), 100_000) // ~4 MiB
	random := randomBytes(4<<20, 7)
	var small [][]byte // many small files, one chunk each
	for i := range 200 {
		small = append(small, randomBytes(4096, uint64(100+i)))
	}
	var smallText [][]byte
	for i := range 200 {
		smallText = append(smallText, []byte(fmt.Sprintf("%d: %s", i, bytes.Repeat([]byte("small text file "), 256))))
	}
	tests := []struct {
		name  string
		files [][]byte
		// maxRatio bounds the zstd run's wire bytes over the plain run's.
		maxRatio float64
	}{
		{name: "compressible large file", files: [][]byte{text}, maxRatio: 0.05},
		{name: "incompressible large file", files: [][]byte{random}, maxRatio: 1.01},
		{name: "incompressible small files", files: small, maxRatio: 1.01},
		{name: "compressible small files", files: smallText, maxRatio: 0.2},
		{name: "mixed", files: [][]byte{random, text}, maxRatio: 0.6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wire := map[pb.Compression]int64{}
			for _, comp := range []pb.Compression{pb.Compression_COMPRESSION_UNSPECIFIED, pb.Compression_COMPRESSION_ZSTD} {
				e := newEnv(t, "")
				var items []Item
				for i, data := range tc.files {
					name := fmt.Sprintf("f%d", i)
					writeFile(t, filepath.Join(e.master, name), data)
					it := item(e.create(t, name), name, name)
					it.New = true
					items = append(items, it)
				}
				rs, st := e.send(t, items, Options{Jobs: 2, Compression: comp})
				wantOK(t, rs)
				var total int64
				for i, data := range tc.files {
					total += int64(len(data))
					if got := readFile(t, filepath.Join(e.slave, fmt.Sprintf("f%d", i))); !bytes.Equal(got, data) {
						t.Fatalf("%v: file %d differs on the slave", comp, i)
					}
				}
				if st.DataBytes != total {
					t.Errorf("%v: DataBytes %d, want the content's %d", comp, st.DataBytes, total)
				}
				if comp == pb.Compression_COMPRESSION_UNSPECIFIED && st.WireBytes < total {
					t.Errorf("plain: %d wire bytes for %d content bytes: something was compressed", st.WireBytes, total)
				}
				wire[comp] = st.WireBytes
			}
			ratio := float64(wire[pb.Compression_COMPRESSION_ZSTD]) / float64(wire[pb.Compression_COMPRESSION_UNSPECIFIED])
			t.Logf("wire bytes: plain %d, zstd %d (%.3f)", wire[pb.Compression_COMPRESSION_UNSPECIFIED], wire[pb.Compression_COMPRESSION_ZSTD], ratio)
			if ratio > tc.maxRatio {
				t.Errorf("zstd sent %.3f of the plain wire bytes, want at most %.3f", ratio, tc.maxRatio)
			}
		})
	}
}

// TestSendBwLimit: the cap holds across all streams of a Send, in both
// directions of the bound.
func TestSendBwLimit(t *testing.T) {
	const total = 4 << 20
	tests := []struct {
		name     string
		files    int
		jobs     int
		min, max time.Duration
	}{
		{name: "one stream", files: 1, jobs: 1, min: 3500 * time.Millisecond, max: 6 * time.Second},
		{name: "four streams share the cap", files: 8, jobs: 4, min: 3500 * time.Millisecond, max: 6 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, "")
			var items []Item
			for i := range tc.files {
				name := fmt.Sprintf("f%d", i)
				writeFile(t, filepath.Join(e.master, name), randomBytes(total/tc.files, uint64(i+1)))
				it := item(e.create(t, name), name, name)
				it.New = true
				items = append(items, it)
			}
			start := time.Now()
			rs, st := e.send(t, items, Options{Jobs: tc.jobs, BwLimit: 1 << 20})
			took := time.Since(start)
			wantOK(t, rs)
			t.Logf("%d wire bytes in %v", st.WireBytes, took)
			if took < tc.min || took > tc.max {
				t.Errorf("4 MiB at 1 MiB/s took %v, want between %v and %v", took, tc.min, tc.max)
			}
		})
	}
}

// TestSendBwLimitCancel: a Send waiting for the cap stops with its context.
func TestSendBwLimitCancel(t *testing.T) {
	e := newEnv(t, "")
	writeFile(t, filepath.Join(e.master, "f"), randomBytes(4<<20, 1))
	it := item(e.create(t, "f"), "f", "f")
	ctx, cancel := context.WithTimeout(ctxFor(t), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	rs, _, err := Send(ctx, e.client, e.root, []Item{it}, Options{BwLimit: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Send took %v after its context ended", took)
	}
	if rs[0].Err == nil {
		t.Fatal("a 4 MiB file at 64 KiB/s was installed within 0.5 s")
	}
	if !errors.Is(rs[0].Err, context.DeadlineExceeded) && !rs[0].Retryable() {
		t.Errorf("error %v: want the deadline or a retryable result", rs[0].Err)
	}
	waitTmpEmpty(t, e.slave)
}

func TestSendOptionsRefused(t *testing.T) {
	e := newEnv(t, "")
	for _, opts := range []Options{{Compression: 9}, {BwLimit: -1}} {
		if _, _, err := Send(ctxFor(t), e.client, e.root, nil, opts); err == nil {
			t.Errorf("Send with %+v: no error", opts)
		}
	}
}
