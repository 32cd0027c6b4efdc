// Package podmantest starts a private Podman engine that speaks the Docker
// Engine API, for the tests of the Docker driver and of berth serve --driver
// docker, and builds the images those tests run from programs installed on
// the host (no image can be pulled here).
//
// Each engine is a `podman system service` with its own storage (--root),
// run directory (--runroot), containers.conf (network configuration
// directory, lock files, subnet pool) and unix socket in a temporary
// directory, so that engines started by different tests, or by tests and a
// person at once, never see each other's containers, volumes or networks.
// Podman keeps one piece of state per machine that no option moves: its
// network run directory (/run/containers/networks), where DNS records and
// address leases are kept by network name. Tests therefore give their
// clusters unique names, which makes the networks' names unique.
//
// Locally a missing podman skips the test with the command that installs it;
// under CI=true it fails the test (see package testenv).
package podmantest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berthio/berth/internal/testenv"
)

// InstallCommand installs everything an engine needs on Debian.
const InstallCommand = "apt-get install -y podman runc netavark aardvark-dns iptables"

// Images the tests build. RedisImage is the name the built-in Redis template
// asks for version 7.0, so that the built-in catalogue runs unchanged.
const (
	BusyboxImage = "localhost/berth-test/busybox:latest"
	RedisImage   = "docker.io/library/redis:7.0"
)

// Engine is one running private engine.
type Engine struct {
	// Host is the engine's address in DOCKER_HOST form: unix:///.../podman.sock.
	Host string
	// Dir is the engine's temporary directory.
	Dir string

	env  []string
	args []string // --root and --runroot
	cmd  *exec.Cmd
	logs *testenv.Buffer
	done chan struct{}
}

// Start starts an engine for the test and stops it, removing every
// container, volume, network and image it has, when the test ends.
func Start(t testing.TB) *Engine {
	t.Helper()
	Require(t)
	e, err := start()
	if err != nil {
		t.Fatalf("starting podman: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("stopping podman: %v", err)
		}
	})
	return e
}

// Require skips the test (fails it under CI) when podman, runc, netavark or
// the iptables netavark publishes ports with is missing.
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireBinary(t, "podman", InstallCommand)
	for _, program := range []string{"runc", "iptables", "netavark"} {
		if findProgram(program) != "" {
			continue
		}
		if testenv.InCI() {
			t.Fatalf("%s is not installed and CI=true (install it with: %s)", program, InstallCommand)
		}
		t.Skipf("%s is not installed; install it with: %s", program, InstallCommand)
	}
}

// findProgram finds a program Podman runs: on the PATH, or where Debian and
// other distributions put it (sbin directories may be missing from a
// test's PATH; netavark is in Podman's own directory).
func findProgram(name string) string {
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/lib/podman", "/usr/libexec/podman"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	return ""
}

