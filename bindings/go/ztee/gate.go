// The control plane over the C ABI (ztee_policy_*, ztee_audit_*, ztee_gate_*):
// policies that sort tool calls into risk tiers, a gate that runs them with
// approvals that fail closed, secrets passed by reference, and a
// hash-chained audit log.

package ztee

/*
#include <stdlib.h>
#include "ztee.h"

extern void zteeGoOutput(uintptr_t handle, int stream, char *data, size_t len);
extern void zteeGoApprover(uintptr_t handle, ztee_gate *gate, char *token, char *description, uint32_t deadline_ms);
extern int32_t zteeGoSecret(uintptr_t handle, char *name, ztee_secret_value *out);

static void ztee_go_call_stdout(void *ud, const char *data, size_t len) {
  zteeGoOutput((uintptr_t)ud, 1, (char *)data, len);
}
static void ztee_go_call_stderr(void *ud, const char *data, size_t len) {
  zteeGoOutput((uintptr_t)ud, 2, (char *)data, len);
}
static void ztee_go_call_stream(ztee_tool_call *c, uintptr_t handle, int out, int err) {
  if (out) c->on_stdout = ztee_go_call_stdout;
  if (err) c->on_stderr = ztee_go_call_stderr;
  c->user_data = (void *)handle;
}
static void ztee_go_approver(void *ud, ztee_gate *gate, const char *token, const char *description,
                             uint32_t deadline_ms) {
  zteeGoApprover((uintptr_t)ud, gate, (char *)token, (char *)description, deadline_ms);
}
static ztee_status ztee_go_secret(void *ud, const char *name, ztee_secret_value *out) {
  return zteeGoSecret((uintptr_t)ud, (char *)name, out);
}
static void ztee_go_gate_callbacks(ztee_gate_options *o, uintptr_t handle, int approver, int secrets) {
  if (approver) {
    o->approver = ztee_go_approver;
    o->approver_data = (void *)handle;
  }
  if (secrets) {
    o->resolver = ztee_go_secret;
    o->resolver_data = (void *)handle;
  }
}
static const char **ztee_go_bufs(size_t n) { return (const char **)calloc(n ? n : 1, sizeof(char *)); }
static void ztee_go_set_buf(const char **a, size_t i, void *p) { a[i] = (const char *)p; }
static void ztee_go_free_bufs(const char **a, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) free((void *)a[i]);
  free((void *)a);
}
static const size_t *ztee_go_sizes(size_t n) { return (const size_t *)calloc(n ? n : 1, sizeof(size_t)); }
static void ztee_go_set_size(const size_t *a, size_t i, size_t v) { ((size_t *)a)[i] = v; }
*/
import "C"

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/cgo"
	"sort"
	"sync"
	"time"
	"unsafe"
)

// Action is what a tier does with a call.
type Action int

// Tier actions (ZTEE_ACTION_*).
const (
	ActionRun     Action = 0 // runs at once
	ActionAudit   Action = 1 // recorded, then runs
	ActionApprove Action = 2 // waits for an approver
	ActionDeny    Action = 3 // never runs
)

func (a Action) String() string {
	switch a {
	case ActionRun:
		return "run"
	case ActionAudit:
		return "audit"
	case ActionApprove:
		return "approve"
	}
	return "deny"
}

// Decision is how a policy sorted a call. RuleIndex is -1 when no rule
// matched: the call is denied (fail closed).
type Decision struct {
	Tier      int
	Action    Action
	RuleIndex int
	Rule      string
	Reason    string
}

// ToolCall is one request of an agent to run a tool. Env values and file
// contents "secret://NAME" are resolved on the host by the gate.
type ToolCall struct {
	Tool    string
	Command string   // a shell command, or
	Argv    []string // an argv (exactly one of the two)
	Env     map[string]string
	Files   map[string][]byte // guest path -> content, written before the command
	Cwd     string
	User    string
	Stdin   []byte
	Writes  []string // guest paths the call says it writes
	Network []string // hosts/CIDRs it asks to reach (each must be in its tier's list)
	Labels  []string // e.g. "pii"
	TraceID string   // recorded with every audit record; "": generated
	// Output streamed here (scrubbed of secret values) is not collected.
	Stdout io.Writer
	Stderr io.Writer
}

// ---- policy --------------------------------------------------------------------

