"""libztee for Python: run each tool call of an AI agent in its own microVM.

    import ztee
    with ztee.Sandbox() as sb:
        r = sb.run("python3 -c 'print(6*7)'")
        print(r.stdout)          # "42\\n"

    with ztee.Pool(min_ready=2) as pool:     # warm sandboxes, refilled from a snapshot
        with pool.lease() as sb:             # a READY sandbox in microseconds
            sb.run("echo hi")                # destroyed when the block ends

    gate = ztee.Gate(policy=ztee.Policy.load("policy.json"),   # tool calls by risk tier
                     audit=ztee.AuditLog("audit.jsonl"), approver=ask, secrets={"KEY": "..."})
    gate.call("python", command="python3 -c 'print(1)'", env={"KEY": "secret://KEY"})

Every blocking call releases the GIL. Streaming callbacks (on_stdout,
on_stderr) run on the runtime's event-loop thread with the GIL held; keep
them short. An exception a callback raises is re-raised by the exec call.
A gate's approver and secrets callables run on the thread that called
gate.call(), with the GIL held; so does export_changes()'s approve.

SECURITY: everything a sandbox returns (output, file bytes, names) was
produced by code that may be hostile.
"""

from __future__ import annotations

import builtins
import codecs
import json
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import _ztee

__all__ = [
    "Runtime", "Sandbox", "Pool", "ExecResult", "FileInfo", "Cancel", "Input", "version", "has_feature",
    "Policy", "Decision", "AuditLog", "AuditReport", "verify_audit_log", "Gate", "ApprovalRequest",
    "CallResult", "Mount", "Change", "ExportResult",
    "Error", "InvalidArgumentError", "NotFoundError", "ImageError", "BackendUnavailableError",
    "TimeoutError", "SandboxFailedError", "ClosedError", "ConflictError",
]

# ---- errors -------------------------------------------------------------------


class Error(Exception):
    """A libztee failure. .code is the ztee_status (negative int), .errno the
    OS errno (host or guest, 0 if none); str() is the library's message."""

    def __init__(self, code: int, errno: int, message: str):
        super().__init__(message)
        self.code = code
        self.errno = errno
        self.message = message

    @property
    def status_name(self) -> str:
        return _ztee.status_name(self.code)


class InvalidArgumentError(Error, ValueError):
    """Bad argument or options (ZTEE_E_INVALID_ARGUMENT)."""


class NotFoundError(Error):
    """A file, command or directory does not exist (ZTEE_E_NOT_FOUND)."""


class ImageError(Error):
    """The guest image is missing, incomplete or tampered (ZTEE_E_IMAGE).
    Fix: `ztee image build`."""


class BackendUnavailableError(Error):
    """The VMM cannot run on this host (ZTEE_E_BACKEND_UNAVAILABLE)."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 (shadows the builtin on purpose)
    """A boot or request deadline passed (ZTEE_E_TIMEOUT)."""


class SandboxFailedError(Error):
    """The sandbox died or its guest misbehaved (ZTEE_E_SANDBOX_FAILED)."""


class ClosedError(Error):
    """The sandbox was destroyed (ZTEE_E_CLOSED)."""


class ConflictError(Error):
    """The host changed under the call (ZTEE_E_CONFLICT): export_changes()
    found host files edited since the sandbox started (the message names
    them) and applied nothing; or a mounted tree changed while it was copied."""


_ERRORS = {
    -1: InvalidArgumentError,
    -4: NotFoundError,
    -5: ImageError,
    -6: BackendUnavailableError,
    -7: TimeoutError,
    -8: SandboxFailedError,
    -9: ClosedError,
    -15: ConflictError,
}


def _make_error(code: int, errno: int, message: str) -> Error:
    return _ERRORS.get(code, Error)(code, errno, message)


_ztee.set_error_factory(_make_error)


def version() -> str:
    """libztee's version, "MAJOR.MINOR.PATCH"."""
    return _ztee.version()


def has_feature(name: str) -> bool:
    """Whether libztee supports a feature here ("qemu", "kvm", "streaming", ...).

    "kvm": a runtime created now with default options would use KVM.
    """
    return _ztee.has_feature(name)


# ---- results ------------------------------------------------------------------


@dataclass(frozen=True)
class ExecResult:
    stdout_bytes: bytes
    stderr_bytes: bytes
    exit_code: int       # -1 if ended by a signal
    signal: int          # 0 if none
    timed_out: bool
    truncated: bool      # output beyond the cap was dropped
    duration: float      # seconds
    cancelled: bool = False  # a Cancel (or a raising callback) killed it (signal 9)
    dlp_findings: int = 0         # Sandbox(dlp=True): findings redacted in stdout and stderr
    injection_anomalies: int = 0  # Sandbox(dlp=True): injection rule hits

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", errors="replace")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True)
class FileInfo:
    name: str
    type: str            # "file", "dir", "symlink", "other"
    size: int
    mode: int            # permission bits
    mtime_ns: int

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @property
    def is_file(self) -> bool:
        return self.type == "file"


def _info(d: dict) -> FileInfo:
    return FileInfo(d["name"], d["type"], d["size"], d["mode"], d["mtime_ns"])


@dataclass(frozen=True)
class Mount:
    """A host directory the guest sees read-only at guest_path (Sandbox(mounts=)).
    SECURITY: everything in it becomes readable by the code in the sandbox."""
    host_dir: str      # absolute path of an existing directory
    guest_path: str    # absolute guest path, e.g. "/workspace"; not /, /proc, /sys, /dev, /run, /tmp


