// Package ztee runs commands in throwaway microVMs through libztee's C ABI
// (capi/ztee.h; nothing else of libztee is used).
//
// Build: cgo finds ztee.h beside this package's sources (../../../capi) and
// links -lztee; point the linker at the library with CGO_LDFLAGS, e.g.
// CGO_LDFLAGS="-L/usr/local/lib -Wl,-rpath,/usr/local/lib" for an installed
// prefix or "-L$PWD/build/lib -Wl,-rpath,$PWD/build/lib" for a build tree.
//
// Every blocking call runs on a goroutine's locked OS thread, and a failure's
// details (ztee_last_error, which is per thread) are read on that same
// thread before it is unlocked. Handles have a Close method; a finalizer
// closes what a program forgot, as a backstop only.
package ztee

/*
#cgo CFLAGS: -I${SRCDIR}/../../../capi
#cgo LDFLAGS: -lztee
#include <stdlib.h>
#include <string.h>
#include "ztee.h"

extern void zteeGoOutput(uintptr_t handle, int stream, char *data, size_t len);

static void ztee_go_stdout(void *ud, const char *data, size_t len) {
  zteeGoOutput((uintptr_t)ud, 1, (char *)data, len);
}
static void ztee_go_stderr(void *ud, const char *data, size_t len) {
  zteeGoOutput((uintptr_t)ud, 2, (char *)data, len);
}
// Streams stdout and/or stderr to the Go side (handle: a cgo.Handle).
static void ztee_go_stream(ztee_exec_options *o, uintptr_t handle, int out, int err) {
  if (out) o->on_stdout = ztee_go_stdout;
  if (err) o->on_stderr = ztee_go_stderr;
  o->user_data = (void *)handle;
}
static const char **ztee_go_strings(size_t n) { return (const char **)calloc(n ? n : 1, sizeof(char *)); }
static void ztee_go_set_string(const char **a, size_t i, char *s) { a[i] = s; }
static void ztee_go_free_strings(const char **a, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) free((void *)a[i]);
  free((void *)a);
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/cgo"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Status is a libztee status code (ZTEE_OK or a negative ZTEE_E_*).
type Status int32

// The status codes of capi/ztee.h (never renumbered).
const (
	StatusOK                 Status = 0
	StatusInvalidArgument    Status = -1
	StatusNoMemory           Status = -2
	StatusInternal           Status = -3
	StatusNotFound           Status = -4
	StatusImage              Status = -5
	StatusBackendUnavailable Status = -6
	StatusTimeout            Status = -7
	StatusSandboxFailed      Status = -8
	StatusClosed             Status = -9
	StatusIO                 Status = -10
	StatusProtocol           Status = -11
	StatusGuest              Status = -12
	StatusPermission         Status = -13
	StatusUnsupported        Status = -14
	StatusConflict           Status = -15
)

// String is the status's symbolic name, e.g. "ZTEE_E_TIMEOUT".
func (s Status) String() string { return C.GoString(C.ztee_status_name(C.ztee_status(s))) }

// Error is a libztee failure: its status, the OS errno where there is one,
// and a message that says what went wrong and what to do.
// errors.Is(err, ztee.ErrTimeout) and friends match by status.
type Error struct {
	Code    Status
	Errno   int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("ztee: %s", e.Message) }

// Is matches the sentinel errors below (and any *Error) by status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrInvalidArgument    = &Error{Code: StatusInvalidArgument, Message: "invalid argument"}
	ErrNoMemory           = &Error{Code: StatusNoMemory, Message: "out of memory"}
	ErrInternal           = &Error{Code: StatusInternal, Message: "internal error"}
	ErrNotFound           = &Error{Code: StatusNotFound, Message: "not found"}
	ErrImage              = &Error{Code: StatusImage, Message: "image error"}
	ErrBackendUnavailable = &Error{Code: StatusBackendUnavailable, Message: "backend unavailable"}
	ErrTimeout            = &Error{Code: StatusTimeout, Message: "timeout"}
	ErrSandboxFailed      = &Error{Code: StatusSandboxFailed, Message: "sandbox failed"}
	ErrClosed             = &Error{Code: StatusClosed, Message: "closed"}
	ErrIO                 = &Error{Code: StatusIO, Message: "I/O error"}
	ErrProtocol           = &Error{Code: StatusProtocol, Message: "protocol error"}
	ErrGuest              = &Error{Code: StatusGuest, Message: "guest error"}
	ErrPermission         = &Error{Code: StatusPermission, Message: "permission denied"}
	ErrUnsupported        = &Error{Code: StatusUnsupported, Message: "unsupported"}
	// ErrConflict: the host changed under the call (ExportChanges: host
	// files edited since the sandbox started; nothing was applied).
	ErrConflict = &Error{Code: StatusConflict, Message: "conflict"}
)

// call runs f on a locked OS thread and, if it fails, reads that thread's
// last error before unlocking it.
func call(f func() C.ztee_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := f()
	if st == C.ZTEE_OK {
		return nil
	}
	e := C.ztee_last_error()
	return &Error{Code: Status(st), Errno: int(e.sys_errno), Message: C.GoString(e.message)}
}

// Version is libztee's version, "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.ztee_version()) }

// HasFeature reports whether libztee supports a feature here ("qemu",
// "kvm", "pool", "network", ...; see ztee_has_feature in ztee.h).
func HasFeature(name string) bool {
	c := C.CString(name)
	defer C.free(unsafe.Pointer(c))
	return C.ztee_has_feature(c) != 0
}

// cstrings holds C copies of Go strings (and other C memory) for one call.
type cstrings struct {
	ptrs []*C.char
	mem  []unsafe.Pointer
}

// alloc returns n zeroed bytes of C memory, freed with the strings.
func (c *cstrings) alloc(n uintptr) unsafe.Pointer {
	p := C.calloc(1, C.size_t(n))
	c.mem = append(c.mem, p)
	return p
}

// cstr is str without the "" -> NULL rule.
func (c *cstrings) cstr(s string) *C.char {
	p := C.CString(s)
	c.ptrs = append(c.ptrs, p)
	return p
}

func (c *cstrings) str(s string) *C.char {
	if s == "" {
		return nil
	}
	p := C.CString(s)
	c.ptrs = append(c.ptrs, p)
	return p
}

func (c *cstrings) free() {
	for _, p := range c.ptrs {
		C.free(unsafe.Pointer(p))
	}
	c.ptrs = nil
	for _, p := range c.mem {
		C.free(p)
	}
	c.mem = nil
}

// carray is a C array of C strings (freed with free()).
type carray struct {
	p **C.char
	n int
}

func newCArray(items []string) carray {
	a := C.ztee_go_strings(C.size_t(len(items)))
	for i, s := range items {
		C.ztee_go_set_string(a, C.size_t(i), C.CString(s))
	}
	return carray{p: (**C.char)(unsafe.Pointer(a)), n: len(items)}
}

func (a carray) free() { C.ztee_go_free_strings((**C.char)(unsafe.Pointer(a.p)), C.size_t(a.n)) }

// ---- runtime ------------------------------------------------------------------

// RuntimeOptions configure a Runtime; zero values are libztee's defaults.
type RuntimeOptions struct {
	StateDir   string // "": $ZTEE_STATE_DIR, else /run/ztee as root
	ImageDir   string // "": $ZTEE_IMAGE_DIR, else the default image
	Backend    string // "", "auto", "qemu"
	QEMUBinary string // "": $ZTEE_QEMU, else qemu-system-x86_64 on PATH
	Accel      string // "", "auto", "kvm", "tcg" ("": $ZTEE_ACCEL, else auto)
	// NoJail runs VMMs unconfined, as the caller (SECURITY: development only).
	NoJail bool
	// TrustedKeys are PEM public keys (paths or PEM text, ECDSA P-256). When
	// set, images and templates not signed by one of them, or with any
	// digest changed, are refused (ErrImage) before any VMM starts.
	TrustedKeys []string
	// RequireVulnGate refuses images without a passing `ztee image gate` verdict.
	RequireVulnGate bool
}

// Runtime owns libztee's event-loop thread; sandboxes and pools come from it.
type Runtime struct {
	mu sync.Mutex
	rt *C.ztee_runtime
}

// NewRuntime starts a runtime (one event-loop thread).
func NewRuntime(opts *RuntimeOptions) (*Runtime, error) {
	if opts == nil {
		opts = &RuntimeOptions{}
	}
	var cs cstrings
	defer cs.free()
	var o C.ztee_runtime_options
	C.ztee_runtime_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	o.state_dir = cs.str(opts.StateDir)
	o.image_dir = cs.str(opts.ImageDir)
	o.backend = cs.str(opts.Backend)
	o.qemu_binary = cs.str(opts.QEMUBinary)
	o.accel = cs.str(opts.Accel)
	if opts.NoJail {
		o.jail_disabled = 1
	}
	if len(opts.TrustedKeys) > 0 {
		keys := newCArray(opts.TrustedKeys)
		defer keys.free()
		o.trusted_keys = keys.p
		o.trusted_key_count = C.size_t(keys.n)
	}
	if opts.RequireVulnGate {
		o.require_vuln_gate = 1
	}
	var rt *C.ztee_runtime
	if err := call(func() C.ztee_status { return C.ztee_runtime_create(&o, &rt) }); err != nil {
		return nil, err
	}
	r := &Runtime{rt: rt}
	runtime.SetFinalizer(r, (*Runtime).Close)
	return r, nil
}

// Backend says which backend and accelerator this runtime uses and why,
// e.g. "qemu/tcg (/dev/kvm is kvm_pvm, which runs only PVM guest kernels: ...)".
func (r *Runtime) Backend() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rt == nil {
		return ""
	}
	return C.GoString(C.ztee_runtime_backend(r.rt))
}

func (r *Runtime) handle() (*C.ztee_runtime, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rt == nil {
		return nil, &Error{Code: StatusClosed, Message: "the runtime is closed"}
	}
	return r.rt, nil
}

// Close drops this reference to the runtime; sandboxes and pools still open
// keep its event loop running until they are closed.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rt != nil {
		C.ztee_runtime_free(r.rt)
		r.rt = nil
	}
	runtime.SetFinalizer(r, nil)
	return nil
}

// ---- sandbox ------------------------------------------------------------------

// SandboxOptions configure a sandbox; zero values are libztee's defaults.
type SandboxOptions struct {
	ImageDir      string
	VCPUs         uint32        // 0: 1
	MemoryMiB     uint32        // 0: 256
	BootTimeout   time.Duration // 0: 60 s (a context deadline shortens it)
	ExecTimeout   time.Duration // default per-command timeout; 0: none
	OutputCap     uint64        // default per-command output cap in bytes; 0: 16 MiB
	TemplateDir   string        // start as a clone of this snapshot template
	Snapshottable bool
	// Allow lists what the sandbox may reach ("CIDR:PORT[/tcp|/udp]");
	// nil and DNS "" mean no network at all. SECURITY: each entry widens
	// what sandboxed code can reach.
	Allow []string
	DNS   string
	// Mounts are host directories the guest sees read-only (workspaces: at
	// most 16). Each is copied into a read-only disk image when the sandbox
	// is created; the guest's writes stay in its memory and reach the host
	// only through ExportChanges. Needs a cold boot: not with TemplateDir,
	// Snapshottable or a pool (ErrInvalidArgument). A relative HostDir or a
	// bad GuestPath is ErrInvalidArgument, a missing HostDir ErrNotFound.
	// SECURITY: everything in the directories becomes readable by the
	// sandboxed code.
	Mounts []Mount
	// DiffLog: destroying the sandbox first appends one JSON line with its
	// diff to this file. "": none.
	DiffLog string
	// DLP scans every command's stdout and stderr (streamed and collected)
	// and every ReadFile with the output DLP scanner: cards, IBANs, SSNs,
	// e-mail, phones, private keys, cloud and SaaS tokens and JWTs become
	// "[REDACTED:<detector>]"; Result.DLPFindings counts them. Streamed
	// output is held back until a redaction is decided.
	DLP bool
	// DLPBlock names detectors (e.g. "card", "private_key") whose findings
	// withhold the output instead: the call fails with ErrPermission (the
	// command has run). Implies DLP; an unknown name is ErrInvalidArgument.
	DLPBlock []string
}

// Sandbox is one microVM.
type Sandbox struct {
	mu sync.Mutex
	sb *C.ztee_sandbox
	id string
}

func ms(d time.Duration) C.uint32_t {
	if d <= 0 {
		return 0
	}
	m := d.Milliseconds()
	if m < 1 {
		m = 1
	}
	if m > 1<<31 {
		m = 1 << 31
	}
	return C.uint32_t(m)
}

// remaining is the time left before ctx's deadline (0: none), or an error if
// ctx is already done.
func remaining(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return 0, context.DeadlineExceeded
		}
		return left, nil
	}
	return 0, nil
}

func fillSandboxOptions(o *C.ztee_sandbox_options, opts *SandboxOptions, cs *cstrings) (allow carray) {
	C.ztee_sandbox_options_init(o, C.size_t(unsafe.Sizeof(*o)))
	if opts == nil {
		return carray{}
	}
	o.image_dir = cs.str(opts.ImageDir)
	o.vcpus = C.uint32_t(opts.VCPUs)
	o.memory_mib = C.uint32_t(opts.MemoryMiB)
	o.boot_timeout_ms = ms(opts.BootTimeout)
	o.exec_timeout_ms = ms(opts.ExecTimeout)
	o.output_cap = C.uint64_t(opts.OutputCap)
	o.template_dir = cs.str(opts.TemplateDir)
	if opts.Snapshottable {
		o.snapshottable = 1
	}
	if len(opts.Allow) > 0 {
		allow = newCArray(opts.Allow)
		o.net_allow = allow.p
		o.net_allow_count = C.size_t(allow.n)
	}
	o.net_dns = cs.str(opts.DNS)
	if n := len(opts.Mounts); n > 0 {
		m := unsafe.Slice((*C.ztee_mount)(cs.alloc(uintptr(n)*unsafe.Sizeof(C.ztee_mount{}))), n)
		for i, mt := range opts.Mounts {
			m[i].host_dir = cs.cstr(mt.HostDir)
			m[i].guest_path = cs.cstr(mt.GuestPath)
		}
		o.mounts = &m[0]
		o.mount_count = C.size_t(n)
	}
	o.diff_log = cs.str(opts.DiffLog)
	if opts.DLP {
		o.dlp = 1
	}
	if n := len(opts.DLPBlock); n > 0 {
		p := unsafe.Slice((**C.char)(cs.alloc(uintptr(n)*unsafe.Sizeof((*C.char)(nil)))), n)
		for i, name := range opts.DLPBlock {
			p[i] = cs.cstr(name)
		}
		o.dlp_block = &p[0]
		o.dlp_block_count = C.size_t(n)
	}
	return allow
}

func newSandbox(sb *C.ztee_sandbox) *Sandbox {
	s := &Sandbox{sb: sb, id: C.GoString(C.ztee_sandbox_id(sb))}
	runtime.SetFinalizer(s, (*Sandbox).Close)
	return s
}

// NewSandbox boots a microVM and waits until its agent is ready. ctx's
// deadline bounds the boot; a ctx cancelled during the boot gets the new
// sandbox destroyed and ctx.Err() returned.
func (r *Runtime) NewSandbox(ctx context.Context, opts *SandboxOptions) (*Sandbox, error) {
	rt, err := r.handle()
	if err != nil {
		return nil, err
	}
	left, err := remaining(ctx)
	if err != nil {
		return nil, err
	}
	if opts != nil {
		for _, m := range opts.Mounts {
			if err := noNUL("a Mounts entry", m.HostDir, m.GuestPath); err != nil {
				return nil, err
			}
		}
		if err := noNUL("DiffLog", opts.DiffLog); err != nil {
			return nil, err
		}
		if err := noNUL("a DLPBlock entry", opts.DLPBlock...); err != nil {
			return nil, err
		}
	}
	var cs cstrings
	defer cs.free()
	var o C.ztee_sandbox_options
	allow := fillSandboxOptions(&o, opts, &cs)
	if allow.p != nil {
		defer allow.free()
	}
	if left > 0 && (o.boot_timeout_ms == 0 || ms(left) < o.boot_timeout_ms) {
		o.boot_timeout_ms = ms(left)
	}
	var sb *C.ztee_sandbox
	err = call(func() C.ztee_status { return C.ztee_sandbox_create(rt, &o, &sb) })
	runtime.KeepAlive(r)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ErrTimeout) {
			return nil, ctx.Err()
		}
		return nil, err
	}
	s := newSandbox(sb)
	if ctx.Err() != nil {
		s.Close()
		return nil, ctx.Err()
	}
	return s, nil
}

// Ping makes one no-op round trip to the guest agent.
func (s *Sandbox) Ping() error {
	sb, err := s.handle()
	if err != nil {
		return err
	}
	err = call(func() C.ztee_status { return C.ztee_sandbox_ping(sb) })
	runtime.KeepAlive(s)
	return err
}

// ID is the sandbox id ("sb-...").
func (s *Sandbox) ID() string { return s.id }

func (s *Sandbox) handle() (*C.ztee_sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sb == nil {
		return nil, &Error{Code: StatusClosed, Message: fmt.Sprintf("sandbox %s is closed", s.id)}
	}
	return s.sb, nil
}

// Destroy stops the VM and removes everything it left on the host, then
// checks; the handle stays valid (later calls fail with ErrClosed) until Close.
func (s *Sandbox) Destroy() error {
	sb, err := s.handle()
	if err != nil {
		return err
	}
	err = call(func() C.ztee_status { return C.ztee_sandbox_destroy(sb) })
	runtime.KeepAlive(s)
	return err
}

// Close destroys the sandbox (if not yet destroyed) and frees the handle.
// Safe to call twice. Calls still running on other goroutines finish first.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	sb := s.sb
	s.sb = nil
	s.mu.Unlock()
	runtime.SetFinalizer(s, nil)
	if sb == nil {
		return nil
	}
	err := call(func() C.ztee_status { return C.ztee_sandbox_destroy(sb) })
	C.ztee_sandbox_free(sb)
	if errors.Is(err, ErrClosed) {
		err = nil
	}
	return err
}

// RunOptions are a command's options; zero values are the defaults.
type RunOptions struct {
	Env       map[string]string
	Cwd       string // "": "/"
	User      string // "": root
	Stdin     []byte // nil: /dev/null
	Timeout   time.Duration
	OutputCap uint64
	// When set, output is streamed to these as it comes (from libztee's
	// event-loop thread: they must not block for long) instead of being
	// collected in Result. A write error cancels the command.
	Stdout io.Writer
	Stderr io.Writer
}

// Result is how a command ended.
type Result struct {
	ExitCode  int // -1 if a signal ended it
	Signal    int
	TimedOut  bool
	Truncated bool
	Cancelled bool // its context was cancelled (or a writer failed) and it was killed
	Duration  time.Duration
	// SandboxOptions.DLP: findings redacted in stdout and stderr, and
	// injection rule hits.
	DLPFindings        int
	InjectionAnomalies int
	Stdout    []byte // empty when streamed to RunOptions.Stdout
	Stderr    []byte
}

type stream struct {
	stdout, stderr io.Writer
	cancel         *C.ztee_cancel
	mu             sync.Mutex
	err            error
}

//export zteeGoOutput
func zteeGoOutput(handle C.uintptr_t, which C.int, data *C.char, n C.size_t) {
	st := cgo.Handle(handle).Value().(*stream)
	w := st.stdout
	if which == 2 {
		w = st.stderr
	}
	if w == nil || n == 0 {
		return
	}
	buf := C.GoBytes(unsafe.Pointer(data), C.int(n))
	if _, err := w.Write(buf); err != nil {
		st.mu.Lock()
		if st.err == nil {
			st.err = err
		}
		st.mu.Unlock()
		C.ztee_cancel_trigger(st.cancel)
	}
}

// Run runs a shell command (/bin/sh -c cmd) and waits for it. ctx's
// deadline becomes the command's timeout (its whole process group is killed
// then: Result.TimedOut); cancelling ctx kills it at once (Result.Cancelled)
// and Run returns ctx.Err() with the result. A non-zero exit is not an error.
func (s *Sandbox) Run(ctx context.Context, cmd string, opts *RunOptions) (*Result, error) {
	return s.exec(ctx, nil, cmd, opts, nil)
}

// Exec is Run with an argv (argv[0] searched in the guest's PATH).
func (s *Sandbox) Exec(ctx context.Context, argv []string, opts *RunOptions) (*Result, error) {
	if len(argv) == 0 {
		return nil, &Error{Code: StatusInvalidArgument, Message: "Exec needs a non-empty argv"}
	}
	return s.exec(ctx, argv, "", opts, nil)
}

// Start starts a shell command (/bin/sh -c cmd) with its stdin open and
// returns at once: write to Process.Stdin while it runs (Close it for EOF),
// send it signals with Process.Signal, and collect its result with
// Process.Wait. opts as Run, except Stdin (an error when set: write to
// Process.Stdin instead). ctx works as in Run, for the command's whole life.
func (s *Sandbox) Start(ctx context.Context, cmd string, opts *RunOptions) (*Process, error) {
	return s.start(ctx, nil, cmd, opts)
}

// StartExec is Start with an argv (argv[0] searched in the guest's PATH).
func (s *Sandbox) StartExec(ctx context.Context, argv []string, opts *RunOptions) (*Process, error) {
	if len(argv) == 0 {
		return nil, &Error{Code: StatusInvalidArgument, Message: "StartExec needs a non-empty argv"}
	}
	return s.start(ctx, argv, "", opts)
}

// Process is a command started by Start or StartExec.
type Process struct {
	// Stdin is the command's stdin. Write blocks until every byte is queued,
	// waiting while InputMaxBuffered bytes already wait on the host for the
	// sandbox; Close ends the command's stdin (EOF) after what was written.
	// Any goroutine may write; writes from several at once interleave whole
	// pieces of at most 256 KiB. Write fails with an error matching
	// ErrClosed once the command has ended (returning how much was queued),
	// and with one matching ErrInvalidArgument after Close.
	Stdin io.WriteCloser

	mu     sync.Mutex
	ended  bool // the exec returned: cancel and input are freed
	cancel *C.ztee_cancel
	input  *C.ztee_input
	done   chan struct{}
	res    *Result
	err    error
}

// InputMaxBuffered is how many bytes written to Process.Stdin may wait on
// the host for the sandbox (ZTEE_INPUT_MAX_BUFFERED); Write waits past it.
const InputMaxBuffered = int(C.ZTEE_INPUT_MAX_BUFFERED)

const inputChunk = 256 << 10 // bytes per C write: several fit under the bound

func (s *Sandbox) start(ctx context.Context, argv []string, shell string, opts *RunOptions) (*Process, error) {
	if _, err := s.handle(); err != nil {
		return nil, err
	}
	if opts != nil && opts.Stdin != nil {
		return nil, &Error{Code: StatusInvalidArgument, Message: "Start: write stdin to Process.Stdin, not RunOptions.Stdin"}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := &Process{done: make(chan struct{})}
	if err := call(func() C.ztee_status { return C.ztee_cancel_create(&p.cancel) }); err != nil {
		return nil, err
	}
	if err := call(func() C.ztee_status { return C.ztee_input_create(&p.input) }); err != nil {
		C.ztee_cancel_free(p.cancel)
		return nil, err
	}
	p.Stdin = processStdin{p}
	go func() {
		res, err := s.exec(ctx, argv, shell, opts, &spawned{cancel: p.cancel, input: p.input})
		p.mu.Lock()
		p.ended = true
		C.ztee_input_free(p.input)
		C.ztee_cancel_free(p.cancel)
		p.input, p.cancel = nil, nil
		p.res, p.err = res, err
		p.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// Wait waits for the command to end and returns what Run would have. It
// may be called more than once, from any goroutine.
func (p *Process) Wait() (*Result, error) {
	<-p.done
	return p.res, p.err
}

// Signal sends sig (a syscall.Signal 1..64, the guest's Linux numbering:
// syscall.SIGUSR1, syscall.SIGTERM, os.Interrupt, ...) to the command's
// whole process group. A command the signal ends returns a Result with
// Signal set and Cancelled false. Errors: ErrInvalidArgument for a number
// outside 1..64, ErrClosed once the command has ended. A signal sent right
// after Start, before the command runs in the guest, follows its start.
func (p *Process) Signal(sig os.Signal) error {
	n, ok := sig.(syscall.Signal)
	if !ok {
		return &Error{Code: StatusInvalidArgument, Message: fmt.Sprintf("Signal: %v is not a syscall.Signal", sig)}
	}
	if n < 1 || n > 64 {
		return &Error{Code: StatusInvalidArgument, Message: fmt.Sprintf("Signal: signal %d is out of range: give 1..64", int(n))}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return &Error{Code: StatusClosed, Message: fmt.Sprintf("Signal(%v): the command has ended", sig)}
	}
	return call(func() C.ztee_status { return C.ztee_cancel_signal(p.cancel, C.int(n)) })
}

type processStdin struct{ p *Process }

// Write queues b for the command's stdin, in pieces, waiting while the
// bound is reached.
func (w processStdin) Write(b []byte) (int, error) {
	p := w.p
	off := 0
	pause := 500 * time.Microsecond
	for off < len(b) {
		n := len(b) - off
		if n > inputChunk {
			n = inputChunk
		}
		p.mu.Lock()
		if p.ended {
			p.mu.Unlock()
			return off, &Error{Code: StatusClosed, Message: "Process.Stdin.Write: the command has ended; its stdin is gone"}
		}
		err := call(func() C.ztee_status {
			return C.ztee_input_write(p.input, unsafe.Pointer(&b[off]), C.size_t(n))
		})
		p.mu.Unlock()
		if err == nil {
			off += n
			pause = 500 * time.Microsecond
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Code != StatusIO || e.Errno != int(syscall.EAGAIN) {
			return off, err
		}
		time.Sleep(pause) // the bound is reached: wait for the sandbox to take some
		if pause < 20*time.Millisecond {
			pause *= 2
		}
	}
	return off, nil
}

// Close ends the command's stdin; idempotent; nil once the command ended.
func (w processStdin) Close() error {
	p := w.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ended {
		C.ztee_input_close(p.input)
	}
	return nil
}

// spawned: a Start's own cancel token and input, passed to the exec.
type spawned struct {
	cancel *C.ztee_cancel
	input  *C.ztee_input
}

func (s *Sandbox) exec(ctx context.Context, argv []string, shell string, opts *RunOptions, sp *spawned) (*Result, error) {
	sb, err := s.handle()
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &RunOptions{}
	}
	left, err := remaining(ctx)
	if err != nil {
		return nil, err
	}
	var cs cstrings
	defer cs.free()
	var o C.ztee_exec_options
	C.ztee_exec_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	if argv != nil {
		a := newCArray(argv)
		defer a.free()
		o.argv = a.p
		o.argc = C.size_t(a.n)
	} else {
		o.shell = cs.str(shell)
		if o.shell == nil {
			return nil, &Error{Code: StatusInvalidArgument, Message: "Run needs a command"}
		}
	}
	if len(opts.Env) > 0 {
		env := make([]string, 0, len(opts.Env))
		for k, v := range opts.Env {
			env = append(env, k+"="+v)
		}
		e := newCArray(env)
		defer e.free()
		o.env = e.p
		o.env_count = C.size_t(e.n)
	}
	o.cwd = cs.str(opts.Cwd)
	o.user = cs.str(opts.User)
	if opts.Stdin != nil {
		in := C.CBytes(opts.Stdin)
		defer C.free(in)
		o.stdin_data = in
		o.stdin_len = C.size_t(len(opts.Stdin))
	}
	timeout := opts.Timeout
	if left > 0 && (timeout == 0 || left < timeout) {
		timeout = left
	}
	o.timeout_ms = ms(timeout)
	o.output_cap = C.uint64_t(opts.OutputCap)

	var cancel *C.ztee_cancel
	if sp != nil {
		cancel = sp.cancel
		o.input = sp.input
	} else {
		if err := call(func() C.ztee_status { return C.ztee_cancel_create(&cancel) }); err != nil {
			return nil, err
		}
		defer C.ztee_cancel_free(cancel)
	}
	o.cancel = cancel
	st := &stream{stdout: opts.Stdout, stderr: opts.Stderr, cancel: cancel}
	if st.stdout != nil || st.stderr != nil {
		h := cgo.NewHandle(st)
		defer h.Delete()
		out, errw := C.int(0), C.int(0)
		if st.stdout != nil {
			out = 1
		}
		if st.stderr != nil {
			errw = 1
		}
		C.ztee_go_stream(&o, C.uintptr_t(h), out, errw)
	}
	// Cancelling ctx kills the command; the watcher ends with the call.
	stop := watchCancel(ctx, cancel)
	var res *C.ztee_exec_result
	err = call(func() C.ztee_status { return C.ztee_sandbox_exec(sb, &o, &res) })
	stop()
	runtime.KeepAlive(s)
	if err != nil {
		return nil, err
	}
	defer C.ztee_exec_result_free(res)
	r := newResult(res)
	if werr := st.writeErr(); werr != nil {
		return r, werr
	}
	if r.Cancelled || (r.TimedOut && ctx.Err() != nil) {
		if cerr := ctx.Err(); cerr != nil {
			return r, cerr
		}
	}
	return r, nil
}

// newResult copies a C exec result.
func newResult(e *C.ztee_exec_result) *Result {
	return &Result{
		ExitCode:  int(e.exit_code),
		Signal:    int(e.signal),
		TimedOut:  e.timed_out != 0,
		Truncated: e.truncated != 0,
		Cancelled: e.cancelled != 0,
		Duration:  time.Duration(e.duration_us) * time.Microsecond,
		DLPFindings:        int(e.dlp_findings),
		InjectionAnomalies: int(e.injection_anomalies),
		Stdout:    C.GoBytes(unsafe.Pointer(e.stdout_data), C.int(e.stdout_len)),
		Stderr:    C.GoBytes(unsafe.Pointer(e.stderr_data), C.int(e.stderr_len)),
	}
}

// writeErr is the first error a Writer returned, wrapped.
func (st *stream) writeErr() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.err != nil {
		return fmt.Errorf("ztee: writing the command's output: %w", st.err)
	}
	return nil
}

// watchCancel triggers cancel when ctx ends, until stop is called; stop
// returns once the watcher no longer uses the token (so it may be freed).
func watchCancel(ctx context.Context, cancel *C.ztee_cancel) (stop func()) {
	done := make(chan struct{})
	watcher := make(chan struct{})
	go func() {
		defer close(watcher)
		select {
		case <-ctx.Done():
			C.ztee_cancel_trigger(cancel)
		case <-done:
		}
	}()
	return func() {
		close(done)
		<-watcher
	}
}

// ---- files --------------------------------------------------------------------

// FileType is what a path is.
type FileType int

// File types (ZTEE_FILE_TYPE_*).
const (
	TypeFile FileType = iota
	TypeDir
	TypeSymlink
	TypeOther
)

// FileInfo describes a path in the guest.
type FileInfo struct {
	Name    string
	Type    FileType
	Mode    uint32
	Size    uint64
	ModTime time.Time
}

func fileInfo(fi *C.ztee_file_info) FileInfo {
	return FileInfo{
		Name:    C.GoString(fi.name),
		Type:    FileType(fi._type),
		Mode:    uint32(fi.mode),
		Size:    uint64(fi.size),
		ModTime: time.Unix(0, int64(fi.mtime_ns)),
	}
}

func (s *Sandbox) pathCall(ctx context.Context, path string, f func(sb *C.ztee_sandbox, p *C.char) C.ztee_status) error {
	sb, err := s.handle()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	p := C.CString(path)
	defer C.free(unsafe.Pointer(p))
	err = call(func() C.ztee_status { return f(sb, p) })
	runtime.KeepAlive(s)
	return err
}

// WriteFile writes data to path in the guest (created or truncated) with mode.
func (s *Sandbox) WriteFile(ctx context.Context, path string, data []byte, mode uint32) error {
	var buf unsafe.Pointer
	if len(data) > 0 {
		buf = C.CBytes(data)
		defer C.free(buf)
	}
	return s.pathCall(ctx, path, func(sb *C.ztee_sandbox, p *C.char) C.ztee_status {
		return C.ztee_sandbox_write_file(sb, p, buf, C.size_t(len(data)), C.uint32_t(mode))
	})
}

// ReadFile reads a file of the guest; files over maxBytes (0: 64 MiB) fail
// with ErrInvalidArgument.
func (s *Sandbox) ReadFile(ctx context.Context, path string, maxBytes uint64) ([]byte, error) {
	var data unsafe.Pointer
	var n C.size_t
	err := s.pathCall(ctx, path, func(sb *C.ztee_sandbox, p *C.char) C.ztee_status {
		return C.ztee_sandbox_read_file(sb, p, C.uint64_t(maxBytes), &data, &n)
	})
	if err != nil {
		return nil, err
	}
	defer C.ztee_free(data)
	return C.GoBytes(data, C.int(n)), nil
}

// Stat describes a path in the guest.
func (s *Sandbox) Stat(ctx context.Context, path string) (FileInfo, error) {
	var fi *C.ztee_file_info
	err := s.pathCall(ctx, path, func(sb *C.ztee_sandbox, p *C.char) C.ztee_status {
		return C.ztee_sandbox_stat(sb, p, &fi)
	})
	if err != nil {
		return FileInfo{}, err
	}
	defer C.ztee_file_info_free(fi)
	return fileInfo(fi), nil
}

// ListDir lists a directory of the guest.
func (s *Sandbox) ListDir(ctx context.Context, path string) ([]FileInfo, error) {
	var dl *C.ztee_dir_list
	err := s.pathCall(ctx, path, func(sb *C.ztee_sandbox, p *C.char) C.ztee_status {
		return C.ztee_sandbox_list_dir(sb, p, &dl)
	})
	if err != nil {
		return nil, err
	}
	defer C.ztee_dir_list_free(dl)
	entries := unsafe.Slice(dl.entries, int(dl.count))
	out := make([]FileInfo, 0, len(entries))
	for i := range entries {
		out = append(out, fileInfo(&entries[i]))
	}
	return out, nil
}

// Remove removes a path of the guest (a directory's contents too if recursive).
func (s *Sandbox) Remove(ctx context.Context, path string, recursive bool) error {
	r := C.int(0)
	if recursive {
		r = 1
	}
	return s.pathCall(ctx, path, func(sb *C.ztee_sandbox, p *C.char) C.ztee_status {
		return C.ztee_sandbox_remove(sb, p, r)
	})
}

// Mkdir makes a directory in the guest (and its parents if parents).
func (s *Sandbox) Mkdir(ctx context.Context, path string, parents bool, mode uint32) error {
	pr := C.int(0)
	if parents {
		pr = 1
	}
	return s.pathCall(ctx, path, func(sb *C.ztee_sandbox, p *C.char) C.ztee_status {
		return C.ztee_sandbox_mkdir(sb, p, pr, C.uint32_t(mode))
	})
}

// ---- pool ---------------------------------------------------------------------

// PoolOptions configure a warm pool; zero values are libztee's defaults.
type PoolOptions struct {
	Sandbox           *SandboxOptions // TemplateDir must be "" (use TemplateDir below)
	TemplateDir       string          // "": the pool snapshots one sandbox and clones it
	ColdBoot          bool            // every sandbox a cold boot, no template
	MinReady          uint32          // 0: 2
	MaxTotal          uint32          // 0: 8
	RefillConcurrency uint32          // 0: 1
	WarmUp            string          // shell command each new sandbox runs once
}

// Pool keeps sandboxes ready to lease.
type Pool struct {
	mu   sync.Mutex
	pool *C.ztee_pool
}

// PoolStats are a pool's counters.
type PoolStats struct {
	Ready, Starting, Leased, ConsecutiveFailures uint32
	BackingOff                                   bool
	Created, Failed, Leases, LeaseTimeouts       uint64
}

// NewPool creates a pool and starts filling it (a pool that makes its own
// template boots and snapshots one sandbox first).
func (r *Runtime) NewPool(ctx context.Context, opts *PoolOptions) (*Pool, error) {
	rt, err := r.handle()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &PoolOptions{}
	}
	var cs cstrings
	defer cs.free()
	var o C.ztee_pool_options
	C.ztee_pool_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	var so C.ztee_sandbox_options
	if opts.Sandbox != nil {
		allow := fillSandboxOptions(&so, opts.Sandbox, &cs)
		if allow.p != nil {
			defer allow.free()
		}
		o.sandbox = &so
	}
	o.template_dir = cs.str(opts.TemplateDir)
	if opts.ColdBoot {
		o.cold_boot = 1
	}
	o.min_ready = C.uint32_t(opts.MinReady)
	o.max_total = C.uint32_t(opts.MaxTotal)
	o.refill_concurrency = C.uint32_t(opts.RefillConcurrency)
	o.warm_up = cs.str(opts.WarmUp)
	var p *C.ztee_pool
	err = call(func() C.ztee_status { return C.ztee_pool_create(rt, &o, &p) })
	runtime.KeepAlive(r)
	if err != nil {
		return nil, err
	}
	pool := &Pool{pool: p}
	runtime.SetFinalizer(pool, (*Pool).Close)
	return pool, nil
}

func (p *Pool) handle() (*C.ztee_pool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pool == nil {
		return nil, &Error{Code: StatusClosed, Message: "the pool is closed"}
	}
	return p.pool, nil
}

// Lease hands out a READY sandbox, exclusively; it is destroyed when closed,
// never recycled. ctx's deadline is the lease's (none: the pool's default,
// 30 s); it fails with ErrTimeout when none became ready in time.
func (p *Pool) Lease(ctx context.Context) (*Sandbox, error) {
	pool, err := p.handle()
	if err != nil {
		return nil, err
	}
	left, err := remaining(ctx)
	if err != nil {
		return nil, err
	}
	var sb *C.ztee_sandbox
	err = call(func() C.ztee_status { return C.ztee_pool_lease(pool, ms(left), &sb) })
	runtime.KeepAlive(p)
	if err != nil {
		return nil, err
	}
	return newSandbox(sb), nil
}

// Stats reads the pool's counters.
func (p *Pool) Stats() (PoolStats, error) {
	pool, err := p.handle()
	if err != nil {
		return PoolStats{}, err
	}
	var s C.ztee_pool_stats
	s.struct_size = C.uint32_t(unsafe.Sizeof(s))
	err = call(func() C.ztee_status { return C.ztee_pool_stats_get(pool, &s) })
	runtime.KeepAlive(p)
	if err != nil {
		return PoolStats{}, err
	}
	return PoolStats{
		Ready: uint32(s.ready), Starting: uint32(s.starting), Leased: uint32(s.leased),
		ConsecutiveFailures: uint32(s.consecutive_failures), BackingOff: s.backing_off != 0,
		Created: uint64(s.created), Failed: uint64(s.failed), Leases: uint64(s.leases),
		LeaseTimeouts: uint64(s.lease_timeouts),
	}, nil
}

// Close stops refilling, destroys the ready sandboxes and frees the pool;
// leased sandboxes stay the holders'. Safe to call twice.
func (p *Pool) Close() error {
	p.mu.Lock()
	pool := p.pool
	p.pool = nil
	p.mu.Unlock()
	runtime.SetFinalizer(p, nil)
	if pool != nil {
		C.ztee_pool_close(pool)
		C.ztee_pool_free(pool)
	}
	return nil
}
