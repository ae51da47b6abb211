package changelog

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/georep/georep/syncer/index"
)

// testRecord describes one info record for encodeEvent.
type testRecord struct {
	typ        uint8
	fsid       [2]int32
	handleType int32
	handle     []byte
	name       string // written NUL-terminated for the name types
}

// encodeEvent lays out one fanotify event as the kernel does (native
// endian, records padded to 4 bytes).
func encodeEvent(mask uint64, recs ...testRecord) []byte {
	ne := binary.NativeEndian
	var info []byte
	for _, r := range recs {
		body := ne.AppendUint32(nil, uint32(r.fsid[0]))
		body = ne.AppendUint32(body, uint32(r.fsid[1]))
		body = ne.AppendUint32(body, uint32(len(r.handle)))
		body = ne.AppendUint32(body, uint32(r.handleType))
		body = append(body, r.handle...)
		if hasName(r.typ) {
			body = append(append(body, r.name...), 0)
		}
		for (4+len(body))%4 != 0 {
			body = append(body, 0)
		}
		info = append(info, r.typ, 0)
		info = ne.AppendUint16(info, uint16(4+len(body)))
		info = append(info, body...)
	}
	b := ne.AppendUint32(nil, uint32(unix.FAN_EVENT_METADATA_LEN+len(info)))
	b = append(b, unix.FANOTIFY_METADATA_VERSION, 0)
	b = ne.AppendUint16(b, unix.FAN_EVENT_METADATA_LEN)
	b = ne.AppendUint64(b, mask)
	b = ne.AppendUint32(b, uint32(0xffffffff)) // FAN_NOFD
	b = ne.AppendUint32(b, 1234)
	return append(b, info...)
}

// parsedRecord is a Record with copied bytes, for comparison.
type parsedRecord struct {
	Type       uint8
	Fsid       [2]int32
	HandleType int32
	Handle     string
	Name       string
	HasName    bool
}

type parsedEvent struct {
	Mask    uint64
	Records []parsedRecord
}

func collect(buf []byte) ([]parsedEvent, error) {
	var out []parsedEvent
	err := ParseEvents(buf, func(ev *Event) {
		pe := parsedEvent{Mask: ev.Mask}
		for _, r := range ev.Records {
			pe.Records = append(pe.Records, parsedRecord{r.Type, r.Fsid, r.HandleType, string(r.Handle), string(r.Name), r.Name != nil})
		}
		out = append(out, pe)
	})
	return out, err
}

var (
	dirRec  = testRecord{typ: unix.FAN_EVENT_INFO_TYPE_DFID_NAME, fsid: [2]int32{7, 9}, handleType: 1, handle: []byte{1, 2, 3, 4, 5, 6, 7, 8}, name: "file.txt"}
	fidRec  = testRecord{typ: unix.FAN_EVENT_INFO_TYPE_FID, fsid: [2]int32{7, 9}, handleType: 1, handle: []byte{9, 9, 9, 9, 9, 9, 9, 9}}
	selfRec = testRecord{typ: unix.FAN_EVENT_INFO_TYPE_DFID_NAME, fsid: [2]int32{7, 9}, handleType: 1, handle: []byte{1, 2, 3, 4, 5, 6, 7, 8}, name: "."}
)

// kernelCapture is one read from a real group (6.18, ext4): create and
// write "x", mkdir "sub", chmod it (reported on the directory itself as
// "."), rename it to "sub2", rmdir it.
const kernelCapture = "38000000030018000001000000000000ffffffffa3620000020020008052b032a507542f0800000001000000c1e09d00989f70547800000054000000030018000a00000000000000ffffffffa3620000020020008052b032a507542f0800000001000000c1e09d00989f70547800000001001c008052b032a507542f0800000001000000d1e09d008c9fe11e38000000030018004001004000000000ffffffffa3620000020020008052b032a507542f0800000001000000c1e09d00989f7054737562003800000003001800040c004000000000ffffffffa3620000020020008052b032a507542f0800000001000000e1e09d007fa14eab2e0000003c000000030018008002004000000000ffffffffa3620000020024008052b032a507542f0800000001000000c1e09d00989f70547375623200000000"