// Policy is a parsed, immutable policy; safe for concurrent use.
type Policy struct {
	mu sync.Mutex
	p  *C.ztee_policy
}

func newPolicy(p *C.ztee_policy) *Policy {
	pol := &Policy{p: p}
	runtime.SetFinalizer(pol, (*Policy).Close)
	return pol
}

// ParsePolicy parses a JSON policy; errors name the line and the reason.
func ParsePolicy(json string) (*Policy, error) {
	c := C.CString(json)
	defer C.free(unsafe.Pointer(c))
	var p *C.ztee_policy
	if err := call(func() C.ztee_status { return C.ztee_policy_parse(c, C.size_t(len(json)), &p) }); err != nil {
		return nil, err
	}
	return newPolicy(p), nil
}

// LoadPolicy reads and parses a JSON policy file.
func LoadPolicy(path string) (*Policy, error) {
	c := C.CString(path)
	defer C.free(unsafe.Pointer(c))
	var p *C.ztee_policy
	if err := call(func() C.ztee_status { return C.ztee_policy_load(c, &p) }); err != nil {
		return nil, err
	}
	return newPolicy(p), nil
}

// DefaultPolicy is the policy libztee ships (DefaultPolicyJSON shows it).
func DefaultPolicy() (*Policy, error) {
	var p *C.ztee_policy
	if err := call(func() C.ztee_status { return C.ztee_policy_default(&p) }); err != nil {
		return nil, err
	}
	return newPolicy(p), nil
}

// DefaultPolicyJSON is the text of the shipped policy.
func DefaultPolicyJSON() string { return C.GoString(C.ztee_policy_default_json()) }

func (p *Policy) handle() (*C.ztee_policy, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.p == nil {
		return nil, &Error{Code: StatusClosed, Message: "the policy is closed"}
	}
	return p.p, nil
}

// Classify says which tier and action a call gets, without running it.
func (p *Policy) Classify(tc *ToolCall) (Decision, error) {
	pol, err := p.handle()
	if err != nil {
		return Decision{}, err
	}
	var cc cToolCall
	if err := cc.fill(tc); err != nil {
		return Decision{}, err
	}
	defer cc.free()
	var d *C.ztee_decision
	err = call(func() C.ztee_status { return C.ztee_policy_classify(pol, &cc.c, &d) })
	runtime.KeepAlive(p)
	if err != nil {
		return Decision{}, err
	}
	defer C.ztee_decision_free(d)
	return Decision{Tier: int(d.tier), Action: Action(d.action), RuleIndex: int(d.rule_index),
		Rule: C.GoString(d.rule), Reason: C.GoString(d.reason)}, nil
}

// Close releases the policy (gates using it keep their own reference).
func (p *Policy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.p != nil {
		C.ztee_policy_free(p.p)
		p.p = nil
	}
	runtime.SetFinalizer(p, nil)
	return nil
}

// ---- tool call conversion ----------------------------------------------------------

type cToolCall struct {
	c                       C.ztee_tool_call
	cs                      cstrings
	arrays                  []carray
	contents                []unsafe.Pointer
	sizes                   *C.size_t
	filePaths, fileContents **C.char
	fileCount               int
}

func (cc *cToolCall) list(items []string) (**C.char, C.size_t) {
	if len(items) == 0 {
		return nil, 0
	}
	a := newCArray(items)
	cc.arrays = append(cc.arrays, a)
	return a.p, C.size_t(a.n)
}

