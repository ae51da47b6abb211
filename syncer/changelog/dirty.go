package changelog

import "github.com/georep/georep/syncer/index"

// maxNamesPerDir bounds the names kept for one directory: past it the
// directory is marked Whole, since its consumer then rescans every entry.
const maxNamesPerDir = 4096

// DirtyDir is one directory whose entries changed.
type DirtyDir struct {
	// Key is the directory's index key (its file handle; KeyFromHandle).
	Key index.Key
	// Rel is the directory's path relative to the root when the change was
	// last seen ("" for the root). A hint for logs and lookups only: the
	// directory may have moved since; Key is its identity.
	Rel string
	// Names are the entries the events named: created, deleted, moved in
	// or out, written, or whose attributes changed. A directory that
	// appears (created or moved in) is named here in its parent only; the
	// consumer scans a directory it does not know as a whole.
	Names map[string]struct{}
	// Self is set when the directory itself (its own attributes) changed.
	Self bool
	// Whole is set when more entries changed than are listed (Names is
	// then nil): rescan every entry.
	Whole bool
}

// DirtySet is a set of dirty directories by Key.
type DirtySet map[index.Key]*DirtyDir

// dir returns the entry for key, creating it.
func (s DirtySet) dir(key index.Key, rel string) *DirtyDir {
	d := s[key]
	if d == nil {
		d = &DirtyDir{Key: key}
		s[key] = d
	}
	d.Rel = rel // the latest sighting is the best hint
	return d
}

// add records that name in dir changed ("" for the directory itself).
func (s DirtySet) add(key index.Key, rel, name string) {
	s.dir(key, rel).addName(name)
}

func (d *DirtyDir) addName(name string) {
	switch {
	case name == "":
		d.Self = true
	case d.Whole:
	case len(d.Names) >= maxNamesPerDir:
		d.Whole, d.Names = true, nil
	default:
		if d.Names == nil {
			d.Names = make(map[string]struct{})
		}
		d.Names[name] = struct{}{}
	}
}

// merge adds every directory and name of o to s.
func (s DirtySet) merge(o DirtySet) {
	for _, od := range o {
		d := s.dir(od.Key, od.Rel)
		d.Self = d.Self || od.Self
		if od.Whole {
			d.Whole, d.Names = true, nil
			continue
		}
		for n := range od.Names {
			d.addName(n)
		}
	}
}

// names counts the listed names, for memory bounds.
func (s DirtySet) names() int {
	n := 0
	for _, d := range s {
		n += len(d.Names)
	}
	return n
}