@dataclass(frozen=True)
class Change:
    """One change in a guest's writable layer (Sandbox.diff(), export_changes()).
    Every field comes from the guest: treat it as hostile input."""
    kind: str          # "created", "modified" or "deleted"
    type: str          # "file", "dir", "symlink", "other" (for a deletion: the type it had)
    path: str          # in a mount: relative to it; else absolute. Undecodable bytes as surrogates (os.fsencode)
    mount: str         # the mount's guest path; "" for the guest's own filesystem
    size: int          # files and symlinks; 0 for deletions
    mode: int          # permission bits with setuid/setgid/sticky (0o7777); 0 for deletions
    sha256: str        # regular files: 64 hex digits; else ""
    link_target: str   # symlinks; else ""
    _key: bytes = field(default=b"", repr=False, compare=False)  # identifies it to export_changes


@dataclass(frozen=True)
class ExportResult:
    """What export_changes() did: applied (written to the host or dest_dir)
    and declined (selected but not approved, or changed
    in the guest after it was reviewed)."""
    applied: List[Change]
    declined: List[Change]
    skipped_deletions: List[Change] = field(default_factory=list)  # dest_dir only: deletions not carried out


def _change(d: dict) -> Change:
    return Change(kind=d["kind"], type=d["type"], path=d["path"], mount=d["mount"], size=d["size"],
                  mode=d["mode"], sha256=d["sha256"], link_target=d["link_target"], _key=d["key"])


def _export_result(d: dict) -> ExportResult:
    return ExportResult(applied=[_change(c) for c in d["applied"]],
                        declined=[_change(c) for c in d["declined"]],
                        skipped_deletions=[_change(c) for c in d.get("skipped_deletions", [])])


def _mounts(mounts) -> List[Tuple[str, str]]:
    if isinstance(mounts, (str, bytes, Mount)):
        raise TypeError("mounts is a list of Mount or (host_dir, guest_path) pairs")
    out = []
    for m in mounts:
        if isinstance(m, Mount):
            out.append((os.fspath(m.host_dir), m.guest_path))
        elif isinstance(m, (tuple, list)) and len(m) == 2:
            out.append((os.fspath(m[0]), os.fspath(m[1])))
        else:
            raise TypeError(f"a mount is a Mount or a (host_dir, guest_path) pair, not {m!r}")
    return out


def _paths(paths) -> List[bytes]:
    """Change paths as the bytes the guest named them (str via os.fsencode)."""
    if paths is None:
        return []
    if isinstance(paths, (str, bytes)):
        raise TypeError("paths is a list of paths, not one string")
    return [os.fsencode(p) for p in paths]


def _ms(seconds: Optional[float]) -> int:
    if seconds is None:
        return 0
    if seconds <= 0:
        raise InvalidArgumentError(-1, 0, f"timeout must be positive, got {seconds!r}")
    return max(1, int(round(seconds * 1000)))


# ---- runtime and sandbox ----------------------------------------------------------


class Cancel:
    """Kills running commands from any thread: pass it as exec()/run()'s
    cancel=, then trigger(). It stays triggered; a command started with a
    triggered token is killed as soon as it starts. signal() sends any
    other signal to the commands running with it."""

    def __init__(self) -> None:
        # Each call made with this token gets a native token of its own: a
        # new native token keeps the signals sent before its exec links to
        # it, so a signal sent just after a call has begun (from another
        # thread) is never lost, however often this token is reused.
        self._lock = threading.Lock()
        self._live: List["_ztee.Cancel"] = []  # the native tokens of the calls running
        self._triggered = False

    def trigger(self) -> None:
        with self._lock:
            self._triggered = True
            for c in self._live:
                c.trigger()

    @property
    def triggered(self) -> bool:
        return self._triggered

    def signal(self, sig: int) -> None:
        """Sends signal `sig` (1..64, the guest's Linux numbers: the
        constants of the signal module, e.g. signal.SIGUSR1) to the whole
        process group of every command running with this token, from any
        thread; never blocks. Unlike trigger() it is not remembered. The
        command ends, if the signal ends it, with result.signal set and
        cancelled False. A number outside 1..64 raises InvalidArgumentError;
        with no call running with the token (it has ended, or has not been
        started) ClosedError. A signal sent once the call has begun (from
        another thread) reaches the command, after its start if it has not
        started in the guest yet."""
        if isinstance(sig, bool) or not isinstance(sig, int):
            raise TypeError(f"signal takes a signal number (int), not {sig!r}")
        if not 1 <= sig <= 64:
            _ztee.Cancel().signal(int(sig))  # raises InvalidArgumentError, saying so
        with self._lock:
            if not self._live:
                raise ClosedError(-9, 0, f"Cancel.signal({int(sig)}): no command is running with this token "
                                         f"(it has ended, or has not been started)")
            for c in self._live:
                c.signal(int(sig))

    def _enter(self) -> "_ztee.Cancel":
        c = _ztee.Cancel()
        with self._lock:
            if self._triggered:
                c.trigger()
            self._live.append(c)
        return c

    def _leave(self, c: "_ztee.Cancel") -> None:
        with self._lock:
            self._live.remove(c)


