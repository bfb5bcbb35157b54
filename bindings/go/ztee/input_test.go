package ztee

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer collects streamed output (written from libztee's loop
// thread, read by the test).
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits until the output is exactly want (30 s at most).
func (l *lockedBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if l.String() == want {
			return
		}
	}
	t.Fatalf("output stayed %q, want %q", l.String(), want)
}

func TestStartStdinFeedsCatInPieces(t *testing.T) {
	_, sb := shared(t)
	t0 := time.Now()
	var out lockedBuffer
	p, err := sb.StartExec(context.Background(), []string{"cat"}, &RunOptions{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	for _, piece := range []string{"one\n", "two\n"} {
		want := out.String() + piece
		if n, err := p.Stdin.Write([]byte(piece)); err != nil || n != len(piece) {
			t.Fatalf("Write(%q) = %d, %v", piece, n, err)
		}
		out.waitFor(t, want)
	}
	if _, err := p.Stdin.Write([]byte("three")); err != nil {
		t.Fatal(err)
	}
	if err := p.Stdin.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := p.Wait()
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("Wait = %+v, %v", r, err)
	}
	if out.String() != "one\ntwo\nthree" {
		t.Errorf("stdout %q", out.String())
	}
	// The command has ended: writes say so; Close and Wait still work.
	if n, err := p.Stdin.Write([]byte("late")); n != 0 || !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "ended") {
		t.Errorf("Write after the end = %d, %v", n, err)
	}
	if err := p.Stdin.Close(); err != nil {
		t.Errorf("Close after the end: %v", err)
	}
	if r2, _ := p.Wait(); r2 != r {
		t.Error("a second Wait returned another result")
	}
	t.Logf("pieces: %v", time.Since(t0))
}

func TestStartStdinAfterCloseAndBadOptions(t *testing.T) {
	_, sb := shared(t)
	p, err := sb.Start(context.Background(), "sleep 0.5; cat", nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Stdin.Close()
	if _, err := p.Stdin.Write([]byte("x")); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "after close") {
		t.Errorf("Write after Close: %v", err)
	}
	if r, err := p.Wait(); err != nil || r.ExitCode != 0 {
		t.Errorf("Wait = %+v, %v", r, err)
	}
	if _, err := sb.Start(context.Background(), "cat", &RunOptions{Stdin: []byte("x")}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Start with RunOptions.Stdin: %v", err)
	}
	if _, err := sb.StartExec(context.Background(), nil, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("StartExec(nil): %v", err)
	}
}

func TestStartStdinLargeBySha256(t *testing.T) {
	_, sb := shared(t)
	t0 := time.Now()
	data := make([]byte, 4<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := sb.Start(ctx, "sha256sum | cut -d' ' -f1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// One Write past InputMaxBuffered: it waits for the sandbox to take it.
	if n, err := p.Stdin.Write(data); err != nil || n != len(data) {
		t.Fatalf("Write = %d, %v", n, err)
	}
	p.Stdin.Close()
	r, err := p.Wait()
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("Wait = %+v, %v", r, err)
	}
	sum := sha256.Sum256(data)
	if got := strings.TrimSpace(string(r.Stdout)); got != hex.EncodeToString(sum[:]) {
		t.Errorf("guest sha256 %q, want %x", got, sum)
	}
	if InputMaxBuffered != 1<<20 {
		t.Errorf("InputMaxBuffered = %d", InputMaxBuffered)
	}
	t.Logf("4 MiB: %v", time.Since(t0))
}

type notASyscallSignal struct{}

func (notASyscallSignal) String() string { return "not-a-signal" }
func (notASyscallSignal) Signal()        {}

func TestProcessSignal(t *testing.T) {
	_, sb := shared(t)
	t0 := time.Now()
	ctx := context.Background()
	// Right after Start, before the command runs in the guest: it follows the start.
	for i := 0; i < 3; i++ {
		q, err := sb.StartExec(ctx, []string{"sleep", "60"}, &RunOptions{Timeout: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if r, err := q.Wait(); err != nil || r.Signal != 15 || r.TimedOut {
			t.Fatalf("round %d: Wait = %+v, %v", i, r, err)
		}
	}
	var out lockedBuffer
	p, err := sb.Start(ctx, "trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.05; done",
		&RunOptions{Stdout: &out, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "ready\n")
	if err := p.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	r, err := p.Wait()
	if err != nil || r.ExitCode != 7 || r.Signal != 0 || r.Cancelled {
		t.Fatalf("Wait = %+v, %v", r, err)
	}
	if out.String() != "ready\ngot USR1\n" {
		t.Errorf("stdout %q", out.String())
	}
	// Bad numbers, and a command that has ended: clear errors.
	for _, bad := range []syscall.Signal{0, 65, -1} {
		if err := p.Signal(bad); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("Signal(%d): %v", int(bad), err)
		}
	}
	if err := p.Signal(notASyscallSignal{}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Signal(not a syscall.Signal): %v", err)
	}
	if err := p.Signal(syscall.SIGUSR1); !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "has ended") {
		t.Errorf("Signal after the end: %v", err)
	}
	// An untrapped SIGTERM ends the command with it.
	var out2 lockedBuffer
	q, err := sb.Start(ctx, "echo ready; sleep 30", &RunOptions{Stdout: &out2})
	if err != nil {
		t.Fatal(err)
	}
	out2.waitFor(t, "ready\n")
	if err := q.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if r, err := q.Wait(); err != nil || r.Signal != 15 || r.ExitCode != -1 || r.Cancelled {
		t.Errorf("Wait = %+v, %v", r, err)
	}
	t.Logf("signals: %v", time.Since(t0))
}
