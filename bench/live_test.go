//go:build benchcompare

package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/georep/georep/internal/status"
	"github.com/georep/georep/internal/testbuf"
)

// liveSession is a running `georep master` (no --once), the way georep is
// meant to run: it replicates changes as they happen, so its incremental
// is the time from the end of the changes to a status whose stime covers
// them, with no login and no crawl of the tree.
type liveSession struct {
	t      *bed
	cmd    *exec.Cmd
	state  string
	counts string // its relays' counts file
	log    *testbuf.Buffer
	done   chan error // the process's exit, once
	exited bool       // done was received

	// At mark: the CPU and bytes so far, and how much log there was.
	cpuLocal0, cpuRemote0 time.Duration
	wire0                 int64
	log0                  int
}

// startLive starts a session to slave and waits until its first crawl is
// on the slave (Changelog Crawl, stime set): its initial sync.
func (t *bed) startLive(b *testing.B, network, slave, state string) (sample, *liveSession) {
	b.Helper()
	t.sshd.SetAuthorizedKeyOptions(b, fmt.Sprintf(`restrict,command="%s slave --stdio --root %s"`, t.georep, slave))
	s := &liveSession{t: t, state: state, counts: filepath.Join(t.work, "relay-live.counts"), log: &testbuf.Buffer{}, done: make(chan error, 1)}
	s.removeCounts(b)
	argv := []string{"master", "--progress=false", "--log-format", "json", "--root", t.master,
		"--slave", fmt.Sprintf("ssh://%s@%s:%d%s", t.sshd.User, t.sshd.Host, t.sshd.Port, slave),
		"--state", state, "--ssh-command", t.liveSSH[network]}
	syscall.Sync()
	s.mark(b)
	s.cmd = exec.Command(t.georep, argv...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", t.georep, err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	// A benchmark that fails while the session runs must not leave it
	// holding the slave's filesystem, which the harness unmounts.
	b.Cleanup(func() {
		if !s.exited {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	})
	s.await(b, func(st *status.Status) bool {
		return st.Crawl == status.ChangelogCrawl && st.LastSynced.After(start)
	}, 10*time.Minute)
	wall := time.Since(start)
	sm := s.measure(b, wall)
	// The first crawl's extra data channels (WAN) close in the background;
	// the next tool starts once only the session's own sshd session is left.
	t.awaitSessions(b, 1, "the running session's extra sshd sessions after its first sync")
	return sm, s
}

// mark records the CPU, bytes and log so far: what measure subtracts.
func (s *liveSession) mark(b *testing.B) {
	b.Helper()
	if s.cmd != nil {
		s.cpuLocal0 = treeCPU(b, s.cmd.Process.Pid)
	}
	s.cpuRemote0 = s.t.sshdTreeCPU(b)
	w, err := liveTotal(s.counts)
	if err != nil {
		b.Fatal(err)
	}
	s.wire0, s.log0 = w, len(s.log.Bytes())
}

// measure is the sample since mark, of wall time wall.
func (s *liveSession) measure(b *testing.B, wall time.Duration) sample {
	b.Helper()
	w := s.settledWire(b)
	out := s.log.Bytes()[s.log0:]
	sm := sample{wall: wall, wireBytes: w - s.wire0, cpuLocal: treeCPU(b, s.cmd.Process.Pid) - s.cpuLocal0,
		cpuRemote: s.t.sshdTreeCPU(b) - s.cpuRemote0, files: georepFilesSent(out)}
	s.mark(b)
	return sm
}

// settledWire is the relays' running total once it has stopped moving:
// every byte of the sync crossed them before the status said so, but a
// relay writes its total up to 10 ms later.
func (s *liveSession) settledWire(b *testing.B) int64 {
	b.Helper()
	deadline := time.Now().Add(5 * time.Second)
	last, stable := int64(-1), 0
	for {
		w, err := liveTotal(s.counts)
		if err != nil {
			b.Fatal(err)
		}
		if w == last {
			stable++
		} else {
			last, stable = w, 0
		}
		// Unchanged over three of the relays' 10 ms periods.
		if stable >= 3 {
			return w
		}
		if time.Now().After(deadline) {
			b.Fatalf("the running session's relays kept counting for 5s after it was in sync (last %d bytes)", w)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// synced waits until the session's stime covers since (the end of the
// changes) and measures from since.
func (s *liveSession) synced(b *testing.B, since time.Time) sample {
	b.Helper()
	s.await(b, func(st *status.Status) bool { return !st.LastSynced.Before(since) }, 5*time.Minute)
	return s.measure(b, time.Since(since))
}

// await polls the session's status every 2 ms until ok, failing the
// benchmark when the session exits or limit passes.
func (s *liveSession) await(b *testing.B, ok func(*status.Status) bool, limit time.Duration) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for {
		if st, err := status.Read(s.state); err == nil && ok(st) {
			return
		}
		select {
		case err := <-s.done:
			s.exited = true
			b.Fatalf("the running session exited (%v) before it was in sync:\n%s", err, s.log.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("the running session was not in sync within %v:\n%s", limit, s.log.Bytes())
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// stop ends the session with SIGTERM, as an operator would, and waits for
// its relays and sshd sessions to be gone.
func (s *liveSession) stop(b *testing.B) {
	b.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		b.Fatalf("stop the running session: %v", err)
	}
	select {
	case err := <-s.done:
		s.exited = true
		if err != nil {
			b.Fatalf("the running session ended with %v:\n%s", err, s.log.Bytes())
		}
	case <-time.After(time.Minute):
		b.Fatalf("the running session did not stop within a minute of SIGTERM:\n%s", s.log.Bytes())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		started, ended, _, err := relayTotals(s.counts)
		if err != nil {
			b.Fatal(err)
		}
		if started == ended && !s.t.sshdHasChildren(b) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the running session's relays (%d started, %d ended) or sshd sessions outlived it by 30s", started, ended)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.removeCounts(b)
}

func (s *liveSession) removeCounts(b *testing.B) {
	b.Helper()
	files, err := filepath.Glob(s.counts + "*")
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			b.Fatal(err)
		}
	}
}

// treeCPU is the user+sys time of process pid and its descendants, alive
// or reaped, from /proc.
func treeCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	var ticks int64
	for _, p := range descendants(b, pid, true) {
		ticks += procTicks(b, p, true)
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(ticks) * 10 * time.Millisecond
}

// sshdTreeCPU is the user+sys time of sshd's sessions, the reaped ones
// and those still running, not of the listener itself.
func (t *bed) sshdTreeCPU(b *testing.B) time.Duration {
	b.Helper()
	ticks := procTicks(b, t.sshdPID, false) // its reaped children
	for _, p := range descendants(b, t.sshdPID, false) {
		ticks += procTicks(b, p, true)
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// procTicks reads a process's cutime+cstime (its reaped children), and
// with own its utime+stime too; a process gone meanwhile counts 0.
func procTicks(b *testing.B, pid int, own bool) int64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if os.IsNotExist(err) || (err != nil && strings.Contains(err.Error(), "no such process")) {
		return 0
	}
	if err != nil {
		b.Fatalf("read /proc/%d/stat: %v", pid, err)
	}
	// Fields after the parenthesised name: utime, stime, cutime, cstime
	// are fields 14 to 17 of the whole line.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	from := 11 // utime, stime, cutime, cstime
	if !own {
		from = 13 // cutime, cstime
	}
	var ticks int64
	for _, s := range f[from:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("/proc/%d/stat field %q: %v", pid, s, err)
		}
		ticks += v
	}
	return ticks
}

// descendants lists pid's living descendants, and pid itself with self.
func descendants(b *testing.B, pid int, self bool) []int {
	b.Helper()
	var out []int
	if self {
		out = append(out, pid)
	}
	todo := []int{pid}
	for len(todo) > 0 {
		p := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		if err != nil {
			continue // gone meanwhile
		}
		for _, task := range tasks {
			data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, task.Name()))
			if err != nil {
				continue
			}
			for _, c := range strings.Fields(string(data)) {
				cp, err := strconv.Atoi(c)
				if err != nil {
					b.Fatalf("/proc/%d/task/%s/children: %q", p, task.Name(), data)
				}
				out = append(out, cp)
				todo = append(todo, cp)
			}
		}
	}
	return out
}
