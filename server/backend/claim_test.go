package backend

import (
	"sync"
	"testing"
	"time"

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
		others, claimed, err := b.ClaimForeignMark(s.mark, s.at, s.force)
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
				_, claimed, err := backends[i%2].ClaimForeignMark(m, now, false)
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