func (cc *cToolCall) fill(tc *ToolCall) error {
	if tc == nil {
		return &Error{Code: StatusInvalidArgument, Message: "tool call is nil"}
	}
	C.ztee_tool_call_init(&cc.c, C.size_t(unsafe.Sizeof(cc.c)))
	cc.c.tool = cc.cs.str(tc.Tool)
	cc.c.command = cc.cs.str(tc.Command)
	cc.c.argv, cc.c.argc = cc.list(tc.Argv)
	env := make([]string, 0, len(tc.Env))
	for k, v := range tc.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	cc.c.env, cc.c.env_count = cc.list(env)
	if n := len(tc.Files); n > 0 {
		paths := make([]string, 0, n)
		for p := range tc.Files {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		pa := newCArray(paths)
		cc.arrays = append(cc.arrays, pa)
		// Contents are bytes (may hold NULs): a pointer array plus lengths.
		ca := C.ztee_go_bufs(C.size_t(n))
		cc.sizes = C.ztee_go_sizes(C.size_t(n))
		for i, p := range paths {
			data := tc.Files[p]
			buf := C.CBytes(append(append([]byte{}, data...), 0))
			C.ztee_go_set_buf(ca, C.size_t(i), buf)
			C.ztee_go_set_size(cc.sizes, C.size_t(i), C.size_t(len(data)))
		}
		cc.contents = append(cc.contents, unsafe.Pointer(ca))
		cc.fileCount = n
		cc.c.file_paths = pa.p
		cc.c.file_contents = (**C.char)(unsafe.Pointer(ca))
		cc.c.file_lengths = cc.sizes
		cc.c.file_count = C.size_t(n)
	}
	cc.c.cwd = cc.cs.str(tc.Cwd)
	cc.c.user = cc.cs.str(tc.User)
	if tc.Stdin != nil {
		buf := C.CBytes(append(append([]byte{}, tc.Stdin...), 0))
		cc.contents = append(cc.contents, buf)
		cc.c.stdin_data = buf
		cc.c.stdin_len = C.size_t(len(tc.Stdin))
	}
	cc.c.writes, cc.c.writes_count = cc.list(tc.Writes)
	cc.c.network, cc.c.network_count = cc.list(tc.Network)
	cc.c.labels, cc.c.labels_count = cc.list(tc.Labels)
	cc.c.trace_id = cc.cs.str(tc.TraceID)
	return nil
}

func (cc *cToolCall) free() {
	cc.cs.free()
	for _, a := range cc.arrays {
		a.free()
	}
	if cc.fileCount > 0 {
		// The first entry of contents is the file content pointer array.
		C.ztee_go_free_bufs((**C.char)(cc.contents[0]), C.size_t(cc.fileCount))
		cc.contents = cc.contents[1:]
		C.free(unsafe.Pointer(cc.sizes))
	}
	for _, p := range cc.contents {
		C.free(p)
	}
	cc.arrays, cc.contents = nil, nil
}

// ---- audit log -----------------------------------------------------------------

// Durability says when an audit record is on disk (see README.md).
type Durability int

// Durability policies (ZTEE_DURABILITY_*).
const (
	DurabilityFsync Durability = 0 // fdatasync per record
	DurabilityBatch Durability = 1 // fdatasync at most every BatchInterval
	DurabilityNone  Durability = 2 // left to the kernel
)

// AuditOptions configure an audit log.
type AuditOptions struct {
	Path          string
	Durability    Durability
	BatchInterval time.Duration // DurabilityBatch; 0: 100 ms
	HMACKey       []byte        // non-empty: every record also carries an HMAC-SHA256
	RotateBytes   uint64        // >0: rotate to Path.N past this size, keeping the chain
}

// AuditLog is an append-only, hash-chained JSON Lines file.
type AuditLog struct {
	mu  sync.Mutex
	log *C.ztee_audit_log
}

// OpenAuditLog opens (or creates, 0600) an audit log, continuing its chain.
func OpenAuditLog(opts AuditOptions) (*AuditLog, error) {
	var cs cstrings
	defer cs.free()
	var o C.ztee_audit_options
	C.ztee_audit_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	o.path = cs.str(opts.Path)
	o.durability = C.int32_t(opts.Durability)
	o.batch_ms = ms(opts.BatchInterval)
	var key unsafe.Pointer
	if len(opts.HMACKey) > 0 {
		key = C.CBytes(opts.HMACKey)
		defer C.free(key)
		o.hmac_key = key
		o.hmac_key_len = C.size_t(len(opts.HMACKey))
	}
	o.rotate_bytes = C.uint64_t(opts.RotateBytes)
	var l *C.ztee_audit_log
	if err := call(func() C.ztee_status { return C.ztee_audit_open(&o, &l) }); err != nil {
		return nil, err
	}
	a := &AuditLog{log: l}
	runtime.SetFinalizer(a, (*AuditLog).Close)
	return a, nil
}

func (a *AuditLog) handle() (*C.ztee_audit_log, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.log == nil {
		return nil, &Error{Code: StatusClosed, Message: "the audit log is closed"}
	}
	return a.log, nil
}

// Append records an event of the caller's own; fields is the inner part of
// a JSON object (`"k":1,"s":"v"`), may be empty. Returns the record's seq.
func (a *AuditLog) Append(event, traceID, fields string) (uint64, error) {
	l, err := a.handle()
	if err != nil {
		return 0, err
	}
	var cs cstrings
	defer cs.free()
	ev, tr := cs.str(event), cs.str(traceID)
	fl := C.CString(fields)
	defer C.free(unsafe.Pointer(fl))
	var seq C.uint64_t
	err = call(func() C.ztee_status { return C.ztee_audit_append(l, ev, tr, fl, &seq) })
	runtime.KeepAlive(a)
	return uint64(seq), err
}

// Flush syncs the log to disk now.
func (a *AuditLog) Flush() error {
	l, err := a.handle()
	if err != nil {
		return err
	}
	err = call(func() C.ztee_status { return C.ztee_audit_flush(l) })
	runtime.KeepAlive(a)
	return err
}

// Close releases the log (gates using it keep their own reference).
func (a *AuditLog) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.log != nil {
		C.ztee_audit_free(a.log)
		a.log = nil
	}
	runtime.SetFinalizer(a, nil)
	return nil
}

