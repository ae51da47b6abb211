package deploy_test

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper-cased: FROM, RUN, ...
	args string
}

// parseDockerfile splits a Dockerfile into instructions: comments and blank
// lines dropped, backslash-continued lines joined. That is all of the syntax
// the rules below need; buildkit's parser would pull in a large module.
func parseDockerfile(src string) []instruction {
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, line := range strings.Split(src, "\n") {
		t := strings.TrimSpace(line)
		if cur.Len() == 0 && (t == "" || strings.HasPrefix(t, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if cont, ok := strings.CutSuffix(t, `\`); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(t)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

var (
	pinnedImage = regexp.MustCompile(`^[a-z0-9./_-]+(:[A-Za-z0-9._-]+)?(@sha256:[0-9a-f]{64})?$`)
	execForm    = regexp.MustCompile(`^\[\s*".*"\s*\]$`)
)

// checkDockerfile applies the rules georep's image keeps: a multi-stage
// build, base images pinned by tag or digest, a static (CGO_ENABLED=0)
// binary in a distroless/static or scratch final stage that runs as a
// non-root user with georep as an exec-form entrypoint, and no ADD of URLs.
func checkDockerfile(ins []instruction) []error {
	var errs []error
	fail := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...)))
	}
	stages := map[string]bool{}
	var froms []instruction
	var finalUser, finalEntrypoint *instruction
	cgoOff := false
	for i, in := range ins {
		switch in.cmd {
		case "FROM":
			froms = append(froms, in)
			finalUser, finalEntrypoint = nil, nil
			f := strings.Fields(in.args)
			image := f[0]
			if stages[image] {
				break
			}
			switch {
			case image == "scratch":
			case !pinnedImage.MatchString(image) || (!strings.Contains(image, "@sha256:") && !strings.Contains(image[strings.LastIndex(image, "/")+1:], ":")):
				fail(in.line, "base image %q is not pinned by tag or digest", image)
			case strings.HasSuffix(image, ":latest"):
				fail(in.line, "base image %q uses :latest, which is not a pin", image)
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				stages[f[2]] = true
			}
		case "ADD":
			if strings.Contains(in.args, "://") {
				fail(in.line, "ADD of a URL: download in a build stage with a checked hash instead")
			}
		case "COPY":
			for _, f := range strings.Fields(in.args) {
				if from, ok := strings.CutPrefix(f, "--from="); ok && !stages[from] {
					fail(in.line, "COPY --from=%s names no earlier stage", from)
				}
			}
		case "RUN":
			if strings.Contains(in.args, "go build") && strings.Contains(in.args, "CGO_ENABLED=0") {
				cgoOff = true
			}
		case "USER":
			finalUser = &ins[i]
		case "ENTRYPOINT":
			finalEntrypoint = &ins[i]
		}
	}
	if len(froms) < 2 {
		return append(errs, fmt.Errorf("%d stage(s): want a build stage and a final stage", len(froms)))
	}
	last := froms[len(froms)-1]
	image := strings.Fields(last.args)[0]
	if image != "scratch" && !strings.HasPrefix(image, "gcr.io/distroless/static") {
		fail(last.line, "final stage is %q: want scratch or gcr.io/distroless/static*", image)
	}
	if !cgoOff {
		errs = append(errs, fmt.Errorf("no RUN builds with CGO_ENABLED=0 go build: the binary would need a libc"))
	}
	if finalUser == nil {
		fail(last.line, "final stage sets no USER: it would run as root")
	} else if u, _, _ := strings.Cut(finalUser.args, ":"); u == "0" || u == "root" {
		fail(finalUser.line, "final stage runs as root (USER %s)", finalUser.args)
	}
	if finalEntrypoint == nil || !execForm.MatchString(finalEntrypoint.args) || !strings.Contains(finalEntrypoint.args, "georep") {
		fail(last.line, "final stage has no exec-form ENTRYPOINT running georep")
	}
	return errs
}

func readDockerfile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDockerfile(t *testing.T) {
	if errs := checkDockerfile(parseDockerfile(readDockerfile(t))); len(errs) > 0 {
		t.Fatalf("Dockerfile problems: %v", errs)
	}
}

// TestDockerfileChecksCatchMistakes breaks the Dockerfile one way at a time.
func TestDockerfileChecksCatchMistakes(t *testing.T) {
	tests := []struct{ name, old, new, want string }{
		{"unpinned base", "FROM golang:1.26.8-bookworm AS build", "FROM golang AS build", "not pinned"},
		{"latest base", "FROM golang:1.26.8-bookworm AS build", "FROM golang:latest AS build", ":latest"},
		{"final stage with a libc", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:12", "want scratch"},
		{"root user", "USER 65532:65532", "USER root", "runs as root"},
		{"no user", "USER 65532:65532\n", "", "no USER"},
		{"cgo on", "CGO_ENABLED=0 GOOS", "GOOS", "CGO_ENABLED=0"},
		{"shell-form entrypoint", `ENTRYPOINT ["/usr/local/bin/georep"]`, "ENTRYPOINT /usr/local/bin/georep", "exec-form"},
		{"add url", "COPY . .", "ADD https://example.com/x.tgz /src/", "ADD of a URL"},
		{"copy from nowhere", "COPY --from=build", "COPY --from=builder", "names no earlier stage"},
		{"single stage", "FROM gcr.io/distroless/static-debian12:nonroot\nCOPY --from=build /out/georep /usr/local/bin/georep\n", "", "stage(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := readDockerfile(t)
			if !strings.Contains(src, tt.old) {
				t.Fatalf("Dockerfile no longer contains %q; update this case", tt.old)
			}
			errs := checkDockerfile(parseDockerfile(strings.Replace(src, tt.old, tt.new, 1)))
			if !strings.Contains(fmt.Sprint(errs), tt.want) {
				t.Fatalf("got %v, want an error containing %q", errs, tt.want)
			}
		})
	}
}

// TestStaticBinary builds georep as the Dockerfile does (CGO_ENABLED=0) and
// checks the result needs no dynamic loader, so it runs on distroless/static.
func TestStaticBinary(t *testing.T) {
	out := filepath.Join(t.TempDir(), "georep")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "../cmd/georep")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build failed: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary has a PT_INTERP (a dynamic loader): it would not run on distroless/static")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Fatalf("the binary imports shared libraries %v (err %v)", libs, err)
	}
}
