package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/georep/georep/server"
)

// version is set at build time by the Makefile
// (-ldflags "-X main.version=$(git describe)"); empty means "ask the build
// info", which knows the module version when installed with go install.
var version string

// softwareVersion returns the version this binary reports.
func softwareVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// versionLine is what `georep version` prints: the version, the protocol
// it speaks (what decides whether a master and a slave can talk) and the Go
// release it was built with.
func versionLine() string {
	return fmt.Sprintf("georep %s (protocol %d.%d, %s)",
		softwareVersion(), server.ProtocolMajor, server.ProtocolMinor, runtime.Version())
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print georep's version, protocol version and Go version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), versionLine())
			return err
		},
	}
}
