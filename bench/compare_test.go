//go:build benchcompare

package bench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/testbin"
	"github.com/georep/georep/internal/testfs"
	"github.com/georep/georep/internal/testproxy"
	"github.com/georep/georep/internal/testsshd"
	"github.com/georep/georep/internal/treecmp"
	"github.com/georep/georep/internal/treegen"
)

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		b.Fatalf("%s=%q: want a non-negative integer", name, s)
	}
	return v
}

func loadConfig(b *testing.B) config {
	b.Helper()
	d := issueWorkload()
	return config{
		small:     envInt(b, "GEOREP_BENCH_SMALL", d.small),
		smallSize: envInt(b, "GEOREP_BENCH_SMALL_SIZE", d.smallSize),
		large:     envInt(b, "GEOREP_BENCH_LARGE", d.large),
		largeMiB:  envInt(b, "GEOREP_BENCH_LARGE_MIB", d.largeMiB),
		runs:      envInt(b, "GEOREP_BENCH_RUNS", d.runs),
		changePct: d.changePct,
		wan:       envInt(b, "GEOREP_BENCH_WAN", 1) != 0,
		tools:     envTools(b, d.tools),
	}
}

// envTools reads GEOREP_BENCH_TOOLS, a comma-separated subset of the
// contenders, kept in the report's order.
func envTools(b *testing.B, all []string) []string {
	b.Helper()
	s := os.Getenv("GEOREP_BENCH_TOOLS")
	if s == "" {
		return all
	}
	var want []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		if !slices.Contains(all, t) {
			b.Fatalf("GEOREP_BENCH_TOOLS=%q: %q is not one of %s", s, t, strings.Join(all, ", "))
		}
		want = append(want, t)
	}
	return slices.DeleteFunc(slices.Clone(all), func(t string) bool { return !slices.Contains(want, t) })
}

// bed is what every run shares: the master tree, the one sshd, the relay
// scripts, and the binaries.
type bed struct {
	cfg      config
	georep   string
	master   string
	work     string
	sshd     *testsshd.Server
	sshdPID  int
	counts   string
	sshCmd   map[string]string // by network: "loopback", "wan"
	liveSSH  map[string]string // the same for running sessions, through relays of their own
	mutation int
}

