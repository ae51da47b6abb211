package client

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"
)

// SlaveKind says which transport a slave URL selects.
type SlaveKind int

const (
	// KindLocal is a slave tree on this host, opened directly.
	KindLocal SlaveKind = iota + 1
	// KindSSH is a slave reached by running georep over ssh and speaking gRPC on its stdio.
	KindSSH
	// KindMTLS is a slave listening for gRPC over TLS 1.3 with client certificates.
	KindMTLS
)

// String names the kind the way logs and status output show it.
func (k SlaveKind) String() string {
	switch k {
	case KindLocal:
		return "local"
	case KindSSH:
		return "ssh"
	case KindMTLS:
		return "mtls"
	default:
		return "SlaveKind(" + strconv.Itoa(int(k)) + ")"
	}
}

// SlaveURL is a parsed, validated slave URL. Only the fields of its Kind are set:
// Local uses Path; SSH uses User (optional), Host, Port (0 means ssh's default) and Path;
// MTLS uses Host, Port and Volume (optional). Values are comparable with ==.
type SlaveURL struct {
	Kind SlaveKind
	// User is the ssh login name; empty lets ssh choose.
	User string
	// Host is a DNS name or an IP address, without IPv6 brackets.
	Host string
	// Port is 1-65535, or 0 for an ssh URL that names none.
	Port int
	// Path is the slave root: absolute, cleaned, without ".." components.
	Path string
	// Volume is the name a mTLS slave serves, when the URL names one.
	Volume string
}

// acceptedForms is quoted in every parse error so the user sees what would have worked.
const acceptedForms = "/path, file:///path, [user@]host:/path, ssh://[user@]host[:port]/path, grpcs://host:port[/NAME]"

// URLError reports a slave URL that could not be parsed and why.
type URLError struct {
	Input  string
	Reason string
}

func (e *URLError) Error() string {
	if e.Reason == "" {
		return fmt.Sprintf("invalid slave URL %q: accepted forms are %s", e.Input, acceptedForms)
	}
	return fmt.Sprintf("invalid slave URL %q: %s; accepted forms are %s", e.Input, e.Reason, acceptedForms)
}

// ParseSlaveURL parses the slave URL forms gsyncd accepted:
//
//	/abs/path, file:///abs/path                 local
//	host:/abs/path, user@host:/abs/path, [::1]:/abs/path,
//	ssh://[user@]host[:port]/abs/path            ssh
//	grpcs://host:port[/NAME]                     mTLS
//
// User and host names end up as ssh arguments, so anything that could be read as an
// option or split by a shell (a leading '-', spaces, control characters) is refused
// here rather than quoted later.
func ParseSlaveURL(s string) (SlaveURL, error) {
	fail := func(format string, args ...any) (SlaveURL, error) {
		return SlaveURL{}, &URLError{Input: s, Reason: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return fail("it is empty")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fail("it contains a NUL byte")
	}

	if scheme, rest, ok := strings.Cut(s, "://"); ok && isScheme(scheme) {
		switch strings.ToLower(scheme) {
		case "file":
			if !strings.HasPrefix(rest, "/") {
				return fail("a file URL takes no host: write file:///path")
			}
			p, reason := cleanSlavePath(rest)
			if reason != "" {
				return fail("%s", reason)
			}
			return SlaveURL{Kind: KindLocal, Path: p}, nil
		case "ssh":
			authority, p, found := strings.Cut(rest, "/")
			if !found {
				return fail("an ssh URL needs an absolute path after the host")
			}
			u := SlaveURL{Kind: KindSSH}
			hostport := authority
			if user, rest, hasUser := strings.Cut(authority, "@"); hasUser {
				hostport = rest
				if reason := checkUser(user); reason != "" {
					return fail("%s", reason)
				}
				u.User = user
			}
			host, port, reason := splitHostPort(hostport, false)
			if reason != "" {
				return fail("%s", reason)
			}
			u.Host, u.Port = host, port
			if u.Path, reason = cleanSlavePath("/" + p); reason != "" {
				return fail("%s", reason)
			}
			return u, nil
		case "grpcs":
			hostport, name, _ := strings.Cut(rest, "/")
			host, port, reason := splitHostPort(hostport, true)
			if reason != "" {
				return fail("%s", reason)
			}
			if name != "" {
				if reason := checkVolume(name); reason != "" {
					return fail("%s", reason)
				}
			}
			return SlaveURL{Kind: KindMTLS, Host: host, Port: port, Volume: name}, nil
		default:
			return fail("unknown scheme %q", scheme)
		}
	}

	if strings.HasPrefix(s, "/") {
		p, reason := cleanSlavePath(s)
		if reason != "" {
			return fail("%s", reason)
		}
		return SlaveURL{Kind: KindLocal, Path: p}, nil
	}

	// scp-like [user@]host:/path. The separator is the first ':' outside brackets,
	// so "[::1]:/p" splits after the bracket and "h:/a:b" keeps the colon in the path.
	sep := -1
	depth := 0
	for i := 0; i < len(s) && sep < 0; i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case ':':
			if depth == 0 {
				sep = i
			}
		}
	}
	if sep < 0 {
		if strings.Contains(s, "/") {
			return fail("relative paths are not accepted")
		}
		return fail("")
	}
	authority, p := s[:sep], s[sep+1:]
	u := SlaveURL{Kind: KindSSH}
	host := authority
	if user, rest, hasUser := strings.Cut(authority, "@"); hasUser {
		host = rest
		if reason := checkUser(user); reason != "" {
			return fail("%s", reason)
		}
		u.User = user
	}
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return fail("unterminated '[' in host %q", host)
		}
		ip, reason := checkIPv6(host[1 : len(host)-1])
		if reason != "" {
			return fail("%s", reason)
		}
		host = ip
	} else if reason := checkHostName(host); reason != "" {
		return fail("%s", reason)
	}
	u.Host = host
	if !strings.HasPrefix(p, "/") {
		return fail("the slave path %q must be absolute", p)
	}
	var reason string
	if u.Path, reason = cleanSlavePath(p); reason != "" {
		return fail("%s", reason)
	}
	return u, nil
}