class Input:
    """A command's stdin, written while it runs: pass it as exec()/run()'s
    stdin=, then write() and close() from another thread (the exec call
    blocks its own). Bytes written before the command starts are sent when
    it does; close() ends its stdin (EOF) after what was written. One Input
    serves one command (a second raises InvalidArgumentError). Also a
    context manager that closes it.

        inp = ztee.Input()
        t = threading.Thread(target=lambda: sb.run("wc -c", stdin=inp))
        t.start(); inp.write(b"abc"); inp.close(); t.join()

    Back-pressure: the guest takes at most 1 MiB more than the command has
    read, and at most MAX_BUFFERED bytes (1 MiB) wait on the host; write()
    blocks while that bound is reached, so a command that stops reading
    stops the writer instead of filling memory.
    """

    MAX_BUFFERED = _ztee.INPUT_MAX_BUFFERED
    _CHUNK = 256 << 10  # bytes per C write: several fit under the bound

    def __init__(self) -> None:
        self._in = _ztee.Input()

    def write(self, data: Union[bytes, bytearray, memoryview, str], timeout: Optional[float] = None) -> int:
        """Queues data for the command's stdin (str as UTF-8) and returns its
        length once all of it is queued, waiting while MAX_BUFFERED bytes
        already wait (any size: it is passed on in pieces). Any thread.
        timeout: seconds to wait at most (None: no limit), then TimeoutError
        (the bytes queued before stay queued; the message says how many).
        Raises ClosedError once the command has ended (or failed to start)
        and InvalidArgumentError after close(). Without timeout, a write
        past 1 MiB to an Input no running command reads blocks until a
        command using it starts."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        view = memoryview(data).cast("B")
        deadline = None if timeout is None else time.monotonic() + timeout
        off, total = 0, len(view)
        pause = 0.0005
        while off < total:
            n = min(self._CHUNK, total - off)
            if self._in.write(view[off:off + n]):
                off += n
                pause = 0.0005
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(-7, 0, f"Input.write: {off} of {total} bytes queued in {timeout} s: "
                                          f"{self.buffered} bytes still wait to reach the sandbox")
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return total

    def close(self) -> None:
        """Ends the command's stdin once what was written has been sent.
        Any thread; idempotent; a no-op after the command ended."""
        self._in.close()

    @property
    def buffered(self) -> int:
        """Bytes written and not yet passed to the sandbox."""
        return self._in.buffered

    def __enter__(self) -> "Input":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Runtime:
    """Owns one event-loop thread that drives all of its sandboxes.

    jail: run every VMM in a per-sandbox jail (own uid, cgroup, namespaces,
        pivot_root, seccomp); needs root. jail=False runs VMMs unconfined as
        the caller (SECURITY: development only; no sandbox network then).
    accel: "auto", "kvm" or "tcg"; None: $ZTEE_ACCEL, else "auto". auto uses
        KVM only on hardware KVM (kvm_intel/kvm_amd), else TCG; "kvm" raises
        where it cannot run the image (e.g. a /dev/kvm served by kvm_pvm).
    trusted_keys: PEM public keys (paths or PEM text; ECDSA P-256, as
        `ztee image keygen` or cosign make them). When given, an image or
        template whose manifest is not signed by one of them, or whose
        signature or any digest does not match, is refused (ImageError)
        before any VMM starts.
    require_vuln_gate: refuse images without a passing `ztee image gate`
        verdict in their manifest.
    """

    def __init__(self, image_dir: Optional[str] = None, state_dir: Optional[str] = None,
                 qemu_binary: Optional[str] = None, accel: Optional[str] = None,
                 backend: Optional[str] = None, jail: bool = True,
                 trusted_keys: Sequence[str] = (), require_vuln_gate: bool = False):
        if isinstance(trusted_keys, str):
            raise TypeError("trusted_keys is a list of keys (paths or PEM text), not one string")
        self._rt = _ztee.Runtime(image_dir=image_dir, state_dir=state_dir,
                                 qemu_binary=qemu_binary, accel=accel, backend=backend,
                                 jail=bool(jail), trusted_keys=[os.fspath(k) for k in trusted_keys],
                                 require_vuln_gate=bool(require_vuln_gate))

    @property
    def backend(self) -> str:
        """Backend and accelerator and why, e.g. "qemu/tcg (/dev/kvm is kvm_pvm, ...)"."""
        return self._rt.backend

    def close(self) -> None:
        """Drops this reference; sandboxes still open keep the loop running."""
        self._rt.close()

    def sandbox(self, **kwargs) -> "Sandbox":
        return Sandbox(runtime=self, **kwargs)


_default_runtime: Optional[Runtime] = None
_default_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The module's shared Runtime, created on first use."""
    global _default_runtime
    with _default_lock:
        if _default_runtime is None:
            _default_runtime = Runtime()
        return _default_runtime


OutputCallback = Callable[[str], None]


class _Decoder:
    """Feeds a str callback from byte chunks without splitting UTF-8 sequences."""

    def __init__(self, fn: OutputCallback):
        self.fn = fn
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def __call__(self, chunk: bytes) -> None:
        text = self.dec.decode(chunk)
        if text:
            self.fn(text)

    def flush(self) -> None:
        text = self.dec.decode(b"", final=True)
        if text:
            self.fn(text)


def _sandbox_kwargs(image_dir: Optional[str] = None, vcpus: Optional[int] = None,
                    memory_mib: Optional[int] = None, timeout: Optional[float] = None,
                    boot_timeout: Optional[float] = None,
                    output_cap: Optional[int] = None, allow: Sequence[str] = (),
                    dns: Optional[str] = None, guest_aslr: Optional[bool] = None) -> dict:
    """Sandbox options as the _ztee keyword arguments (shared by Sandbox and Pool)."""
    if isinstance(allow, (str, bytes)):
        raise TypeError("allow must be a list of \"CIDR:PORT\" strings, not a single string")
    if guest_aslr is not None and not isinstance(guest_aslr, bool):
        raise TypeError(f"guest_aslr must be None, True or False, not {guest_aslr!r}")
    return dict(image_dir=image_dir, vcpus=vcpus or 0, memory_mib=memory_mib or 0,
                boot_timeout_ms=_ms(boot_timeout), exec_timeout_ms=_ms(timeout),
                output_cap=output_cap or 0, allow=[str(a) for a in allow], dns=dns,
                guest_aslr=0 if guest_aslr is None else (1 if guest_aslr else 2))