// AuditReport is what VerifyAuditLog found.
type AuditReport struct {
	OK      bool
	Records uint64
	Problem string // the first record that was edited, removed, reordered or inserted
}

// VerifyAuditLog checks one chain across files given oldest first (and,
// with a key, every record's HMAC).
func VerifyAuditLog(files []string, key []byte) (AuditReport, error) {
	arr := newCArray(files)
	defer arr.free()
	var k unsafe.Pointer
	if len(key) > 0 {
		k = C.CBytes(key)
		defer C.free(k)
	}
	var rep *C.ztee_audit_report
	err := call(func() C.ztee_status {
		return C.ztee_audit_verify(arr.p, C.size_t(arr.n), k, C.size_t(len(key)), &rep)
	})
	if err != nil {
		return AuditReport{}, err
	}
	defer C.ztee_audit_report_free(rep)
	return AuditReport{OK: rep.ok != 0, Records: uint64(rep.records), Problem: C.GoString(rep.problem)}, nil
}

// ---- gate --------------------------------------------------------------------

// Approval is a pending question to an approver: answer it with its
// Approve or Deny (or Gate.Approve/Deny with its Token), at once or later
// from any goroutine, before the deadline (no answer denies).
type Approval struct {
	Token       string
	Description string // JSON: tool, text, env_keys, cwd, user, writes, network, labels, tier, rule, trace
	Deadline    time.Duration
	core        *gateCore
}

// Approve says yes; who is recorded. errors.Is(err, ErrNotFound) when it
// was already answered or expired.
func (a *Approval) Approve(who string) error { return a.core.approve(a.Token, who) }

// Deny says no; reason and who are recorded.
func (a *Approval) Deny(reason, who string) error { return a.core.deny(a.Token, reason, who) }

// GateOptions configure a gate. Every field may be left zero.
type GateOptions struct {
	Policy *Policy   // nil: DefaultPolicy
	Audit  *AuditLog // nil: nothing recorded (not recommended)
	// Approver is called on the goroutine running Gate.Call; a panic denies.
	// nil: calls of approve tiers are denied.
	Approver func(a *Approval)
	// Secrets resolves secret://NAME: (value, true, nil), or ("", false, nil)
	// for a name it does not know (SecretsDir and SecretsEnvPrefix are asked
	// next). A non-nil error fails the call.
	Secrets          func(name string) (string, bool, error)
	SecretsDir       string // a file per secret: <dir>/NAME
	SecretsEnvPrefix string // the host variable <prefix>NAME, e.g. "ZTEE_SECRET_"
	Sandbox          *SandboxOptions
	Pool             *Pool // calls without network lease from it
	// DLP scans stdout/stderr with libztee's default detectors (findings
	// become "[REDACTED:<detector>]") and injection rules; DLPBlock names
	// detectors (e.g. "card") whose findings withhold the output instead.
	DLP      bool
	DLPBlock []string
}

// Gate runs tool calls under a policy; safe for concurrent use.
type Gate struct {
	core   *gateCore
	handle cgo.Handle // refers to core (not to the Gate, so its finalizer can run)
}

// gateCore is what the C callbacks and pending Approvals reach.
type gateCore struct {
	mu       sync.Mutex
	g        *C.ztee_gate
	approver func(a *Approval)
	secrets  func(name string) (string, bool, error)
}

