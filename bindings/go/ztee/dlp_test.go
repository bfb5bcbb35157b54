package ztee

// SandboxOptions.DLP on one sandbox: collected output redacted and counted,
// a block-mode detector withholding output, ReadFile scanned.

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestSandboxDLP(t *testing.T) {
	rt, _ := shared(t)
	ctx := context.Background()
	if _, err := rt.NewSandbox(ctx, &SandboxOptions{DLPBlock: []string{"no_such_detector"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unknown detector: %v", err)
	}
	sb, err := rt.NewSandbox(ctx, &SandboxOptions{DLP: true, DLPBlock: []string{"ssn"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	r, err := sb.Run(ctx, "printf 'pay 4111 1111 1111 1111\\n'", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Stdout) != "pay [REDACTED:card]\n" || r.DLPFindings != 1 {
		t.Errorf("redacted run: %q, %d findings", r.Stdout, r.DLPFindings)
	}
	var streamed strings.Builder
	if _, err := sb.Run(ctx, "printf 'id 4111 1111'; sleep 0.3; printf ' 1111 1111 end\\n'", &RunOptions{Stdout: &streamed}); err != nil {
		t.Fatal(err)
	}
	if streamed.String() != "id [REDACTED:card] end\n" {
		t.Errorf("streamed: %q", streamed.String())
	}
	if _, err := sb.Run(ctx, "echo 219-09-9999", nil); !errors.Is(err, ErrPermission) || strings.Contains(err.Error(), "219-09-9999") {
		t.Errorf("block mode: %v", err)
	}
	if err := sb.WriteFile(ctx, "/tmp/c.txt", []byte("card=5555555555554444\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := sb.ReadFile(ctx, "/tmp/c.txt", 0); err != nil || string(b) != "card=[REDACTED:card]\n" {
		t.Errorf("ReadFile: %q %v", b, err)
	}
}
