package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/georep/georep/internal/certs"
)

// certsConfig is everything `georep certs` is configured with.
type certsConfig struct {
	Dir         string
	ServerNames []string
	Clients     []string
}

func (c *certsConfig) bindFlags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&c.Dir, "dir", "", "the certificate directory: holds the CA, and receives the new files (created mode 0700 if missing; required)")
	fs.StringSliceVar(&c.ServerNames, "server-names", nil, "issue the slave's certificate for these host names or IP addresses, the ones masters dial (comma-separated)")
	fs.StringSliceVar(&c.Clients, "clients", nil, "issue a client certificate for each of these masters (comma-separated names, also their identity for the slave's --allow)")
}

func (c *certsConfig) check() error {
	if c.Dir == "" {
		return &usageError{errors.New("--dir is required: the directory that holds (or will hold) the CA")}
	}
	if len(c.ServerNames) == 0 && len(c.Clients) == 0 {
		return &usageError{errors.New("nothing to issue: pass --server-names for the slave's certificate and/or --clients for masters' certificates")}
	}
	return nil
}

func newCertsCommand() *cobra.Command {
	var cfg certsConfig
	cmd := &cobra.Command{
		Use:   "certs --dir DIR [--server-names NAME,...] [--clients NAME,...]",
		Short: "Issue the CA and certificates of the mTLS transport",
		Long: `Issue the certificates of the mTLS transport (georep slave --listen).

The first run creates a private CA in --dir (ca.crt, ca.key); later runs
reuse it. --server-names issues the slave's certificate (server.crt,
server.key) for the names masters dial; --clients issues NAME.crt and
NAME.key for each master. Files named in a run are replaced, so re-running
with the same names rotates those certificates: a running slave picks up its
new server.crt without a restart. Keep ca.key where only this command runs.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := cfg.check(); err != nil {
				return err
			}
			return runCerts(cfg, cmd.OutOrStdout())
		},
	}
	cfg.bindFlags(cmd)
	return cmd
}

// runCerts issues what cfg asks for and tells the operator which files it
// wrote and where each one goes.
func runCerts(cfg certsConfig, out io.Writer) error {
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return fmt.Errorf("resolve --dir %q: %w", cfg.Dir, err)
	}
	caCert := filepath.Join(dir, certs.CACertFile)
	_, statErr := os.Stat(caCert)
	caExisted := statErr == nil
	if statErr != nil && !errors.Is(statErr, fs.ErrNotExist) {
		return fmt.Errorf("examine %s: %w", caCert, statErr)
	}
	if err := certs.Generate(dir, cfg.ServerNames, cfg.Clients); err != nil {
		return fmt.Errorf("issue certificates in %s: %w", dir, err)
	}

	var b strings.Builder
	path := func(name string) string { return filepath.Join(dir, name) }
	if caExisted {
		fmt.Fprintf(&b, "kept    %s (the existing CA)\n", caCert)
	} else {
		fmt.Fprintf(&b, "created %s (the CA certificate: copy it to the slave and to every master)\n", caCert)
		fmt.Fprintf(&b, "created %s (the CA key: keep it here, never on the slave or a master)\n", path(certs.CAKeyFile))
	}
	if len(cfg.ServerNames) > 0 {
		fmt.Fprintf(&b, "wrote   %s (the slave's certificate for %s)\n", path(certs.ServerCertFile), strings.Join(cfg.ServerNames, ", "))
		fmt.Fprintf(&b, "wrote   %s (the slave's key)\n", path(certs.ServerKeyFile))
	}
	for _, c := range cfg.Clients {
		fmt.Fprintf(&b, "wrote   %s (master %s's certificate)\n", path(certs.ClientCertFile(c)), c)
		fmt.Fprintf(&b, "wrote   %s (master %s's key)\n", path(certs.ClientKeyFile(c)), c)
	}

	host := "HOST"
	if len(cfg.ServerNames) > 0 {
		host = cfg.ServerNames[0]
		if strings.Contains(host, ":") {
			host = "[" + host + "]" // an IPv6 address in a URL or HOST:PORT
		}
	}
	allow := ""
	if len(cfg.Clients) > 0 {
		allow = " --allow " + strings.Join(cfg.Clients, ",")
	}
	if len(cfg.ServerNames) > 0 {
		fmt.Fprintf(&b, "\nOn the slave (%s):\n  georep slave --listen 0.0.0.0:7070 --cert %s --key %s --ca %s%s --volume NAME=DIR\n",
			host, path(certs.ServerCertFile), path(certs.ServerKeyFile), caCert, allow)
	} else {
		b.WriteString("\nOn the slave: nothing to copy; a slave started with --allow admits these masters once they are added to it (a restart).\n")
	}
	for _, c := range cfg.Clients {
		fmt.Fprintf(&b, "On master %s (copy its two files and ca.crt there):\n  slave URL grpcs://%s:7070/NAME with --cert %s --key %s --ca %s\n",
			c, host, path(certs.ClientCertFile(c)), path(certs.ClientKeyFile(c)), caCert)
	}
	_, err = io.WriteString(out, b.String())
	return err
}