class Sandbox:
    """A booted microVM. Use as a context manager, or call destroy().

    runtime: the Runtime to use (default: a shared module-level one).
    timeout: default per-command timeout in seconds (None: none).
    template_dir: start as a clone of a template made by snapshot() instead
        of a cold boot (vcpus and memory_mib must match the template's).
        SECURITY: only use templates no untrusted user can write.
    snapshottable: keep guest RAM in a file so snapshot() works.
    allow: what the sandbox may reach, e.g. ["198.18.0.10:8080/tcp",
        "10.0.0.0/8:443"] ("CIDR:PORT" or "CIDR:LO-HI", optional "/tcp" or
        "/udp"; IPv4). Empty (the default) and no dns: no network at all.
        SECURITY: every entry widens what sandboxed code can reach; the
        host's own addresses and other sandboxes are never reachable.
    dns: a resolver address the guest may query on port 53 (written to its
        /etc/resolv.conf). None: no DNS.
    guest_aslr: ASLR for the processes inside the guest. None (the default):
        off under software emulation (TCG), where it would make every run of
        a program translate its code anew, on with KVM. A clone follows this
        option, not its template's. SECURITY: guest ASLR only hardens
        programs inside this sandbox; it plays no part in isolating the guest.
    mounts: host directories the guest sees read-only ("deterministic read,
        volatile write"): a list of Mount or (host_dir, guest_path) pairs, at
        most 16. Each is copied into a read-only disk image at creation; the
        guest's writes stay in its memory and reach the host only through
        export_changes(). Needs a cold boot (not with template_dir or
        snapshottable). A relative host_dir or a bad guest_path raises
        InvalidArgumentError, a missing host_dir NotFoundError.
        SECURITY: everything in the directories becomes readable by the code
        in the sandbox.
    diff_log: a file to which destroying the sandbox appends one JSON line
        with its diff (the forensic record). None: none.
    dlp: scan every exec's stdout and stderr (streamed and collected) and
        every read_file with the output DLP scanner: cards, IBANs, SSNs,
        e-mail, phones, private keys, cloud and SaaS tokens and JWTs are
        replaced by "[REDACTED:<detector>]"; ExecResult.dlp_findings counts
        them. Streamed output is held back until a redaction is decided.
    dlp_block: detector names (e.g. ["card", "private_key"]) whose findings
        withhold the output instead: the call raises ztee.Error with
        status_name "ZTEE_E_PERMISSION" (the command has run). Implies dlp.
    """

    def __init__(self, runtime: Optional[Runtime] = None, image_dir: Optional[str] = None,
                 vcpus: Optional[int] = None, memory_mib: Optional[int] = None,
                 timeout: Optional[float] = None, boot_timeout: Optional[float] = None,
                 output_cap: Optional[int] = None, template_dir: Optional[str] = None,
                 snapshottable: bool = False, allow: Sequence[str] = (),
                 dns: Optional[str] = None, guest_aslr: Optional[bool] = None,
                 mounts: Sequence[Union[Mount, Tuple[str, str]]] = (),
                 diff_log: Optional[str] = None, dlp: bool = False, dlp_block: Sequence[str] = ()):
        self.runtime = runtime if runtime is not None else default_runtime()
        if isinstance(dlp_block, str):
            raise TypeError("dlp_block is a list of detector names")
        self._sb = _ztee.Sandbox(self.runtime._rt, template_dir=template_dir,
                                 snapshottable=bool(snapshottable), mounts=_mounts(mounts),
                                 diff_log=None if diff_log is None else os.fspath(diff_log),
                                 dlp=bool(dlp), dlp_block=list(dlp_block),
                                 **_sandbox_kwargs(image_dir, vcpus, memory_mib, timeout,
                                                   boot_timeout, output_cap, allow, dns,
                                                   guest_aslr))

    @classmethod
    def _adopt(cls, low: "_ztee.Sandbox", runtime: Runtime) -> "Sandbox":
        sb = cls.__new__(cls)
        sb.runtime = runtime
        sb._sb = low
        return sb

    @property
    def id(self) -> str:
        return self._sb.id

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        try:
            return f"<ztee.Sandbox {self.id}>"
        except Error:
            return "<ztee.Sandbox (closed)>"

    def destroy(self) -> None:
        """Stops the VM and removes what it left on the host. A second call
        raises ClosedError."""
        self._sb.destroy()

    def close(self) -> None:
        """Destroys the VM if still running and frees the handle. Idempotent."""
        self._sb.close()

    def ping(self) -> None:
        self._sb.ping()

    def pause(self) -> None:
        """Stops the guest's vCPUs. Calls that reach the guest wait until
        resume() (their timeouts keep running)."""
        self._sb.pause()

    def resume(self) -> None:
        """Restarts the guest's vCPUs after pause()."""
        self._sb.resume()

    def snapshot(self, dir: str) -> None:  # noqa: A002 (mirrors the C API)
        """Turns this sandbox into a template in `dir` (absolute; created;
        must not exist) for Sandbox(template_dir=...) and Pool(template_dir=...).
        Needs Sandbox(snapshottable=True). The sandbox is consumed: afterwards
        every call raises ClosedError (unless it raised InvalidArgumentError,
        which leaves the sandbox as it was).
        SECURITY: the template holds the guest's memory; every clone starts
        with it. Keep `dir` private and snapshot only trusted state."""
        self._sb.snapshot(os.fspath(dir))

    def exec(self, argv: Sequence[str], timeout: Optional[float] = None,
             env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             stdin: Union[bytes, str, "Input", None] = None,
             on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None,
             cancel: Optional["Cancel"] = None, user: Optional[str] = None) -> ExecResult:
        """Runs argv (argv[0] looked up in the guest's PATH) and waits for it.
        A non-zero exit is not an error; a missing command raises NotFoundError.
        on_stdout/on_stderr receive str chunks as they arrive (and the output
        is then not collected in the result); one that raises ends the
        command, and the exception propagates. cancel.trigger() from another
        thread kills the command (result.cancelled); cancel.signal(n) sends
        it signal n. stdin: bytes or str given whole, or an Input written
        while the command runs (None: /dev/null). user: a guest account
        name or uid to run as (None: root); one the guest does not know
        raises InvalidArgumentError."""
        if isinstance(argv, (str, bytes)):
            raise InvalidArgumentError(-1, 0, "exec() takes a list of arguments; use run() for a shell string")
        return self._exec(list(argv), None, timeout, env, cwd, stdin, on_stdout, on_stderr, cancel,
                          user)

    def run(self, cmd: str, timeout: Optional[float] = None,
            env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
            stdin: Union[bytes, str, "Input", None] = None,
            on_stdout: Optional[OutputCallback] = None,
            on_stderr: Optional[OutputCallback] = None,
            cancel: Optional["Cancel"] = None, user: Optional[str] = None) -> ExecResult:
        """Runs a shell command line (/bin/sh -c cmd) and waits for it."""
        return self._exec(None, cmd, timeout, env, cwd, stdin, on_stdout, on_stderr, cancel, user)

    def _exec(self, argv, shell, timeout, env, cwd, stdin, on_stdout, on_stderr, cancel=None,
              user=None) -> ExecResult:
        out = _Decoder(on_stdout) if on_stdout is not None else None
        err = _Decoder(on_stderr) if on_stderr is not None else None
        if isinstance(stdin, Input):
            stdin = stdin._in
        native_cancel = cancel._enter() if cancel is not None else None
        try:
            d = self._sb.exec(argv=argv, shell=shell, env=dict(env) if env else None, cwd=cwd,
                              stdin=stdin, timeout_ms=_ms(timeout), on_stdout=out, on_stderr=err,
                              cancel=native_cancel, user=None if user is None else str(user))
        finally:
            if cancel is not None:
                cancel._leave(native_cancel)
        if out:
            out.flush()
        if err:
            err.flush()
        return ExecResult(stdout_bytes=d["stdout"], stderr_bytes=d["stderr"],
                          exit_code=d["exit_code"], signal=d["signal"], timed_out=d["timed_out"],
                          truncated=d["truncated"], duration=d["duration_us"] / 1e6,
                          cancelled=d["cancelled"], dlp_findings=d["dlp_findings"],
                          injection_anomalies=d["injection_anomalies"])

    # ---- files ----

    def write_file(self, path: str, data: Union[bytes, str], mode: int = 0o644) -> None:
        """Creates or replaces a file (str is written as UTF-8)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self._sb.write_file(path, bytes(data), mode)

    def read_file(self, path: str, max_bytes: int = 64 << 20) -> bytes:
        """Reads a whole file; larger than max_bytes raises InvalidArgumentError."""
        return self._sb.read_file(path, max_bytes)

    def stat(self, path: str) -> FileInfo:
        return _info(self._sb.stat(path))

    def list_dir(self, path: str) -> List[FileInfo]:
        return [_info(d) for d in self._sb.list_dir(path)]

    def remove(self, path: str, recursive: bool = False) -> None:
        self._sb.remove(path, recursive)

    def mkdir(self, path: str, parents: bool = False, mode: int = 0o755) -> None:
        self._sb.mkdir(path, parents, mode)

    # ---- workspaces ----

    def diff(self, mount: Optional[str] = None) -> List[Change]:
        """What changed in the guest's writable layers since it booted, sorted
        by mount and path. mount: a mount's guest path for that mount only,
        "/" for the guest's own filesystem only, None for both. An unknown
        mount raises NotFoundError.
        SECURITY: the list is the guest's claim; export_changes() checks
        every entry again."""
        return [_change(d) for d in self._sb.diff(mount)]

    def export_changes(self, mount: Optional[str] = None, paths: Optional[Sequence[str]] = None,
                       approve: Optional[Callable[[Change], Any]] = None,
                       dest_dir: Optional[str] = None) -> ExportResult:
        """Applies the approved part of a mount's diff to its host directory.

        mount: the mount's guest path (None when the sandbox has one mount).
        paths: relative paths to export (a directory selects everything
            below it), each naming a change; None: every change.
        approve: called with each selected Change on this thread (GIL held)
            before anything is written; a true result approves it. None:
            every selected change. Changes that differ from the one approved
            (the guest edited the file after it was shown), or appear after,
            are declined, never written. An exception it raises propagates
            and nothing is written.
        dest_dir: None: write into the mount's host directory, where every
            touched path must be as it was when the sandbox started (else
            ConflictError naming them, and nothing is applied). Else an
            existing directory that receives the created and modified entries
            (deletions are not applied there, nor listed in applied).
        Every check runs before the first write; files are written to a
        temporary, synced and renamed into place. Refused with an Error of
        status_name "ZTEE_E_PERMISSION", nothing applied: "..", symlinks on
        the way or out of the directory, devices, setuid/setgid bits,
        hard-linked host files, content that no longer matches its sha256.
        SECURITY: the one way data written in a sandbox reaches the host:
        approve only what was reviewed (see patch())."""
        sel = dict(mount=mount, paths=_paths(paths),
                   dest_dir=None if dest_dir is None else os.fspath(dest_dir))
        if approve is None:
            return _export_result(self._sb.export_changes(keys=None, **sel))
        if not callable(approve):
            raise TypeError("approve must be callable(change) -> bool")
        # Review: every selected change declined -> the selection; nothing is written.
        review = self._sb.export_changes(keys=[], **sel)
        keys = [c["key"] for c in review["declined"] if approve(_change(c))]
        if not keys:
            return _export_result(review)
        return _export_result(self._sb.export_changes(keys=keys, **sel))

    def patch(self, mount: Optional[str] = None, paths: Optional[Sequence[str]] = None) -> str:
        """A unified diff (diff -u) of a mount's text changes against its host
        directory, for review (binary files are named, not shown); paths as
        in export_changes(). Bytes that are not UTF-8 read as U+FFFD."""
        return self._sb.patch(mount, _paths(paths)).decode("utf-8", errors="replace")


# ---- pool -----------------------------------------------------------------------


class Pool:
    """A warm pool of READY sandboxes, refilled in the background.

        with ztee.Pool(min_ready=2) as pool:
            with pool.lease() as sb:
                sb.run("echo hi")

    By default the pool boots one sandbox, snapshots it into a template and
    refills with clones of it (a state restore, not a boot); cold_boot=True
    boots every sandbox, template_dir=... clones a template of yours. The
    constructor returns once the template exists, not when min_ready
    sandboxes are READY (see stats()).

    min_ready: READY sandboxes kept waiting (>= 1). max_total: ready +
    starting + leased, at most. lease_timeout: default lease() deadline in
    seconds (None: 30). warm_up: a shell command each new sandbox runs once
    before it counts as READY (and the pool's own template before its
    snapshot); it must exit 0. None: `true`. Under software emulation warming
    with what you will run (e.g. "python3 -c pass") makes your first run of
    it several times faster. Other keyword arguments (image_dir, vcpus,
    memory_mib, timeout, boot_timeout, output_cap, allow, dns, guest_aslr)
    apply to every sandbox.

    A leased sandbox is the caller's alone and destroyed when released
    (close(), destroy() or the end of its with block): never recycled.
    lease() may be called from many threads at once.
    """

    def __init__(self, runtime: Optional[Runtime] = None, min_ready: int = 2, max_total: int = 8,
                 cold_boot: bool = False, template_dir: Optional[str] = None,
                 lease_timeout: Optional[float] = None, refill_concurrency: Optional[int] = None,
                 warm_up: Optional[str] = None, **sandbox_kwargs):
        if min_ready < 1:
            raise InvalidArgumentError(-1, 0, f"min_ready must be at least 1, got {min_ready!r}")
        if max_total < min_ready:
            raise InvalidArgumentError(
                -1, 0, f"max_total ({max_total!r}) must be at least min_ready ({min_ready!r})")
        if refill_concurrency is not None and refill_concurrency < 1:
            raise InvalidArgumentError(
                -1, 0, f"refill_concurrency must be at least 1, got {refill_concurrency!r}")
        try:
            kw = _sandbox_kwargs(**sandbox_kwargs)
        except TypeError as e:
            raise TypeError(f"Pool(): {e}") from None
        self.runtime = runtime if runtime is not None else default_runtime()
        self._pool = _ztee.Pool(self.runtime._rt, template_dir=template_dir,
                                cold_boot=bool(cold_boot), min_ready=min_ready,
                                max_total=max_total, refill_concurrency=refill_concurrency or 0,
                                lease_timeout_ms=_ms(lease_timeout), warm_up=warm_up, **kw)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def lease(self, timeout: Optional[float] = None) -> Sandbox:
        """A READY sandbox, waiting up to `timeout` seconds (None: the pool's
        lease_timeout) for one; raises TimeoutError when none came in time
        and ClosedError after close(). Use it as a context manager: it is
        destroyed when the block ends."""
        return Sandbox._adopt(self._pool.lease(_ms(timeout)), self.runtime)

    def stats(self) -> dict:
        """The pool's counters: ready, starting, leased, created, failed,
        leases, lease_timeouts, consecutive_failures, backing_off (bool),
        last_error (the latest start failure, "" if none) and lease_wait_hist
        (8 counts of leases that waited < 10 us, < 100 us, < 1 ms, < 10 ms,
        < 100 ms, < 1 s, < 10 s, >= 10 s). Still works after close()."""
        return self._pool.stats()

    def close(self) -> None:
        """Destroys the ready sandboxes and stops refilling. Leased sandboxes
        stay with their holders. Idempotent."""
        self._pool.close()


# ---- control plane: policy, audit log, gate ------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A policy's verdict on a tool call: tier 0..5 (L0..L5), action "run",
    "audit", "approve" or "deny", the matching rule's name ("" when none
    matched: denied, fail closed), its index in "rules" (-1: none) and a
    one-line reason."""
    tier: int
    action: str
    rule: str
    reason: str
    rule_index: int = -1


