package transfer

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// wireLog records what went over a real PutFiles stream: for each message
// sent, the GFIDs of the files it starts (one for a header, several for a
// batch; none for a chunk, copy or trailer) and whether it asked for
// batched results; for each message received, how many results it held.
type wireLog struct {
	mu       sync.Mutex
	sent     [][]gfid.GFID
	batches  int // batch parts sent
	asked    int // messages with batch_results set
	received []int
}

// tap is a client logging into l what goes over its PutFiles streams.
func (l *wireLog) tap(c pb.SlaveClient) tappedSlave {
	return tappedSlave{SlaveClient: c, sent: l.send, received: l.recv}
}

func (l *wireLog) send(req *pb.PutFilesRequest) {
	var starts []gfid.GFID
	switch p := req.GetPart().(type) {
	case *pb.PutFilesRequest_Header:
		starts = append(starts, gfid.GFID(p.Header.GetGfid()))
	case *pb.PutFilesRequest_Batch:
		for _, h := range p.Batch.GetFiles() {
			starts = append(starts, gfid.GFID(h.GetGfid()))
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sent = append(l.sent, starts)
	if req.GetBatch() != nil {
		l.batches++
	}
	if req.GetBatchResults() {
		l.asked++
	}
}

func (l *wireLog) recv(resp *pb.PutFilesResponse) {
	n := len(resp.GetResults())
	if n == 0 {
		n = 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.received = append(l.received, n)
}

// sendLogged is e.send over a recording client.
func (e *env) sendLogged(t *testing.T, items []Item, opts Options) ([]Result, Stats, *wireLog) {
	t.Helper()
	log := &wireLog{}
	rs, st, err := Send(ctxFor(t), log.tap(e.client), e.root, items, opts)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(rs) != len(items) {
		t.Fatalf("%d results for %d items", len(rs), len(items))
	}
	return rs, st, log
}

// TestSendFileBatches: many small files go in FileBatches, far fewer
// messages than files each way, and every one arrives byte-identical with
// its attributes. Without FileBatches (a slave that did not offer
// file_batches) the same files go one message each, answered one message
// each, and no message asks for batched results.
func TestSendFileBatches(t *testing.T) {
	text := func(n int, seed int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("file %d says hello. ", seed)), n/10+1)[:n]
	}
	tests := []struct {
		name   string
		n      int
		size   func(i int) int
		text   bool
		create bool
		jobs   int
		comp   pb.Compression
	}{
		{name: "1000 new files of 4 KiB", n: 1000, size: func(int) int { return 4096 }, create: true, jobs: 1},
		{name: "replaced content, sizes 0 to 3000, two streams", n: 600, size: func(i int) int { return i * 37 % 3001 }, jobs: 2},
		{name: "compressible, zstd", n: 500, size: func(i int) int { return 1000 + i }, text: true, create: true, jobs: 2,
			comp: pb.Compression_COMPRESSION_ZSTD},
		{name: "300 KiB files: bytes bound the batch", n: 20, size: func(int) int { return 300 << 10 }, create: true, jobs: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, batches := range []bool{false, true} {
				e := newEnv(t, "")
				var items []Item
				var want [][]byte
				var total int64
				for i := range tc.n {
					name := fmt.Sprintf("d%d/f%d", i%7, i)
					data := randomBytes(tc.size(i), uint64(i+1))
					if tc.text {
						data = text(tc.size(i), i)
					}
					writeFile(t, filepath.Join(e.master, name), data)
					mtime := &pb.Timestamp{Sec: 1_600_000_000 + int64(i), Nsec: 11}
					stat := &pb.Stat{Mode: unix.S_IFREG | 0o604, Mtime: mtime, Atime: mtime}
					base := fmt.Sprintf("f%d", i)
					var it Item
					if tc.create {
						it = createItem(name, base, stat)
					} else {
						it = item(e.create(t, base), name, base)
						it.Stat, it.New = stat, true
					}
					items = append(items, it)
					want = append(want, data)
					total += int64(len(data))
				}
				rs, st, log := e.sendLogged(t, items, Options{Jobs: tc.jobs, Compression: tc.comp,
					SingleMessage: true, FileBatches: batches})
				wantOK(t, rs)
				for i, data := range want {
					p := filepath.Join(e.slave, fmt.Sprintf("f%d", i))
					if got := readFile(t, p); !bytes.Equal(got, data) {
						t.Fatalf("batches=%v: %s is %d bytes, differs from the %d sent", batches, p, len(got), len(data))
					}
					if s := lstat(t, p); s.Mode&0o7777 != 0o604 || s.Mtim.Sec != 1_600_000_000+int64(i) || s.Mtim.Nsec != 11 {
						t.Errorf("batches=%v: %s has mode %#o mtime %d.%d", batches, p, s.Mode&0o7777, s.Mtim.Sec, s.Mtim.Nsec)
					}
					if rs[i].Sent != int64(len(data)) {
						t.Errorf("batches=%v: file %d: %d bytes sent, want %d", batches, i, rs[i].Sent, len(data))
					}
				}
				if st.Files != int64(tc.n) || st.Failed != 0 || st.DataBytes != total {
					t.Errorf("batches=%v: stats %+v, want %d files of %d bytes in all", batches, st, tc.n, total)
				}
				if int64(len(log.sent)) != st.Messages || int64(len(log.received)) != st.Responses {
					t.Errorf("batches=%v: stats count %d messages out and %d back; the wire saw %d and %d",
						batches, st.Messages, st.Responses, len(log.sent), len(log.received))
				}
				t.Logf("batches=%v: %d files, %d messages out, %d back", batches, tc.n, st.Messages, st.Responses)
				waitTmpEmpty(t, e.slave)
				if !batches {
					if st.Messages != int64(tc.n) || st.Responses != int64(tc.n) || log.batches != 0 || log.asked != 0 {
						t.Errorf("without batches: %d messages, %d responses, %d batches, %d asking for batched results; want %d, %d, 0, 0",
							st.Messages, st.Responses, log.batches, log.asked, tc.n, tc.n)
					}
					continue
				}
				// Per stream: a batch per 256 files or 1 MiB, and the
				// partial ones (at most one of each bound, plus the last).
				limit := int64(tc.n/batchFiles) + total/batchBytes + int64(3*tc.jobs)
				if st.Messages > limit {
					t.Errorf("%d messages for %d files of %d bytes in all; want at most %d", st.Messages, tc.n, total, limit)
				}
				// The slave answers a commit at a time, and commits a
				// FileBatch whole (unless a commit's 256-file cap cuts
				// one that follows another in it).
				if st.Responses > st.Messages+int64(tc.n/batchFiles) {
					t.Errorf("%d responses for %d files in %d messages: want at most one per message, plus one per 256 files",
						st.Responses, tc.n, st.Messages)
				}
				if log.asked != tc.jobs {
					t.Errorf("%d messages asked for batched results; want one per stream (%d)", log.asked, tc.jobs)
				}
			}
		})
	}
}

