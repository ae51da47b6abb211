package main

// The config file is a YAML document whose sections are subcommands
// (master:, slave:) and whose keys are exactly those subcommands' long flag
// names, so the schema is the flags and --help documents it. Values are
// applied through the flags' own Set, after the command line is parsed and
// only to flags the command line left alone: flags override the file.

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// configFlag names the flag that points at the config file. There is
// deliberately no GEOREP_CONFIG environment variable: a session's
// configuration is what its command line says.
const configFlag = "config"

// configSections are the commands a config file may configure.
func configSections() []string { return []string{"master", "slave"} }

// configSource says where an effective value came from.
type configSource struct {
	file string // empty: default or flag
	line int
	flag bool
}

func (s configSource) String() string {
	switch {
	case s.flag:
		return "flag"
	case s.file != "":
		return fmt.Sprintf("%s:%d", s.file, s.line)
	}
	return "default"
}

// configFile is a parsed config file: each section's key/value nodes.
type configFile struct {
	path     string
	sections map[string]*yaml.Node // section name → its mapping node
}

// loadConfigFile reads and parses path, checking only its shape (a mapping
// of known sections, each a mapping); keys are checked against a command's
// flags by apply.
func loadConfigFile(path string) (*configFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &usageError{fmt.Errorf("read --config file: %w", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// yaml.v3 says "yaml: line N: what"; put the line where an editor
		// and the other config errors put it.
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if n, what, ok := strings.Cut(rest, ": "); ok {
				return nil, &usageError{fmt.Errorf("%s:%s: not valid YAML: %s", path, n, what)}
			}
		}
		return nil, &usageError{fmt.Errorf("%s: not valid YAML: %w", path, err)}
	}
	cf := &configFile{path: path, sections: map[string]*yaml.Node{}}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return cf, nil // an empty file configures nothing
	}
	top := resolveAlias(doc.Content[0])
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return cf, nil // only comments
	}
	if top.Kind != yaml.MappingNode {
		return nil, cf.errorf(top, "the file must be a mapping of sections (%s), not a %s", strings.Join(configSections(), ", "), kindName(top))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], resolveAlias(top.Content[i+1])
		if !slices.Contains(configSections(), k.Value) {
			return nil, cf.errorf(k, "unknown section %q; accepted sections: %s", k.Value, strings.Join(configSections(), ", "))
		}
		if first, dup := seen[k.Value]; dup {
			return nil, cf.errorf(k, "section %q given twice (first at line %d)", k.Value, first)
		}
		seen[k.Value] = k.Line
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			continue // "master:" with nothing under it
		}
		if v.Kind != yaml.MappingNode {
			return nil, cf.errorf(v, "section %s must be a mapping of flag names to values, not a %s", k.Value, kindName(v))
		}
		cf.sections[k.Value] = v
	}
	return cf, nil
}

// errorf makes a usage error located at n's line in the file.
func (cf *configFile) errorf(n *yaml.Node, format string, args ...any) error {
	return &usageError{fmt.Errorf("%s:%d: %s", cf.path, n.Line, fmt.Sprintf(format, args...))}
}

// apply sets, from section, every flag of fs that the command line did not
// set, and returns where each flag's value came from. A key that is not a
// flag, or a value the flag refuses, is an error naming its line; on error
// fs may be partly set, and the caller must not run.
func (cf *configFile) apply(section string, fs *pflag.FlagSet) (map[string]configSource, error) {
	sources := map[string]configSource{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			sources[f.Name] = configSource{flag: true}
		}
	})
	m := cf.sections[section]
	if m == nil {
		return sources, nil
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], resolveAlias(m.Content[i+1])
		f := fs.Lookup(k.Value)
		if f == nil || !configurable(f) {
			msg := fmt.Sprintf("unknown key %q in %s", k.Value, section)
			if alt := strings.ReplaceAll(strings.ToLower(k.Value), "_", "-"); alt != k.Value && fs.Lookup(alt) != nil && configurable(fs.Lookup(alt)) {
				msg += fmt.Sprintf(" (did you mean %q?)", alt)
			}
			return nil, cf.errorf(k, "%s; accepted keys: %s", msg, strings.Join(configKeys(fs), ", "))
		}
		if first, dup := seen[f.Name]; dup {
			return nil, cf.errorf(k, "%s.%s given twice (first at line %d)", section, f.Name, first)
		}
		seen[f.Name] = k.Line
		values, err := cf.values(section, f, k, v)
		if err != nil {
			return nil, err
		}
		if f.Changed {
			continue // given on the command line, which wins
		}
		for _, val := range values {
			if err := fs.Set(f.Name, val.Value); err != nil {
				return nil, cf.errorf(val, "%s.%s: %s", section, f.Name, badValue(f, val.Value, err))
			}
		}
		sources[f.Name] = configSource{file: cf.path, line: k.Line}
	}
	return sources, nil
}

