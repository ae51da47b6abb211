package client

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
)

// rsyncHost is the host word rsync is given: the -e programs below already
// know where the slave is, so it only has to be a harmless word (rsync
// appends it to the remote command, and the slave ignores it).
const rsyncHost = "slave"

// sshRsyncShell reaches the slave's rsync daemon through the session's ssh
// connection: the same ssh command, options, port and user, reusing the
// ControlMaster socket the gRPC session opened (never becoming a master
// itself), running "<remote georep> slave rsyncd --root <path>". Under a
// forced command the slave sees the request in SSH_ORIGINAL_COMMAND and
// serves its pinned root instead.
func (c *Conn) sshRsyncShell(context.Context) (*RsyncShell, error) {
	sshCmd := c.opts.SSHCommand
	if sshCmd == "" {
		sshCmd = DefaultSSHCommand(c.opts.StateDir)
	}
	words := strings.Fields(sshCmd)
	// ssh keeps the first value it reads for an option, so ControlMaster=no
	// goes first to override a ControlMaster=auto later in the command.
	argv := slices.Concat([]string{words[0], "-o", "ControlMaster=no"}, c.sshOpts, words[1:])
	if !hasControlPath(words) && c.opts.Logger != nil {
		c.opts.Logger.Info("the ssh command has no ControlPath: each rsync run opens its own ssh connection (and authenticates again)",
			slog.String("ssh_command", sshCmd))
	}
	if c.url.Port != 0 {
		argv = append(argv, "-p", strconv.Itoa(c.url.Port))
	}
	if c.url.User != "" {
		argv = append(argv, "-l", c.url.User)
	}
	remote := c.opts.RemoteGeorep
	if remote == "" {
		remote = "georep"
	}
	// rsync appends "slave rsync --server --daemon ." after these words;
	// ssh joins them all into one string for the remote shell, so each of
	// ours is quoted.
	argv = append(argv, "--", c.url.Host, shellQuote(remote), "slave", "rsyncd", "--root", shellQuote(c.url.Path))
	return &RsyncShell{Command: argv, Host: rsyncHost, Close: func() error { return nil }}, nil
}

// hasControlPath reports whether an ssh command line sets a ControlPath
// (-S or -o ControlPath=...), so a second ssh can reuse the first's
// connection.
func hasControlPath(words []string) bool {
	for i, w := range words {
		lw := strings.ToLower(w)
		switch {
		case w == "-S" && i+1 < len(words):
			return !strings.EqualFold(words[i+1], "none")
		case strings.HasPrefix(w, "-S") && len(w) > 2:
			return true
		case strings.HasPrefix(lw, "controlpath=") || strings.HasPrefix(lw, "-ocontrolpath="):
			return !strings.HasSuffix(lw, "=none")
		case lw == "-o" && i+1 < len(words) && strings.HasPrefix(strings.ToLower(words[i+1]), "controlpath="):
			return !strings.HasSuffix(strings.ToLower(words[i+1]), "=none")
		}
	}
	return false
}

// localRsyncShell runs the local slave's rsync daemon directly: this
// executable (or Options.LocalGeorep) as "slave rsyncd --root <path>".
func (c *Conn) localRsyncShell(context.Context) (*RsyncShell, error) {
	argv, err := LocalArgv(c.url, Options{LocalGeorep: c.opts.LocalGeorep})
	if err != nil {
		return nil, err
	}
	// LocalArgv's first word is the program; the rest are --stdio's.
	cmd := []string{argv[0], "slave", "rsyncd", "--root", c.url.Path}
	return &RsyncShell{Command: cmd, Host: rsyncHost, Close: func() error { return nil }}, nil
}
