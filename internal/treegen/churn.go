package treegen

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Churn makes a seeded stream of random changes under one directory of a
// master tree: creates, rewrites, appends, truncates, renames within and
// across directories, deletes, hard links, symlinks, chmod, xattrs, and
// directories made, moved and removed with their contents. It is not safe
// for concurrent use; one goroutine owns it.
type Churn struct {
	base string
	rng  *rand.Rand
	n    int
	// MaxEntries bounds the files per directory; past it, steps delete.
	MaxEntries int
}

// churnDirs is how many top-level directories Churn spreads its files over,
// so renames across directories happen.
const churnDirs = 4

// NewChurn prepares base (created if missing) for a stream seeded by seed.
func NewChurn(base string, seed uint64) (*Churn, error) {
	for i := range churnDirs {
		if err := os.MkdirAll(filepath.Join(base, "d"+strconv.Itoa(i)), 0o755); err != nil {
			return nil, fmt.Errorf("prepare churn directory: %w", err)
		}
	}
	return &Churn{base: base, rng: rand.New(rand.NewPCG(seed, seed+1)), MaxEntries: 40}, nil
}

// Steps is how many changes Step has made.
func (c *Churn) Steps() int { return c.n }

func (c *Churn) dir() string {
	return filepath.Join(c.base, "d"+strconv.Itoa(c.rng.IntN(churnDirs)))
}

// pick returns a random entry of dir that satisfies keep, or "".
func (c *Churn) pick(dir string, keep func(fs.DirEntry) bool) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var ok []string
	for _, e := range ents {
		if keep(e) {
			ok = append(ok, e.Name())
		}
	}
	if len(ok) == 0 {
		return "", nil
	}
	return filepath.Join(dir, ok[c.rng.IntN(len(ok))]), nil
}

func isFile(e fs.DirEntry) bool   { return e.Type().IsRegular() }
func isSubdir(e fs.DirEntry) bool { return e.IsDir() }
func anyEntry(fs.DirEntry) bool   { return true }

// Step makes one random change. Races with nothing: the Churn is the only
// writer under its base.
func (c *Churn) Step() error {
	c.n++
	name := func(prefix string) string { return prefix + strconv.Itoa(c.n) }
	d := c.dir()
	ents, err := os.ReadDir(d)
	if err != nil {
		return fmt.Errorf("churn: %w", err)
	}
	op := c.rng.IntN(16)
	if len(ents) > c.MaxEntries {
		op = 7 // delete
	}
	switch op {
	case 0, 1, 2: // create
		return os.WriteFile(filepath.Join(d, name("f")), Random(uint64(c.n), c.rng.IntN(32<<10)), 0o644)
	case 3: // rewrite
		return c.onFile(d, func(p string) error {
			return os.WriteFile(p, Random(uint64(c.n), c.rng.IntN(32<<10)), 0o644)
		})
	case 4: // append
		return c.onFile(d, func(p string) error {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("appended " + strconv.Itoa(c.n) + "\n")
			return errors.Join(err, f.Close())
		})
	case 5: // truncate
		return c.onFile(d, func(p string) error { return os.Truncate(p, int64(c.rng.IntN(4096))) })
	case 6: // rename within or across directories, sometimes over another name
		return c.onEntry(d, anyEntry, func(p string) error {
			to := c.dir()
			if tgt, err := c.pick(to, isFile); err == nil && tgt != "" && c.rng.IntN(4) == 0 && !isDir(p) {
				return os.Rename(p, tgt)
			}
			return os.Rename(p, filepath.Join(to, name("r")))
		})
	case 7: // delete
		return c.onEntry(d, anyEntry, os.RemoveAll)
	case 8: // hard link
		return c.onFile(d, func(p string) error { return os.Link(p, filepath.Join(c.dir(), name("l"))) })
	case 9: // symlink
		return os.Symlink("target-"+strconv.Itoa(c.rng.IntN(100)), filepath.Join(d, name("s")))
	case 10: // chmod
		return c.onFile(d, func(p string) error { return os.Chmod(p, fs.FileMode(0o600+c.rng.IntN(0o177))) })
	case 11: // xattr set or removed
		return c.onFile(d, func(p string) error {
			if c.rng.IntN(3) == 0 {
				err := unix.Lremovexattr(p, "user.churn")
				if errors.Is(err, unix.ENODATA) {
					return nil
				}
				return err
			}
			return unix.Lsetxattr(p, "user.churn", []byte(strconv.Itoa(c.n)), 0)
		})
	case 12: // a directory with contents
		sub := filepath.Join(d, name("sub"))
		if err := os.Mkdir(sub, 0o755); err != nil {
			return err
		}
		for i := range 1 + c.rng.IntN(4) {
			if err := os.WriteFile(filepath.Join(sub, "in"+strconv.Itoa(i)), []byte(sub), 0o644); err != nil {
				return err
			}
		}
		return nil
	case 13: // move a directory with its contents
		return c.onEntry(d, isSubdir, func(p string) error { return os.Rename(p, filepath.Join(c.dir(), name("mv"))) })
	case 14: // a file into a subdirectory
		return c.onEntry(d, isSubdir, func(p string) error {
			return os.WriteFile(filepath.Join(p, name("f")), []byte("nested"), 0o644)
		})
	default: // touch
		return c.onFile(d, func(p string) error {
			t := OldTime(c.rng.IntN(1_000_000_000))
			return os.Chtimes(p, t, t)
		})
	}
}

func isDir(p string) bool {
	st, err := os.Lstat(p)
	return err == nil && st.IsDir()
}

func (c *Churn) onFile(d string, f func(string) error) error { return c.onEntry(d, isFile, f) }

func (c *Churn) onEntry(d string, keep func(fs.DirEntry) bool, f func(string) error) error {
	p, err := c.pick(d, keep)
	if err != nil || p == "" {
		return err
	}
	if err := f(p); err != nil {
		return fmt.Errorf("churn step %d on %s: %w", c.n, p, err)
	}
	return nil
}