// String returns the canonical form of u, which ParseSlaveURL maps back to an equal value.
// SSH URLs always use the ssh:// form because only it can carry a port.
func (u SlaveURL) String() string {
	switch u.Kind {
	case KindLocal:
		return u.Path
	case KindSSH:
		var b strings.Builder
		b.WriteString("ssh://")
		if u.User != "" {
			b.WriteString(u.User)
			b.WriteByte('@')
		}
		if u.Port != 0 {
			b.WriteString(net.JoinHostPort(u.Host, strconv.Itoa(u.Port)))
		} else if strings.Contains(u.Host, ":") {
			b.WriteString("[" + u.Host + "]")
		} else {
			b.WriteString(u.Host)
		}
		b.WriteString(u.Path)
		return b.String()
	case KindMTLS:
		s := "grpcs://" + net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
		if u.Volume != "" {
			s += "/" + u.Volume
		}
		return s
	default:
		return fmt.Sprintf("invalid slave URL (kind %d)", int(u.Kind))
	}
}

// Addr is the host:port a mTLS slave listens on, ready for a dialer.
func (u SlaveURL) Addr() string {
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// isScheme reports whether s looks like a URL scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )),
// so "host:/a://b" is read as an scp-like URL, not as scheme "host:/a".
func isScheme(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isNameByte is the conservative character set for user names, host names and
// volume names: nothing a shell or ssh would treat specially.
func isNameByte(c byte) bool {
	return isAlpha(c) || isDigit(c) || c == '.' || c == '-' || c == '_'
}

// cleanSlavePath returns the cleaned absolute path, or a reason it is refused.
// ".." is refused outright instead of being resolved away: a URL that climbs
// is almost certainly a mistake, and path.Clean would hide it.
func cleanSlavePath(p string) (string, string) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Sprintf("the slave path %q must be absolute", p)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", "the slave path contains a NUL byte"
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", fmt.Sprintf("the slave path %q must not contain \"..\"", p)
		}
	}
	return path.Clean(p), ""
}

func checkUser(user string) string {
	if user == "" {
		return "the user name before '@' is empty"
	}
	if user[0] == '-' {
		return fmt.Sprintf("the user name %q must not start with '-'", user)
	}
	for i := 0; i < len(user); i++ {
		if !isNameByte(user[i]) {
			return fmt.Sprintf("the user name %q may contain only letters, digits, '.', '-' and '_'", user)
		}
	}
	return ""
}

func checkHostName(host string) string {
	if host == "" {
		return "the host is empty"
	}
	if host[0] == '-' || host[0] == '.' {
		return fmt.Sprintf("the host %q must not start with '%c'", host, host[0])
	}
	for i := 0; i < len(host); i++ {
		if !isNameByte(host[i]) {
			return fmt.Sprintf("the host %q may contain only letters, digits, '.', '-' and '_' (put IPv6 addresses in brackets)", host)
		}
	}
	return ""
}

// checkIPv6 validates the inside of a bracketed host and returns its canonical text.
func checkIPv6(s string) (string, string) {
	addr, err := netip.ParseAddr(s)
	if err != nil || !addr.Is6() {
		return "", fmt.Sprintf("[%s] is not an IPv6 address", s)
	}
	zone := addr.Zone()
	for i := 0; i < len(zone); i++ {
		if !isNameByte(zone[i]) {
			return "", fmt.Sprintf("the IPv6 zone %q may contain only letters, digits, '.', '-' and '_'", zone)
		}
	}
	return addr.String(), ""
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port".
func splitHostPort(hostport string, needPort bool) (host string, port int, reason string) {
	var portText string
	hasPort := false
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", 0, fmt.Sprintf("unterminated '[' in %q", hostport)
		}
		if host, reason = checkIPv6(hostport[1:end]); reason != "" {
			return "", 0, reason
		}
		after := hostport[end+1:]
		if after != "" {
			if after[0] != ':' {
				return "", 0, fmt.Sprintf("unexpected %q after the IPv6 address", after)
			}
			portText, hasPort = after[1:], true
		}
	} else {
		host, portText, hasPort = strings.Cut(hostport, ":")
		if strings.Contains(portText, ":") {
			return "", 0, fmt.Sprintf("too many ':' in %q (put IPv6 addresses in brackets)", hostport)
		}
		if reason = checkHostName(host); reason != "" {
			return "", 0, reason
		}
	}
	if !hasPort {
		if needPort {
			return "", 0, "a port is required"
		}
		return host, 0, ""
	}
	if port, reason = parsePort(portText); reason != "" {
		return "", 0, reason
	}
	return host, port, ""
}

func parsePort(s string) (int, string) {
	if s == "" {
		return 0, "the port is empty"
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, fmt.Sprintf("the port %q is not a number between 1 and 65535", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Sprintf("the port %q is not a number between 1 and 65535", s)
	}
	return int(n), ""
}

func checkVolume(name string) string {
	if name == "." || name == ".." || name[0] == '-' {
		return fmt.Sprintf("the volume name %q is not allowed", name)
	}
	for i := 0; i < len(name); i++ {
		if !isNameByte(name[i]) {
			return fmt.Sprintf("the volume name %q may contain only letters, digits, '.', '-' and '_'", name)
		}
	}
	return ""
}
