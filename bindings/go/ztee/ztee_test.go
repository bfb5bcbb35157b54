package ztee

// These tests boot real microVMs (the guest image must exist: tools/dev
// setup) and need root (the VMM jail). They share one runtime and one
// sandbox where they can: a cold boot takes seconds under TCG.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	testRT    *Runtime
	testSB    *Sandbox
	stateDir  string
	setupOnce sync.Once
	setupErr  error
)

func shared(t *testing.T) (*Runtime, *Sandbox) {
	t.Helper()
	setupOnce.Do(func() {
		stateDir, setupErr = os.MkdirTemp("", "ztee-go-test.")
		if setupErr != nil {
			return
		}
		testRT, setupErr = NewRuntime(&RuntimeOptions{StateDir: stateDir})
		if setupErr != nil {
			return
		}
		testSB, setupErr = testRT.NewSandbox(context.Background(), nil)
	})
	if setupErr != nil {
		t.Fatalf("set-up: %v", setupErr)
	}
	return testRT, testSB
}

func TestMain(m *testing.M) {
	code := m.Run()
	if gatePool != nil {
		gatePool.Close()
	}
	if testSB != nil {
		testSB.Close()
	}
	if testRT != nil {
		testRT.Close()
	}
	if stateDir != "" {
		os.RemoveAll(stateDir)
	}
	os.Exit(code)
}

func TestVersionAndFeatures(t *testing.T) {
	if v := Version(); strings.Count(v, ".") != 2 {
		t.Errorf("Version() = %q", v)
	}
	if !HasFeature("qemu") || HasFeature("no-such-feature") {
		t.Error("HasFeature")
	}
	if StatusTimeout.String() != "ZTEE_E_TIMEOUT" {
		t.Errorf("StatusTimeout.String() = %q", StatusTimeout.String())
	}
}

func TestRuntimeBackendSaysWhichAndWhy(t *testing.T) {
	rt, _ := shared(t)
	b := rt.Backend()
	if !strings.HasPrefix(b, "qemu/kvm (") && !strings.HasPrefix(b, "qemu/tcg (") {
		t.Errorf("Backend() = %q", b)
	}
	if strings.HasPrefix(b, "qemu/kvm") != HasFeature("kvm") {
		t.Errorf("Backend() %q disagrees with HasFeature(kvm)", b)
	}
	tcg, err := NewRuntime(&RuntimeOptions{StateDir: stateDir, Accel: "tcg"})
	if err != nil {
		t.Fatal(err)
	}
	defer tcg.Close()
	if !strings.HasPrefix(tcg.Backend(), "qemu/tcg (accel tcg requested") {
		t.Errorf("tcg Backend() = %q", tcg.Backend())
	}
	if !HasFeature("kvm") {
		if _, err := NewRuntime(&RuntimeOptions{StateDir: stateDir, Accel: "kvm"}); !errors.Is(err, ErrBackendUnavailable) {
			t.Errorf("accel kvm here: %v", err)
		}
	}
}