func TestParseKernelCapture(t *testing.T) {
	buf, err := hex.DecodeString(kernelCapture)
	if err != nil {
		t.Fatal(err)
	}
	got, err := collect(buf)
	if err != nil {
		t.Fatalf("a real kernel read did not parse: %v", err)
	}
	var names []string
	for _, ev := range got {
		for _, r := range ev.Records {
			if r.HasName {
				names = append(names, r.Name)
			}
		}
	}
	if diff := cmp.Diff([]string{"x", "x", "sub", ".", "sub2"}, names); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
}

func TestParseEvents(t *testing.T) {
	overflow := encodeEvent(unix.FAN_Q_OVERFLOW)
	good := encodeEvent(unix.FAN_CREATE, dirRec)
	unknown := encodeEvent(unix.FAN_MODIFY, dirRec)
	// Splice a pidfd record (type 4, 8 bytes) in front: it must be skipped.
	unknown = append(append(append([]byte{}, unknown[:24]...), 4, 0, 8, 0, 1, 0, 0, 0), unknown[24:]...)
	binary.NativeEndian.PutUint32(unknown[0:4], uint32(len(unknown)))

	mutate := func(b []byte, f func([]byte)) []byte {
		c := bytes.Clone(b)
		f(c)
		return c
	}
	pr := func(r testRecord) parsedRecord {
		return parsedRecord{r.typ, r.fsid, r.handleType, string(r.handle), r.name, hasName(r.typ)}
	}
	tests := []struct {
		name    string
		buf     []byte
		want    []parsedEvent
		wantErr bool
	}{
		{name: "empty", buf: nil},
		{name: "overflow has no records", buf: overflow, want: []parsedEvent{{Mask: unix.FAN_Q_OVERFLOW}}},
		{name: "dir fid and name", buf: good, want: []parsedEvent{{Mask: unix.FAN_CREATE, Records: []parsedRecord{pr(dirRec)}}}},
		{name: "dir name and child fid", buf: encodeEvent(unix.FAN_ATTRIB, dirRec, fidRec),
			want: []parsedEvent{{Mask: unix.FAN_ATTRIB, Records: []parsedRecord{pr(dirRec), pr(fidRec)}}}},
		{name: "directory itself as dot", buf: encodeEvent(unix.FAN_ATTRIB|unix.FAN_ONDIR, selfRec),
			want: []parsedEvent{{Mask: unix.FAN_ATTRIB | unix.FAN_ONDIR, Records: []parsedRecord{pr(selfRec)}}}},
		{name: "unknown record type skipped", buf: unknown, want: []parsedEvent{{Mask: unix.FAN_MODIFY, Records: []parsedRecord{pr(dirRec)}}}},
		{name: "two events", buf: append(bytes.Clone(good), overflow...),
			want: []parsedEvent{{Mask: unix.FAN_CREATE, Records: []parsedRecord{pr(dirRec)}}, {Mask: unix.FAN_Q_OVERFLOW}}},
		{name: "short header", buf: good[:10], wantErr: true},
		{name: "bad version", buf: mutate(good, func(b []byte) { b[4] = 2 }), wantErr: true},
		{name: "event shorter than header", buf: mutate(good, func(b []byte) { binary.NativeEndian.PutUint32(b, 8) }), wantErr: true},
		{name: "event longer than read", buf: mutate(good, func(b []byte) { binary.NativeEndian.PutUint32(b, uint32(len(b)+4)) }), wantErr: true},
		{name: "metadata len too small", buf: mutate(good, func(b []byte) { binary.NativeEndian.PutUint16(b[6:], 8) }), wantErr: true},
		{name: "record len below header", buf: mutate(good, func(b []byte) { binary.NativeEndian.PutUint16(b[26:], 2) }), wantErr: true},
		{name: "record len past event", buf: mutate(good, func(b []byte) { binary.NativeEndian.PutUint16(b[26:], 0xfff0) }), wantErr: true},
		{name: "handle past record", buf: mutate(good, func(b []byte) { binary.NativeEndian.PutUint32(b[36:], 200) }), wantErr: true},
		{name: "handle over MAX_HANDLE_SZ", buf: encodeEvent(unix.FAN_CREATE, testRecord{typ: 2, handle: make([]byte, 129), name: "x"}), wantErr: true},
		{name: "empty handle", buf: encodeEvent(unix.FAN_CREATE, testRecord{typ: 2, name: "x"}), wantErr: true},
		{name: "record shorter than fid header", buf: mutate(encodeEvent(unix.FAN_CREATE, fidRec), func(b []byte) {
			binary.NativeEndian.PutUint16(b[26:], 12)
			binary.NativeEndian.PutUint32(b[0:], 24+12)
		})[:36], wantErr: true},
		{name: "name without NUL", buf: mutate(good, func(b []byte) {
			for i := 48; i < len(b); i++ {
				b[i] = 'a'
			}
		}), wantErr: true},
		{name: "empty name", buf: encodeEvent(unix.FAN_CREATE, testRecord{typ: 2, handle: []byte{1}, name: ""}), wantErr: true},
		{name: "name with slash", buf: encodeEvent(unix.FAN_CREATE, testRecord{typ: 2, handle: []byte{1}, name: "a/b"}), wantErr: true},
		{name: "dotdot name", buf: encodeEvent(unix.FAN_CREATE, testRecord{typ: 2, handle: []byte{1}, name: ".."}), wantErr: true},
		{name: "stray bytes in info", buf: mutate(append(bytes.Clone(good), 0, 0), func(b []byte) { binary.NativeEndian.PutUint32(b, uint32(len(b))) }), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := collect(tc.buf)
			if tc.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseEvents error = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEvents: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseKernelEvents reads real fanotify bytes and checks that the
// directory record's key equals the key name_to_handle_at gives the same
// directory: the detector's keys and the index's keys must agree.
func TestParseKernelEvents(t *testing.T) {
	dir := t.TempDir()
	fd := newFanotifyGroup(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantKey := keyOf(t, dir)
	var got []string
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, readBufSize)
	for len(got) == 0 && time.Now().Before(deadline) {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			pollReadable(t, fd, deadline)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := ParseEvents(buf[:n], func(ev *Event) {
			for _, r := range ev.Records {
				if r.Type == unix.FAN_EVENT_INFO_TYPE_DFID_NAME && KeyFromHandle(r.HandleType, r.Handle) == wantKey {
					got = append(got, string(r.Name))
				}
			}
		}); err != nil {
			t.Fatalf("kernel bytes did not parse: %v", err)
		}
	}
	if len(got) == 0 || got[0] != "hello" {
		t.Fatalf("events in %s named %q, want \"hello\" first", dir, got)
	}
}

func newFanotifyGroup(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_REPORT_DFID_NAME|unix.FAN_REPORT_FID|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY)
	if err != nil {
		t.Fatalf("fanotify_init (these tests run as root): %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, fanotifyMask, unix.AT_FDCWD, dir); err != nil {
		t.Fatalf("fanotify_mark: %v", err)
	}
	return fd
}

func pollReadable(t *testing.T, fd int, deadline time.Time) {
	t.Helper()
	ms := int(time.Until(deadline) / time.Millisecond)
	if ms <= 0 {
		return
	}
	if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms); err != nil && !errors.Is(err, unix.EINTR) {
		t.Fatal(err)
	}
}

// keyOf is the index's key for the directory at path, as a scan makes it.
func keyOf(t *testing.T, path string) index.Key {
	t.Helper()
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	k, err := index.KeyOf(fd, "", &st)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// FuzzParseEvents feeds arbitrary bytes to the parser: it must never panic
// or read out of bounds, and what it delivers must respect the invariants
// the detector relies on.
func FuzzParseEvents(f *testing.F) {
	f.Add(encodeEvent(unix.FAN_CREATE, dirRec))
	f.Add(encodeEvent(unix.FAN_ATTRIB, dirRec, fidRec))
	f.Add(encodeEvent(unix.FAN_Q_OVERFLOW))
	f.Fuzz(func(t *testing.T, buf []byte) {
		total := 0
		err := ParseEvents(buf, func(ev *Event) {
			for _, r := range ev.Records {
				if len(r.Handle) == 0 || len(r.Handle) > maxHandleBytes {
					t.Fatalf("handle of %d bytes delivered", len(r.Handle))
				}
				if hasName(r.Type) != (r.Name != nil) {
					t.Fatalf("record type %d with name %q", r.Type, r.Name)
				}
				if bytes.IndexByte(r.Name, '/') >= 0 || bytes.IndexByte(r.Name, 0) >= 0 || string(r.Name) == ".." {
					t.Fatalf("name %q delivered", r.Name)
				}
				total += len(r.Handle) + len(r.Name)
			}
		})
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("error %v does not wrap ErrMalformed", err)
		}
		if total > len(buf) {
			t.Fatalf("delivered %d bytes of handles and names from %d input bytes", total, len(buf))
		}
	})
}

// BenchmarkParseEvents reports events/s through the parser on reads full of
// the commonest event (a name in a directory plus the child's fid).
func BenchmarkParseEvents(b *testing.B) {
	one := encodeEvent(unix.FAN_MODIFY|unix.FAN_CLOSE_WRITE, dirRec, fidRec)
	var buf []byte
	for len(buf)+len(one) <= readBufSize {
		buf = append(buf, one...)
	}
	perRead := len(buf) / len(one)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := ParseEvents(buf, func(ev *Event) { n += len(ev.Records) }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(perRead*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkFanotifyFilter reports events/s through the parser and the
// filter to the root (placements cached, as in steady state), on reads of
// events in a real directory beneath a real root.
func BenchmarkFanotifyFilter(b *testing.B) {
	base := b.TempDir()
	rootPath := filepath.Join(base, "root")
	if err := os.MkdirAll(filepath.Join(rootPath, "d"), 0o755); err != nil {
		b.Fatal(err)
	}
	root, err := openRoot(rootPath, filepath.Join(base, "state"))
	if err != nil {
		b.Fatal(err)
	}
	defer root.close()
	var st unix.Statfs_t
	if err := unix.Statfs(rootPath, &st); err != nil {
		b.Fatal(err)
	}
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, filepath.Join(rootPath, "d"), 0)
	if err != nil {
		b.Fatal(err)
	}
	var buf []byte
	for i := 0; len(buf) < readBufSize-512; i++ {
		buf = append(buf, encodeEvent(unix.FAN_MODIFY, testRecord{typ: unix.FAN_EVENT_INFO_TYPE_DFID_NAME, fsid: st.Fsid.Val,
			handleType: h.Type(), handle: h.Bytes(), name: fmt.Sprintf("file%d", i%64)})...)
	}
	events := 0
	if err := ParseEvents(buf, func(*Event) { events++ }); err != nil {
		b.Fatal(err)
	}
	s := &fanotifySource{root: root, fsid: st.Fsid.Val, cache: map[string]placement{}, log: slog.Default()}
	b.ReportAllocs()
	for b.Loop() {
		set, overflow := DirtySet{}, false
		if err := ParseEvents(buf, func(ev *Event) { s.handle(ev, set, &overflow) }); err != nil {
			b.Fatal(err)
		}
		if len(set) != 1 || len(set[KeyFromHandle(h.Type(), h.Bytes())].Names) != 64 {
			b.Fatalf("dirty set %s", describe(set))
		}
	}
	b.ReportMetric(float64(events*b.N)/b.Elapsed().Seconds(), "events/s")
}