// TestSendFileBatchMixedResults: one batch holding files the slave refuses
// (a create whose name is taken, a create without its parent directory, a
// GFID the slave does not know, content that fails its digest) between
// good ones: every file gets its own result, the good ones install, the
// refused ones leave nothing behind.
func TestSendFileBatchMixedResults(t *testing.T) {
	e := newEnv(t, "")
	stat := &pb.Stat{Mode: unix.S_IFREG | 0o644}
	type file struct {
		item  Item
		data  []byte
		errno unix.Errno
	}
	e.create(t, "taken")
	known := e.create(t, "known")
	corrupt := gfid.New()
	files := []file{
		{item: createItem("a", "a", stat), data: randomBytes(100, 1)},
		{item: createItem("b", "taken", stat), data: randomBytes(200, 2), errno: unix.EEXIST},
		{item: createItem("c", "c", stat), data: randomBytes(300, 3)},
		{item: func() Item { it := createItem("d", "d", stat); it.LinkParent = gfid.New(); return it }(), data: randomBytes(400, 4),
			errno: unix.ENOENT},
		{item: item(gfid.New(), "e", "e"), data: randomBytes(500, 5), errno: unix.ENOENT},
		{item: func() Item { it := createItem("f", "f", stat); it.GFID = corrupt; return it }(), data: randomBytes(600, 6),
			errno: unix.EBADMSG},
		{item: item(known, "g", "known"), data: randomBytes(700, 7)},
		{item: createItem("h", "h", stat), data: nil},
	}
	var items []Item
	for _, f := range files {
		writeFile(t, filepath.Join(e.master, f.item.RelPath), f.data)
		items = append(items, f.item)
	}
	opts := Options{FileBatches: true, hooks: &hooks{corrupt: func(it Item, data []byte) {
		if it.GFID == corrupt {
			data[0] ^= 1
		}
	}}}
	rs, st, log := e.sendLogged(t, items, opts)
	for i, f := range files {
		r := rs[i]
		if f.errno == 0 {
			if r.Err != nil {
				t.Errorf("%s: %v, want installed", f.item.RelPath, r.Err)
				continue
			}
			name := string(f.item.LinkName)
			if got := readFile(t, filepath.Join(e.slave, name)); !bytes.Equal(got, f.data) {
				t.Errorf("%s: slave %s holds %d bytes, not the %d sent", f.item.RelPath, name, len(got), len(f.data))
			}
			continue
		}
		var re *RemoteError
		if !errors.As(r.Err, &re) || re.Errno != f.errno {
			t.Errorf("%s: %v, want the slave's %v", f.item.RelPath, r.Err, f.errno)
		}
	}
	if st.Files != 4 || st.Failed != 4 {
		t.Errorf("stats %+v, want 4 installed and 4 failed", st)
	}
	if st.Messages != 1 || log.batches != 1 || len(log.sent[0]) != len(files) {
		t.Errorf("%d messages (%d batches, the first starting %d files); want all %d files in one batch",
			st.Messages, log.batches, len(log.sent[0]), len(files))
	}
	if got := readFile(t, filepath.Join(e.slave, "taken")); len(got) != 0 {
		t.Errorf("the taken name's file was replaced (%d bytes)", len(got))
	}
	for _, name := range []string{"d", "e", "f"} {
		if err := unix.Lstat(filepath.Join(e.slave, name), new(unix.Stat_t)); !errors.Is(err, unix.ENOENT) {
			t.Errorf("refused file %s left a name: %v", name, err)
		}
	}
	waitTmpEmpty(t, e.slave)
}

