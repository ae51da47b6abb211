package backend

// The slave's half of the delta transfer: block checksums of a file's
// current content, and copying unchanged pieces of it into the temp that
// receives the new content. The copies are hashed from the temp like the
// chunks, so the trailer's digest proves the whole result even if the old
// content changed after its sums were taken.

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/internal/blocksum"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
)

// openIndexed opens the regular file o (found by lookup) read-only through
// its index link, never following a symlink planted there, and checks it
// is still the inode lookup saw.
func openIndexed(o object, g gfid.GFID) (*os.File, error) {
	if err := checkRegular(g, o); err != nil {
		return nil, err
	}
	f, err := o.bucket.OpenFile(g.String(), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open through the index: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat through the index: %w", err)
	}
	if st.Ino != o.st.Ino || st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("the index entry changed while opening it; try again: %w", unix.EAGAIN)
	}
	return f, nil
}

// BlockSums sums the current content of the regular file g in blocks of
// blockSize bytes (see blocksum). GFID absent: ENOENT; a directory:
// EISDIR; another non-regular file, a bad block size or too many blocks:
// EINVAL.
func (b *Backend) BlockSums(g gfid.GFID, blockSize int) (*pb.BlockSumsResponse, error) {
	if !blocksum.ValidBlockSize(blockSize) {
		return nil, fmt.Errorf("block sums of %s: block size %d must be a power of two from %d to %d: %w",
			g, blockSize, blocksum.MinBlock, blocksum.MaxBlock, unix.EINVAL)
	}
	f, err := b.openForSums(g)
	if err != nil {
		return nil, fmt.Errorf("block sums of %s: %w", g, err)
	}
	defer f.Close()
	// Read outside the lock: the fd pins the inode, and a long read must
	// not hold up entry operations.
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("block sums of %s: stat: %w", g, err)
	}
	if st.Size > int64(blockSize)*blocksum.MaxBlocks {
		return nil, fmt.Errorf("block sums of %s: %d bytes need more than %d blocks of %d bytes; ask with a bigger block: %w",
			g, st.Size, blocksum.MaxBlocks, blockSize, unix.EINVAL)
	}
	resp := &pb.BlockSumsResponse{BlockSize: uint32(blockSize)}
	// Read many blocks at a time: a syscall per block costs more than
	// hashing it.
	buf := make([]byte, max(sumsRead/blockSize, 1)*blockSize)
	resp.Blocks = make([]*pb.Block, 0, (st.Size+int64(blockSize)-1)/int64(blockSize))
	for off := int64(0); ; {
		n, err := io.ReadFull(io.NewSectionReader(f, off, int64(len(buf))), buf)
		for p := 0; p < n; p += blockSize {
			blk := buf[p:min(p+blockSize, n)]
			resp.Blocks = append(resp.Blocks, &pb.Block{Weak: blocksum.Weak(blk), Strong: blocksum.Strong(blk)})
		}
		off += int64(n)
		if len(resp.Blocks) > blocksum.MaxBlocks {
			return nil, fmt.Errorf("block sums of %s: it grew past %d blocks while being read: %w", g, blocksum.MaxBlocks, unix.EAGAIN)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			resp.Size = off
			break
		}
		if err != nil {
			return nil, fmt.Errorf("block sums of %s: read at offset %d: %w", g, off, err)
		}
	}
	return resp, nil
}

// sumsRead is how much of the file BlockSums reads at a time.
const sumsRead = 1 << 20

func (b *Backend) openForSums(g gfid.GFID) (*os.File, error) {
	s, err := b.rlock()
	if err != nil {
		return nil, err
	}
	defer b.runlock(s)
	o, err := b.lookup(s, g)
	if err != nil {
		return nil, err
	}
	return openIndexed(o, g)
}

// CopyAt puts length bytes of the file's previous content, from srcOff,
// into the new content at off (the header must have set Delta). Like
// WriteAt, offsets must not go back. The bytes are hashed as the temp
// holds them.
func (w *FileWriter) CopyAt(off, length, srcOff int64) error {
	switch {
	case w.done || w.verified:
		return fmt.Errorf("content of %s: copy after verify, commit or abort: %w", w.h.GFID, unix.EINVAL)
	case w.old == nil:
		return fmt.Errorf("content of %s: a copy needs a header with delta set: %w", w.h.GFID, unix.EINVAL)
	case length <= 0 || srcOff < 0:
		return fmt.Errorf("content of %s: copy of %d bytes from offset %d: %w", w.h.GFID, length, srcOff, unix.EINVAL)
	case off < w.pos:
		return fmt.Errorf("content of %s: copy at offset %d goes back before %d: %w", w.h.GFID, off, w.pos, unix.EINVAL)
	case off > w.h.Size || length > w.h.Size-off:
		return fmt.Errorf("content of %s: copy [%d, %d) extends past the size %d: %w",
			w.h.GFID, off, off+length, w.h.Size, unix.EINVAL)
	}
	w.hashZeros(off)
	src, dst := int(w.old.Fd()), int(w.f.Fd())
	roff, woff := srcOff, off
	for woff < off+length {
		n, err := unix.CopyFileRange(src, &roff, dst, &woff, int(min(off+length-woff, 1<<30)), 0)
		if err != nil {
			return fmt.Errorf("content of %s: copy previous content [%d, %d): %w", w.h.GFID, roff, srcOff+length, err)
		}
		if n == 0 {
			return fmt.Errorf("content of %s: the previous content ends at %d, before %d: it changed since its block sums; send the whole file: %w",
				w.h.GFID, roff, srcOff+length, unix.EBADMSG)
		}
	}
	// Hash what the temp now holds, not what the master expects.
	buf := make([]byte, min(length, MaxChunk))
	for p := off; p < off+length; {
		n, err := unix.Pread(dst, buf[:min(off+length-p, int64(len(buf)))], p)
		if err == nil && n == 0 {
			err = unix.EIO
		}
		if err != nil {
			return fmt.Errorf("content of %s: read back copied bytes at %d: %w", w.h.GFID, p, err)
		}
		w.hash.Write(buf[:n])
		p += int64(n)
	}
	w.pos = off + length
	w.written += length
	return nil
}
