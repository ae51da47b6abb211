package client

import (
	"context"
	"fmt"
)

// RsyncModule is the name of the one module a slave's rsync daemon serves:
// its staging area (StageFiles names directories inside it).
const RsyncModule = "georep"

// RsyncShell is how an rsync on the master reaches the slave's rsync
// daemon over this connection's transport ("daemon over a remote shell"):
//
//	rsync -e '<Command...>' ... <Host>::georep/<stage>/
//
// rsync appends the host and "rsync --server --daemon ." to Command and
// talks the daemon protocol over the program's stdin and stdout.
type RsyncShell struct {
	// Command is the -e program and its arguments, one word each.
	Command []string
	// Host is the host name to give rsync (the program may ignore it).
	Host string
	// Close releases what the shell holds (a relay socket, say); it is
	// safe to call more than once.
	Close func() error
}

// RsyncShell returns the way to reach the slave's rsync daemon through this
// connection: ssh's ControlMaster for ssh slaves, the georep program itself
// for local ones, and an RsyncTunnel stream for mTLS ones.
func (c *Conn) RsyncShell(ctx context.Context) (*RsyncShell, error) {
	if c.Info != nil && !c.Info.GetRsync() {
		return nil, fmt.Errorf("slave %s has no rsync program: install rsync there, or use --sync-mode native", c.url)
	}
	switch c.url.Kind {
	case KindSSH:
		return c.sshRsyncShell(ctx)
	case KindLocal:
		return c.localRsyncShell(ctx)
	case KindMTLS:
		return c.tlsRsyncShell(ctx)
	default:
		return nil, fmt.Errorf("rsync to %s: unknown transport %s", c.url, c.url.Kind)
	}
}