// TestSendFileBatchChangedDuringRead: a file that changes after it was
// read for a batch, before it joins it, is not sent (ErrChanged,
// retryable) and the slave never hears of it; the rest of the batch goes
// and installs; sent again, it arrives.
func TestSendFileBatchChangedDuringRead(t *testing.T) {
	e := newEnv(t, "")
	stat := &pb.Stat{Mode: unix.S_IFREG | 0o644}
	var items []Item
	var want [][]byte
	for i := range 6 {
		name := fmt.Sprintf("f%d", i)
		data := randomBytes(1000+i, uint64(i))
		writeFile(t, filepath.Join(e.master, name), data)
		items = append(items, createItem(name, name, stat))
		want = append(want, data)
	}
	const victim = 2
	grown := append(bytes.Clone(want[victim]), "more"...)
	hookedOnce := false
	opts := Options{FileBatches: true, hooks: &hooks{afterRead: func(it Item) {
		if it.GFID == items[victim].GFID && !hookedOnce {
			hookedOnce = true
			writeFile(t, filepath.Join(e.master, it.RelPath), grown)
		}
	}}}
	rs, st, log := e.sendLogged(t, items, opts)
	for i, r := range rs {
		switch {
		case i == victim:
			if !errors.Is(r.Err, ErrChanged) || !r.Retryable() || r.Sent != 0 {
				t.Errorf("changed file: %v (retryable %v, %d bytes sent), want ErrChanged, retryable, nothing sent", r.Err, r.Retryable(), r.Sent)
			}
		case r.Err != nil:
			t.Errorf("file %d: %v", i, r.Err)
		default:
			e.sameContent(t, items[i].RelPath, want[i])
		}
	}
	if err := unix.Lstat(filepath.Join(e.slave, items[victim].RelPath), new(unix.Stat_t)); !errors.Is(err, unix.ENOENT) {
		t.Errorf("the changed file reached the slave: %v", err)
	}
	if st.Messages != 1 || len(log.sent[0]) != len(items)-1 || slices.Contains(log.sent[0], items[victim].GFID) {
		t.Errorf("%d messages, the first starting %v; want one batch of the %d unchanged files", st.Messages, log.sent[0], len(items)-1)
	}
	waitTmpEmpty(t, e.slave)
	wantOK(t, must(e.send(t, items[victim:victim+1], Options{FileBatches: true})))
	e.sameContent(t, items[victim].RelPath, grown)
}