// values returns the scalar nodes v gives flag f: one scalar, or for a list
// flag a sequence of scalars (or one scalar). A value of the wrong shape is
// reported at its key k, the line an operator looks for.
func (cf *configFile) values(section string, f *pflag.Flag, k, v *yaml.Node) ([]*yaml.Node, error) {
	_, isList := f.Value.(pflag.SliceValue)
	switch {
	case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
		return nil, cf.errorf(k, "%s.%s has no value: give one (\"\" for empty) or remove the key", section, f.Name)
	case v.Kind == yaml.ScalarNode:
		return []*yaml.Node{v}, nil
	case v.Kind == yaml.SequenceNode && isList:
		out := make([]*yaml.Node, 0, len(v.Content))
		for _, e := range v.Content {
			e = resolveAlias(e)
			if e.Kind != yaml.ScalarNode || e.Tag == "!!null" {
				return nil, cf.errorf(e, "%s.%s: each list item must be a single value, not a %s", section, f.Name, kindName(e))
			}
			out = append(out, e)
		}
		return out, nil
	case isList:
		return nil, cf.errorf(k, "%s.%s: a %s where a list of values is expected", section, f.Name, kindName(v))
	}
	return nil, cf.errorf(k, "%s.%s: a %s where a single %s value is expected", section, f.Name, kindName(v), f.Value.Type())
}

// badValue words a refused value for an operator rather than echoing
// strconv's error.
func badValue(f *pflag.Flag, val string, err error) string {
	switch f.Value.Type() {
	case "int", "int32", "int64", "uint", "uint32", "uint64":
		return fmt.Sprintf("%q is not an integer", val)
	case "bool":
		return fmt.Sprintf("%q is not a boolean (true or false)", val)
	case "duration":
		return fmt.Sprintf("%q is not a duration (e.g. 500ms, 30s, 5m, 1h30m)", val)
	}
	return fmt.Sprintf("%q: %v", val, err)
}

// configurable reports whether a flag may come from the file: every flag
// but --help and --config itself.
func configurable(f *pflag.Flag) bool {
	return f.Name != "help" && f.Name != configFlag
}

// configKeys lists the keys a section accepts: its command's flag names.
func configKeys(fs *pflag.FlagSet) []string {
	var keys []string
	fs.VisitAll(func(f *pflag.Flag) {
		if configurable(f) {
			keys = append(keys, f.Name)
		}
	})
	slices.Sort(keys)
	return keys
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return "single value"
	}
	return "document"
}

// bindConfigFile gives cmd a --config flag and applies the file's section
// to cmd's flags after the command line is parsed, before RunE, so a bad
// file stops the command before it opens or writes anything. Usage errors
// RunE returns that name a flag set from the file are prefixed with the
// file and line the value came from.
func bindConfigFile(cmd *cobra.Command, section string) {
	cmd.Flags().String(configFlag, "", "read flag values from this YAML file, section \""+section+":\", keys are this command's long flag names (e.g. sync-jobs: 4; lists as YAML lists); flags on the command line override it. \"georep config show\" prints the result. The GEOREP_CONFIG environment variable is not read")
	var sources map[string]configSource
	pre := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if pre != nil {
			if err := pre(c, args); err != nil {
				return err
			}
		}
		var err error
		sources, err = applyConfigFlag(c.Flags(), section)
		return err
	}
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		err := run(c, args)
		if err != nil && isUsageError(err) {
			return locateConfigError(err, section, sources)
		}
		return err
	}
}

// applyConfigFlag applies the file named by fs's --config, if any.
func applyConfigFlag(fs *pflag.FlagSet, section string) (map[string]configSource, error) {
	path, err := fs.GetString(configFlag)
	if err != nil {
		return nil, err
	}
	if path == "" {
		return nil, nil
	}
	cf, err := loadConfigFile(path)
	if err != nil {
		return nil, err
	}
	return cf.apply(section, fs)
}

// flagMentions returns the NAMEs of every "--NAME" in msg.
func flagMentions(msg string) []string {
	var names []string
	for rest := msg; ; {
		i := strings.Index(rest, "--")
		if i < 0 {
			return names
		}
		rest = rest[i+2:]
		n := strings.IndexFunc(rest, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
		})
		if n < 0 {
			n = len(rest)
		}
		if n > 0 {
			names = append(names, rest[:n])
		}
		rest = rest[n:]
	}
}

