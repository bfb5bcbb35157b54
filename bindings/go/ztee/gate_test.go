package ztee

// The control plane from Go: policies, the gate (tiers, approvals from other
// goroutines, secrets scrubbed) and the audit log, against real sandboxes
// (one pool shared by the gate tests).

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const gateTestPolicy = `{
  "version": 1,
  "tiers": {
    "L0": {"action": "run", "timeout_ms": 30000},
    "L4": {"action": "approve", "approval_timeout_ms": 1500},
    "L5": {"action": "deny"}
  },
  "rules": [
    {"name": "reads", "tool": "read_file", "tier": "L0"},
    {"name": "code", "tool": ["python", "shell"], "tier": "L4"},
    {"name": "never", "tool": "format_disk", "tier": "L5"}
  ]
}`

const goSecret = "go-s3cr3t-VALUE-9931"

var (
	gateOnce sync.Once
	gatePool *Pool
	gateErr  error
)

func gatePoolShared(t *testing.T) *Pool {
	t.Helper()
	rt, _ := shared(t)
	gateOnce.Do(func() {
		gatePool, gateErr = rt.NewPool(context.Background(), &PoolOptions{MinReady: 1, MaxTotal: 2})
	})
	if gateErr != nil {
		t.Fatalf("pool: %v", gateErr)
	}
	return gatePool
}

func TestPolicyParseErrorsAndClassify(t *testing.T) {
	_, err := ParsePolicy("{\"version\": 1,\n\"rules\": [{\"tool\": \"x\", \"tier\": \"L9\"}]}")
	if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad policy: %v", err)
	}
	p, err := DefaultPolicy()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	d, err := p.Classify(&ToolCall{Tool: "python", Command: "python3 -c 1"})
	if err != nil || d.Action != ActionApprove || d.Rule != "code-execution" || d.Tier != 4 {
		t.Errorf("python: %+v %v", d, err)
	}
	d, _ = p.Classify(&ToolCall{Tool: "mystery", Command: "x"})
	if d.Action != ActionDeny || d.RuleIndex != -1 {
		t.Errorf("unknown tool: %+v", d)
	}
	if !strings.Contains(DefaultPolicyJSON(), "\"version\": 1") {
		t.Error("DefaultPolicyJSON")
	}
}

