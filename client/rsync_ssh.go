package client

import (
	"context"
	"errors"
)

// sshRsyncShell reaches the slave's rsync daemon through the session's ssh
// ControlMaster. (Being built.)
func (c *Conn) sshRsyncShell(context.Context) (*RsyncShell, error) {
	return nil, errors.New("rsync mode over ssh is being built")
}

// localRsyncShell runs the local slave's rsync daemon directly. (Being built.)
func (c *Conn) localRsyncShell(context.Context) (*RsyncShell, error) {
	return nil, errors.New("rsync mode to a local slave is being built")
}