// locateConfigError prefixes a validation error that mentions flags whose
// values came from the config file with where they came from, so an
// operator fixes the file rather than a command line they never typed.
func locateConfigError(err error, section string, sources map[string]configSource) error {
	var where []string
	for _, name := range flagMentions(err.Error()) {
		if s, ok := sources[name]; ok && s.file != "" {
			w := fmt.Sprintf("%s: %s.%s", s, section, name)
			if !slices.Contains(where, w) {
				where = append(where, w)
			}
		}
	}
	if len(where) == 0 {
		return err
	}
	return &usageError{fmt.Errorf("%s: %w", strings.Join(where, ", "), err)}
}

// newConfigCommand builds `georep config`.
func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Inspect georep's configuration file",
		Long: `Every flag of "georep master" and "georep slave" can also come from a YAML
file given with --config FILE. The file has a section per command, master:
and slave:, whose keys are exactly that command's long flag names (see
"georep master --help" and "georep slave --help"); list flags such as
exclude or volume take YAML lists. A flag given on the command line
overrides the file; a flag in neither keeps its default.`,
		Args: noArgs,
	}
	show := &cobra.Command{
		Use:   "show [--config FILE] [master|slave] [flags...]",
		Short: "Print the effective configuration and where each value came from",
		Long: `Print the effective configuration of "georep master", "georep slave" or
both, as YAML a --config file can use: every key with its value and, as a
comment, its source: default, FILE:LINE or flag. Flags after master or
slave are that command's own and override the file as they would there.
A bad file is reported with its line, as the commands themselves would.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			path, _ := c.Flags().GetString(configFlag)
			for _, section := range configSections() {
				fs := sectionFlags(section)
				if err := showSection(c.OutOrStdout(), path, section, fs); err != nil {
					return err
				}
			}
			return nil
		},
	}
	show.PersistentFlags().String(configFlag, "", "the YAML config file to read (as --config of master and slave)")
	for _, section := range configSections() {
		sub := &cobra.Command{
			Use:   section + " [--config FILE] [flags...]",
			Short: "Print the effective configuration of georep " + section,
			Args:  noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				path, _ := c.Flags().GetString(configFlag)
				return showSection(c.OutOrStdout(), path, section, c.Flags())
			},
		}
		sectionFlags(section).VisitAll(func(f *pflag.Flag) {
			if configurable(f) {
				sub.Flags().AddFlag(f)
			}
		})
		sub.Flags().SortFlags = false
		show.AddCommand(sub)
	}
	cmd.AddCommand(show)
	return cmd
}

// sectionFlags returns the flags of the command a section configures, in
// declaration order, bound to a configuration nothing runs.
func sectionFlags(section string) *pflag.FlagSet {
	var c *cobra.Command
	switch section {
	case "master":
		c = newMasterCommand()
	case "slave":
		c = newSlaveCommand()
	default:
		panic("georep: no config section " + section)
	}
	fs := c.Flags()
	fs.SortFlags = false
	return fs
}

// showSection applies the file at path (if any) to fs and writes the
// section as YAML, each value commented with its source.
func showSection(w io.Writer, path, section string, fs *pflag.FlagSet) error {
	sources := map[string]configSource{}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			sources[f.Name] = configSource{flag: true}
		}
	})
	if path != "" {
		cf, err := loadConfigFile(path)
		if err != nil {
			return err
		}
		if sources, err = cf.apply(section, fs); err != nil {
			return err
		}
	}
	body := &yaml.Node{Kind: yaml.MappingNode}
	fs.VisitAll(func(f *pflag.Flag) {
		if !configurable(f) {
			return
		}
		body.Content = append(body.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: f.Name}, valueNode(f, sources[f.Name]))
	})
	doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: section}, body}}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("write the %s configuration: %w", section, err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("write the %s configuration: %w", section, err)
	}
	return nil
}

// valueNode renders f's current value as YAML, commented with its source;
// strings are tagged so a value such as "true" stays a string when read back.
func valueNode(f *pflag.Flag, src configSource) *yaml.Node {
	comment := src.String()
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, LineComment: comment}
		for _, e := range sv.GetSlice() {
			n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: e})
		}
		return n
	}
	tag := "!!str"
	switch f.Value.Type() {
	case "bool":
		tag = "!!bool"
	case "int", "int32", "int64", "uint", "uint32", "uint64":
		tag = "!!int"
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: f.Value.String(), LineComment: comment}
}