// CallResult is what Gate.Call did. Result is nil when the call did not run.
type CallResult struct {
	Ran        bool
	Decision   Decision
	Denial     string // why it did not run
	ApprovedBy string
	SandboxID  string
	Result     *Result // stdout/stderr scrubbed of secret values (and DLP-filtered)
	// Blocked: DLP withheld the output (GateOptions.DLPBlock); Denial says why.
	Blocked            bool
	DLPFindings        int // DLP findings in stdout and stderr (values never kept)
	InjectionAnomalies int // injection rule hits in stdout and stderr
}

//export zteeGoApprover
func zteeGoApprover(handle C.uintptr_t, gate *C.ztee_gate, token *C.char, description *C.char, deadline C.uint32_t) {
	core := cgo.Handle(handle).Value().(*gateCore)
	a := &Approval{Token: C.GoString(token), Description: C.GoString(description),
		Deadline: time.Duration(deadline) * time.Millisecond, core: core}
	defer func() {
		if r := recover(); r != nil {
			reason := C.CString(fmt.Sprintf("the approver panicked: %v", r))
			who := C.CString("gate")
			C.ztee_gate_deny(gate, token, reason, who)
			C.free(unsafe.Pointer(reason))
			C.free(unsafe.Pointer(who))
		}
	}()
	core.approver(a)
}

//export zteeGoSecret
func zteeGoSecret(handle C.uintptr_t, name *C.char, out *C.ztee_secret_value) (st C.int32_t) {
	core := cgo.Handle(handle).Value().(*gateCore)
	defer func() {
		if r := recover(); r != nil {
			st = C.ZTEE_E_INTERNAL
		}
	}()
	v, ok, err := core.secrets(C.GoString(name))
	if err != nil {
		return C.ZTEE_E_INTERNAL
	}
	if !ok || v == "" {
		return C.ZTEE_E_NOT_FOUND
	}
	buf := C.CBytes([]byte(v))
	defer C.free(buf)
	return C.int32_t(C.ztee_secret_value_set(out, buf, C.size_t(len(v))))
}

// NewGate creates a gate on rt.
func NewGate(rt *Runtime, opts *GateOptions) (*Gate, error) {
	r, err := rt.handle()
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &GateOptions{}
	}
	g := &Gate{core: &gateCore{approver: opts.Approver, secrets: opts.Secrets}}
	var cs cstrings
	defer cs.free()
	var o C.ztee_gate_options
	C.ztee_gate_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	if opts.Policy != nil {
		p, err := opts.Policy.handle()
		if err != nil {
			return nil, err
		}
		o.policy = p
	}
	if opts.Audit != nil {
		l, err := opts.Audit.handle()
		if err != nil {
			return nil, err
		}
		o.audit = l
	}
	if opts.Pool != nil {
		p, err := opts.Pool.handle()
		if err != nil {
			return nil, err
		}
		o.pool = p
	}
	o.secrets_dir = cs.str(opts.SecretsDir)
	if opts.DLP {
		o.dlp = 1
	}
	if len(opts.DLPBlock) > 0 {
		block := newCArray(opts.DLPBlock)
		defer block.free()
		o.dlp_block = block.p
		o.dlp_block_count = C.size_t(block.n)
	}
	o.secrets_env_prefix = cs.str(opts.SecretsEnvPrefix)
	var so C.ztee_sandbox_options
	if opts.Sandbox != nil {
		allow := fillSandboxOptions(&so, opts.Sandbox, &cs)
		if allow.p != nil {
			defer allow.free()
		}
		o.sandbox = &so
	}
	g.handle = cgo.NewHandle(g.core)
	approver, secrets := C.int(0), C.int(0)
	if opts.Approver != nil {
		approver = 1
	}
	if opts.Secrets != nil {
		secrets = 1
	}
	C.ztee_go_gate_callbacks(&o, C.uintptr_t(g.handle), approver, secrets)
	var cg *C.ztee_gate
	err = call(func() C.ztee_status { return C.ztee_gate_create(r, &o, &cg) })
	runtime.KeepAlive(rt)
	runtime.KeepAlive(opts.Policy)
	runtime.KeepAlive(opts.Audit)
	runtime.KeepAlive(opts.Pool)
	if err != nil {
		g.handle.Delete()
		return nil, err
	}
	g.core.g = cg
	runtime.SetFinalizer(g, (*Gate).Close)
	return g, nil
}