func start() (*Engine, error) {
	// Not t.TempDir: a unix socket path must stay under 108 bytes, and test
	// names make those long.
	dir, err := os.MkdirTemp("", "podman-")
	if err != nil {
		return nil, err
	}
	e := &Engine{
		Host: "unix://" + filepath.Join(dir, "podman.sock"),
		Dir:  dir,
		args: []string{"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "runroot")},
		logs: &testenv.Buffer{},
		done: make(chan struct{}),
	}
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte(containersConf(dir)), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// CONTAINERS_CONF replaces the machine's containers.conf, so the engine
	// works the same whatever /etc/containers holds.
	e.env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	e.cmd = exec.Command("podman", append(e.args, "system", "service", "--time=0", e.Host)...)
	e.cmd.Env = e.env
	e.cmd.Stdout, e.cmd.Stderr = e.logs, e.logs
	if err := e.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	go func() { _ = e.cmd.Wait(); close(e.done) }()
	if err := e.waitReady(30 * time.Second); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// containersConf is the engine's configuration: the settings that make
// rootful Podman work in a container-less CI machine (runc, no default
// ulimits, cgroupfs, file events and locks), netavark networks with name
// resolution, and its own network configuration directory and subnet pool.
func containersConf(dir string) string {
	// A random /16 per engine keeps the subnets of engines running at the
	// same time apart.
	var b [1]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf(`[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
tmp_dir = %q

[network]
network_backend = "netavark"
network_config_dir = %q
default_subnet_pools = [{"base" = "10.%d.0.0/16", "size" = 24}]
`, filepath.Join(dir, "tmp"), filepath.Join(dir, "networks"), 128+int(b[0])%96)
}

// waitReady waits until the API answers /_ping.
func (e *Engine) waitReady(timeout time.Duration) error {
	c := e.HTTPClient()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get("http://podman/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-e.done:
			return fmt.Errorf("podman system service exited: %s", e.logs)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("podman system service did not answer within %s (%v): %s", timeout, err, e.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Socket returns the path of the engine's unix socket.
func (e *Engine) Socket() string { return strings.TrimPrefix(e.Host, "unix://") }

// HTTPClient returns a client whose every request goes to the engine's
// socket, whatever the URL's host, for checks of the engine's own API.
func (e *Engine) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", e.Socket())
		}},
	}
}

// Objects lists, through the engine's Docker-compatible API, every
// container (running or not), volume and network that carries label (a
// "key" or "key=value" filter), as "container NAME", "volume NAME" and
// "network NAME": for tests that check that nothing was left behind.
func (e *Engine) Objects(t testing.TB, label string) []string {
	t.Helper()
	filters, _ := json.Marshal(map[string][]string{"label": {label}})
	query := "?filters=" + url.QueryEscape(string(filters))
	var containers []struct{ Names []string }
	e.getJSON(t, "/containers/json"+query+"&all=true", &containers)
	var volumes struct{ Volumes []struct{ Name string } }
	e.getJSON(t, "/volumes"+query, &volumes)
	var networks []struct{ Name string }
	e.getJSON(t, "/networks"+query, &networks)
	var objects []string
	for _, c := range containers {
		objects = append(objects, "container "+strings.TrimPrefix(strings.Join(c.Names, ","), "/"))
	}
	for _, v := range volumes.Volumes {
		objects = append(objects, "volume "+v.Name)
	}
	for _, n := range networks {
		objects = append(objects, "network "+n.Name)
	}
	return objects
}

// APIVersion is the Docker Engine API version the tests' own checks use;
// Podman 4 serves 1.41.
const APIVersion = "v1.41"

func (e *Engine) getJSON(t testing.TB, path string, out any) {
	t.Helper()
	resp, err := e.HTTPClient().Get("http://podman/" + APIVersion + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

// Inspect returns the engine's view of one container (GET
// /containers/NAME/json) decoded into out.
func (e *Engine) Inspect(t testing.TB, container string, out any) {
	t.Helper()
	e.getJSON(t, "/containers/"+url.PathEscape(container)+"/json", out)
}

// Logs returns what the engine printed so far.
func (e *Engine) Logs() string { return e.logs.String() }

// Podman runs the podman command line against the engine's storage and
// returns its standard output.
func (e *Engine) Podman(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "podman", append(append([]string(nil), e.args...), args...)...)
	cmd.Env = e.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("podman %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Stop removes everything the engine holds, stops it and removes its
// directory. Containers run outside the service process (under conmon), so
// they are removed first.
func (e *Engine) Stop() error {
	var errs []error
	if _, err := os.Stat(e.Dir); err == nil && e.cmd != nil {
		for i := 0; i < 3; i++ {
			// Containers that others depend on fail on the first pass.
			if _, err := e.Podman("rm", "--all", "--force", "--time", "0"); err == nil {
				break
			} else if i == 2 {
				errs = append(errs, err)
			}
		}
	}
	// Only the service itself: the DNS server it may have started serves
	// the networks of every engine on the machine.
	if e.cmd != nil && e.cmd.Process != nil {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(20 * time.Second):
			_ = e.cmd.Process.Kill()
			<-e.done
		}
	}
	// reset removes the volumes, networks and images and unmounts the
	// storage, which a plain RemoveAll could not remove while mounted.
	if _, err := e.Podman("system", "reset", "--force"); err != nil {
		errs = append(errs, err)
	}
	if err := unmountUnder(e.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(e.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// unmountUnder lazily unmounts whatever is still mounted below dir.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var targets []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && strings.HasPrefix(fields[1], dir+"/") {
			targets = append(targets, fields[1])
		}
	}
	// Deepest first.
	sort.Sort(sort.Reverse(sort.StringSlice(targets)))
	for _, target := range targets {
		if err := syscall.Unmount(target, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("unmounting %s: %w", target, err)
		}
	}
	return nil
}

// ImportBusybox builds a busybox image from the host's busybox (Debian's
// busybox-static, or busybox with the libraries it links) with every applet
// linked in /bin, and names it ref.
func (e *Engine) ImportBusybox(t testing.TB, ref string) {
	t.Helper()
	bin := testenv.RequireBinary(t, "busybox", "apt-get install -y busybox-static")
	fs := newRootFS()
	if err := fs.addProgram("/bin/busybox", bin); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			fs.symlink("/bin/"+applet, "busybox")
		}
	}
	e.importRootFS(t, fs, ref)
}

// ImportRedis builds a Redis image from the host's redis-server and the
// libraries it links, with an empty /data, and names it ref.
func (e *Engine) ImportRedis(t testing.TB, ref string) {
	t.Helper()
	bin := testenv.RequireBinary(t, "redis-server", "apt-get install -y redis-server")
	fs := newRootFS()
	// Debian's redis-server is a link to redis-check-rdb, which decides
	// what to be by its name: the image gets the binary under that name.
	if err := fs.addProgram("/usr/bin/redis-server", bin); err != nil {
		t.Fatal(err)
	}
	fs.dir("/data", 0o777)
	e.importRootFS(t, fs, ref)
}

func (e *Engine) importRootFS(t testing.TB, fs *rootFS, ref string) {
	t.Helper()
	tarball := filepath.Join(e.Dir, "image.tar")
	if err := fs.writeTar(tarball); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(tarball)
	if _, err := e.Podman("import", "--quiet", tarball, ref); err != nil {
		t.Fatal(err)
	}
}

// rootFS is an image's root filesystem being assembled: paths in the image
// and where their content comes from on the host.
type rootFS struct {
	dirs     map[string]int64
	files    map[string]string // image path -> host path
	symlinks map[string]string // image path -> target
}

func newRootFS() *rootFS {
	fs := &rootFS{dirs: map[string]int64{}, files: map[string]string{}, symlinks: map[string]string{}}
	fs.dir("/tmp", 0o1777)
	fs.dir("/etc", 0o755)
	return fs
}

func (fs *rootFS) dir(p string, mode int64) {
	for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
		if _, ok := fs.dirs[d]; !ok {
			fs.dirs[d] = 0o755
		}
	}
	fs.dirs[p] = mode
}