func TestGateTiersApprovalsSecretsAndAudit(t *testing.T) {
	rt, _ := shared(t)
	pool := gatePoolShared(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "audit.jsonl")
	log, err := OpenAuditLog(AuditOptions{Path: logPath, HMACKey: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	policy, err := ParsePolicy(gateTestPolicy)
	if err != nil {
		t.Fatal(err)
	}
	var mode string // how the approver answers
	var asked sync.WaitGroup
	g, err := NewGate(rt, &GateOptions{
		Policy: policy,
		Audit:  log,
		Pool:   pool,
		Approver: func(a *Approval) {
			switch mode {
			case "now":
				if err := a.Approve("alice"); err != nil {
					t.Errorf("approve: %v", err)
				}
			case "later":
				asked.Add(1)
				go func() {
					defer asked.Done()
					time.Sleep(200 * time.Millisecond)
					if err := a.Approve("bob"); err != nil {
						t.Errorf("late approve: %v", err)
					}
				}()
			case "no":
				a.Deny("not today", "carol")
			case "panic":
				panic("chat service down")
			case "silent":
				asked.Add(1)
				go func() {
					defer asked.Done()
					time.Sleep(2 * time.Second) // past the 1.5 s deadline
					if err := a.Approve("too late"); !errors.Is(err, ErrNotFound) {
						t.Errorf("a late answer: %v, want ErrNotFound", err)
					}
				}()
			}
		},
		Secrets: func(name string) (string, bool, error) {
			if name == "TOKEN" {
				return goSecret, true, nil
			}
			return "", false, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	policy.Close() // the gate keeps its own reference
	ctx := context.Background()

	r, err := g.Call(ctx, &ToolCall{Tool: "read_file", Command: "echo read-ok", TraceID: "go-1"})
	if err != nil || !r.Ran || string(r.Result.Stdout) != "read-ok\n" || r.Decision.Action != ActionRun {
		t.Fatalf("run tier: %+v %v", r, err)
	}
	r, err = g.Call(ctx, &ToolCall{Tool: "format_disk", Command: "true"})
	if err != nil || r.Ran || r.Decision.Rule != "never" {
		t.Errorf("deny tier: %+v %v", r, err)
	}
	for _, m := range []struct{ mode, want string }{
		{"now", "alice"}, {"later", "bob"},
	} {
		mode = m.mode
		r, err = g.Call(ctx, &ToolCall{Tool: "python", Argv: []string{"python3", "-c", "print(6*7)"}})
		if err != nil || !r.Ran || r.ApprovedBy != m.want || string(r.Result.Stdout) != "42\n" {
			t.Errorf("approval %s: %+v %v", m.mode, r, err)
		}
	}
	mode = "no"
	r, err = g.Call(ctx, &ToolCall{Tool: "shell", Command: "true"})
	if err != nil || r.Ran || r.Denial != "denied by carol: not today" {
		t.Errorf("denied: %+v %v", r, err)
	}
	mode = "panic"
	r, err = g.Call(ctx, &ToolCall{Tool: "shell", Command: "true"})
	if err != nil || r.Ran || !strings.Contains(r.Denial, "panicked: chat service down") {
		t.Errorf("panicking approver: %+v %v", r, err)
	}
	mode = "silent"
	r, err = g.Call(ctx, &ToolCall{Tool: "shell", Command: "true"})
	if err != nil || r.Ran || !strings.Contains(r.Denial, "no approval within 1500 ms") {
		t.Errorf("expired: %+v %v", r, err)
	}
	asked.Wait()

	// A secret by reference: the process gets it, output and log do not.
	mode = "now"
	var streamed bytes.Buffer
	r, err = g.Call(ctx, &ToolCall{
		Tool: "shell", TraceID: "go-secret",
		Command: `printf %s "$TOKEN" | head -c 5; sleep 0.2; printf '%s\n' "$TOKEN" | tail -c +6; cat /tmp/tok; echo; echo "$TOKEN" >&2`,
		Env:     map[string]string{"TOKEN": "secret://TOKEN"},
		Files:   map[string][]byte{"/tmp/tok": []byte("secret://TOKEN")},
		Stdout:  &streamed,
	})
	if err != nil || !r.Ran {
		t.Fatalf("secret call: %+v %v", r, err)
	}
	if streamed.String() != "[secret:TOKEN]\n[secret:TOKEN]\n" || string(r.Result.Stderr) != "[secret:TOKEN]\n" {
		t.Errorf("secret not scrubbed: stdout %q stderr %q", streamed.String(), r.Result.Stderr)
	}
	_, err = g.Call(ctx, &ToolCall{Tool: "read_file", Command: "true", Env: map[string]string{"X": "secret://NOPE"}})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "secret://NOPE") {
		t.Errorf("unknown secret: %v", err)
	}

	// The audit log: the chain verifies, holds no secret, and an edit is found.
	if err := log.Flush(); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyAuditLog([]string{logPath}, []byte("k"))
	if err != nil || !rep.OK || rep.Records < 20 {
		t.Errorf("verify: %+v %v", rep, err)
	}
	data, _ := os.ReadFile(logPath)
	if bytes.Contains(data, []byte(goSecret)) {
		t.Error("the secret's value is in the audit log")
	}
	edited := bytes.Replace(data, []byte(`"trace":"go-1"`), []byte(`"trace":"go-2"`), 1)
	bad := filepath.Join(dir, "edited.jsonl")
	os.WriteFile(bad, edited, 0o600)
	rep, err = VerifyAuditLog([]string{bad}, []byte("k"))
	if err != nil || rep.OK || !strings.Contains(rep.Problem, "HMAC does not match") {
		t.Errorf("edited log: %+v %v", rep, err)
	}
	if _, err := log.Append("note", "go-1", `"by":"test"`); err != nil {
		t.Errorf("append: %v", err)
	}
	if _, err := log.Append("note", "go-1", `"by":`); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("append of malformed fields: %v", err)
	}
}

func TestGateContextCancelKillsTheCall(t *testing.T) {
	rt, _ := shared(t)
	pool := gatePoolShared(t)
	policy, _ := ParsePolicy(gateTestPolicy)
	g, err := NewGate(rt, &GateOptions{Policy: policy, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	r, err := g.Call(ctx, &ToolCall{Tool: "read_file", Command: "sleep 30"})
	if !errors.Is(err, context.DeadlineExceeded) || r == nil || r.Result == nil || !r.Result.Cancelled {
		t.Errorf("cancelled call: %+v %v", r, err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("the cancelled call took %v", time.Since(start))
	}
	g.Close()
	if _, err := g.Call(context.Background(), &ToolCall{Tool: "read_file", Command: "true"}); !errors.Is(err, ErrClosed) {
		t.Errorf("call after Close: %v", err)
	}
}

func TestGateOutputDLP(t *testing.T) {
	rt, _ := shared(t)
	pool := gatePoolShared(t)
	policy, _ := ParsePolicy(gateTestPolicy)
	g, err := NewGate(rt, &GateOptions{Policy: policy, Pool: pool, DLP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	r, err := g.Call(context.Background(), &ToolCall{Tool: "read_file", Command: "echo card 4111 1111 1111 1111"})
	if err != nil || !r.Ran || r.Blocked || r.DLPFindings != 1 || string(r.Result.Stdout) != "card [REDACTED:card]\n" {
		t.Errorf("dlp: %+v %v", r, err)
	}
	b, err := NewGate(rt, &GateOptions{Policy: policy, Pool: pool, DLPBlock: []string{"card"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err = b.Call(context.Background(), &ToolCall{Tool: "read_file", Command: "echo 4111111111111111"})
	if err != nil || !r.Blocked || len(r.Result.Stdout) != 0 || !strings.Contains(r.Denial, "output blocked") {
		t.Errorf("dlp block: %+v %v", r, err)
	}
	if _, err := NewGate(rt, &GateOptions{DLPBlock: []string{"nope"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown detector: %v", err)
	}
}

func TestTrustedKeysRefuseAnUnsignedImage(t *testing.T) {
	dir := t.TempDir()
	key, pub := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	if out, err := exec.Command("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v %s", err, out)
	}
	if out, err := exec.Command("openssl", "ec", "-in", key, "-pubout", "-out", pub).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v %s", err, out)
	}
	rt, err := NewRuntime(&RuntimeOptions{StateDir: filepath.Join(dir, "state"), TrustedKeys: []string{pub}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	// The default image carries no signature: refused before any VMM starts.
	if _, err := rt.NewSandbox(context.Background(), nil); !errors.Is(err, ErrImage) || !strings.Contains(err.Error(), "sig") {
		t.Errorf("unsigned image: %v", err)
	}
	if _, err := NewRuntime(&RuntimeOptions{StateDir: dir, TrustedKeys: []string{"/nonexistent/k.pub"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("missing key: %v", err)
	}
}
