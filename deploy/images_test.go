package deploy_test

import (
	"fmt"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// No Docker engine runs here, so the images' users, directories and modes
// are worked out from the Dockerfile: the build stage's mkdir modes, then
// each final stage's COPY (--chown, --chmod), USER, ENV and EXPOSE lines,
// through the stages it rests on. The checks then do what each binary does
// at start: the peer refuses a socket directory that is not its user's or
// that group or others may enter; keys are written by the image's user.

// entry is one path of an image: owner and mode.
type entry struct {
	uid  int
	mode os.FileMode // permission bits
	dir  bool
}

// image is what a final stage amounts to.
type image struct {
	name   string
	uid    int
	env    map[string]string
	expose []string
	files  map[string]entry
}

// baseUsers are the users the base images run as.
var baseUsers = map[string]int{
	"gcr.io/distroless/static-debian12:nonroot": 65532,
	"gcr.io/distroless/static-debian12":         0,
	"scratch":                                   0,
}

// mkdirModes returns the directories mkdir makes in RUN lines, with their
// modes (0755 without -m: the default umask).
func mkdirModes(lines []string) map[string]os.FileMode {
	out := map[string]os.FileMode{}
	for _, l := range lines {
		if !strings.HasPrefix(strings.ToUpper(l), "RUN ") {
			continue
		}
		for _, cmd := range strings.FieldsFunc(l, func(r rune) bool { return r == '&' || r == ';' || r == '|' }) {
			f := strings.Fields(cmd)
			i := slices.Index(f, "mkdir")
			if i < 0 {
				continue
			}
			mode := os.FileMode(0o755)
			for j := i + 1; j < len(f); j++ {
				a := f[j]
				switch {
				case a == "-p":
				case a == "-m" && j+1 < len(f):
					j++
					m, _ := strconv.ParseUint(f[j], 8, 32)
					mode = os.FileMode(m)
				case strings.HasPrefix(a, "--mode="):
					m, _ := strconv.ParseUint(strings.TrimPrefix(a, "--mode="), 8, 32)
					mode = os.FileMode(m)
				case strings.HasPrefix(a, "-"):
				default:
					out[a] = mode
				}
			}
		}
	}
	return out
}

// buildImage works out the final stage name.
func buildImage(stages map[string]*stage, name string) (*image, error) {
	chain := []*stage{}
	base := name
	for {
		st, ok := stages[base]
		if !ok {
			break
		}
		chain = append([]*stage{st}, chain...)
		base = st.from
		if len(chain) > 5 {
			return nil, fmt.Errorf("stage loop")
		}
	}
	uid, ok := baseUsers[base]
	if !ok {
		return nil, fmt.Errorf("%s: unknown base image %s", name, base)
	}
	dirs := mkdirModes(stages["build"].lines)
	img := &image{name: name, uid: uid, env: map[string]string{}, files: map[string]entry{}}
	for _, st := range chain {
		for _, l := range st.lines {
			f := strings.Fields(l)
			switch strings.ToUpper(f[0]) {
			case "USER":
				u, err := strconv.Atoi(strings.Split(f[1], ":")[0])
				if err != nil {
					return nil, fmt.Errorf("%s: USER %s: want a numeric uid (a name needs /etc/passwd)", name, f[1])
				}
				img.uid = u
			case "ENV":
				for _, kv := range f[1:] {
					if k, v, ok := strings.Cut(kv, "="); ok {
						img.env[k] = v
					}
				}
			case "EXPOSE":
				img.expose = append(img.expose, f[1:]...)
			case "COPY":
				from, owner, chmod := "", 0, os.FileMode(0)
				var args []string
				for _, a := range f[1:] {
					switch {
					case strings.HasPrefix(a, "--from="):
						from = strings.TrimPrefix(a, "--from=")
					case strings.HasPrefix(a, "--chown="):
						u, err := strconv.Atoi(strings.Split(strings.TrimPrefix(a, "--chown="), ":")[0])
						if err != nil {
							return nil, fmt.Errorf("%s: %s: want a numeric uid", name, a)
						}
						owner = u
					case strings.HasPrefix(a, "--chmod="):
						m, err := strconv.ParseUint(strings.TrimPrefix(a, "--chmod="), 8, 32)
						if err != nil {
							return nil, fmt.Errorf("%s: %s", name, a)
						}
						chmod = os.FileMode(m)
					case strings.HasPrefix(a, "--"):
					default:
						args = append(args, a)
					}
				}
				if from != "build" || len(args) != 2 {
					continue
				}
				src, dst := args[0], args[1]
				e := entry{uid: owner, mode: 0o755} // binaries: as built
				if m, ok := dirs[src]; ok {
					e.dir, e.mode = true, m // COPY --from keeps the mode
				}
				if chmod != 0 {
					e.mode = chmod
				}
				img.files[dst] = e
			}
		}
	}
	return img, nil
}

// checkImage reports what would stop the image's binary, or expose it.
func checkImage(img *image) []string {
	var out []string
	if img.uid == 0 {
		out = append(out, img.name+": runs as root")
	}
	if a, ok := img.env["KEYMESH_ADMIN"]; ok {
		host := a[:max(strings.LastIndex(a, ":"), 0)]
		ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
		if err != nil || !ip.IsLoopback() {
			out = append(out, fmt.Sprintf("%s: KEYMESH_ADMIN=%s: the admin endpoint has no authentication; listen on loopback", img.name, a))
		}
		_, port, _ := strings.Cut(a, ":")
		for _, e := range img.expose {
			if strings.TrimSuffix(e, "/tcp") == port {
				out = append(out, fmt.Sprintf("%s: EXPOSE %s publishes the admin port", img.name, e))
			}
		}
	}
	private := func(what, dir string) {
		e, ok := img.files[dir]
		switch {
		case !ok || !e.dir:
			out = append(out, fmt.Sprintf("%s: %s directory %s is not in the image (the user %d cannot make it)", img.name, what, dir, img.uid))
		case e.uid != img.uid:
			out = append(out, fmt.Sprintf("%s: %s directory %s belongs to uid %d, the image runs as %d", img.name, what, dir, e.uid, img.uid))
		case e.mode&0o700 != 0o700 || e.mode&0o077 != 0:
			out = append(out, fmt.Sprintf("%s: %s directory %s has mode %#o, want 0700", img.name, what, dir, e.mode))
		}
	}
	if k, ok := img.env["KEYMESH_KEY"]; ok {
		private("key", path.Dir(k))
	}
	if s, ok := img.env["KEYMESH_SOCKET"]; ok {
		// The daemon refuses a socket directory that is not its user's
		// or that group or others may enter (daemon.ListenSocket).
		private("socket", path.Dir(s))
	}
	if img.name == "peer" {
		if _, ok := img.env["KEYMESH_SOCKET"]; !ok {
			out = append(out, "peer: no KEYMESH_SOCKET: the default under /tmp or $XDG_RUNTIME_DIR is not set up in the image")
		}
	}
	return out
}

func checkImages(text string) []string {
	stages, _ := parseDockerfile(text)
	if _, ok := stages["build"]; !ok {
		return []string{"no build stage"}
	}
	var out []string
	for _, c := range cmds {
		img, err := buildImage(stages, c)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		out = append(out, checkImage(img)...)
	}
	return out
}

// TestImages is issue 11's item 4 and issue 10's item 11: each image runs
// as a non-root user that owns private key and socket directories (the
// peer's daemon starts as built), and no admin endpoint listens beyond the
// container's loopback.
func TestImages(t *testing.T) {
	b, err := os.ReadFile(repoRoot + "/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkImages(string(b)) {
		t.Error("Dockerfile: " + p)
	}
}

func TestImagesCheckCatchesMistakes(t *testing.T) {
	b, err := os.ReadFile(repoRoot + "/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	// The Dockerfile before the fix: no modes, the socket in the state
	// directory, admin on every address.
	old := [][2]string{
		{"mkdir -p -m 0700 /out/state /out/run", "mkdir -p /out/state"},
		{"--chmod=0700 /out/state", "/out/state"},
		{"COPY --from=build --chown=65532:65532 --chmod=0700 /out/run /run/keymesh\n", ""},
		{"KEYMESH_SOCKET=/run/keymesh/peer.sock", "KEYMESH_SOCKET=/var/lib/keymesh/peer.sock"},
	}
	cases := map[string]struct {
		edits [][2]string
		want  string
	}{
		"open socket dir": {[][2]string{{"--chmod=0700 /out/run /run/keymesh", "/out/run /run/keymesh"}, {"-m 0700 /out/state /out/run", "/out/state /out/run"}}, "socket directory /run/keymesh has mode 0755"},
		"root socket dir": {[][2]string{{"--chown=65532:65532 --chmod=0700 /out/run", "--chmod=0700 /out/run"}}, "belongs to uid 0"},
		"no socket dir":   {[][2]string{{"COPY --from=build --chown=65532:65532 --chmod=0700 /out/run /run/keymesh", ""}}, "is not in the image"},
		"public admin":    {[][2]string{{"KEYMESH_ADMIN=127.0.0.1:9090", "KEYMESH_ADMIN=0.0.0.0:9090"}}, "no authentication"},
		"exposed admin":   {[][2]string{{"EXPOSE 3478/udp", "EXPOSE 3478/udp 9090/tcp"}}, "publishes the admin port"},
		"before the fix":  {old, "peer: socket directory /var/lib/keymesh has mode 0755"},
	}
	for name, tc := range cases {
		text := good
		for _, e := range tc.edits {
			if !strings.Contains(text, e[0]) {
				t.Fatalf("%s: Dockerfile has no %q; update the case", name, e[0])
			}
			text = strings.Replace(text, e[0], e[1], 1)
		}
		got := checkImages(text)
		found := false
		for _, p := range got {
			found = found || strings.Contains(p, tc.want)
		}
		if !found {
			t.Errorf("%s: check did not report %q: %q", name, tc.want, got)
		}
	}
}