def _decision(d: dict) -> Decision:
    return Decision(tier=d["tier"], action=d["action"], rule=d["rule"], reason=d["reason"],
                    rule_index=d["rule_index"])


class Policy:
    """A parsed, immutable policy that sorts tool calls into risk tiers.

        policy = ztee.Policy.parse(text)       # or .load(path), .default()
        policy.classify(tool="python", command="python3 x.py").action  # "approve"

    Errors in the text raise InvalidArgumentError whose message names the
    line ("policy: line 7: ..."). Policy.default_json() is the text of the
    policy that ships with libztee, a starting point for your own.
    """

    def __init__(self, _low: "_ztee.Policy"):
        self._p = _low

    @classmethod
    def parse(cls, text: Union[str, bytes]) -> "Policy":
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return cls(_ztee.Policy.parse(text))

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"]) -> "Policy":
        return cls(_ztee.Policy.load(os.fspath(path)))

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> "Policy":
        """The policy as Python structures: the same keys as the JSON form,
        e.g. {"version": 1, "tiers": {"L0": {"action": "run"}},
        "rules": [{"tool": "read_*", "tier": "L0"}]}. Errors name the line of
        the JSON this dict becomes (one key per line)."""
        return cls.parse(json.dumps(spec, indent=1))

    @classmethod
    def default(cls) -> "Policy":
        return cls(_ztee.Policy.default())

    @staticmethod
    def default_json() -> str:
        return _ztee.Policy.default_json()

    def classify(self, tool: str, command: Optional[str] = None, argv: Optional[Sequence[str]] = None,
                 labels: Optional[Sequence[str]] = None, network: Optional[Sequence[str]] = None,
                 writes: Optional[Sequence[str]] = None, files: Optional[Mapping[str, Any]] = None,
                 env: Optional[Mapping[str, str]] = None) -> Decision:
        """The decision for a tool call (nothing runs)."""
        return _decision(self._p.classify(tool, command=command, argv=_opt_list(argv), env=_opt_dict(env),
                                          files=_opt_dict(files), writes=_opt_list(writes),
                                          network=_opt_list(network), labels=_opt_list(labels)))