func TestRunOutputExitEnvCwdStdin(t *testing.T) {
	_, sb := shared(t)
	if err := sb.Ping(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, err := sb.Run(ctx, "echo out; echo err >&2; exit 3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Stdout) != "out\n" || string(r.Stderr) != "err\n" || r.ExitCode != 3 {
		t.Errorf("got %+v", r)
	}
	r, err = sb.Exec(ctx, []string{"sh", "-c", `printf '%s %s ' "$GREETING" "$(pwd)"; cat`},
		&RunOptions{Env: map[string]string{"GREETING": "hi there"}, Cwd: "/tmp", Stdin: []byte("from stdin")})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(r.Stdout); got != "hi there /tmp from stdin" {
		t.Errorf("stdout %q", got)
	}
}

func TestStreamingToWriters(t *testing.T) {
	_, sb := shared(t)
	var out, errb bytes.Buffer
	r, err := sb.Run(context.Background(), "for i in 1 2 3; do echo line$i; done; echo oops >&2",
		&RunOptions{Stdout: &out, Stderr: &errb})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "line1\nline2\nline3\n" || errb.String() != "oops\n" {
		t.Errorf("streamed %q / %q", out.String(), errb.String())
	}
	if len(r.Stdout) != 0 || len(r.Stderr) != 0 {
		t.Errorf("streamed output also collected: %+v", r)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriterErrorCancelsTheCommand(t *testing.T) {
	_, sb := shared(t)
	start := time.Now()
	r, err := sb.Run(context.Background(), "echo first; sleep 60", &RunOptions{Stdout: failingWriter{}})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v", err)
	}
	if r == nil || !r.Cancelled || r.Signal != 9 {
		t.Errorf("result %+v", r)
	}
	if time.Since(start) > 30*time.Second {
		t.Errorf("the command was not killed (took %v)", time.Since(start))
	}
}

func TestContextDeadlineTimesOut(t *testing.T) {
	_, sb := shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	r, err := sb.Run(ctx, "sleep 30", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if r == nil || !(r.TimedOut || r.Cancelled) {
		t.Errorf("result %+v", r)
	}
}

func TestContextCancelKillsTheCommand(t *testing.T) {
	_, sb := shared(t)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	var once sync.Once
	w := writerFunc(func(p []byte) (int, error) {
		once.Do(func() { close(started) })
		return len(p), nil
	})
	go func() {
		<-started
		cancel()
	}()
	r, err := sb.Run(ctx, "echo go; sleep 60", &RunOptions{Stdout: w})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	if r == nil || !r.Cancelled || r.Signal != 9 || r.ExitCode != -1 {
		t.Errorf("result %+v", r)
	}
	// A context cancelled before the call: nothing runs.
	if _, err := sb.Run(ctx, "true", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
	// The sandbox is still usable.
	if r, err := sb.Run(context.Background(), "echo ok", nil); err != nil || string(r.Stdout) != "ok\n" {
		t.Errorf("after cancel: %v %+v", err, r)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestErrorsCarryCodeAndMessage(t *testing.T) {
	_, sb := shared(t)
	_, err := sb.Exec(context.Background(), []string{"/no/such/program"}, nil)
	var ze *Error
	if !errors.As(err, &ze) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v (%T), want ErrNotFound", err, err)
	}
	if ze.Message == "" || ze.Code != StatusNotFound {
		t.Errorf("%+v", ze)
	}
	_, err = sb.ReadFile(context.Background(), "relative/path", 0)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("relative path: %v", err)
	}
	if _, err := NewRuntime(&RuntimeOptions{StateDir: stateDir, Accel: "warp"}); !errors.Is(err, ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "auto, kvm or tcg") {
		t.Errorf("bad accel: %v", err)
	}
}

func TestFiles(t *testing.T) {
	_, sb := shared(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := sb.Mkdir(ctx, "/work/go/sub", true, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := sb.WriteFile(ctx, "/work/go/sub/data.bin", data, 0o600); err != nil {
		t.Fatal(err)
	}
	back, err := sb.ReadFile(ctx, "/work/go/sub/data.bin", 0)
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("read back %d bytes, err %v", len(back), err)
	}
	fi, err := sb.Stat(ctx, "/work/go/sub/data.bin")
	if err != nil || fi.Type != TypeFile || fi.Size != uint64(len(data)) || fi.Mode&0o777 != 0o600 {
		t.Errorf("stat %+v %v", fi, err)
	}
	list, err := sb.ListDir(ctx, "/work/go")
	if err != nil || len(list) != 1 || list[0].Name != "sub" || list[0].Type != TypeDir {
		t.Errorf("list %+v %v", list, err)
	}
	if err := sb.Remove(ctx, "/work/go", true); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.Stat(ctx, "/work/go"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after remove: %v", err)
	}
}

func TestConcurrentRunsOnOneSandbox(t *testing.T) {
	_, sb := shared(t)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := sb.Run(context.Background(), fmt.Sprintf("echo %d", i), nil)
			if err != nil {
				errs <- err
				return
			}
			if string(r.Stdout) != fmt.Sprintf("%d\n", i) {
				errs <- fmt.Errorf("run %d: stdout %q", i, r.Stdout)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPoolLease(t *testing.T) {
	rt, _ := shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pool, err := rt.NewPool(ctx, &PoolOptions{MinReady: 1, MaxTotal: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	a, err := pool.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	r, err := a.Run(ctx, "echo leased", nil)
	if err != nil || string(r.Stdout) != "leased\n" {
		t.Fatalf("%v %+v", err, r)
	}
	st, err := pool.Stats()
	if err != nil || st.Leases != 1 || st.Leased != 1 {
		t.Errorf("stats %+v %v", st, err)
	}
	// With max_total reached, a short deadline times out.
	b, err := pool.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	short, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if _, err := pool.Lease(short); !errors.Is(err, ErrTimeout) {
		t.Errorf("lease over max_total: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Error(err)
	}
	if _, err := a.Run(ctx, "true", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("run after close: %v", err)
	}
}

// A sandbox dropped without Close is destroyed by its finalizer: its
// directory in the state dir goes away once the garbage collector runs.
func TestFinalizerDestroysAForgottenSandbox(t *testing.T) {
	rt, _ := shared(t)
	id := func() string {
		sb, err := rt.NewSandbox(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return sb.ID()
	}()
	dir := filepath.Join(stateDir, id)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("the sandbox's directory %s: %v", dir, err)
	}
	for i := 0; i < 100; i++ {
		runtime.GC()
		if _, err := os.Stat(dir); os.IsNotExist(err) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%s still exists after GC: the finalizer did not destroy the sandbox", dir)
}