func (c *gateCore) gateHandle() (*C.ztee_gate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.g == nil {
		return nil, &Error{Code: StatusClosed, Message: "the gate is closed"}
	}
	return c.g, nil
}

// Call classifies, (asks for approval,) resolves secrets and runs one tool
// call. A denied call returns Ran = false and a nil error. Cancelling ctx
// kills the running command; a wait for approval is bounded by the tier's
// approval deadline, not by ctx.
func (g *Gate) Call(ctx context.Context, tc *ToolCall) (*CallResult, error) {
	cg, err := g.core.gateHandle()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var cc cToolCall
	if err := cc.fill(tc); err != nil {
		return nil, err
	}
	defer cc.free()
	var cancel *C.ztee_cancel
	if err := call(func() C.ztee_status { return C.ztee_cancel_create(&cancel) }); err != nil {
		return nil, err
	}
	defer C.ztee_cancel_free(cancel)
	cc.c.cancel = cancel
	st := &stream{stdout: tc.Stdout, stderr: tc.Stderr, cancel: cancel}
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
		C.ztee_go_call_stream(&cc.c, C.uintptr_t(h), out, errw)
	}
	stop := watchCancel(ctx, cancel)
	var res *C.ztee_call_result
	err = call(func() C.ztee_status { return C.ztee_gate_call(cg, &cc.c, &res) })
	stop()
	runtime.KeepAlive(g)
	if err != nil {
		return nil, err
	}
	defer C.ztee_call_result_free(res)
	out := &CallResult{
		Ran: res.ran != 0,
		Decision: Decision{Tier: int(res.tier), Action: Action(res.action), RuleIndex: int(res.rule_index),
			Rule: C.GoString(res.rule), Reason: C.GoString(res.reason)},
		Denial:             C.GoString(res.denial),
		ApprovedBy:         C.GoString(res.approved_by),
		SandboxID:          C.GoString(res.sandbox_id),
		Blocked:            res.blocked != 0,
		DLPFindings:        int(res.dlp_findings),
		InjectionAnomalies: int(res.injection_anomalies),
	}
	if res.exec != nil {
		out.Result = newResult(res.exec)
	}
	if werr := st.writeErr(); werr != nil {
		return out, werr
	}
	if out.Result != nil && out.Result.Cancelled {
		if cerr := ctx.Err(); cerr != nil {
			return out, cerr
		}
	}
	return out, nil
}

func (c *gateCore) answer(f func(cg *C.ztee_gate) C.ztee_status) error {
	// Held across the C call, so Close cannot free the gate under it.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.g == nil {
		return &Error{Code: StatusClosed, Message: "the gate is closed"}
	}
	cg := c.g
	return call(func() C.ztee_status { return f(cg) })
}

func (c *gateCore) approve(token, who string) error {
	t, w := C.CString(token), C.CString(who)
	defer C.free(unsafe.Pointer(t))
	defer C.free(unsafe.Pointer(w))
	return c.answer(func(cg *C.ztee_gate) C.ztee_status { return C.ztee_gate_approve(cg, t, w) })
}

func (c *gateCore) deny(token, reason, who string) error {
	t, r, w := C.CString(token), C.CString(reason), C.CString(who)
	defer C.free(unsafe.Pointer(t))
	defer C.free(unsafe.Pointer(r))
	defer C.free(unsafe.Pointer(w))
	return c.answer(func(cg *C.ztee_gate) C.ztee_status { return C.ztee_gate_deny(cg, t, r, w) })
}

// Approve answers a pending approval with yes; who is recorded.
// errors.Is(err, ErrNotFound) when the token is unknown, answered or expired.
func (g *Gate) Approve(token, who string) error { return g.core.approve(token, who) }

// Deny answers a pending approval with no; reason and who are recorded.
func (g *Gate) Deny(token, reason, who string) error { return g.core.deny(token, reason, who) }

// Close frees the gate. No Call may be running on it.
func (g *Gate) Close() error {
	g.core.mu.Lock()
	defer g.core.mu.Unlock()
	if g.core.g != nil {
		C.ztee_gate_free(g.core.g)
		g.core.g = nil
		g.handle.Delete()
	}
	runtime.SetFinalizer(g, nil)
	return nil
}
