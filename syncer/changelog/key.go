package changelog

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/syncer/index"
)

// KeyFromHandle encodes a file handle reported by fanotify as the index's
// object key (index.KeyOf's format: 'h', the handle type big-endian, the
// opaque handle bytes). name_to_handle_at(2) and fanotify's FID records
// carry the same (type, bytes) for the same inode, so a dirty directory's
// key finds the directory's index record.
func KeyFromHandle(handleType int32, handle []byte) index.Key {
	return index.Key(appendKey(make([]byte, 0, 5+len(handle)), handleType, handle))
}

func appendKey(b []byte, handleType int32, handle []byte) []byte {
	b = append(b, 'h')
	b = binary.BigEndian.AppendUint32(b, uint32(handleType))
	return append(b, handle...)
}

// keyOfFD is the index key of the open object fd.
func keyOfFD(fd int) (index.Key, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("unable to stat an open directory for its key: %w", err)
	}
	return index.KeyOf(fd, "", &st)
}
