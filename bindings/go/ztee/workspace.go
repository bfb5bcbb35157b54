package ztee

// Workspaces: host directories mounted read-only (SandboxOptions.Mounts),
// the guest's changes (Diff, Patch) and the reviewed export (ExportChanges).

/*
#include <stdlib.h>
#include <string.h>
#include "ztee.h"

// The changes approved in a review, sorted by path (user_data of the export).
typedef struct {
  ztee_change *v;
  size_t n;
} ztee_go_reviewed;

static int ztee_go_by_path(const void *a, const void *b) {
  return strcmp(((const ztee_change *)a)->path, ((const ztee_change *)b)->path);
}

static void ztee_go_sort_reviewed(ztee_go_reviewed *r) { qsort(r->v, r->n, sizeof *r->v, ztee_go_by_path); }

// Yes for a change identical to an approved one (path, kind, type, size,
// mode, hash, link target, mount): one the guest altered after the review,
// or a new one, is declined. Runs on the thread that called the export.
static int ztee_go_approve_reviewed(const ztee_change *c, void *ud) {
  const ztee_go_reviewed *r = (const ztee_go_reviewed *)ud;
  const ztee_change *a = (const ztee_change *)bsearch(c, r->v, r->n, sizeof *r->v, ztee_go_by_path);
  if (!a) return 0;
  return a->kind == c->kind && a->type == c->type && a->size == c->size && a->mode == c->mode &&
         strcmp(a->mount, c->mount) == 0 && strcmp(a->sha256, c->sha256) == 0 &&
         strcmp(a->link_target, c->link_target) == 0;
}

// Declines everything: the export returns its selection in `declined` and
// writes nothing.
static int ztee_go_decline_all(const ztee_change *c, void *ud) {
  (void)c;
  (void)ud;
  return 0;
}

static void ztee_go_export_review(ztee_export_options *o) { o->approve = ztee_go_decline_all; }
static void ztee_go_export_reviewed(ztee_export_options *o, ztee_go_reviewed *r) {
  o->approve = ztee_go_approve_reviewed;
  o->user_data = r;
}
static ztee_change *ztee_go_change_at(const ztee_change_list *l, size_t i) { return &l->entries[i]; }
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// Mount is a host directory the guest sees read-only at GuestPath.
// SECURITY: everything in it becomes readable by the sandboxed code.
type Mount struct {
	HostDir   string // absolute path of an existing directory
	GuestPath string // absolute guest path, e.g. "/workspace"; not /, /proc, /sys, /dev, /run, /tmp
}

// ChangeKind is what happened to a path.
type ChangeKind int

// Change kinds (ZTEE_CHANGE_*).
const (
	ChangeCreated ChangeKind = iota
	ChangeModified
	ChangeDeleted
)

// String is "created", "modified" or "deleted".
func (k ChangeKind) String() string {
	switch k {
	case ChangeCreated:
		return "created"
	case ChangeModified:
		return "modified"
	case ChangeDeleted:
		return "deleted"
	}
	return fmt.Sprintf("ChangeKind(%d)", int(k))
}

// Change is one change in a guest's writable layer. Every field is the
// guest's claim: treat it as hostile input.
type Change struct {
	Kind       ChangeKind
	Type       FileType // for a deletion: the type it had
	Path       string   // in a mount: relative to it; else absolute. Any byte but NUL
	Mount      string   // the mount's guest path; "" for the guest's own filesystem
	Size       uint64   // files and symlinks; 0 for deletions
	Mode       uint32   // permission bits with setuid/setgid/sticky (0o7777); 0 for deletions
	SHA256     string   // regular files: 64 hex digits; else ""
	LinkTarget string   // symlinks; else ""
}

// ExportOptions select what ExportChanges writes back, and where.
type ExportOptions struct {
	// Mount is the mount's guest path; "" when the sandbox has one mount.
	Mount string
	// Paths are relative paths to export (a directory selects everything
	// below it), each naming a change (else ErrInvalidArgument). nil: all.
	Paths []string
	// Approve is asked once per selected change, on the calling goroutine,
	// before anything is written: true approves it. nil: every selected
	// change. A change the guest alters after it was approved, or one that
	// appears meanwhile, is declined, never written. An error it returns
	// (or a panic) ends the export before anything is written.
	Approve func(Change) (bool, error)
	// DestDir: "" writes into the mount's host directory, where every
	// touched path must be as it was when the sandbox started (else
	// ErrConflict naming them, and nothing is applied). Else an existing
	// directory that receives the created and modified entries (deletions
	// are not applied there).
	DestDir string
}

// ExportResult is what ExportChanges did.
type ExportResult struct {
	Applied  []Change // written
	Declined []Change // selected but not approved, or altered after approval
}

func noNUL(what string, ss ...string) error {
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 {
			return &Error{Code: StatusInvalidArgument, Message: what + " contains a NUL byte; remove it"}
		}
	}
	return nil
}

func toChange(c *C.ztee_change) Change {
	return Change{
		Kind:       ChangeKind(c.kind),
		Type:       FileType(c._type),
		Path:       C.GoString(c.path),
		Mount:      C.GoString(c.mount),
		Size:       uint64(c.size),
		Mode:       uint32(c.mode),
		SHA256:     C.GoString(c.sha256),
		LinkTarget: C.GoString(c.link_target),
	}
}

func toChanges(l *C.ztee_change_list) []Change {
	out := make([]Change, 0, int(l.count))
	for i := 0; i < int(l.count); i++ {
		out = append(out, toChange(C.ztee_go_change_at(l, C.size_t(i))))
	}
	return out
}

// Diff lists what changed in the guest's writable layers since it booted,
// sorted by mount and path: mount is a mount's guest path for that mount
// only, "/" for the guest's own filesystem only, "" for both. An unknown
// mount is ErrNotFound.
// SECURITY: the list is the guest's claim; ExportChanges checks every entry again.
func (s *Sandbox) Diff(ctx context.Context, mount string) ([]Change, error) {
	sb, err := s.handle()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := noNUL("the mount", mount); err != nil {
		return nil, err
	}
	var cs cstrings
	defer cs.free()
	m := cs.str(mount)
	var list *C.ztee_change_list
	err = call(func() C.ztee_status { return C.ztee_sandbox_diff(sb, m, &list) })
	runtime.KeepAlive(s)
	if err != nil {
		return nil, err
	}
	defer C.ztee_change_list_free(list)
	return toChanges(list), nil
}

// ExportChanges applies the approved part of a mount's diff to the host (see
// ExportOptions). Every check runs before the first write, and a failing one
// applies nothing: ErrConflict names host paths edited since the sandbox
// started; ErrPermission a path with "..", a symlink on the way or leaving
// the directory, a device or fifo, setuid/setgid bits, a hard-linked host
// file, or content that no longer matches its sha256. Each file is written
// to a temporary, synced and renamed into place. With Approve, the selection
// is read first (one more diff of the guest) and the export then writes only
// changes identical to approved ones.
// SECURITY: the one way data written in a sandbox reaches the host: approve
// only what was reviewed (see Patch).
func (s *Sandbox) ExportChanges(ctx context.Context, opts *ExportOptions) (*ExportResult, error) {
	if opts == nil {
		opts = &ExportOptions{}
	}
	sb, err := s.handle()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := noNUL("ExportOptions.Mount or DestDir", opts.Mount, opts.DestDir); err != nil {
		return nil, err
	}
	if err := noNUL("an ExportOptions.Paths entry", opts.Paths...); err != nil {
		return nil, err
	}
	var cs cstrings
	defer cs.free()
	var o C.ztee_export_options
	C.ztee_export_options_init(&o, C.size_t(unsafe.Sizeof(o)))
	o.mount = cs.str(opts.Mount)
	o.dest_dir = cs.str(opts.DestDir)
	if len(opts.Paths) > 0 {
		paths := newCArray(opts.Paths)
		defer paths.free()
		o.paths = paths.p
		o.path_count = C.size_t(paths.n)
	}
	export := func() (*C.ztee_export_result, error) {
		var res *C.ztee_export_result
		err := call(func() C.ztee_status { return C.ztee_sandbox_export_changes(sb, &o, &res) })
		runtime.KeepAlive(s)
		return res, err
	}
	result := func(res *C.ztee_export_result) *ExportResult {
		return &ExportResult{Applied: toChanges(&res.applied), Declined: toChanges(&res.declined)}
	}
	if opts.Approve == nil {
		res, err := export()
		if err != nil {
			return nil, err
		}
		defer C.ztee_export_result_free(res)
		return result(res), nil
	}

	// The selection, nothing written; the approver is asked here.
	C.ztee_go_export_review(&o)
	review, err := export()
	if err != nil {
		return nil, err
	}
	defer C.ztee_export_result_free(review)
	n := int(review.declined.count)
	var approved []*C.ztee_change
	for i := 0; i < n; i++ {
		c := C.ztee_go_change_at(&review.declined, C.size_t(i))
		yes, err := opts.Approve(toChange(c))
		if err != nil {
			return nil, fmt.Errorf("ztee: ExportOptions.Approve failed for %q (nothing was written): %w", C.GoString(c.path), err)
		}
		if yes {
			approved = append(approved, c)
		}
	}
	if len(approved) == 0 {
		return result(review), nil
	}
	// Copies of the approved entries; their strings stay in `review`.
	v := unsafe.Slice((*C.ztee_change)(cs.alloc(uintptr(len(approved))*unsafe.Sizeof(C.ztee_change{}))), len(approved))
	for i, c := range approved {
		v[i] = *c
	}
	r := (*C.ztee_go_reviewed)(cs.alloc(unsafe.Sizeof(C.ztee_go_reviewed{})))
	r.v = &v[0]
	r.n = C.size_t(len(v))
	C.ztee_go_sort_reviewed(r)
	C.ztee_go_export_reviewed(&o, r)
	res, err := export()
	if err != nil {
		return nil, err
	}
	defer C.ztee_export_result_free(res)
	return result(res), nil
}

// Patch is a unified diff (diff -u) of a mount's text changes against its
// host directory, for review (binary files are named, not shown). mount and
// paths as in ExportOptions. The text holds the guest's bytes.
func (s *Sandbox) Patch(ctx context.Context, mount string, paths []string) (string, error) {
	sb, err := s.handle()
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := noNUL("the mount or a path", append([]string{mount}, paths...)...); err != nil {
		return "", err
	}
	var cs cstrings
	defer cs.free()
	m := cs.str(mount)
	var ps **C.char
	if len(paths) > 0 {
		a := newCArray(paths)
		defer a.free()
		ps = a.p
	}
	var text *C.char
	err = call(func() C.ztee_status { return C.ztee_sandbox_patch(sb, m, ps, C.size_t(len(paths)), &text) })
	runtime.KeepAlive(s)
	if err != nil {
		return "", err
	}
	defer C.ztee_free(unsafe.Pointer(text))
	return C.GoString(text), nil
}
