"""libztee for Python: run each tool call of an AI agent in its own microVM.

    import ztee
    with ztee.Sandbox() as sb:
        r = sb.run("python3 -c 'print(6*7)'")
        print(r.stdout)          # "42\\n"

    with ztee.Pool(min_ready=2) as pool:     # warm sandboxes, refilled from a snapshot
        with pool.lease() as sb:             # a READY sandbox in microseconds
            sb.run("echo hi")                # destroyed when the block ends

Every blocking call releases the GIL. Streaming callbacks (on_stdout,
on_stderr) run on the runtime's event-loop thread with the GIL held; keep
them short. An exception a callback raises is re-raised by the exec call.

SECURITY: everything a sandbox returns (output, file bytes, names) was
produced by code that may be hostile.
"""

from __future__ import annotations

import builtins
import codecs
import os
import threading
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Union

from . import _ztee

__all__ = [
    "Runtime", "Sandbox", "Pool", "ExecResult", "FileInfo", "Cancel", "version", "has_feature",
    "Error", "InvalidArgumentError", "NotFoundError", "ImageError", "BackendUnavailableError",
    "TimeoutError", "SandboxFailedError", "ClosedError",
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


_ERRORS = {
    -1: InvalidArgumentError,
    -4: NotFoundError,
    -5: ImageError,
    -6: BackendUnavailableError,
    -7: TimeoutError,
    -8: SandboxFailedError,
    -9: ClosedError,
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
    triggered token is killed as soon as it starts."""

    def __init__(self) -> None:
        self._c = _ztee.Cancel()

    def trigger(self) -> None:
        self._c.trigger()

    @property
    def triggered(self) -> bool:
        return self._c.triggered


class Runtime:
    """Owns one event-loop thread that drives all of its sandboxes.

    jail: run every VMM in a per-sandbox jail (own uid, cgroup, namespaces,
        pivot_root, seccomp); needs root. jail=False runs VMMs unconfined as
        the caller (SECURITY: development only; no sandbox network then).
    accel: "auto", "kvm" or "tcg"; None: $ZTEE_ACCEL, else "auto". auto uses
        KVM only on hardware KVM (kvm_intel/kvm_amd), else TCG; "kvm" raises
        where it cannot run the image (e.g. a /dev/kvm served by kvm_pvm).
    """

    def __init__(self, image_dir: Optional[str] = None, state_dir: Optional[str] = None,
                 qemu_binary: Optional[str] = None, accel: Optional[str] = None,
                 backend: Optional[str] = None, jail: bool = True):
        self._rt = _ztee.Runtime(image_dir=image_dir, state_dir=state_dir,
                                 qemu_binary=qemu_binary, accel=accel, backend=backend,
                                 jail=bool(jail))

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
    """

    def __init__(self, runtime: Optional[Runtime] = None, image_dir: Optional[str] = None,
                 vcpus: Optional[int] = None, memory_mib: Optional[int] = None,
                 timeout: Optional[float] = None, boot_timeout: Optional[float] = None,
                 output_cap: Optional[int] = None, template_dir: Optional[str] = None,
                 snapshottable: bool = False, allow: Sequence[str] = (),
                 dns: Optional[str] = None, guest_aslr: Optional[bool] = None):
        self.runtime = runtime if runtime is not None else default_runtime()
        self._sb = _ztee.Sandbox(self.runtime._rt, template_dir=template_dir,
                                 snapshottable=bool(snapshottable),
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
             stdin: Union[bytes, str, None] = None,
             on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None,
             cancel: Optional["Cancel"] = None, user: Optional[str] = None) -> ExecResult:
        """Runs argv (argv[0] looked up in the guest's PATH) and waits for it.
        A non-zero exit is not an error; a missing command raises NotFoundError.
        on_stdout/on_stderr receive str chunks as they arrive (and the output
        is then not collected in the result); one that raises ends the
        command, and the exception propagates. cancel.trigger() from another
        thread kills the command (result.cancelled). user: a guest account
        name or uid to run as (None: root); one the guest does not know
        raises InvalidArgumentError."""
        if isinstance(argv, (str, bytes)):
            raise InvalidArgumentError(-1, 0, "exec() takes a list of arguments; use run() for a shell string")
        return self._exec(list(argv), None, timeout, env, cwd, stdin, on_stdout, on_stderr, cancel,
                          user)

    def run(self, cmd: str, timeout: Optional[float] = None,
            env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
            stdin: Union[bytes, str, None] = None,
            on_stdout: Optional[OutputCallback] = None,
            on_stderr: Optional[OutputCallback] = None,
            cancel: Optional["Cancel"] = None, user: Optional[str] = None) -> ExecResult:
        """Runs a shell command line (/bin/sh -c cmd) and waits for it."""
        return self._exec(None, cmd, timeout, env, cwd, stdin, on_stdout, on_stderr, cancel, user)

    def _exec(self, argv, shell, timeout, env, cwd, stdin, on_stdout, on_stderr, cancel=None,
              user=None) -> ExecResult:
        out = _Decoder(on_stdout) if on_stdout is not None else None
        err = _Decoder(on_stderr) if on_stderr is not None else None
        d = self._sb.exec(argv=argv, shell=shell, env=dict(env) if env else None, cwd=cwd,
                          stdin=stdin, timeout_ms=_ms(timeout), on_stdout=out, on_stderr=err,
                          cancel=cancel._c if cancel is not None else None,
                          user=None if user is None else str(user))
        if out:
            out.flush()
        if err:
            err.flush()
        return ExecResult(stdout_bytes=d["stdout"], stderr_bytes=d["stderr"],
                          exit_code=d["exit_code"], signal=d["signal"], timed_out=d["timed_out"],
                          truncated=d["truncated"], duration=d["duration_us"] / 1e6,
                          cancelled=d["cancelled"])

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
