package ztee

// Workspaces against one mounted sandbox (a cold boot): bad mounts, diff,
// patch, the reviewed export, a destination directory, a conflict and the
// diff log.

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func readText(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "<missing>"
	}
	return string(b)
}

func TestWorkspaces(t *testing.T) {
	rt, _ := shared(t)
	ctx := context.Background()
	if !HasFeature("workspaces") {
		t.Fatal(`HasFeature("workspaces") is false`)
	}
	base := t.TempDir()
	host := filepath.Join(base, "repo")
	if err := os.Mkdir(host, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{"main.txt": "one\n", "other.txt": "two\n", "gone.txt": "bye\n"} {
		if err := os.WriteFile(filepath.Join(host, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	for _, bad := range []struct {
		m    Mount
		want error
	}{
		{Mount{"relative", "/work"}, ErrInvalidArgument},
		{Mount{host, "/proc/x"}, ErrInvalidArgument},
		{Mount{filepath.Join(base, "missing"), "/work"}, ErrNotFound},
		{Mount{host + "\x00/etc", "/work"}, ErrInvalidArgument},
	} {
		if sb, err := rt.NewSandbox(ctx, &SandboxOptions{Mounts: []Mount{bad.m}}); !errors.Is(err, bad.want) {
			if sb != nil {
				sb.Close()
			}
			t.Errorf("mount %+v: err %v, want %v", bad.m, err, bad.want)
		}
	}

	diffLog := filepath.Join(base, "diff.jsonl")
	sb, err := rt.NewSandbox(ctx, &SandboxOptions{Mounts: []Mount{{host, "/work"}}, DiffLog: diffLog})
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	r, err := sb.Run(ctx, "echo changed >> /work/main.txt && echo x >> /work/other.txt && rm /work/gone.txt && "+
		"mkdir /work/sub && echo n > /work/sub/new.txt", nil)
	if err != nil || r.ExitCode != 0 {
		t.Fatalf("run: %v %+v", err, r)
	}
	if got := readText(filepath.Join(host, "main.txt")); got != "one\n" {
		t.Errorf("host main.txt = %q: the guest wrote through", got)
	}

	changes, err := sb.Diff(ctx, "/work")
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, c := range changes {
		kinds = append(kinds, c.Kind.String()+" "+c.Path)
	}
	want := []string{"deleted gone.txt", "modified main.txt", "modified other.txt", "created sub", "created sub/new.txt"}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("diff = %v, want %v", kinds, want)
	}
	if c := changes[4]; c.Type != TypeFile || c.Size != 2 || c.Mount != "/work" || len(c.SHA256) != 64 || c.Mode&0o777 != 0o644 {
		t.Errorf("created file: %+v", c)
	}
	if _, err := sb.Diff(ctx, "/elsewhere"); !errors.Is(err, ErrNotFound) {
		t.Errorf("diff of an unknown mount: %v", err)
	}
	patch, err := sb.Patch(ctx, "", []string{"main.txt"})
	if err != nil || !strings.Contains(patch, "+changed") || strings.Contains(patch, "other.txt") {
		t.Errorf("patch %q, %v", patch, err)
	}

	// An approver that fails: nothing is written.
	boom := errors.New("reviewer crashed")
	_, err = sb.ExportChanges(ctx, &ExportOptions{Approve: func(c Change) (bool, error) {
		if c.Path == "sub/new.txt" {
			return false, boom
		}
		return true, nil
	}})
	if !errors.Is(err, boom) {
		t.Errorf("failing approver: %v", err)
	}
	if readText(filepath.Join(host, "main.txt")) != "one\n" || readText(filepath.Join(host, "gone.txt")) != "bye\n" {
		t.Error("a failing approver let changes through")
	}

	// What the approver approves; a change altered after approval is declined.
	var asked []string
	res, err := sb.ExportChanges(ctx, &ExportOptions{Approve: func(c Change) (bool, error) {
		asked = append(asked, c.Path)
		if c.Path == "sub/new.txt" {
			if _, err := sb.Run(ctx, "echo swapped > /work/sub/new.txt", nil); err != nil {
				return false, err
			}
		}
		return c.Path == "main.txt" || c.Path == "sub/new.txt", nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(asked, []string{"gone.txt", "main.txt", "other.txt", "sub", "sub/new.txt"}) {
		t.Errorf("asked %v", asked)
	}
	if len(res.Applied) != 1 || res.Applied[0].Path != "main.txt" || len(res.Declined) != 4 ||
		res.Declined[3].Path != "sub/new.txt" || res.Declined[3].Size != 8 {
		t.Errorf("export result %+v", res)
	}
	if got := readText(filepath.Join(host, "main.txt")); got != "one\nchanged\n" {
		t.Errorf("host main.txt = %q", got)
	}
	if _, err := os.Stat(filepath.Join(host, "sub")); !os.IsNotExist(err) {
		t.Errorf("sub was written: %v", err)
	}

	// A destination directory.
	dest := filepath.Join(base, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	res, err = sb.ExportChanges(ctx, &ExportOptions{Mount: "/work", Paths: []string{"sub"}, DestDir: dest})
	if err != nil {
		t.Fatal(err)
	}
	var applied []string
	for _, c := range res.Applied {
		applied = append(applied, c.Path)
	}
	sort.Strings(applied)
	if !reflect.DeepEqual(applied, []string{"sub", "sub/new.txt"}) || readText(filepath.Join(dest, "sub", "new.txt")) != "swapped\n" {
		t.Errorf("dest export: %v, %q", applied, readText(filepath.Join(dest, "sub", "new.txt")))
	}
	if _, err := sb.ExportChanges(ctx, &ExportOptions{Paths: []string{"nope.txt"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unknown path: %v", err)
	}

	// A host edit since the start: ErrConflict, nothing applied.
	if err := os.WriteFile(filepath.Join(host, "other.txt"), []byte("edited on the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = sb.ExportChanges(ctx, &ExportOptions{Paths: []string{"other.txt", "sub"}})
	var ze *Error
	if !errors.Is(err, ErrConflict) || !errors.As(err, &ze) || ze.Code != StatusConflict ||
		!strings.Contains(ze.Message, "other.txt") || StatusConflict.String() != "ZTEE_E_CONFLICT" {
		t.Errorf("conflict: %v", err)
	}
	if _, err := os.Stat(filepath.Join(host, "sub")); !os.IsNotExist(err) {
		t.Errorf("sub was written despite the conflict: %v", err)
	}

	// Destroy records the diff.
	if err := sb.Destroy(); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Sandbox string `json:"sandbox"`
		Changes []struct {
			Path  string `json:"path"`
			Mount string `json:"mount"`
		} `json:"changes"`
	}
	if err := json.Unmarshal([]byte(readText(diffLog)), &rec); err != nil || rec.Sandbox != sb.ID() {
		t.Fatalf("diff log %q: %v", readText(diffLog), err)
	}
	var logged []string
	for _, c := range rec.Changes {
		if c.Mount == "/work" {
			logged = append(logged, c.Path)
		}
	}
	if !reflect.DeepEqual(logged, []string{"gone.txt", "main.txt", "other.txt", "sub", "sub/new.txt"}) {
		t.Errorf("logged %v", logged)
	}
}
