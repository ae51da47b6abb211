package client

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSlaveURL(t *testing.T) {
	tests := []struct {
		in        string
		want      SlaveURL
		canonical string
	}{
		// local
		{"/srv/slave", SlaveURL{Kind: KindLocal, Path: "/srv/slave"}, "/srv/slave"},
		{"/", SlaveURL{Kind: KindLocal, Path: "/"}, "/"},
		{"/srv//slave/./x/", SlaveURL{Kind: KindLocal, Path: "/srv/slave/x"}, "/srv/slave/x"},
		{"/with space/and:colon", SlaveURL{Kind: KindLocal, Path: "/with space/and:colon"}, "/with space/and:colon"},
		{"/a://b", SlaveURL{Kind: KindLocal, Path: "/a:/b"}, "/a:/b"},
		{"/a..b/...", SlaveURL{Kind: KindLocal, Path: "/a..b/..."}, "/a..b/..."},
		{"file:///srv/slave", SlaveURL{Kind: KindLocal, Path: "/srv/slave"}, "/srv/slave"},
		{"FILE:///srv", SlaveURL{Kind: KindLocal, Path: "/srv"}, "/srv"},
		{"file:////srv", SlaveURL{Kind: KindLocal, Path: "/srv"}, "/srv"},
		// scp-like ssh
		{"host:/srv", SlaveURL{Kind: KindSSH, Host: "host", Path: "/srv"}, "ssh://host/srv"},
		{"geo@slave.example.com:/data/vol", SlaveURL{Kind: KindSSH, User: "geo", Host: "slave.example.com", Path: "/data/vol"}, "ssh://geo@slave.example.com/data/vol"},
		{"10.0.0.5:/x", SlaveURL{Kind: KindSSH, Host: "10.0.0.5", Path: "/x"}, "ssh://10.0.0.5/x"},
		{"[::1]:/path", SlaveURL{Kind: KindSSH, Host: "::1", Path: "/path"}, "ssh://[::1]/path"},
		{"root@[2001:db8::1]:/p", SlaveURL{Kind: KindSSH, User: "root", Host: "2001:db8::1", Path: "/p"}, "ssh://root@[2001:db8::1]/p"},
		{"[fe80::1%eth0]:/p", SlaveURL{Kind: KindSSH, Host: "fe80::1%eth0", Path: "/p"}, "ssh://[fe80::1%eth0]/p"},
		{"[2001:DB8:0::1]:/p", SlaveURL{Kind: KindSSH, Host: "2001:db8::1", Path: "/p"}, "ssh://[2001:db8::1]/p"},
		{"h:/a:b@c", SlaveURL{Kind: KindSSH, Host: "h", Path: "/a:b@c"}, "ssh://h/a:b@c"},
		{"h:/a://b", SlaveURL{Kind: KindSSH, Host: "h", Path: "/a:/b"}, "ssh://h/a:/b"},
		{"my_host-1:/x/", SlaveURL{Kind: KindSSH, Host: "my_host-1", Path: "/x"}, "ssh://my_host-1/x"},
		{"u.s-e_r@h:/x", SlaveURL{Kind: KindSSH, User: "u.s-e_r", Host: "h", Path: "/x"}, "ssh://u.s-e_r@h/x"},
		// ssh://
		{"ssh://host/srv", SlaveURL{Kind: KindSSH, Host: "host", Path: "/srv"}, "ssh://host/srv"},
		{"ssh://geo@host:2222/srv/slave", SlaveURL{Kind: KindSSH, User: "geo", Host: "host", Port: 2222, Path: "/srv/slave"}, "ssh://geo@host:2222/srv/slave"},
		{"ssh://[::1]:22/p", SlaveURL{Kind: KindSSH, Host: "::1", Port: 22, Path: "/p"}, "ssh://[::1]:22/p"},
		{"ssh://[::1]/p", SlaveURL{Kind: KindSSH, Host: "::1", Path: "/p"}, "ssh://[::1]/p"},
		{"ssh://h:022/p", SlaveURL{Kind: KindSSH, Host: "h", Port: 22, Path: "/p"}, "ssh://h:22/p"},
		{"ssh://h:65535/", SlaveURL{Kind: KindSSH, Host: "h", Port: 65535, Path: "/"}, "ssh://h:65535/"},
		{"ssh://h//double", SlaveURL{Kind: KindSSH, Host: "h", Path: "/double"}, "ssh://h/double"},
		{"SSH://h/p", SlaveURL{Kind: KindSSH, Host: "h", Path: "/p"}, "ssh://h/p"},
		// grpcs://
		{"grpcs://slave.example.com:7443", SlaveURL{Kind: KindMTLS, Host: "slave.example.com", Port: 7443}, "grpcs://slave.example.com:7443"},
		{"grpcs://slave:7443/vol1", SlaveURL{Kind: KindMTLS, Host: "slave", Port: 7443, Volume: "vol1"}, "grpcs://slave:7443/vol1"},
		{"grpcs://slave:7443/", SlaveURL{Kind: KindMTLS, Host: "slave", Port: 7443}, "grpcs://slave:7443"},
		{"grpcs://[::1]:1/v.2_x-y", SlaveURL{Kind: KindMTLS, Host: "::1", Port: 1, Volume: "v.2_x-y"}, "grpcs://[::1]:1/v.2_x-y"},
		{"grpcs://127.0.0.1:9000", SlaveURL{Kind: KindMTLS, Host: "127.0.0.1", Port: 9000}, "grpcs://127.0.0.1:9000"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSlaveURL(tc.in)
			if err != nil {
				t.Fatalf("ParseSlaveURL(%q) error: %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseSlaveURL(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if s := got.String(); s != tc.canonical {
				t.Fatalf("String() = %q, want %q", s, tc.canonical)
			}
			again, err := ParseSlaveURL(got.String())
			if err != nil || again != got {
				t.Fatalf("reparse of %q = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestParseSlaveURLRejects(t *testing.T) {
	tests := []struct {
		in     string
		reason string // a fragment the error must contain
	}{
		{"", "empty"},
		{"foo", "accepted forms are"},
		{"relative/path", "relative"},
		{"./x", "relative"},
		{"host:relative", "must be absolute"},
		{"host:", "must be absolute"},
		{":/p", "host is empty"},
		{"@h:/p", "user name before '@' is empty"},
		{"user@:/p", "host is empty"},
		{"-oProxyCommand=x:/p", "must not start with '-'"},
		{"-h:/p", "must not start with '-'"},
		{"-u@h:/p", "must not start with '-'"},
		{"ssh://-oProxyCommand=evil/p", "must not start with '-'"},
		{"ssh://-u@h/p", "must not start with '-'"},
		{"grpcs://-h:1", "must not start with '-'"},
		{"a b@h:/p", "user name"},
		{"u\t@h:/p", "user name"},
		{"u;x@h:/p", "user name"},
		{"ho st:/p", "host"},
		{"h$(x):/p", "host"},
		{".h:/p", "must not start with '.'"},
		{"u@v@h:/p", "host"},
		{"::1:/p", "host is empty"},
		{"[::1:/p", "accepted forms"},
		{"[1.2.3.4]:/p", "not an IPv6 address"},
		{"[nonsense]:/p", "not an IPv6 address"},
		{"[fe80::1%a b]:/p", "IPv6"},
		{"h:/a/../b", `".."`},
		{"/a/..", `".."`},
		{"/..", `".."`},
		{"file:///x/../y", `".."`},
		{"ssh://h/../etc", `".."`},
		{"/a\x00b", "NUL"},
		{"h:/a\x00", "NUL"},
		{"file://host/p", "takes no host"},
		{"file://", "takes no host"},
		{"ssh://host", "absolute path"},
		{"ssh:///p", "host is empty"},
		{"ssh://h:/p", "port is empty"},
		{"ssh://h:0/p", "between 1 and 65535"},
		{"ssh://h:65536/p", "between 1 and 65535"},
		{"ssh://h:-1/p", "between 1 and 65535"},
		{"ssh://h:+22/p", "between 1 and 65535"},
		{"ssh://h:22a/p", "between 1 and 65535"},
		{"ssh://h:99999999999999999999/p", "between 1 and 65535"},
		{"ssh://h:1:2/p", "too many ':'"},
		{"ssh://[::1]x/p", "unexpected"},
		{"ssh://[::1/p", "unterminated"},
		{"grpcs://h", "port is required"},
		{"grpcs://h/vol", "port is required"},
		{"grpcs://:1", "host is empty"},
		{"grpcs://h:0", "between 1 and 65535"},
		{"grpcs://h:1/a/b", "volume name"},
		{"grpcs://h:1/..", "volume name"},
		{"grpcs://h:1/-v", "volume name"},
		{"grpcs://u@h:1", "host"},
		{"http://h/p", "unknown scheme"},
		{"grpc://h:1", "unknown scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSlaveURL(tc.in)
			if err == nil {
				t.Fatalf("ParseSlaveURL(%q) = %+v, want an error", tc.in, got)
			}
			var ue *URLError
			if !errors.As(err, &ue) || ue.Input != tc.in {
				t.Fatalf("error %v is not a *URLError for %q", err, tc.in)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.reason) {
				t.Errorf("error %q does not mention %q", msg, tc.reason)
			}
			if !strings.Contains(msg, "accepted forms are "+acceptedForms) {
				t.Errorf("error %q does not list the accepted forms", msg)
			}
		})
	}
}

func TestURLErrorMessage(t *testing.T) {
	_, err := ParseSlaveURL("foo")
	want := `invalid slave URL "foo": accepted forms are /path, file:///path, [user@]host:/path, ssh://[user@]host[:port]/path, grpcs://host:port[/NAME]`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

func TestSlaveURLAddrAndKind(t *testing.T) {
	tests := []struct {
		in       string
		addr     string
		kindName string
	}{
		{"grpcs://h:7443/v", "h:7443", "mtls"},
		{"grpcs://[::1]:7443", "[::1]:7443", "mtls"},
		{"h:/p", "h:0", "ssh"},
		{"/p", ":0", "local"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := ParseSlaveURL(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.Addr(); got != tc.addr {
				t.Errorf("Addr() = %q, want %q", got, tc.addr)
			}
			if got := u.Kind.String(); got != tc.kindName {
				t.Errorf("Kind = %q, want %q", got, tc.kindName)
			}
		})
	}
}

func FuzzParseSlaveURL(f *testing.F) {
	for _, s := range []string{
		"/srv/slave", "file:///srv", "host:/p", "u@h:/p", "[::1]:/p", "ssh://u@h:22/p",
		"grpcs://h:1/v", "grpcs://[fe80::1%eth0]:443", "-o:/p", "h:/../x", "ssh://h:0/p",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseSlaveURL(s)
		if err != nil {
			if u != (SlaveURL{}) {
				t.Fatalf("error %v came with a non-zero value %+v", err, u)
			}
			if !strings.Contains(err.Error(), acceptedForms) {
				t.Fatalf("error %q does not list the accepted forms", err)
			}
			return
		}
		if strings.HasPrefix(u.Host, "-") || strings.HasPrefix(u.User, "-") {
			t.Fatalf("ParseSlaveURL(%q) accepted an option-like host or user: %+v", s, u)
		}
		switch u.Kind {
		case KindLocal, KindSSH:
			if !strings.HasPrefix(u.Path, "/") || strings.Contains(u.Path, "\x00") {
				t.Fatalf("ParseSlaveURL(%q) path %q is not absolute or has NUL", s, u.Path)
			}
			for _, c := range strings.Split(u.Path, "/") {
				if c == ".." {
					t.Fatalf("ParseSlaveURL(%q) path %q contains ..", s, u.Path)
				}
			}
		case KindMTLS:
			if u.Port < 1 || u.Port > 65535 {
				t.Fatalf("ParseSlaveURL(%q) port %d out of range", s, u.Port)
			}
		default:
			t.Fatalf("ParseSlaveURL(%q) returned kind %v", s, u.Kind)
		}
		again, err := ParseSlaveURL(u.String())
		if err != nil {
			t.Fatalf("canonical %q of %q does not reparse: %v", u.String(), s, err)
		}
		if again != u {
			t.Fatalf("canonical %q of %q reparses to %+v, want %+v", u.String(), s, again, u)
		}
	})
}
