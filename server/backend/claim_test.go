package backend

import (
	"bytes"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

func claimMark(holder string, expires time.Time) *pb.VolumeMark {
	return &pb.VolumeMark{Uuid: gfid.New().Bytes(), Version: &pb.Version{Major: 1}, Holder: holder,
		Expires: &pb.Timestamp{Sec: expires.Unix()}}
}

// TestClaimForeignMark: a claim is refused while another master's mark is
// valid and names it, is taken over with force, and renews the claimer's
// own mark; an expired mark holds nothing.
func TestClaimForeignMark(t *testing.T) {
	b, _ := newBackend(t)
	now := time.Unix(1_800_000_000, 0)
	a := claimMark("a:/data", now.Add(time.Minute))
	other := claimMark("b:/data", now.Add(time.Minute))

	steps := []struct {
		name        string
		mark        *pb.VolumeMark
		at          time.Time
		force       bool
		wantClaimed bool
		wantOthers  []string
	}{
		{"free root", a, now, false, true, nil},
		{"own mark renewed", a, now.Add(time.Second), false, true, nil},
		{"held by a", other, now.Add(2 * time.Second), false, false, []string{"a:/data"}},
		{"forced over a", other, now.Add(3 * time.Second), true, true, []string{"a:/data"}},
		{"a now sees b", a, now.Add(4 * time.Second), false, false, []string{"b:/data"}},
		{"b's mark expired", a, now.Add(2 * time.Minute), false, true, nil},
	}
	for _, s := range steps {
		// As the service records it: valid for a minute from the claim.
		s.mark.Expires = &pb.Timestamp{Sec: s.at.Add(time.Minute).Unix()}
		others, claimed, err := b.ClaimForeignMark(s.mark, s.at, s.force, nil)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if claimed != s.wantClaimed {
			t.Errorf("%s: claimed = %v, want %v", s.name, claimed, s.wantClaimed)
		}
		var got []string
		for _, o := range others {
			got = append(got, o.GetHolder())
		}
		if len(got) != len(s.wantOthers) || (len(got) > 0 && got[0] != s.wantOthers[0]) {
			t.Errorf("%s: others = %v, want %v", s.name, got, s.wantOthers)
		}
		// b's mark is good for a minute from "forced over a"; the last step
		// comes after it expired, so a's fresh mark is the only one left.
		if s.name == "b's mark expired" {
			marks, err := b.ForeignMarks(s.at)
			if err != nil {
				t.Fatal(err)
			}
			if len(marks) != 1 || marks[0].GetHolder() != "a:/data" {
				t.Errorf("%s: marks left = %v, want only a's", s.name, marks)
			}
		}
	}
}

// TestClaimForeignMarkRace: masters claiming one root at once through two
// slave processes' backends (two opens, as two ssh sessions make) — exactly
// one wins, every round. Without the flock both backends could read a free
// root and both record a mark.
func TestClaimForeignMarkRace(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	for round := range 20 {
		dir := t.TempDir()
		backends := []*Backend{openBackend(t, dir, Options{}), openBackend(t, dir, Options{})}
		const masters = 8
		var wg sync.WaitGroup
		won := make(chan string, masters)
		for i := range masters {
			m := claimMark(string(rune('a'+i))+":/data", now.Add(time.Minute))
			wg.Go(func() {
				_, claimed, err := backends[i%2].ClaimForeignMark(m, now, false, nil)
				if err != nil {
					t.Errorf("round %d: claim by %s: %v", round, m.GetHolder(), err)
				}
				if claimed {
					won <- m.GetHolder()
				}
			})
		}
		wg.Wait()
		close(won)
		var winners []string
		for w := range won {
			winners = append(winners, w)
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d masters claimed the root (%v), want exactly one", round, len(winners), winners)
		}
		marks, err := backends[0].ForeignMarks(now)
		if err != nil {
			t.Fatal(err)
		}
		if len(marks) != 1 || marks[0].GetHolder() != winners[0] {
			t.Fatalf("round %d: recorded marks %v, want only the winner %s's", round, marks, winners[0])
		}
	}
}

// flushedWriter begins a put of content for h on b and verifies and
// flushes it: what InstallAll takes.
func flushedWriter(t *testing.T, b *Backend, h PutHeader, content []byte) *FileWriter {
	t.Helper()
	w, err := b.BeginPut(h)
	if err != nil {
		t.Fatalf("BeginPut %s: %v", h.LinkName, err)
	}
	t.Cleanup(w.Abort)
	if err := w.WriteAt(content, 0); err != nil {
		t.Fatal(err)
	}
	sp := []putSpan{{0, content}}
	if err := w.Verify(digestOf(h.Size, sp)); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncPuts([]*FileWriter{w}); err != nil {
		t.Fatal(err)
	}
	return w
}

// TestInstallFenced: two slave processes on one root (two backends), the
// first serving a master connection that is lost while it holds a flushed
// file, the second the connection the master made next. Once the new
// connection has claimed the root, the old one's install fails with
// ESTALE and the file keeps what the new one installed; a claim without a
// session fences every session; an install without one is never fenced.
func TestInstallFenced(t *testing.T) {
	dir := t.TempDir()
	old, cur := openBackend(t, dir, Options{}), openBackend(t, dir, Options{})
	x := gfid.New()
	writeOld(t, cur, dir, x, "f", []byte("v0"))
	h := func(content string) PutHeader {
		return PutHeader{GFID: x, Size: int64(len(content)), LinkParent: gfid.Root, LinkName: "f"}
	}
	now := time.Unix(1_800_000_000, 0)
	m := claimMark("m:/data", now.Add(time.Minute))
	s1, s2 := bytes.Repeat([]byte{1}, SessionSize), bytes.Repeat([]byte{2}, SessionSize)
	claim := func(b *Backend, session []byte) {
		t.Helper()
		if _, claimed, err := b.ClaimForeignMark(m, now, false, session); err != nil || !claimed {
			t.Fatalf("claim with session %x: claimed %v, %v", session, claimed, err)
		}
	}
	install := func(b *Backend, content string, session []byte) error {
		t.Helper()
		return b.InstallAll([]*FileWriter{flushedWriter(t, b, h(content), []byte(content))}, session)[0]
	}
	wantContent := func(want string) {
		t.Helper()
		if got := fileBytes(t, filepath.Join(dir, "f")); string(got) != want {
			t.Errorf("f holds %q, want %q", got, want)
		}
	}

	claim(old, s1)
	if err := install(old, "v1", s1); err != nil {
		t.Fatalf("install by the connection holding the claim: %v", err)
	}
	wantContent("v1")
	stale := flushedWriter(t, old, h("stale"), []byte("stale"))
	claim(cur, s2)
	if err := install(cur, "v2", s2); err != nil {
		t.Fatalf("install by the new connection: %v", err)
	}
	if err := old.InstallAll([]*FileWriter{stale}, s1)[0]; !errors.Is(err, unix.ESTALE) {
		t.Fatalf("install by the superseded connection: %v, want ESTALE", err)
	}
	wantContent("v2")
	checkTmpEmpty(t, dir)

	// A master that sends no session (an older georep) still supersedes.
	claim(old, nil)
	if err := install(cur, "v3", s2); !errors.Is(err, unix.ESTALE) {
		t.Fatalf("install with session s2 after a claim without one: %v, want ESTALE", err)
	}
	if err := install(cur, "v4", nil); err != nil {
		t.Fatalf("install without a session: %v", err)
	}
	wantContent("v4")
	if _, _, err := old.ClaimForeignMark(m, now, false, []byte("short")); !errors.Is(err, unix.EINVAL) {
		t.Errorf("claim with a 5-byte session: %v, want EINVAL", err)
	}
}

// TestClaimWaitsForFencedInstall: a claim cannot come between an
// install's fence check and the install itself: it waits for the install
// under way on another slave process, and the install completes.
func TestClaimWaitsForFencedInstall(t *testing.T) {
	dir := t.TempDir()
	old, cur := openBackend(t, dir, Options{}), openBackend(t, dir, Options{})
	x := gfid.New()
	writeOld(t, cur, dir, x, "f", []byte("v0"))
	now := time.Unix(1_800_000_000, 0)
	m := claimMark("m:/data", now.Add(time.Minute))
	s1, s2 := bytes.Repeat([]byte{1}, SessionSize), bytes.Repeat([]byte{2}, SessionSize)
	if _, claimed, err := old.ClaimForeignMark(m, now, false, s1); err != nil || !claimed {
		t.Fatalf("first claim: %v %v", claimed, err)
	}
	w := flushedWriter(t, old, PutHeader{GFID: x, Size: 2, LinkParent: gfid.Root, LinkName: "f"}, []byte("v1"))
	claimed := make(chan error, 1)
	var started, early bool
	w.installHook = func(string) error {
		if started {
			return nil
		}
		started = true
		go func() {
			_, _, err := cur.ClaimForeignMark(m, now, false, s2)
			claimed <- err
		}()
		select {
		case err := <-claimed:
			early = true
			t.Errorf("a claim completed (%v) while an install it fences was under way", err)
		case <-time.After(200 * time.Millisecond):
		}
		return nil
	}
	if err := old.InstallAll([]*FileWriter{w}, s1)[0]; err != nil {
		t.Fatalf("install under way when the claim came: %v", err)
	}
	if !started {
		t.Fatal("the install never reached its hook")
	}
	if !early {
		select {
		case err := <-claimed:
			if err != nil {
				t.Fatalf("claim after the install: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the claim did not complete within 10s of the install")
		}
	}
	if got := fileBytes(t, filepath.Join(dir, "f")); string(got) != "v1" {
		t.Errorf("f holds %q, want v1", got)
	}
}