def _opt_list(v):
    if v is None:
        return None
    if isinstance(v, (str, bytes)):
        raise TypeError(f"expected a list of strings, not the single string {v!r}")
    return [str(x) for x in v]


def _opt_dict(v):
    return None if v is None else dict(v)


_DURABILITY = {"fsync": 0, "batch": 1, "none": 2}


class AuditLog:
    """An append-only, hash-chained JSON Lines file (created 0600).

    durability: "fsync" (every record on disk before append returns),
    "batch" (synced at most every batch_ms; power loss loses up to that) or
    "none" (left to the kernel). hmac_key: every record also carries an
    HMAC-SHA256, so verify_audit_log(key=...) detects a rewritten chain too.
    rotate_bytes > 0: past this size the file becomes <path>.<n> and a new
    one continues the chain. Appends from threads and processes keep one chain.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], durability: str = "fsync",
                 hmac_key: Union[str, bytes, None] = None, rotate_bytes: int = 0, batch_ms: int = 0):
        if durability not in _DURABILITY:
            raise InvalidArgumentError(-1, 0, f"durability must be \"fsync\", \"batch\" or \"none\", "
                                              f"not {durability!r}")
        self.path = os.fspath(path)
        self._log = _ztee.AuditLog(self.path, durability=_DURABILITY[durability], batch_ms=batch_ms,
                                   hmac_key=hmac_key, rotate_bytes=rotate_bytes)

    def append(self, event: str, trace_id: str = "", fields: Optional[Mapping[str, Any]] = None) -> int:
        """Appends one record {"seq","ts","trace","event",<fields>,"prev"[,"hmac"]}
        and returns its seq. fields: a JSON-serialisable dict whose keys are
        not the record's own (seq, ts, trace, event, prev, hmac)."""
        inner = ""
        if fields:
            inner = json.dumps(dict(fields), separators=(",", ":"), allow_nan=False)[1:-1]
        return self._log.append(event, trace_id or "", inner)

    def flush(self) -> None:
        """Makes every record appended so far durable (fdatasync)."""
        self._log.flush()

    def close(self) -> None:
        """Drops this handle (gates using the log keep it open). Idempotent."""
        self._log.close()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class AuditReport:
    ok: bool          # every record present, in order, unedited (and, with a key, authentic)
    records: int      # records checked
    problem: str      # the first problem ("" when ok)

    def __bool__(self) -> bool:
        return self.ok


