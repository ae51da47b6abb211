package syncer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

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

// Extra ssh channels for the data (see extraWanted).
const (
	// extraRTT is the Handshake time from which a session over ssh opens
	// them: one ssh channel carries at most its 2 MiB window per round
	// trip (OpenSSH's default for a session channel), 100 MiB/s at 20 ms
	// and 40 MiB/s at 50 ms, whatever the link could do.
	extraRTT = 20 * time.Millisecond
	// extraBytes is the least a batch's data must weigh to be worth
	// them: each is an ssh session (a login, without a ControlMaster) and
	// a slave process.
	extraBytes = 64 << 20
	// DefaultSSHDataChannels is --ssh-data-channels' default: three
	// channels carry three windows.
	DefaultSSHDataChannels = 2
)

// sendNative moves items' content with the native chunk stream. Over ssh
// with a long round trip and much data, it also opens extra connections
// (each an ssh channel to a slave process of its own, with its own
// window) that join the transfer as they come up.
func (m *master) sendNative(ctx context.Context, c *client.Conn, items []transfer.Item) ([]transfer.Result, error) {
	comp, err := chunkCompression(m.cfg.Compress, c.Info.GetCompressions())
	if err != nil {
		return nil, err
	}
	more, stop := m.extraConns(ctx, c, items)
	defer stop()
	opts := transfer.Options{Jobs: m.cfg.SyncJobs, Logger: m.log, More: more,
		Compression: comp, BwLimit: m.cfg.BwLimit, SingleMessage: c.Info.GetSingleMessageFiles(), FileBatches: c.Info.GetFileBatches(),
		Digest: digest.Preferred(c.Info.GetContentDigests()),
		Installed: func(it transfer.Item, sent int64) {
			if it.Create {
				// The file's entry op was fused into its transfer.
				m.obs.EntriesApplied(1)
			}
			m.obs.FileSent(sent)
		}}
	if m.ahead != nil {
		opts.SumsAhead = m.ahead.take
	}
	results, st, err := transfer.Send(ctx, c.Slave, m.root, items, opts)
	if st.SumsAhead > 0 {
		m.log.Debug("deltas began with block sums asked alongside the Handshake", "files", st.SumsAhead)
	}
	return results, err
}

// extraConns starts dialling extra connections for items when they are
// worth it (see extraWanted), and returns the channel they come on and
// a function that stops the dialling and, in the background (m.bg),
// closes the ones made. A connection that fails to come or answers its
// Handshake differently from c is left out.
func (m *master) extraConns(ctx context.Context, c *client.Conn, items []transfer.Item) (<-chan pb.SlaveClient, func()) {
	var size int64
	for _, it := range items {
		size += it.Size
	}
	n := m.cfg.extraChannels
	if n == 0 {
		n = extraWanted(m.cfg.SSHDataChannels, m.cfg.Slave.Kind, c.RTT, size)
	}
	if n <= 0 {
		return nil, func() {}
	}
	m.log.Debug("opening extra data channels", "channels", n, "handshake", c.RTT, "bytes", size)
	dctx, cancel := context.WithCancel(ctx)
	more := make(chan pb.SlaveClient, n)
	var mu sync.Mutex
	var closers []func() error
	var dials sync.WaitGroup
	for range n {
		dials.Go(func() {
			x, closeX, err := m.sess.Extra(dctx)
			if err != nil {
				if dctx.Err() == nil {
					m.log.Info("an extra data channel did not open; the transfer goes on without it", "err", err)
				}
				return
			}
			mu.Lock()
			closers = append(closers, closeX)
			mu.Unlock()
			if !sameOffer(c.Info, x.Info) {
				m.log.Info("an extra data channel reached a slave that answers differently; not used")
				return
			}
			more <- x.Slave
		})
	}
	return more, func() {
		cancel()
		m.bg.Go(func() {
			dials.Wait()
			for _, closeX := range closers {
				if err := closeX(); err != nil {
					m.log.Debug("close an extra data channel", "err", err)
				}
			}
		})
	}
}

// extraWanted is how many extra data connections a transfer of size bytes
// gets over a connection of kind whose Handshake took rtt: up to channels
// over ssh with a long round trip and much data, else none. mTLS is one
// TCP connection with HTTP/2 windows of 32 MiB; a local slave's pipes have
// no round trip.
func extraWanted(channels int, kind client.SlaveKind, rtt time.Duration, size int64) int {
	if kind == client.KindSSH && rtt >= extraRTT && size >= extraBytes {
		return channels
	}
	return 0
}

// sameOffer reports whether two Handshake answers agree on what the data
// plane uses, so that one transfer may use both connections.
func sameOffer(a, b *pb.HandshakeResponse) bool {
	return a.GetSingleMessageFiles() == b.GetSingleMessageFiles() && a.GetFileBatches() == b.GetFileBatches() &&
		slices.Equal(a.GetContentDigests(), b.GetContentDigests()) && slices.Equal(a.GetCompressions(), b.GetCompressions())
}

// refusedCreate reports whether the slave refused a create because the
// name is taken or the GFID exists elsewhere (EEXIST) or the parent is
// missing (ENOENT): cases a CREATE entry op resolves or reports itself.
func refusedCreate(err error) bool {
	var re *transfer.RemoteError
	return errors.As(err, &re) && (re.Errno == unix.EEXIST || re.Errno == unix.ENOENT) || errors.Is(err, errNoStagedCreates)
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
	fd, st, err := openPathBeneath(root, rel)
	if err != nil {
		return nil, err
	}
	unix.Close(fd)
	return &pb.Stat{Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Atime: &pb.Timestamp{Sec: st.Atim.Sec, Nsec: uint32(st.Atim.Nsec)},
		Mtime: &pb.Timestamp{Sec: st.Mtim.Sec, Nsec: uint32(st.Mtim.Nsec)}}, nil
}

// openPathBeneath opens the regular file rel beneath the directory root
// without following any symlink (an O_PATH descriptor: no read, no side
// effects of opening) and returns it with the file's stat; the caller
// closes it. A file that is gone or no longer regular is
// os.ErrNotExist-like.
func openPathBeneath(root int, rel string) (int, unix.Stat_t, error) {
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	var st unix.Stat_t
	fd, err := unix.Openat2(root, rel, &how)
	if err != nil {
		return -1, st, fmt.Errorf("open %s beneath the master root: %w", rel, err)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, fmt.Errorf("stat %s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, st, fmt.Errorf("%s is no longer a regular file: %w", rel, os.ErrNotExist)
	}
	return fd, st, nil
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