func BenchmarkDataPlaneVsRsync(b *testing.B) {
	for _, tool := range []string{"rsync", "ssh"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Fatalf("%s is required on PATH: %v", tool, err)
		}
	}
	// Progress goes to stderr as it happens: a full run takes minutes.
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := loadConfig(b)
	if cfg.runs < 1 {
		b.Fatalf("GEOREP_BENCH_RUNS must be at least 1")
	}
	work := b.TempDir()
	// The master tree and the state dirs: hundreds of MiB an interrupted
	// run would leave in the temporary directory.
	testfs.RemoveOnSignal(b, work)
	// GEOREP_BENCH_GEOREP names a prebuilt binary (make bench-compare
	// passes bin/georep); otherwise the checkout is built.
	georep := os.Getenv("GEOREP_BENCH_GEOREP")
	if georep == "" {
		var err error
		if georep, err = testbin.Build(work); err != nil {
			b.Fatal(err)
		}
	} else if _, err := os.Stat(georep); err != nil {
		b.Fatalf("GEOREP_BENCH_GEOREP: %v", err)
	}
	t := &bed{cfg: cfg, georep: georep, work: work, master: filepath.Join(work, "master"),
		counts: filepath.Join(work, "relay.counts"), sshCmd: map[string]string{}, liveSSH: map[string]string{}}
	start := time.Now()
	t.generate(b)
	log.Info("master tree generated", "small", cfg.small, "small_bytes", cfg.smallSize, "large", cfg.large,
		"large_mib", cfg.largeMiB, "took", time.Since(start).Round(time.Millisecond))

	t.sshd = testsshd.Start(b, testsshd.Options{})
	t.sshdPID = sshdPID(b, filepath.Join(t.sshd.Dir, "sshd.pid"))
	// A georep --once run that is in sync ends ssh without waiting for the
	// remote side (client.Session.Finish): sshd then exits without reaping
	// the slave, which ends a moment later on its own, and ssh leaves its
	// ProxyCommand relay to end on its SIGHUP. As this process's adoptees
	// they are waited for and their CPU counted (see reapAdopted).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		b.Fatalf("become the reaper of orphaned slaves and relays: %v", err)
	}
	sshdAddr := fmt.Sprintf("%s:%d", t.sshd.Host, t.sshd.Port)
	nets := []string{"loopback"}
	t.sshCmd["loopback"] = t.relaySSH(b, "loopback", sshdAddr, t.counts, false)
	t.liveSSH["loopback"] = t.relaySSH(b, "loopback-live", sshdAddr, filepath.Join(work, "relay-live.counts"), true)
	if cfg.wan {
		p := testproxy.Start(b, sshdAddr)
		p.AddLatency(b, 25*time.Millisecond)
		t.sshCmd["wan"] = t.relaySSH(b, "wan", p.Addr(), t.counts, false)
		t.liveSSH["wan"] = t.relaySSH(b, "wan-live", p.Addr(), filepath.Join(work, "relay-live.counts"), true)
		nets = append(nets, "wan")
	}

	// Slave trees live on a journalled ext4 of their own, as a real
	// slave's would; see testfs.Ext4 for what the machine's root does.
	slaveFS := testfs.Ext4(b, 4<<30)
	// So do the master's state dirs, on an ext4 of their own as a master
	// host's disk is not its slave's: --sync-mode rsync makes a symlink
	// per file there each run, and on the journal-less root each create
	// cost 38 us, three quarters of it ext4's recently_deleted scan past
	// the inodes the run before freed.
	stateFS := testfs.Ext4(b, 1<<30)
	results := map[key][]sample{}
	logins := map[string][]time.Duration{}
	tools := cfg.tools
	b.ResetTimer()
	for _, network := range nets {
		for run := range cfg.runs {
			// Rotate which tool goes first, so none always meets a cold
			// (or warm) page cache.
			order := append(slices.Clone(tools[run%len(tools):]), tools[:run%len(tools)]...)
			login := t.login(b, network)
			logins[network] = append(logins[network], login)
			log.Info("login floor", "net", network, "run", run+1, "wall", login.Round(time.Millisecond))
			slaves := map[string]string{}
			states := map[string]string{}
			var live *liveSession
			for _, tool := range order {
				slaves[tool] = filepath.Join(slaveFS, fmt.Sprintf("slave-%s-%s-%d", network, tool, run))
				states[tool] = filepath.Join(stateFS, fmt.Sprintf("state-%s-%s-%d", network, tool, run))
				for _, d := range []string{slaves[tool], states[tool]} {
					if err := os.MkdirAll(d, 0o755); err != nil {
						b.Fatal(err)
					}
				}
				var s sample
				if tool == toolLive {
					s, live = t.startLive(b, network, slaves[tool], states[tool])
				} else {
					s = t.sync(b, network, tool, slaves[tool], states[tool])
				}
				k := key{network, tool, "initial"}
				results[k] = append(results[k], s)
				logSample(log, k, run, s)
				t.verifySample(b, tool, slaves[tool])
			}
			if live != nil {
				// The running session sees the changes as they are made,
				// so it goes first; the others start once it is done.
				live.mark(b)
			}
			end := t.mutate(b)
			if live != nil {
				s := live.synced(b, end)
				live.stop(b)
				live = nil
				k := key{network, toolLive, "incremental"}
				results[k] = append(results[k], s)
				logSample(log, k, run, s)
				t.verifyTree(b, toolLive, slaves[toolLive])
			}
			for _, tool := range order {
				if tool == toolLive {
					continue
				}
				s := t.sync(b, network, tool, slaves[tool], states[tool])
				k := key{network, tool, "incremental"}
				results[k] = append(results[k], s)
				logSample(log, k, run, s)
				t.verifyTree(b, tool, slaves[tool])
			}
			for _, tool := range order {
				for _, d := range []string{slaves[tool], states[tool]} {
					if err := os.RemoveAll(d); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
	}
	b.StopTimer()
	rows := summarize(nets, tools, results)
	for _, r := range rows {
		b.ReportMetric(r.wall.Seconds(), fmt.Sprintf("s/%s-%s-%s", r.net, r.tool, r.phase))
	}
	m := machine{when: time.Now(), cpus: runtime.NumCPU(), os: runtime.GOOS + "/" + runtime.GOARCH,
		version: t.version(b)}
	floors := summarizeFloors(nets, logins)
	sec := section(cfg, rows, floors, m)
	// Benchmark logs are cut to ten lines, so the table goes to stdout.
	fmt.Printf("\n%s\n", sec)
	switch out := os.Getenv("GEOREP_BENCH_WRITE"); {
	case out == "":
	case cfg.shrunk():
		log.Warn("the workload is shrunk from issue 5's, so the published figures are left alone",
			"file", filepath.Join(out, "BENCHMARKS.md"))
	default:
		if err := writeReport(out, cfg, rows, floors, m); err != nil {
			b.Fatal(err)
		}
		log.Info("report written", "file", filepath.Join(out, "BENCHMARKS.md"), "chart", filepath.Join(out, chartFile))
	}
}

func logSample(log *slog.Logger, k key, run int, s sample) {
	log.Info("synced", "net", k.net, "tool", k.tool, "phase", k.phase, "run", run+1,
		"wall", s.wall.Round(time.Millisecond), "wire_bytes", s.wireBytes, "files", s.files,
		"cpu_master", s.cpuLocal, "cpu_slave", s.cpuRemote)
}

// version is what the measured georep binary says it is.
func (t *bed) version(b *testing.B) string {
	b.Helper()
	out, err := exec.Command(t.georep, "version").Output()
	if err != nil {
		b.Fatalf("%s version: %v", t.georep, err)
	}
	return strings.TrimSpace(string(out))
}

// generate writes the master tree: small files in directories of 1000,
// and the large files, all of pseudo-random (incompressible) content.
func (t *bed) generate(b *testing.B) {
	b.Helper()
	for i := range t.cfg.small {
		dir := filepath.Join(t.master, fmt.Sprintf("d%03d", i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), treegen.Random(uint64(i)+1, t.cfg.smallSize), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(t.master, "large"), 0o755); err != nil {
		b.Fatal(err)
	}
	for i := range t.cfg.large {
		data := treegen.Random(uint64(1_000_000+i), t.cfg.largeMiB<<20)
		if err := os.WriteFile(filepath.Join(t.master, "large", fmt.Sprintf("l%d", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}

// mutate changes changePct% of the small files (rewritten whole, same
// size) and 64 KiB in the middle of the first large file, in place, each
// time with new content, so every incremental run has the same work. It
// returns when the last change was made.
func (t *bed) mutate(b *testing.B) time.Time {
	b.Helper()
	t.mutation++
	n := int(float64(t.cfg.small) * t.cfg.changePct / 100)
	if n == 0 && t.cfg.small > 0 {
		n = 1
	}
	step := max(t.cfg.small/max(n, 1), 1)
	for j := range n {
		i := (j*step + t.mutation) % t.cfg.small
		p := filepath.Join(t.master, fmt.Sprintf("d%03d", i/1000), fmt.Sprintf("f%05d", i))
		if err := os.WriteFile(p, treegen.Random(uint64(t.mutation)<<32|uint64(i), t.cfg.smallSize), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if t.cfg.large == 0 {
		return time.Now()
	}
	f, err := os.OpenFile(filepath.Join(t.master, "large", "l0"), os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	off := int64(t.cfg.largeMiB<<20)/2 + int64(t.mutation)*4096
	if _, err := f.WriteAt(treegen.Random(uint64(2_000_000+t.mutation), 64<<10), off); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return time.Now()
}

// relaySSH writes a ProxyCommand script that runs this test binary as a
// relay to addr counting into counts (keeping running totals too, with
// live), and returns the ssh command line using it. The script takes no
// spaces into the ssh command, which georep and rsync both split on
// whitespace.
func (t *bed) relaySSH(b *testing.B, name, addr, counts string, live bool) string {
	b.Helper()
	self, err := os.Executable()
	if err != nil {
		b.Fatalf("find the test binary: %v", err)
	}
	script := filepath.Join(t.work, "relay-"+name+".sh")
	env := fmt.Sprintf("%s=%s", relayEnv, counts)
	if live {
		env += fmt.Sprintf(" %s=1", relaySnapshotEnv)
	}
	body := fmt.Sprintf("#!/bin/sh\nexec env %s %s %s\n", env, self, addr)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		b.Fatal(err)
	}
	// Host and port stay sshd's own, so known_hosts matches; the relay
	// decides where the bytes actually go.
	return t.sshd.SSHCommand() + " -o ProxyCommand=" + script
}

// login times one bare ssh login that runs `true`, through network's ssh
// command and relay, as rsync logs in (no forced command), and waits for
// its sshd session to be reaped so the next sync's slave CPU is its own.
func (t *bed) login(b *testing.B, network string) time.Duration {
	b.Helper()
	t.sshd.SetAuthorizedKeyOptions(b, "")
	words := strings.Fields(t.sshCmd[network])
	argv := append(words[1:], fmt.Sprintf("%s@%s", t.sshd.User, t.sshd.Host), "true")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, words[0], argv...).CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("%s: ssh login: %v\n%s\nsshd:\n%s", network, err, out, t.sshd.Log())
	}
	t.awaitSessions(b, 0, network+": the login's sshd session")
	return wall
}

// awaitSessions polls, for up to 30s, until sshd has at most atMost
// sessions left, failing the benchmark with what otherwise.
func (t *bed) awaitSessions(b *testing.B, atMost int, what string) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(t.sshdChildren(b)) > atMost {
		if time.Now().After(deadline) {
			b.Fatalf("%s: not gone within 30s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sync runs one tool once from the master to slave and measures it.
func (t *bed) sync(b *testing.B, network, tool, slave, state string) sample {
	b.Helper()
	if err := os.Remove(t.counts); err != nil && !os.IsNotExist(err) {
		b.Fatal(err)
	}
	var argv []string
	switch tool {
	case toolNative, toolRsync:
		t.sshd.SetAuthorizedKeyOptions(b, fmt.Sprintf(`restrict,command="%s slave --stdio --root %s"`, t.georep, slave))
		ssh := t.sshCmd[network]
		if tool == toolRsync {
			// rsync mode's runs go through the session's ssh connection,
			// as with georep's default ssh command: a ControlMaster socket
			// in the state directory. Without one each run logs in again.
			ssh += " -o ControlMaster=auto -o ControlPath=" + filepath.Join(state, "cm") + " -o ControlPersist=no"
		}
		argv = []string{t.georep, "master", "--once", "--progress=false", "--log-format", "json", "--root", t.master,
			"--slave", fmt.Sprintf("ssh://%s@%s:%d%s", t.sshd.User, t.sshd.Host, t.sshd.Port, slave),
			"--state", state, "--ssh-command", ssh}
		if tool == toolRsync {
			argv = append(argv, "--sync-mode", "rsync")
		}
	case toolBaseline, toolBaselineAES:
		t.sshd.SetAuthorizedKeyOptions(b, "")
		ssh := t.sshCmd[network]
		if tool == toolBaselineAES {
			ssh += " -c " + aesCipher
		}
		argv = []string{"rsync", "-aHAX", "--numeric-ids", "--stats", "-e", ssh,
			t.master + "/", fmt.Sprintf("%s@%s:%s/", t.sshd.User, t.sshd.Host, slave)}
	default:
		b.Fatalf("unknown tool %q", tool)
	}
	// Every tool starts with nothing dirty in the page cache: the trees
	// share one filesystem, and a tool that flushes (georep makes content
	// durable before installing it) would otherwise also write back what
	// the tool before it left unwritten.
	syscall.Sync()
	remoteBefore := t.sshdChildCPU(b)
	// A running session's sshd session (georep-live's) stays; the tool's
	// own must be gone before its slave CPU is complete.
	others := t.sshdChildren(b)
	// Children from before (sshd, a running session) are not adoptees.
	ours := t.ownChildren(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("%s %s: %v\n%s\nsshd:\n%s", network, strings.Join(argv, " "), err, out, t.sshd.Log())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	local := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())

	// Wait for every relay to report and every sshd session to be reaped,
	// so the bytes and the slave side's CPU are complete.
	var wire int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		started, ended, n, err := relayTotals(t.counts)
		if err != nil {
			b.Fatal(err)
		}
		// Sessions may also have ended meanwhile (a running session's
		// extra data channels close in the background): only new ones count.
		if started > 0 && started == ended && !slices.ContainsFunc(t.sshdChildren(b), func(p string) bool {
			return !slices.Contains(others, p)
		}) {
			wire = n
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s %s: relays (%d started, %d ended) or sshd sessions did not finish within 30s of the tool's exit "+
				"(an ssh connection left running?)", network, tool, started, ended)
		}
		time.Sleep(10 * time.Millisecond)
	}
	slaveCPU, relayCPU := t.reapAdopted(b, ours, deadline)
	files := georepFilesSent(out)
	if tool == toolBaseline || tool == toolBaselineAES {
		files = rsyncFilesSent(out)
	}
	return sample{wall: wall, wireBytes: wire, cpuLocal: local + relayCPU,
		cpuRemote: t.sshdChildCPU(b) - remoteBefore + slaveCPU, files: files}
}

// ownChildren lists this process's children, from every thread's list
// (an orphan is given to any live thread of its reaper).
func (t *bed) ownChildren(b *testing.B) []int {
	b.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		b.Fatalf("list this process's threads: %v", err)
	}
	var pids []int
	for _, task := range tasks {
		data, err := os.ReadFile(filepath.Join("/proc/self/task", task.Name(), "children"))
		if err != nil {
			continue // the thread ended
		}
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				b.Fatalf("/proc/self/task/%s/children: %q", task.Name(), data)
			}
			pids = append(pids, pid)
		}
	}
	return pids
}

// reapAdopted waits, until deadline, for the processes this one adopted
// during a sync (children not in before: no process the harness starts
// outlives its sync except a running session, which is in before) and
// returns their CPU: a slave's (named georep) and the rest's (relays).
func (t *bed) reapAdopted(b *testing.B, before []int, deadline time.Time) (slave, other time.Duration) {
	b.Helper()
	for {
		left := 0
		for _, pid := range t.ownChildren(b) {
			if slices.Contains(before, pid) {
				continue
			}
			left++
			// The name first: a reaped process has none left to read.
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			var ws unix.WaitStatus
			var ru unix.Rusage
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, &ru)
			if err != nil {
				b.Fatalf("reap adopted process %d (%s): %v", pid, strings.TrimSpace(string(comm)), err)
			}
			if got != pid {
				continue // still running
			}
			left--
			cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			if strings.TrimSpace(string(comm)) == "georep" {
				slave += cpu
			} else {
				other += cpu
			}
		}
		if left == 0 {
			return slave, other
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d adopted process(es) (an orphaned slave or relay) still running 30s after the tool's exit", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sshdPID reads sshd's pid file, waiting for it: sshd may accept
// connections a moment before it has written the file.
func sshdPID(b *testing.B, path string) int {
	b.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(path)
		if err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
				return pid
			}
		} else if !os.IsNotExist(err) {
			b.Fatalf("read sshd's pid file: %v", err)
		}
		if time.Now().After(deadline) {
			b.Fatalf("sshd wrote no pid to %s within 10s (content %q)", path, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sshdChildCPU is the user+sys time of sshd's reaped children (the
// sessions, and through them the slave processes), from /proc/PID/stat.
func (t *bed) sshdChildCPU(b *testing.B) time.Duration {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", t.sshdPID))
	if err != nil {
		b.Fatalf("read sshd's stat: %v", err)
	}
	// Fields after the parenthesised command name; cutime and cstime are
	// fields 16 and 17 of the whole line.
	rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
	f := strings.Fields(rest)
	var ticks int64
	for _, s := range f[13:15] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("sshd stat field %q: %v", s, err)
		}
		ticks += v
	}
	// USER_HZ is 100 on Linux.
	return time.Duration(ticks) * 10 * time.Millisecond
}

func (t *bed) sshdHasChildren(b *testing.B) bool {
	b.Helper()
	return len(t.sshdChildren(b)) > 0
}

// sshdChildren lists sshd's child processes (its sessions), sorted.
func (t *bed) sshdChildren(b *testing.B) []string {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", t.sshdPID, t.sshdPID))
	if err != nil {
		b.Fatalf("read sshd's children: %v", err)
	}
	return slices.Sorted(slices.Values(strings.Fields(string(data))))
}

// verifySample checks the slave holds the master's content for the files
// the mutations touch and a sample of the rest: a benchmark of a tool that
// copies the wrong bytes measures nothing.
func (t *bed) verifySample(b *testing.B, tool, slave string) {
	b.Helper()
	var rels []string
	if t.cfg.large > 0 {
		rels = append(rels, filepath.Join("large", "l0"))
	}
	for i := 0; i < t.cfg.small; i += max(t.cfg.small/50, 1) {
		rels = append(rels, filepath.Join(fmt.Sprintf("d%03d", i/1000), fmt.Sprintf("f%05d", i)))
	}
	for j := range 5 {
		i := (j*max(t.cfg.small/max(int(float64(t.cfg.small)*t.cfg.changePct/100), 1), 1) + t.mutation) % max(t.cfg.small, 1)
		rels = append(rels, filepath.Join(fmt.Sprintf("d%03d", i/1000), fmt.Sprintf("f%05d", i)))
	}
	for _, rel := range rels {
		want, err := os.ReadFile(filepath.Join(t.master, rel))
		if err != nil {
			b.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(slave, rel))
		if err != nil {
			b.Fatalf("%s: slave lacks %s after sync: %v", tool, rel, err)
		}
		if !bytes.Equal(got, want) {
			b.Fatalf("%s: slave's %s differs from the master's after sync", tool, rel)
		}
	}
}

// verifyTree compares the whole slave tree with the master's: types,
// names, contents, modes, owners, file mtimes and xattrs.
func (t *bed) verifyTree(b *testing.B, tool, slave string) {
	b.Helper()
	diffs, err := treecmp.Differences(t.master, slave, treecmp.Options{})
	if err != nil {
		b.Fatalf("%s: compare the slave with the master: %v", tool, err)
	}
	if len(diffs) > 0 {
		b.Fatalf("%s: the slave differs from the master after sync:\n%s", tool, treecmp.Format(diffs))
	}
}