func (fs *rootFS) file(p, host string) {
	fs.dir(filepath.Dir(p), 0o755)
	fs.files[p] = host
}

func (fs *rootFS) symlink(p, target string) {
	fs.dir(filepath.Dir(p), 0o755)
	fs.symlinks[p] = target
}

// addProgram adds a host program at path p and every shared library ldd
// lists for it, at the library's own path.
func (fs *rootFS) addProgram(p, host string) error {
	real, err := filepath.EvalSymlinks(host)
	if err != nil {
		return err
	}
	fs.file(p, real)
	out, err := exec.Command("ldd", real).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") {
			return nil // static
		}
		return fmt.Errorf("ldd %s: %v: %s", real, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		for _, field := range strings.Fields(line) {
			if strings.HasPrefix(field, "/") {
				lib, err := filepath.EvalSymlinks(field)
				if err != nil {
					return err
				}
				fs.file(field, lib)
			}
		}
	}
	return nil
}

func (fs *rootFS) writeTar(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	var dirs []string
	for d := range fs.dirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs) // parents first
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "." + d + "/", Mode: fs.dirs[d], ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	for _, p := range sortedKeys(fs.files) {
		if err := addFile(tw, p, fs.files[p]); err != nil {
			return err
		}
	}
	for _, p := range sortedKeys(fs.symlinks) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "." + p, Linkname: fs.symlinks[p], Mode: 0o777, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func addFile(tw *tar.Writer, p, host string) error {
	src, err := os.Open(host)
	if err != nil {
		return err
	}
	defer src.Close()
	info, err := src.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: "." + p, Mode: int64(info.Mode().Perm()), Size: info.Size(), ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.Copy(tw, src)
	return err
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
