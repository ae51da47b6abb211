package syncer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/georep/georep/client"
	"github.com/georep/georep/internal/digest"
	"github.com/georep/georep/internal/gfid"
	pb "github.com/georep/georep/proto/georep/v1"
	"github.com/georep/georep/syncer/transfer"
)

// SyncNative moves file data over the session's gRPC connection (PutFiles
// with block deltas); SyncRsync runs rsync into the slave's staging area.
const (
	SyncNative = "native"
	SyncRsync  = "rsync"
)

// Compress values: zstd where the slave accepts it and it shrinks a chunk;
// zstd or fail; never.
const (
	CompressAuto = "auto"
	CompressZstd = "zstd"
	CompressNone = "none"
)

// chunkCompression picks the chunk encoding for a --compress mode and
// the compressions the slave named at Handshake.
func chunkCompression(mode string, offered []pb.Compression) (pb.Compression, error) {
	zstd := slices.Contains(offered, pb.Compression_COMPRESSION_ZSTD)
	switch mode {
	case CompressAuto, "":
		if zstd {
			return pb.Compression_COMPRESSION_ZSTD, nil
		}
		return pb.Compression_COMPRESSION_UNSPECIFIED, nil
	case CompressZstd:
		if !zstd {
			return 0, fmt.Errorf("--compress zstd: the slave does not accept zstd chunks (an older georep?); upgrade it or use --compress auto or none")
		}
		return pb.Compression_COMPRESSION_ZSTD, nil
	case CompressNone:
		return pb.Compression_COMPRESSION_UNSPECIFIED, nil
	}
	return 0, fmt.Errorf("--compress %q: accepted values are %s, %s and %s", mode, CompressAuto, CompressZstd, CompressNone)
}

// sendNative moves items' content with the native chunk stream.
func (m *master) sendNative(ctx context.Context, c *client.Conn, items []transfer.Item) ([]transfer.Result, error) {
	comp, err := chunkCompression(m.cfg.Compress, c.Info.GetCompressions())
	if err != nil {
		return nil, err
	}
	results, _, err := transfer.Send(ctx, c.Slave, m.root, items, transfer.Options{Jobs: m.cfg.SyncJobs, Logger: m.log,
		Compression: comp, BwLimit: m.cfg.BwLimit, SingleMessage: c.Info.GetSingleMessageFiles(), FileBatches: c.Info.GetFileBatches(),
		Digest: digest.Preferred(c.Info.GetContentDigests()),
		Installed: func(it transfer.Item, sent int64) {
			if it.Create {
				// The file's entry op was fused into its transfer.
				m.obs.EntriesApplied(1)
			}
			m.obs.FileSent(sent)
		}})
	return results, err
}

// refusedCreate reports whether the slave refused a create because the
// name is taken or the GFID exists elsewhere (EEXIST) or the parent is
// missing (ENOENT): cases a CREATE entry op resolves or reports itself.
func refusedCreate(err error) bool {
	var re *transfer.RemoteError
	return errors.As(err, &re) && (re.Errno == unix.EEXIST || re.Errno == unix.ENOENT)
}

// slaveLost reports whether err is the slave saying it has no file with
// the GFID (ENOENT for a put of content), as opposed to the master's file
// having gone from where the scan saw it.
func slaveLost(err error) bool {
	var re *transfer.RemoteError
	return errors.As(err, &re) && re.Errno == unix.ENOENT
}

// statBeneath is the mode, owner and times of the regular file rel beneath
// the master root, for a CREATE entry op; reached without following any
// symlink, as the data plane reads files.
func statBeneath(root int, rel string) (*pb.Stat, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(root, rel, &how)
	if err != nil {
		return nil, fmt.Errorf("stat %s beneath the master root: %w", rel, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is no longer a regular file: %w", rel, os.ErrNotExist)
	}
	return &pb.Stat{Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Atime: &pb.Timestamp{Sec: st.Atim.Sec, Nsec: uint32(st.Atim.Nsec)},
		Mtime: &pb.Timestamp{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}}, nil
}

// createEntries makes, with CREATE entry ops, the new files of items whose
// data transfer was to create them (Create set), and returns items with
// those turned into plain transfers to the files now there. It is the
// fallback for a create the slave refused (its name taken, its GFID
// elsewhere: the entry op resolves both in the master's favour, as for any
// new file), and what makes a file the batch gives up on or defers exist,
// as its entry op would have, so that the index may record it. A file
// whose entry op fails is marked failed as an entry and left out.
func (m *master) createEntries(ctx context.Context, items []transfer.Item, failed map[gfid.GFID]failure) ([]transfer.Item, error) {
	var entries []*pb.Entry
	for _, it := range items {
		if it.Create {
			entries = append(entries, &pb.Entry{Op: pb.EntryOp_ENTRY_OP_CREATE, Gfid: it.GFID.Bytes(),
				ParentGfid: it.LinkParent.Bytes(), Name: it.LinkName, Stat: it.Stat})
		}
	}
	if len(entries) == 0 {
		return items, nil
	}
	if err := m.applyEntries(ctx, entries, failed); err != nil {
		return nil, err
	}
	out := items[:0:0]
	for _, it := range items {
		if it.Create {
			if _, bad := failed[it.GFID]; bad {
				continue
			}
			it.Create = false
		}
		out = append(out, it)
	}
	return out, nil
}