def verify_audit_log(files: Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]],
                     key: Union[str, bytes, None] = None) -> AuditReport:
    """Verifies one chain across files given oldest first (a rotated log:
    path.1, path.2, ..., path); with the HMAC key, every record's HMAC too.
    A removed tail cannot be seen from the files alone."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    d = _ztee.verify_audit_log([os.fspath(f) for f in files], key=key)
    return AuditReport(ok=d["ok"], records=d["records"], problem=d["problem"])


@dataclass
class ApprovalRequest:
    """What an approver is asked: the tool call's description (a dict with
    tool, text, env_keys, cwd, user, writes, network, labels, tier, rule,
    trace; never secret values), the token to answer with and the time left
    (seconds). Answer with approve()/deny() (any thread, before the
    deadline), or return True / a name (approve) or False (deny) from the
    approver."""
    token: str
    description: Dict[str, Any]
    deadline: float          # time.monotonic() by which an answer must come
    _gate: Any = None

    @property
    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def approve(self, who: str = "approver") -> None:
        gate = self._gate() if self._gate is not None else None
        if gate is None:
            raise ClosedError(-9, 0, "the gate is gone")
        gate.approve(self.token, who)

    def deny(self, reason: str = "", who: str = "approver") -> None:
        gate = self._gate() if self._gate is not None else None
        if gate is None:
            raise ClosedError(-9, 0, "the gate is gone")
        gate.deny(self.token, reason, who)


@dataclass(frozen=True)
class CallResult:
    ran: bool                    # False: denied (see denial)
    decision: Decision
    denial: str                  # why it did not run ("" when it ran)
    approved_by: str             # approve tiers: who said yes
    sandbox_id: str              # "" when it did not run
    result: Optional[ExecResult]  # None when it did not run; scrubbed of secrets (and DLP-filtered)
    blocked: bool = False         # DLP withheld the output (dlp_block); denial says why
    dlp_findings: int = 0         # DLP findings in stdout and stderr (values never kept)
    injection_anomalies: int = 0  # injection rule hits in stdout and stderr

    @property
    def stdout(self) -> str:
        return self.result.stdout if self.result else ""

    @property
    def stderr(self) -> str:
        return self.result.stderr if self.result else ""


class Gate:
    """Runs tool calls under a policy: classify -> approval when the tier
    says so -> secrets resolved by reference -> a fresh (or pooled) sandbox,
    destroyed afterwards -> output scrubbed of secrets; every step is
    recorded in the audit log.

        gate = ztee.Gate(policy=ztee.Policy.load("policy.json"),
                         audit=ztee.AuditLog("audit.jsonl", hmac_key=key),
                         approver=ask_a_human, secrets={"API_KEY": "..."})
        r = gate.call("python", command="python3 -c 'print(1)'")
        if r.ran: print(r.stdout)

    policy: None: Policy.default(). audit: None: nothing recorded.
    approver: called with an ApprovalRequest on the thread running call()
        (with the GIL). Return True or a name to approve, False to deny, or
        None and answer later from any thread (request.approve() /
        gate.approve(token)) before the deadline; no answer denies. One that
        raises denies the call.
    secrets: resolves "secret://NAME" references in env values and file
        contents: a dict, or a callable(name) -> str | bytes | None (None:
        unknown, the next resolver is asked); its exceptions propagate from
        call(). Then secrets_dir (a file per secret) and secrets_env_prefix
        (host variables <prefix>NAME) are asked, in that order. A reference
        no resolver knows makes call() raise NotFoundError before anything runs.
        SECURITY: resolved values reach the sandboxed process; they are
        scrubbed (also in hex and base64) from output and the log only.
    pool: calls without network lease their sandbox from it (a Pool
        collected before the gate stays open for it; Pool.close() closes it
        for the gate too, whose calls then boot).
    dlp: scan stdout/stderr with libztee's default DLP detectors (findings
        replaced by "[REDACTED:<detector>]") and injection rules; findings
        are recorded without their values. dlp_block: detector names (e.g.
        "card") whose findings withhold the output instead (blocked=True).
    Other keyword arguments (image_dir,
        vcpus, memory_mib, timeout, boot_timeout, output_cap, allow, dns,
        guest_aslr) apply to sandboxes the gate boots itself.
    """

    def __init__(self, runtime: Optional[Runtime] = None, policy: Optional[Policy] = None,
                 audit: Optional[AuditLog] = None,
                 approver: Optional[Callable[[ApprovalRequest], Union[None, bool, str]]] = None,
                 secrets: Union[Mapping[str, str], Callable[[str], Union[str, bytes, None]], None] = None,
                 secrets_dir: Optional[str] = None, secrets_env_prefix: Optional[str] = None,
                 pool: Optional[Pool] = None, dlp: bool = False, dlp_block: Sequence[str] = (),
                 **sandbox_kwargs):
        try:
            kw = _sandbox_kwargs(**sandbox_kwargs)
        except TypeError as e:
            raise TypeError(f"Gate(): {e}") from None
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(f"policy must be a ztee.Policy, not {type(policy).__name__}")
        if audit is not None and not isinstance(audit, AuditLog):
            raise TypeError(f"audit must be a ztee.AuditLog, not {type(audit).__name__}")
        if pool is not None and not isinstance(pool, Pool):
            raise TypeError(f"pool must be a ztee.Pool, not {type(pool).__name__}")
        if approver is not None and not callable(approver):
            raise TypeError("approver must be callable(request)")
        resolve = None
        if isinstance(secrets, Mapping):
            table = dict(secrets)
            resolve = table.get
        elif secrets is not None:
            if not callable(secrets):
                raise TypeError("secrets must be a dict or callable(name) -> str | None")
            resolve = secrets
        self.runtime = runtime if runtime is not None else default_runtime()
        bridge = None
        if approver is not None:
            me = weakref.ref(self)  # no cycle through the C handle

            def bridge(token: str, description: str, deadline_ms: int):
                req = ApprovalRequest(token=token, description=json.loads(description),
                                      deadline=time.monotonic() + deadline_ms / 1000.0, _gate=me)
                return approver(req)
        self._gate = _ztee.Gate(self.runtime._rt, policy=policy._p if policy else None,
                                audit=audit._log if audit else None, approver=bridge, secrets=resolve,
                                secrets_dir=None if secrets_dir is None else os.fspath(secrets_dir),
                                secrets_env_prefix=secrets_env_prefix,
                                pool=pool._pool if pool else None, dlp=bool(dlp),
                                dlp_block=[str(x) for x in dlp_block], **kw)

    def __enter__(self) -> "Gate":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Frees the gate (no call may be running). Idempotent."""
        self._gate.close()

    def call(self, tool: str, command: Optional[str] = None, argv: Optional[Sequence[str]] = None,
             env: Optional[Mapping[str, str]] = None, files: Optional[Mapping[str, Union[str, bytes]]] = None,
             cwd: Optional[str] = None, user: Optional[str] = None, stdin: Union[bytes, str, None] = None,
             writes: Optional[Sequence[str]] = None, network: Optional[Sequence[str]] = None,
             labels: Optional[Sequence[str]] = None, trace_id: Optional[str] = None,
             on_stdout: Optional[OutputCallback] = None, on_stderr: Optional[OutputCallback] = None,
             cancel: Optional[Cancel] = None) -> CallResult:
        """Runs one tool call through the gate and waits for it: a shell
        command (command=) or an argv. A denied call returns ran=False with
        the denial; errors (a secret no resolver knows: NotFoundError, a
        sandbox that failed) raise. env values and files' contents may be
        "secret://NAME". on_stdout/on_stderr get scrubbed str chunks as they
        arrive (that stream is then not collected); one that raises ends
        the command and the exception propagates."""
        out = _Decoder(on_stdout) if on_stdout is not None else None
        err = _Decoder(on_stderr) if on_stderr is not None else None
        native_cancel = cancel._enter() if cancel is not None else None
        try:
            d = self._gate.call(tool, command=command, argv=_opt_list(argv), env=_opt_dict(env),
                                files=_opt_dict(files), cwd=cwd, user=None if user is None else str(user),
                                stdin=stdin, writes=_opt_list(writes), network=_opt_list(network),
                                labels=_opt_list(labels), trace_id=trace_id, on_stdout=out, on_stderr=err,
                                cancel=native_cancel)
        finally:
            if cancel is not None:
                cancel._leave(native_cancel)
        if out:
            out.flush()
        if err:
            err.flush()
        x = d["exec"]
        result = None
        if x is not None:
            result = ExecResult(stdout_bytes=x["stdout"], stderr_bytes=x["stderr"], exit_code=x["exit_code"],
                                signal=x["signal"], timed_out=x["timed_out"], truncated=x["truncated"],
                                duration=x["duration_us"] / 1e6, cancelled=x["cancelled"])
        return CallResult(ran=d["ran"], decision=_decision(d), denial=d["denial"],
                          approved_by=d["approved_by"], sandbox_id=d["sandbox_id"], result=result,
                          blocked=d["blocked"], dlp_findings=d["dlp_findings"],
                          injection_anomalies=d["injection_anomalies"])

    def approve(self, token: str, who: str = "approver") -> None:
        """Approves a pending request (any thread). NotFoundError when the
        token is unknown, already answered or expired."""
        self._gate.approve(token, who)

    def deny(self, token: str, reason: str = "", who: str = "approver") -> None:
        """Denies a pending request (any thread). NotFoundError as approve()."""
        self._gate.deny(token, reason, who)
