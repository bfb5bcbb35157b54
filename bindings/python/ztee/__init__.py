"""libztee for Python: run each tool call of an AI agent in its own microVM.

    import ztee
    with ztee.Sandbox() as sb:
        r = sb.run("python3 -c 'print(6*7)'")
        print(r.stdout)          # "42\\n"

Every blocking call releases the GIL. Streaming callbacks (on_stdout,
on_stderr) run on the runtime's event-loop thread with the GIL held; keep
them short. An exception a callback raises is re-raised by the exec call.

SECURITY: everything a sandbox returns (output, file bytes, names) was
produced by code that may be hostile.
"""

from __future__ import annotations

import builtins
import codecs
import threading
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Union

from . import _ztee

__all__ = [
    "Runtime", "Sandbox", "ExecResult", "FileInfo", "version", "has_feature",
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
    """Whether libztee supports a feature here ("qemu", "kvm", "streaming", ...)."""
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


class Runtime:
    """Owns one event-loop thread that drives all of its sandboxes."""

    def __init__(self, image_dir: Optional[str] = None, state_dir: Optional[str] = None,
                 qemu_binary: Optional[str] = None, accel: Optional[str] = None,
                 backend: Optional[str] = None):
        self._rt = _ztee.Runtime(image_dir=image_dir, state_dir=state_dir,
                                 qemu_binary=qemu_binary, accel=accel, backend=backend)

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


class Sandbox:
    """A booted microVM. Use as a context manager, or call destroy().

    runtime: the Runtime to use (default: a shared module-level one).
    timeout: default per-command timeout in seconds (None: none).
    """

    def __init__(self, runtime: Optional[Runtime] = None, image_dir: Optional[str] = None,
                 vcpus: Optional[int] = None, memory_mib: Optional[int] = None,
                 timeout: Optional[float] = None, boot_timeout: Optional[float] = None,
                 output_cap: Optional[int] = None):
        self.runtime = runtime if runtime is not None else default_runtime()
        self._sb = _ztee.Sandbox(self.runtime._rt, image_dir=image_dir, vcpus=vcpus or 0,
                                 memory_mib=memory_mib or 0, boot_timeout_ms=_ms(boot_timeout),
                                 exec_timeout_ms=_ms(timeout), output_cap=output_cap or 0)

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

    def exec(self, argv: Sequence[str], timeout: Optional[float] = None,
             env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
             stdin: Union[bytes, str, None] = None,
             on_stdout: Optional[OutputCallback] = None,
             on_stderr: Optional[OutputCallback] = None) -> ExecResult:
        """Runs argv (argv[0] looked up in the guest's PATH) and waits for it.
        A non-zero exit is not an error; a missing command raises NotFoundError.
        on_stdout/on_stderr receive str chunks as they arrive (and the output
        is then not collected in the result)."""
        if isinstance(argv, (str, bytes)):
            raise InvalidArgumentError(-1, 0, "exec() takes a list of arguments; use run() for a shell string")
        return self._exec(list(argv), None, timeout, env, cwd, stdin, on_stdout, on_stderr)

    def run(self, cmd: str, timeout: Optional[float] = None,
            env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
            stdin: Union[bytes, str, None] = None,
            on_stdout: Optional[OutputCallback] = None,
            on_stderr: Optional[OutputCallback] = None) -> ExecResult:
        """Runs a shell command line (/bin/sh -c cmd) and waits for it."""
        return self._exec(None, cmd, timeout, env, cwd, stdin, on_stdout, on_stderr)

    def _exec(self, argv, shell, timeout, env, cwd, stdin, on_stdout, on_stderr) -> ExecResult:
        out = _Decoder(on_stdout) if on_stdout is not None else None
        err = _Decoder(on_stderr) if on_stderr is not None else None
        d = self._sb.exec(argv=argv, shell=shell, env=dict(env) if env else None, cwd=cwd,
                          stdin=stdin, timeout_ms=_ms(timeout), on_stdout=out, on_stderr=err)
        if out:
            out.flush()
        if err:
            err.flush()
        return ExecResult(stdout_bytes=d["stdout"], stderr_bytes=d["stderr"],
                          exit_code=d["exit_code"], signal=d["signal"], timed_out=d["timed_out"],
                          truncated=d["truncated"], duration=d["duration_us"] / 1e6)

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
