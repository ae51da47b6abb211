package changelog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrMalformed reports event bytes that do not follow the kernel's layout.
// The detector treats it as lost events (an overflow), never as a crash.
var ErrMalformed = errors.New("malformed fanotify event")

// maxHandleBytes is the kernel's MAX_HANDLE_SZ: no file handle is longer, so
// a longer one is corruption, and keys stay bounded.
const maxHandleBytes = 128

// Record is one fanotify information record that identifies an object by
// file handle: FID (the object), DFID (a directory), DFID_NAME and the
// rename variants (a directory and one entry name in it). Handle and Name
// alias the buffer given to ParseEvents.
type Record struct {
	Type       uint8 // unix.FAN_EVENT_INFO_TYPE_*
	Fsid       [2]int32
	HandleType int32
	Handle     []byte
	Name       []byte // nil unless Type carries a name; "." names the directory itself
}

// Event is one fanotify event: the metadata and its handle records. The
// parser reuses one Event for every callback; copy what you keep.
type Event struct {
	Mask    uint64
	Fd      int32
	Pid     int32
	Records []Record
}

// Overflow reports the kernel's "events were lost" event.
func (e *Event) Overflow() bool { return e.Mask&unix.FAN_Q_OVERFLOW != 0 }

// hasName reports whether an info record type carries an entry name.
func hasName(t uint8) bool {
	switch t {
	case unix.FAN_EVENT_INFO_TYPE_DFID_NAME, unix.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, unix.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
		return true
	}
	return false
}

// ParseEvents walks the bytes of one read(2) from a fanotify group made with
// FAN_REPORT_FID/FAN_REPORT_DFID_NAME and calls fn for each event. Every
// length is checked against the bytes that hold it before use; info records
// of types that carry no file handle (pidfd, error, range, mount) are
// skipped. A malformed event ends the walk with an error wrapping
// ErrMalformed; events before it have been delivered.
func ParseEvents(buf []byte, fn func(*Event)) error {
	var ev Event
	ne := binary.NativeEndian
	for off := 0; off < len(buf); {
		rest := buf[off:]
		if len(rest) < unix.FAN_EVENT_METADATA_LEN {
			return fmt.Errorf("%w: %d bytes left at offset %d, an event header needs %d", ErrMalformed, len(rest), off, unix.FAN_EVENT_METADATA_LEN)
		}
		evLen := uint64(ne.Uint32(rest[0:4]))
		vers := rest[4]
		metaLen := uint64(ne.Uint16(rest[6:8]))
		if vers != unix.FANOTIFY_METADATA_VERSION {
			return fmt.Errorf("%w: metadata version %d at offset %d, this build reads version %d", ErrMalformed, vers, off, unix.FANOTIFY_METADATA_VERSION)
		}
		if metaLen < unix.FAN_EVENT_METADATA_LEN || evLen < metaLen || evLen > uint64(len(rest)) {
			return fmt.Errorf("%w: event at offset %d claims %d bytes with a %d-byte header, %d bytes available", ErrMalformed, off, evLen, metaLen, len(rest))
		}
		ev.Mask = ne.Uint64(rest[8:16])
		ev.Fd = int32(ne.Uint32(rest[16:20]))
		ev.Pid = int32(ne.Uint32(rest[20:24]))
		ev.Records = ev.Records[:0]
		info := rest[metaLen:evLen]
		for len(info) > 0 {
			if len(info) < 4 {
				return fmt.Errorf("%w: %d stray bytes after the info records of the event at offset %d", ErrMalformed, len(info), off)
			}
			typ := info[0]
			recLen := int(ne.Uint16(info[2:4]))
			if recLen < 4 || recLen > len(info) {
				return fmt.Errorf("%w: info record of %d bytes with %d left in the event at offset %d", ErrMalformed, recLen, len(info), off)
			}
			switch typ {
			case unix.FAN_EVENT_INFO_TYPE_FID, unix.FAN_EVENT_INFO_TYPE_DFID,
				unix.FAN_EVENT_INFO_TYPE_DFID_NAME, unix.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, unix.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
				rec, err := parseFIDRecord(typ, info[4:recLen])
				if err != nil {
					return fmt.Errorf("%w (event at offset %d)", err, off)
				}
				ev.Records = append(ev.Records, rec)
			}
			info = info[recLen:]
		}
		fn(&ev)
		off += int(evLen)
	}
	return nil
}

// parseFIDRecord decodes the body of a fanotify_event_info_fid after its
// header: fsid (8 bytes), struct file_handle (handle_bytes u32, handle_type
// i32, f_handle), and for the name types a NUL-terminated entry name. What
// follows is padding to the record's 4-byte alignment.
func parseFIDRecord(typ uint8, body []byte) (Record, error) {
	ne := binary.NativeEndian
	if len(body) < 16 {
		return Record{}, fmt.Errorf("%w: info record type %d of %d bytes is shorter than fsid and handle header", ErrMalformed, typ, len(body))
	}
	rec := Record{Type: typ}
	rec.Fsid[0] = int32(ne.Uint32(body[0:4]))
	rec.Fsid[1] = int32(ne.Uint32(body[4:8]))
	hb := uint64(ne.Uint32(body[8:12]))
	rec.HandleType = int32(ne.Uint32(body[12:16]))
	if hb == 0 || hb > maxHandleBytes || hb > uint64(len(body)-16) {
		return Record{}, fmt.Errorf("%w: file handle of %d bytes in a record with %d bytes for it", ErrMalformed, hb, len(body)-16)
	}
	rec.Handle = body[16 : 16+hb]
	if !hasName(typ) {
		return rec, nil
	}
	rest := body[16+hb:]
	n := bytes.IndexByte(rest, 0)
	switch {
	case n < 0:
		return Record{}, fmt.Errorf("%w: entry name is not NUL-terminated", ErrMalformed)
	case n == 0:
		return Record{}, fmt.Errorf("%w: empty entry name", ErrMalformed)
	}
	name := rest[:n]
	// The kernel reports one path component ("." for the directory itself);
	// anything else would let a corrupt record point outside its directory.
	if bytes.IndexByte(name, '/') >= 0 || string(name) == ".." {
		return Record{}, fmt.Errorf("%w: entry name %q is not one path component", ErrMalformed, name)
	}
	rec.Name = name
	return rec, nil
}