// TestSendFileBatchInterleaved: on one stream, batches of small files go
// between a large file's chunks and a delta, in item order: each batch is
// sent before the next file that is not a small one starts (a delta's
// before its block sums are asked for), and everything arrives.
func TestSendFileBatchInterleaved(t *testing.T) {
	e := newEnv(t, "")
	stat := &pb.Stat{Mode: unix.S_IFREG | 0o644}
	small := func(name string, n int) (Item, []byte) {
		data := randomBytes(n, uint64(n))
		writeFile(t, filepath.Join(e.master, name), data)
		return createItem(name, name, stat), data
	}
	oldBig := randomBytes(1<<20, 40)
	freshBig := bytes.Clone(oldBig)
	copy(freshBig[500_000:], "a change in the middle")
	delta := e.seed(t, "delta", oldBig, freshBig)
	var items []Item
	want := map[string][]byte{"delta": freshBig}
	add := func(it Item, data []byte) {
		items = append(items, it)
		want[it.RelPath] = data
	}
	add(small("s1", 10))
	add(small("s2", 2000))
	large := randomBytes(3<<20+5, 41)
	writeFile(t, filepath.Join(e.master, "large"), large)
	add(createItem("large", "large", stat), large)
	add(small("s3", 30))
	add(small("s4", 0))
	items = append(items, delta)
	add(small("s5", 500))
	add(small("s6", 600))
	add(small("s7", 700))
	rs, st, log := e.sendLogged(t, items, Options{FileBatches: true, ChunkSize: 1 << 20})
	wantOK(t, rs)
	for name, data := range want {
		e.sameContent(t, name, data)
	}
	if st.DeltaFiles != 1 {
		t.Errorf("stats %+v, want one delta", st)
	}
	// The files each message started, messages that start none (chunks,
	// copies, trailers) left out.
	var got [][]string
	byGFID := map[gfid.GFID]string{}
	for _, it := range items {
		byGFID[it.GFID] = it.RelPath
	}
	for _, starts := range log.sent {
		if len(starts) == 0 {
			continue
		}
		var names []string
		for _, g := range starts {
			names = append(names, byGFID[g])
		}
		got = append(got, names)
	}
	wantStarts := [][]string{{"s1", "s2"}, {"large"}, {"s3", "s4"}, {"delta"}, {"s5", "s6", "s7"}}
	if fmt.Sprint(got) != fmt.Sprint(wantStarts) {
		t.Errorf("files started per message %v, want %v", got, wantStarts)
	}
	if log.batches != 3 || log.asked != 1 {
		t.Errorf("%d batches, %d messages asking for batched results; want 3 and 1", log.batches, log.asked)
	}
	waitTmpEmpty(t, e.slave)
}

// TestSendFileBatchDamaged: a batched file whose content does not match
// its digest is refused alone (EBADMSG) and its previous content kept;
// the batch's other file installs.
func TestSendFileBatchDamaged(t *testing.T) {
	e := newEnv(t, "")
	old, fresh := randomBytes(3000, 1), randomBytes(4000, 2)
	g := e.create(t, "f")
	writeFile(t, filepath.Join(e.master, "f"), old)
	wantOK(t, must(e.send(t, []Item{item(g, "f", "f")}, Options{FileBatches: true})))
	writeFile(t, filepath.Join(e.master, "f"), fresh)
	writeFile(t, filepath.Join(e.master, "ok"), fresh)
	items := []Item{item(g, "f", "f"), createItem("ok", "ok", &pb.Stat{Mode: unix.S_IFREG | 0o644})}
	opts := Options{FileBatches: true, hooks: &hooks{corrupt: func(it Item, data []byte) {
		if it.GFID == g {
			data[len(data)/2] ^= 1
		}
	}}}
	rs, st := e.send(t, items, opts)
	if !errors.Is(rs[0].Err, unix.EBADMSG) || rs[1].Err != nil {
		t.Errorf("results %v and %v, want EBADMSG and success", rs[0].Err, rs[1].Err)
	}
	if st.Messages != 1 {
		t.Errorf("%d messages, want one batch", st.Messages)
	}
	e.sameContent(t, "f", old)
	e.sameContent(t, "ok", fresh)
	waitTmpEmpty(t, e.slave)
}
