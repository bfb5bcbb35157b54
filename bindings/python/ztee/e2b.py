"""An E2B-compatible Sandbox over libztee, in-process (no server, no network).

Code written for E2B's Python SDK runs unchanged apart from its import:

    from ztee.e2b import Sandbox

    with Sandbox.create() as sbx:                # boots a microVM
        r = sbx.commands.run("echo hi")          # CommandResult(stdout="hi\\n", ...)
        sbx.files.write("/home/user/a.txt", "x")
        print(sbx.files.read("/home/user/a.txt"))

Semantics (the Node shim `ztee/e2b` follows the same):

- A sandbox lives in this process. Sandbox.connect(id), Sandbox.list() and
  Sandbox.kill(id) see the sandboxes this process created and that are still
  running. A timer destroys a sandbox when its timeout passes (default
  300 s; set_timeout() restarts it from now). Calls on a sandbox whose timeout
  passed raise TimeoutException; on one that was killed, SandboxException
  (a SandboxClosedException).
- Accounts: at create the sandbox gets the unprivileged account "user" (uid
  and gid 1000, home /home/user) unless its image has one. Commands and file
  writes run as "user" by default, like E2B; user="root" runs as root; any
  other name runs as that account if the guest's /etc/passwd has it, else
  InvalidArgumentException. A command's default cwd is its account's home.
- Files: write, make_dir, rename and remove run as the account (as a
  command in the guest: permissions apply, and what they create belongs to
  the account); read, list, exists and get_info read as root through
  libztee's file calls (no permission check for the account). Relative paths
  and "~" are taken from the account's home. EntryInfo.owner/group and
  symlink_target are None: libztee's file info does not carry them;
  a symlink is listed with type FileType.SYMLINK.
- Commands run as `/bin/bash -c CMD` with the sandbox's envs, then the
  command's envs. pid: a number this shim assigns, from 1 upwards per
  sandbox (not the guest's pid); commands.list() and commands.kill(pid) see
  the commands this shim started and that still run. timeout (default 60 s,
  0 or None: no limit) kills the command, and run() / wait() then raise
  TimeoutException. A non-zero exit raises CommandExitException (also a
  CommandResult); a killed command's wait() raises it with exit_code -1 and
  error "signal: killed".
- Output callbacks (on_stdout, on_stderr) get str chunks: a foreground run()
  calls them in the caller's thread, a background command in a thread of
  its own, as the output arrives; callbacks given to wait() first get what
  already arrived. Results hold the whole output either way.
- Stdin: a command's stdin is empty (/dev/null) unless it was started with
  stdin=True; then commands.send_stdin(pid, data) (or the handle's
  send_stdin(data)) passes str (as UTF-8) or bytes to it in call order, and
  close_stdin(pid) (or the handle's close_stdin()) ends it (EOF); closing
  again does nothing. send_stdin returns once the bytes are queued (it
  waits while 1 MiB already waits on the host for the sandbox). To a
  command that has ended (or a pid no command has) send_stdin and
  close_stdin raise NotFoundException; to one started without stdin=True,
  or send_stdin after close_stdin, InvalidArgumentException saying so.
  commands.kill(pid) works the same with stdin open.
- Calls E2B has and libztee cannot serve (pty, watch_dir, get_host / ports,
  pause, metrics, signed URLs, internet access) raise NotSupportedError
  naming the call.

SECURITY: everything a sandbox returns (output, file bytes, names) was
produced by code that may be hostile.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import inspect
import io
import itertools
import os
import posixpath
import stat as _stat
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import ztee

__all__ = [
    "Sandbox", "AsyncSandbox", "CommandResult", "CommandHandle", "ProcessInfo", "EntryInfo",
    "WriteInfo", "WriteEntry", "FileType", "SandboxInfo", "SandboxQuery", "SandboxState",
    "SandboxException", "TimeoutException", "NotFoundException", "InvalidArgumentException",
    "NotEnoughSpaceException", "CommandExitException", "NotSupportedError",
    "NotSupportedException", "SandboxClosedException", "SandboxError", "AuthenticationException",
    "RateLimitException", "TemplateException",
]

DEFAULT_TEMPLATE = "base"
DEFAULT_USER = "user"
DEFAULT_SANDBOX_TIMEOUT = 300
DEFAULT_COMMAND_TIMEOUT = 60
_USER_UID = 1000
_READ_CHUNK = 64 << 10

# ---- errors -------------------------------------------------------------------

_E_INVALID, _E_NOT_FOUND, _E_TIMEOUT, _E_CLOSED, _E_GUEST, _E_PERMISSION, _E_UNSUPPORTED = \
    -1, -4, -7, -9, -12, -13, -14


class SandboxException(Exception):
    """Base of every exception this module raises (as in E2B)."""


class _Backed:
    """Mixin: a SandboxException that is also a ztee.Error (code, errno)."""
    _code = -3

    def __init__(self, message: str, code: Optional[int] = None, errno: int = 0):
        ztee.Error.__init__(self, self._code if code is None else code, errno, message)


class SandboxError(_Backed, SandboxException, ztee.Error):
    """A libztee failure with no closer E2B exception (.code, .errno)."""


class TimeoutException(_Backed, SandboxException, ztee.TimeoutError):
    """A command's or the sandbox's timeout passed."""
    _code = _E_TIMEOUT


class NotFoundException(_Backed, SandboxException, ztee.NotFoundError):
    """A file, directory, sandbox or command that does not exist."""
    _code = _E_NOT_FOUND


class InvalidArgumentException(_Backed, SandboxException, ztee.InvalidArgumentError):
    """Bad input (the message says what to pass instead)."""
    _code = _E_INVALID


class NotEnoughSpaceException(_Backed, SandboxException, ztee.Error):
    """The guest's disk is full (ENOSPC)."""
    _code = _E_GUEST


class SandboxClosedException(_Backed, SandboxException, ztee.ClosedError):
    """The sandbox was killed."""
    _code = _E_CLOSED


class NotSupportedError(_Backed, SandboxException, ztee.Error, NotImplementedError):
    """An E2B call that libztee cannot serve; the message names it."""
    _code = _E_UNSUPPORTED


NotSupportedException = NotSupportedError


class AuthenticationException(SandboxException):
    """Kept for imports; never raised (libztee needs no API key)."""


class RateLimitException(SandboxException):
    """Kept for imports; never raised."""


class TemplateException(SandboxException):
    """Kept for imports; a bad template raises InvalidArgumentException."""


def _unsupported(call: str, why: str = "") -> NotSupportedError:
    return NotSupportedError(f"{call} is not supported by ztee.e2b (libztee sandboxes run "
                             f"in-process){': ' + why if why else ''}")


@dataclass
class CommandResult:
    stdout: str
    stderr: str
    exit_code: int
    error: Optional[str] = None


class CommandExitException(SandboxException):
    """A command exited non-zero (or was killed). Carries CommandResult's fields."""

    def __init__(self, stdout: str, stderr: str, exit_code: int, error: Optional[str]):
        tail = stderr.strip()[-2000:]
        super().__init__(f"command exited with code {exit_code}"
                         f"{' (' + error + ')' if error else ''}"
                         f"{': ' + tail if tail else ''}")
        self.stdout = stdout
        self.stderr = stderr
        self.exit_code = exit_code
        self.error = error


def _translate(e: ztee.Error, what: str = "") -> SandboxException:
    """A libztee error as the E2B exception a caller expects."""
    if isinstance(e, SandboxException):
        return e
    msg = f"{what}: {e.message}" if what and what not in e.message else e.message
    if isinstance(e, ztee.NotFoundError):
        return NotFoundException(msg, e.code, e.errno)
    if isinstance(e, ztee.TimeoutError):
        return TimeoutException(msg, e.code, e.errno)
    if isinstance(e, ztee.InvalidArgumentError):
        return InvalidArgumentException(msg, e.code, e.errno)
    if isinstance(e, ztee.ClosedError):
        return SandboxClosedException(msg, e.code, e.errno)
    if e.errno == 28:  # ENOSPC
        return NotEnoughSpaceException(msg, e.code, e.errno)
    if e.errno in (20, 21):  # ENOTDIR, EISDIR: the caller named the wrong kind of path
        return InvalidArgumentException(msg, e.code, e.errno)
    return SandboxError(msg, e.code, e.errno)


# ---- plain data -------------------------------------------------------------------


class FileType(str, Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


class SandboxState(str, Enum):
    RUNNING = "running"
    PAUSED = "paused"


@dataclass
class EntryInfo:
    name: str
    type: Optional[FileType]
    path: str
    size: int
    mode: int                    # permission bits
    permissions: str             # e.g. "-rw-r--r--"
    owner: Optional[str] = None  # not provided by libztee
    group: Optional[str] = None  # not provided by libztee
    modified_time: Optional[_dt.datetime] = None  # None where libztee's listing has none
    symlink_target: Optional[str] = None  # not provided by libztee


@dataclass
class WriteInfo:
    name: str
    type: Optional[FileType]
    path: str


@dataclass
class WriteEntry:
    path: str
    data: Union[str, bytes, bytearray, memoryview, io.IOBase]


@dataclass
class ProcessInfo:
    pid: int
    tag: Optional[str]
    cmd: str
    args: List[str]
    envs: Dict[str, str]
    cwd: Optional[str]


@dataclass
class SandboxInfo:
    sandbox_id: str
    template_id: str
    name: Optional[str]
    metadata: Dict[str, str]
    started_at: _dt.datetime
    end_at: _dt.datetime
    state: SandboxState = SandboxState.RUNNING
    cpu_count: int = 1
    memory_mb: int = 256


@dataclass
class SandboxQuery:
    metadata: Optional[Dict[str, str]] = None
    state: Optional[List[SandboxState]] = None


class SandboxList(list):
    """Sandbox.list()'s answer: a list, also usable as E2B v2's paginator
    (has_next, next_items()); everything comes in one page."""

    def __init__(self, items):
        super().__init__(items)
        self._served = False

    @property
    def has_next(self) -> bool:
        return not self._served

    @property
    def next_token(self) -> Optional[str]:
        return None

    def next_items(self) -> List[SandboxInfo]:
        self._served = True
        return list(self)


# ---- helpers ----------------------------------------------------------------------


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _check_str_map(what: str, m: Optional[Dict[str, str]]) -> Dict[str, str]:
    if m is None:
        return {}
    if not isinstance(m, dict):
        raise InvalidArgumentException(f"{what} must be a dict of str to str, not {type(m).__name__}")
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise InvalidArgumentException(f"{what} must map str to str; got {k!r}: {v!r}")
    return dict(m)


def _check_seconds(what: str, v, allow_zero: bool) -> Optional[float]:
    """Seconds as a float; None (or 0 where allowed) means no limit."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidArgumentException(f"{what} must be a number of seconds, not {v!r}")
    if v == 0 and allow_zero:
        return None
    if v <= 0:
        raise InvalidArgumentException(f"{what} must be positive{' (or 0: no limit)' if allow_zero else ''}, "
                                       f"got {v!r}")
    return float(v)


def _as_bytes(data) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        got = data.read()
        return got.encode("utf-8") if isinstance(got, str) else bytes(got)
    raise InvalidArgumentException(f"file data must be str, bytes or a file-like object, "
                                   f"not {type(data).__name__}")


def _permissions(type_: str, mode: int) -> str:
    kind = {"dir": _stat.S_IFDIR, "symlink": _stat.S_IFLNK, "file": _stat.S_IFREG}.get(type_, 0)
    s = _stat.filemode(kind | (mode & 0o7777))
    return s if kind else "?" + s[1:]


_TYPES = {"file": FileType.FILE, "dir": FileType.DIR, "symlink": FileType.SYMLINK}


def _entry(name: str, path: str, fi: ztee.FileInfo) -> EntryInfo:
    mtime = (_dt.datetime.fromtimestamp(fi.mtime_ns / 1e9, _dt.timezone.utc)
             if fi.mtime_ns else None)
    return EntryInfo(name=name, type=_TYPES.get(fi.type), path=path, size=fi.size,
                     mode=fi.mode & 0o7777, permissions=_permissions(fi.type, fi.mode),
                     modified_time=mtime)


class _hybrid:
    """A method callable on an instance (sbx.kill()) and on the class
    (Sandbox.kill(sandbox_id)), as E2B's are."""

    def __init__(self, on_class: Callable):
        self.on_class = on_class
        self.on_instance: Optional[Callable] = None

    def instance(self, fn: Callable) -> "_hybrid":
        self.on_instance = fn
        return self

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return functools.partial(self.on_class, objtype)
        return functools.partial(self.on_instance, obj)


# ---- the process-wide registry ----------------------------------------------------------

_registry: Dict[str, "Sandbox"] = {}
_registry_lock = threading.Lock()


def _lookup(sandbox_id: str) -> "Sandbox":
    with _registry_lock:
        sbx = _registry.get(sandbox_id)
    if sbx is None:
        raise NotFoundException(f"sandbox {sandbox_id!r} not found: it was not created by this "
                                f"process, or it was killed or its timeout passed")
    return sbx


def _kill_all_at_exit() -> None:
    with _registry_lock:
        alive = list(_registry.values())
    for sbx in alive:
        sbx._die("killed at interpreter exit")


import atexit  # noqa: E402

atexit.register(_kill_all_at_exit)


# ---- commands -------------------------------------------------------------------------


class _Proc:
    """One command this shim started: its output log, its end, its cancel token."""

    def __init__(self, pid: int, cmd: str, envs: Dict[str, str], cwd: str, user: str,
                 timeout: Optional[float], stdin: bool = False):
        self.pid = pid
        self.cmd = cmd
        self.envs = envs
        self.cwd = cwd
        self.user = user
        self.timeout = timeout
        self.cancel = ztee.Cancel()
        self.stdin: Optional[ztee.Input] = ztee.Input() if stdin else None
        self.stdin_closed = False
        self.stdin_lock = threading.Lock()  # one send_stdin at a time: pieces stay in order
        self.cond = threading.Condition()
        self.events: List[tuple] = []  # ("stdout" | "stderr", str)
        self.done = False
        self.result: Optional[ztee.ExecResult] = None
        self.failure: Optional[BaseException] = None
        self.killed = False

    def push(self, kind: str, text: str) -> None:
        with self.cond:
            self.events.append((kind, text))
            self.cond.notify_all()

    def finish(self, result, failure) -> None:
        with self.cond:
            self.result, self.failure, self.done = result, failure, True
            self.cond.notify_all()

    def follow(self, start: int = 0) -> Iterator[tuple]:
        """Yields (kind, text) from event `start` on until the command ends."""
        i = start
        while True:
            with self.cond:
                while i >= len(self.events) and not self.done:
                    self.cond.wait()
                batch = self.events[i:]
                finished = self.done
            yield from batch
            i += len(batch)
            if finished and i >= len(self.events):
                return

    def text(self, kind: str) -> str:
        with self.cond:
            return "".join(t for k, t in self.events if k == kind)

    def outcome(self) -> CommandResult:
        """The CommandResult, or raises as E2B does (non-zero exit, timeout)."""
        if not self.done:
            raise SandboxException("command still running")
        if self.failure is not None:
            raise self.failure
        r = self.result
        stdout, stderr = self.text("stdout"), self.text("stderr")
        if r.timed_out:
            raise TimeoutException(f"command timed out: its timeout of {self.timeout:g} s passed "
                                   f"and it was killed (pass timeout=... to commands.run, "
                                   f"0 for none)")
        if r.exit_code == 0:
            return CommandResult(stdout, stderr, 0, None)
        error = f"signal: {_signame(r.signal)}" if r.signal else f"exit status {r.exit_code}"
        raise CommandExitException(stdout, stderr, r.exit_code, error)


def _signame(sig: int) -> str:
    import signal
    try:
        return {9: "killed", 15: "terminated"}.get(sig) or signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _call(fn: Callable, arg: str) -> None:
    if fn is not None:
        fn(arg)


class CommandHandle:
    """A background command (commands.run(..., background=True))."""

    def __init__(self, proc: _Proc, commands: "Commands"):
        self._proc = proc
        self._commands = commands
        self._disconnected = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def stdout(self) -> str:
        return self._proc.text("stdout")

    @property
    def stderr(self) -> str:
        return self._proc.text("stderr")

    @property
    def exit_code(self) -> Optional[int]:
        p = self._proc
        return p.result.exit_code if p.done and p.result is not None else None

    @property
    def error(self) -> Optional[str]:
        try:
            return self._proc.outcome().error if self._proc.done else None
        except CommandExitException as e:
            return e.error
        except SandboxException as e:
            return str(e)

    def __iter__(self) -> Iterator[tuple]:
        """Yields (stdout, stderr, pty) triples, one of them set, as E2B's handle does."""
        for kind, text in self._proc.follow():
            yield (text, None, None) if kind == "stdout" else (None, text, None)

    def wait(self, on_pty=None, on_stdout: Optional[Callable[[str], None]] = None,
             on_stderr: Optional[Callable[[str], None]] = None) -> CommandResult:
        """Waits for the end; returns CommandResult or raises CommandExitException
        (non-zero exit or killed) / TimeoutException. Callbacks get the whole
        output, what arrived before the call first."""
        if on_pty is not None:
            raise _unsupported("CommandHandle.wait(on_pty=...)", "there is no pty")
        for kind, text in self._proc.follow():
            _call(on_stdout if kind == "stdout" else on_stderr, text)
        return self._proc.outcome()

    def kill(self) -> bool:
        """Kills the command (SIGKILL to its process group); False if it had ended."""
        return self._commands.kill(self.pid)

    def disconnect(self) -> None:
        """Stops calling the callbacks given to run(); the command keeps running."""
        self._disconnected = True

    def send_stdin(self, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """commands.send_stdin(pid, data) for this command."""
        self._commands.send_stdin(self.pid, data, request_timeout=request_timeout)

    def close_stdin(self, request_timeout: Optional[float] = None) -> None:
        """commands.close_stdin(pid) for this command."""
        self._commands.close_stdin(self.pid, request_timeout=request_timeout)


class Commands:
    """sbx.commands."""

    def __init__(self, sbx: "Sandbox"):
        self._sbx = sbx
        self._procs: Dict[int, _Proc] = {}
        self._lock = threading.Lock()
        self._pids = itertools.count(1)

    def run(self, cmd: str, background: bool = False, envs: Optional[Dict[str, str]] = None,
            user: Optional[str] = None, cwd: Optional[str] = None,
            on_stdout: Optional[Callable[[str], None]] = None,
            on_stderr: Optional[Callable[[str], None]] = None,
            stdin: Optional[bool] = None, timeout: Optional[float] = DEFAULT_COMMAND_TIMEOUT,
            request_timeout: Optional[float] = None, tag: Optional[str] = None):
        """Runs `cmd` with /bin/bash -c. Foreground: returns CommandResult or
        raises CommandExitException / TimeoutException. background=True:
        returns a CommandHandle at once. stdin=True keeps the command's
        stdin open for send_stdin() until close_stdin() (else it is empty)."""
        if not isinstance(cmd, str) or not cmd:
            raise InvalidArgumentException(f"cmd must be a non-empty str, not {cmd!r}")
        if stdin is not None and not isinstance(stdin, bool):
            raise InvalidArgumentException(f"stdin must be True or False, not {stdin!r} (send the "
                                           f"data with commands.send_stdin)")
        limit = _check_seconds("timeout", timeout, allow_zero=True)
        sbx = self._sbx
        account, home = sbx._account(user)
        env = dict(sbx._envs)
        env.update(_check_str_map("envs", envs))
        wd = sbx._resolve(cwd, home) if cwd is not None else sbx._workdir(account, home)
        sbx._alive()
        proc = _Proc(next(self._pids), cmd, env, wd, account, limit, stdin=bool(stdin))
        with self._lock:
            self._procs[proc.pid] = proc
        worker = threading.Thread(target=self._exec, args=(proc,), daemon=True,
                                  name=f"ztee.e2b {sbx.sandbox_id} pid {proc.pid}")
        worker.start()
        if background:
            handle = CommandHandle(proc, self)
            if on_stdout is not None or on_stderr is not None:
                def deliver():
                    for kind, text in proc.follow():
                        if not handle._disconnected:
                            _call(on_stdout if kind == "stdout" else on_stderr, text)
                threading.Thread(target=deliver, daemon=True,
                                 name=f"ztee.e2b {sbx.sandbox_id} pid {proc.pid} output").start()
            return handle
        try:
            for kind, text in proc.follow():
                _call(on_stdout if kind == "stdout" else on_stderr, text)
        except BaseException:
            proc.cancel.trigger()  # a raising callback ends its command
            raise
        return proc.outcome()

    def _exec(self, proc: _Proc) -> None:
        result, failure = None, None
        try:
            result = self._sbx._box.exec(
                ["/bin/bash", "-c", proc.cmd], env=proc.envs, cwd=proc.cwd, user=proc.user,
                timeout=proc.timeout, cancel=proc.cancel, stdin=proc.stdin,
                on_stdout=lambda s: proc.push("stdout", s),
                on_stderr=lambda s: proc.push("stderr", s))
            if result.cancelled:
                # Killing the sandbox cancels its commands before it destroys the
                # VM: a command that ends by that cancel ends with the sandbox's error.
                failure = self._sbx._dead_error()
        except ztee.Error as e:
            failure = self._sbx._dead_error() or _translate(e, f"command {proc.pid}")
        except BaseException as e:  # noqa: BLE001 (handed to the waiter)
            failure = e
        finally:
            with self._lock:
                self._procs.pop(proc.pid, None)
            proc.finish(result, failure)

    def list(self, request_timeout: Optional[float] = None) -> List[ProcessInfo]:
        """The commands this shim started in this sandbox that still run."""
        with self._lock:
            procs = list(self._procs.values())
        return [ProcessInfo(pid=p.pid, tag=None, cmd="/bin/bash", args=["-c", p.cmd],
                            envs=dict(p.envs), cwd=p.cwd) for p in procs]

    def kill(self, pid: int, request_timeout: Optional[float] = None) -> bool:
        """Kills a running command (SIGKILL to its process group). False if no
        command with that pid runs."""
        with self._lock:
            proc = self._procs.get(pid)
        if proc is None or proc.done:
            return False
        proc.killed = True
        proc.cancel.trigger()
        return True

    def connect(self, pid: int, timeout: Optional[float] = None,
                request_timeout: Optional[float] = None,
                on_stdout: Optional[Callable[[str], None]] = None,
                on_stderr: Optional[Callable[[str], None]] = None) -> CommandHandle:
        """A handle to a running command this shim started."""
        with self._lock:
            proc = self._procs.get(pid)
        if proc is None:
            raise NotFoundException(f"no running command with pid {pid} in sandbox "
                                    f"{self._sbx.sandbox_id} (pids are this shim's, from 1 up)")
        handle = CommandHandle(proc, self)
        if on_stdout is not None or on_stderr is not None:
            def deliver():
                for kind, text in proc.follow():
                    _call(on_stdout if kind == "stdout" else on_stderr, text)
            threading.Thread(target=deliver, daemon=True).start()
        return handle

    def _stdin_of(self, pid: int, call: str) -> _Proc:
        """The running command `pid`, started with stdin=True."""
        self._sbx._alive()
        with self._lock:
            proc = self._procs.get(pid)
        if proc is None or proc.done:
            raise NotFoundException(f"{call}: no running command with pid {pid} in sandbox "
                                    f"{self._sbx.sandbox_id} (it has ended, or never ran)")
        if proc.stdin is None:
            raise InvalidArgumentException(f"{call}: command {pid} was started without stdin: "
                                           f"start it with commands.run(..., stdin=True) to send it input")
        return proc

    def send_stdin(self, pid: int, data: Union[str, bytes], request_timeout: Optional[float] = None) -> None:
        """Passes data (str as UTF-8, or bytes) to the stdin of command `pid`,
        started with stdin=True; returns once it is queued (waiting while
        1 MiB already waits on the host). NotFoundException once the command
        has ended; InvalidArgumentException without stdin=True or after
        close_stdin."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
        else:
            raise InvalidArgumentException(f"commands.send_stdin: data must be str or bytes, "
                                           f"not {type(data).__name__}")
        limit = _check_seconds("request_timeout", request_timeout, allow_zero=True)
        proc = self._stdin_of(pid, "commands.send_stdin")
        if proc.stdin_closed:
            raise InvalidArgumentException(f"commands.send_stdin: the stdin of command {pid} was "
                                           f"closed (close_stdin)")
        with proc.stdin_lock:
            try:
                proc.stdin.write(data, timeout=limit)
            except ztee.ClosedError:
                raise self._sbx._dead_error() or NotFoundException(
                    f"commands.send_stdin: command {pid} has ended") from None
            except ztee.InvalidArgumentError:  # close_stdin ran meanwhile
                raise InvalidArgumentException(f"commands.send_stdin: the stdin of command {pid} "
                                               f"was closed (close_stdin)") from None
            except ztee.TimeoutError as e:
                raise TimeoutException(f"commands.send_stdin: {e.message}") from None

    def close_stdin(self, pid: int, request_timeout: Optional[float] = None) -> None:
        """Ends the stdin of command `pid` (EOF) after what was sent before.
        NotFoundException once it has ended; InvalidArgumentException without
        stdin=True. Closing again does nothing."""
        proc = self._stdin_of(pid, "commands.close_stdin")
        proc.stdin_closed = True
        proc.stdin.close()

    def _kill_all(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for p in procs:
            p.cancel.trigger()


class Pty:
    """sbx.pty: libztee runs commands without a terminal."""

    def __init__(self, sbx: "Sandbox"):
        self._sbx = sbx

    def _no(self, name: str):
        raise _unsupported(f"pty.{name}", "libztee runs commands without a terminal")

    def create(self, *a, **k):
        self._no("create")

    def connect(self, *a, **k):
        self._no("connect")

    def kill(self, *a, **k):
        self._no("kill")

    def send_stdin(self, *a, **k):
        self._no("send_stdin")

    def resize(self, *a, **k):
        self._no("resize")


# ---- files -----------------------------------------------------------------------------


class Filesystem:
    """sbx.files."""

    def __init__(self, sbx: "Sandbox"):
        self._sbx = sbx

    def _path(self, path: str, user: Optional[str]) -> tuple:
        account, home = self._sbx._account(user)
        if not isinstance(path, str) or not path:
            raise InvalidArgumentException(f"path must be a non-empty str, not {path!r}")
        return account, self._sbx._resolve(path, home)

    def _box(self):
        self._sbx._alive()
        return self._sbx._box

    def _stat(self, path: str) -> Optional[ztee.FileInfo]:
        try:
            return self._box().stat(path)
        except ztee.NotFoundError:
            return None
        except ztee.Error as e:
            raise self._sbx._dead_error() or _translate(e, path) from None

    def _as(self, account: str, argv: List[str], what: str, stdin: Optional[bytes] = None) -> None:
        """Runs argv as `account` in the guest; a failure raises with its stderr."""
        try:
            r = self._box().exec(argv, user=account, stdin=stdin, cwd="/", timeout=120)
        except ztee.Error as e:
            raise self._sbx._dead_error() or _translate(e, what) from None
        if r.timed_out:
            raise TimeoutException(f"{what}: took longer than 120 s")
        if r.exit_code != 0:
            err = r.stderr.strip()[-1000:]
            low = err.lower()
            if "no space left" in low:
                raise NotEnoughSpaceException(f"{what}: {err}", errno=28)
            if "permission denied" in low or "operation not permitted" in low:
                raise SandboxError(f"{what}: {err} (as user {account!r}; pass user=\"root\" "
                                   f"to act as root)", _E_PERMISSION, 13)
            if "no such file" in low:
                raise NotFoundException(f"{what}: {err}", errno=2)
            if "not a directory" in low or "is a directory" in low or "exists" in low:
                raise InvalidArgumentException(f"{what}: {err}")
            raise SandboxError(f"{what}: {err or 'exit status ' + str(r.exit_code)}", _E_GUEST)

    def read(self, path: str, format: str = "text", user: Optional[str] = None,  # noqa: A002
             request_timeout: Optional[float] = None):
        """The file's content: str (format="text", invalid UTF-8 replaced),
        bytearray ("bytes") or an iterator of bytes chunks ("stream")."""
        if format not in ("text", "bytes", "stream"):
            raise InvalidArgumentException(f"format must be \"text\", \"bytes\" or \"stream\", "
                                           f"not {format!r}")
        _, p = self._path(path, user)
        try:
            data = self._box().read_file(p)
        except ztee.Error as e:
            raise self._sbx._dead_error() or _translate(e, f"read {p}") from None
        if format == "text":
            return data.decode("utf-8", errors="replace")
        if format == "bytes":
            return bytearray(data)
        return iter([data[i:i + _READ_CHUNK] for i in range(0, len(data), _READ_CHUNK)] or [b""])

    def write(self, path, data=None, user: Optional[str] = None,
              request_timeout: Optional[float] = None):
        """Creates or replaces a file (and its missing parent directories) as
        `user`. data: str, bytes or a file-like object. A list of WriteEntry
        (or {"path", "data"} dicts) as `path` writes each; returns WriteInfo
        (a list of them for a list)."""
        if isinstance(path, (list, tuple)):
            if data is not None:
                raise InvalidArgumentException("files.write(list) takes no data argument: "
                                               "each entry carries its own")
            return self.write_files(path, user=user)
        if data is None:
            raise InvalidArgumentException("files.write(path, data): data is missing")
        account, p = self._path(path, user)
        blob = _as_bytes(data)
        if account == "root":
            try:
                box = self._box()
                parent = posixpath.dirname(p)
                if parent and parent != "/" and self._stat(parent) is None:
                    box.mkdir(parent, parents=True)
                box.write_file(p, blob)
            except ztee.Error as e:
                raise self._sbx._dead_error() or _translate(e, f"write {p}") from None
        else:
            self._as(account, ["/bin/sh", "-c",
                               'd=$(dirname -- "$1") && mkdir -p -- "$d" && cat > "$1"', "sh", p],
                     f"write {p}", stdin=blob)
        return WriteInfo(name=posixpath.basename(p), type=FileType.FILE, path=p)

    def write_files(self, files, user: Optional[str] = None,
                    request_timeout: Optional[float] = None) -> List[WriteInfo]:
        out = []
        for f in files:
            if isinstance(f, dict):
                f = WriteEntry(f.get("path"), f.get("data"))
            if not isinstance(f, WriteEntry):
                raise InvalidArgumentException(f"each file must be a WriteEntry or a "
                                               f"{{'path', 'data'}} dict, not {f!r}")
            out.append(self.write(f.path, f.data, user=user))
        return out

    def list(self, path: str, depth: Optional[int] = 1, user: Optional[str] = None,  # noqa: A003
             request_timeout: Optional[float] = None) -> List[EntryInfo]:
        """Entries of a directory; depth > 1 also lists its subdirectories to
        that depth (symlinks are not followed)."""
        if depth is None:
            depth = 1
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise InvalidArgumentException(f"depth must be an int >= 1, not {depth!r}")
        _, p = self._path(path, user)
        fi = self._stat(p)
        if fi is None:
            raise NotFoundException(f"list {p}: no such directory")
        if fi.type != "dir":
            raise InvalidArgumentException(f"list {p}: not a directory")
        out: List[EntryInfo] = []
        level = [p]
        for _ in range(depth):
            nxt = []
            for d in level:
                try:
                    items = self._box().list_dir(d)
                except ztee.Error as e:
                    raise self._sbx._dead_error() or _translate(e, f"list {d}") from None
                for it in sorted(items, key=lambda x: x.name):
                    full = posixpath.join(d, it.name)
                    out.append(_entry(it.name, full, it))
                    if it.type == "dir":
                        nxt.append(full)
            level = nxt
        return out

    def exists(self, path: str, user: Optional[str] = None,
               request_timeout: Optional[float] = None) -> bool:
        _, p = self._path(path, user)
        return self._stat(p) is not None

    def get_info(self, path: str, user: Optional[str] = None,
                 request_timeout: Optional[float] = None) -> EntryInfo:
        _, p = self._path(path, user)
        fi = self._stat(p)
        if fi is None:
            raise NotFoundException(f"get_info {p}: no such file or directory")
        return _entry(posixpath.basename(p) or "/", p, fi)

    def remove(self, path: str, user: Optional[str] = None,
               request_timeout: Optional[float] = None) -> None:
        """Removes a file or a directory tree, as `user`."""
        account, p = self._path(path, user)
        if self._stat(p) is None:
            raise NotFoundException(f"remove {p}: no such file or directory")
        self._as(account, ["rm", "-rf", "--", p], f"remove {p}")

    def make_dir(self, path: str, user: Optional[str] = None,
                 request_timeout: Optional[float] = None) -> bool:
        """Creates a directory and its missing parents as `user`; False if it
        existed already."""
        account, p = self._path(path, user)
        fi = self._stat(p)
        if fi is not None:
            if fi.type == "dir":
                return False
            raise InvalidArgumentException(f"make_dir {p}: exists and is not a directory")
        self._as(account, ["mkdir", "-p", "--", p], f"make_dir {p}")
        return True

    def rename(self, old_path: str, new_path: str, user: Optional[str] = None,
               request_timeout: Optional[float] = None) -> EntryInfo:
        """Moves old_path to new_path (replacing a file there) as `user`."""
        account, old = self._path(old_path, user)
        _, new = self._path(new_path, user)
        if self._stat(old) is None:
            raise NotFoundException(f"rename {old}: no such file or directory")
        self._as(account, ["mv", "-T", "--", old, new], f"rename {old} to {new}")
        return self.get_info(new, user="root")

    def watch_dir(self, *a, **k):
        raise _unsupported("files.watch_dir", "libztee has no file-change events")


# ---- the sandbox ------------------------------------------------------------------------

_PROVISION = (
    "grep -q '^user:' /etc/passwd || {{ echo 'user:*:{uid}:{uid}::/home/user:/bin/bash' >> /etc/passwd"
    " && {{ grep -q '^user:' /etc/group || echo 'user:*:{uid}:' >> /etc/group; }}; }} && "
    "h=$(awk -F: '$1==\"user\"{{print $6}}' /etc/passwd) && mkdir -p \"$h\" && chown user: \"$h\""
).format(uid=_USER_UID)


def _resolve_template(template: Optional[str]) -> Dict[str, Optional[str]]:
    if template is None or template == DEFAULT_TEMPLATE:
        return {}
    if not isinstance(template, str):
        raise InvalidArgumentException(f"template must be a str, not {type(template).__name__}")
    if os.path.isabs(template) or template.startswith("."):
        if os.path.isfile(os.path.join(template, "manifest.json")):
            return {"image_dir": template}
        if os.path.isfile(os.path.join(template, "template.json")):
            return {"template_dir": template}
        raise InvalidArgumentException(
            f"template {template!r} is neither a libztee image directory (with manifest.json, "
            f"made by `ztee image build`) nor a snapshot template (with template.json)")
    raise InvalidArgumentException(
        f"template {template!r}: ztee.e2b has no E2B template registry; pass None or "
        f"\"base\" for the default image, or the path of a libztee image directory "
        f"(`ztee image build --out DIR`) or of a snapshot template")


class Sandbox:
    """An E2B-style sandbox: a libztee microVM in this process.

    Sandbox.create(template=None, timeout=300, envs=None, metadata=None)
    or Sandbox(...) boots one. template: None or "base" (the default image),
    or the path of a libztee image directory or snapshot template. timeout:
    seconds until a timer kills the sandbox (set_timeout() restarts it).
    envs: environment of every command. api_key, domain, debug,
    request_timeout, proxy and secure are accepted and ignored (there is no
    server). ztee_options: keyword arguments for ztee.Sandbox (vcpus,
    memory_mib, allow, dns, runtime, ...).
    """

    def __new__(cls, *args, sandbox_id: Optional[str] = None, **kwargs):
        if sandbox_id is not None:  # E2B v1's Sandbox(sandbox_id=...) connects
            return _lookup(sandbox_id)
        return super().__new__(cls)

    def __init__(self, template: Optional[str] = None, timeout: Optional[float] = None,
                 metadata: Optional[Dict[str, str]] = None, envs: Optional[Dict[str, str]] = None,
                 secure: Optional[bool] = None, allow_internet_access: Optional[bool] = None,
                 api_key: Optional[str] = None, domain: Optional[str] = None,
                 debug: Optional[bool] = None, request_timeout: Optional[float] = None,
                 proxy: Any = None, sandbox_id: Optional[str] = None,
                 auto_pause: bool = False, network: Any = None, mcp: Any = None,
                 ztee_options: Optional[Dict[str, Any]] = None, **unknown):
        if getattr(self, "_started", False):
            return  # Sandbox(sandbox_id=...) returned a running one
        if unknown:
            raise TypeError(f"Sandbox() got unexpected keyword arguments: {', '.join(unknown)}")
        if allow_internet_access:
            raise _unsupported("Sandbox(allow_internet_access=True)",
                               "a libztee sandbox has no network unless "
                               "ztee_options={'allow': [...], 'dns': ...} names what it may reach")
        if network is not None:
            raise _unsupported("Sandbox(network=...)", "use ztee_options={'allow': [...]}")
        if auto_pause:
            raise _unsupported("Sandbox(auto_pause=True)")
        if mcp is not None:
            raise _unsupported("Sandbox(mcp=...)")
        seconds = _check_seconds("timeout", DEFAULT_SANDBOX_TIMEOUT if timeout is None else timeout,
                                 allow_zero=False)
        self._envs = _check_str_map("envs", envs)
        self._metadata = _check_str_map("metadata", metadata)
        where = _resolve_template(template)
        self._template = template if template is not None else DEFAULT_TEMPLATE
        opts = dict(ztee_options or {})
        clash = set(opts) & set(where)
        if clash:
            raise InvalidArgumentException(f"ztee_options {sorted(clash)} clash with template="
                                           f"{template!r}")
        opts.update(where)
        self._lock = threading.RLock()
        self._dead: Optional[str] = None
        self._timed_out = False
        self._timer: Optional[threading.Timer] = None
        self._accounts: Optional[Dict[str, str]] = None
        self._homes: Dict[str, str] = {}
        try:
            self._box = ztee.Sandbox(**opts)
        except TypeError as e:
            raise InvalidArgumentException(f"ztee_options: {e}") from None
        except ztee.Error as e:
            raise _translate(e, "create sandbox") from None
        try:
            r = self._box.run(_PROVISION, timeout=60)
            if r.exit_code != 0:
                raise SandboxError(f"create sandbox: adding the account \"user\" failed: "
                                   f"{r.stderr.strip()[-500:]}")
        except BaseException as e:
            self._box.close()
            if isinstance(e, ztee.Error) and not isinstance(e, SandboxException):
                raise _translate(e, "create sandbox") from None
            raise
        self.sandbox_id: str = self._box.id
        self._started_at = _now()
        self.commands = Commands(self)
        self.files = Filesystem(self)
        self.pty = Pty(self)
        self._started = True
        with _registry_lock:
            _registry[self.sandbox_id] = self
        self._arm(seconds)

    # -- creation and lookup --

    @classmethod
    def create(cls, template: Optional[str] = None, timeout: Optional[float] = None,
               metadata: Optional[Dict[str, str]] = None, envs: Optional[Dict[str, str]] = None,
               **kwargs) -> "Sandbox":
        return cls(template=template, timeout=timeout, metadata=metadata, envs=envs, **kwargs)

    @classmethod
    def connect(cls, sandbox_id: str, timeout: Optional[float] = None, **_ignored) -> "Sandbox":
        """The running sandbox with this id (created by this process); timeout
        restarts its timer. NotFoundException otherwise."""
        sbx = _lookup(sandbox_id)
        if timeout is not None:
            sbx.set_timeout(timeout)
        return sbx

    @classmethod
    def list(cls, query: Optional[SandboxQuery] = None, limit: Optional[int] = None,  # noqa: A003
             next_token: Optional[str] = None, **_ignored) -> SandboxList:
        """The running sandboxes this process created (filtered by
        query.metadata), in one page."""
        want = None
        if query is not None:
            want = query.get("metadata") if isinstance(query, dict) else query.metadata
        with _registry_lock:
            alive = list(_registry.values())
        infos = [s._info() for s in alive]
        if want:
            infos = [i for i in infos if all(i.metadata.get(k) == v for k, v in want.items())]
        if limit:
            infos = infos[:limit]
        return SandboxList(infos)

    # -- lifetime --

    def _arm(self, seconds: float) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._end_at = _now() + _dt.timedelta(seconds=seconds)
            self._timer = threading.Timer(seconds, self._expire)
            self._timer.daemon = True
            self._timer.name = f"ztee.e2b {self.sandbox_id} timeout"
            self._timer.start()

    def _expire(self) -> None:
        self._die("its timeout passed", timed_out=True)

    def _die(self, why: str, timed_out: bool = False) -> bool:
        with self._lock:
            if self._dead is not None:
                return False
            self._dead = why
            self._timed_out = timed_out
            if self._timer is not None and self._timer is not threading.current_thread():
                self._timer.cancel()
        with _registry_lock:
            _registry.pop(self.sandbox_id, None)
        self.commands._kill_all()
        try:
            self._box.destroy()  # never close(): other threads may be inside a call
        except ztee.Error:
            pass
        return True

    def _dead_error(self) -> Optional[SandboxException]:
        if self._dead is None:
            return None
        if self._timed_out:
            return TimeoutException(
                f"sandbox {self.sandbox_id} was killed when its timeout passed (create it with "
                f"a longer timeout=..., or call set_timeout() before it passes)")
        return SandboxClosedException(f"sandbox {self.sandbox_id} is not running: {self._dead}")

    def _alive(self) -> None:
        err = self._dead_error()
        if err is not None:
            raise err

    def _kill_instance(self, request_timeout: Optional[float] = None) -> bool:
        """Kills this sandbox; False if it was not running."""
        return self._die("it was killed")

    def _kill_class(cls, sandbox_id: str, **_ignored) -> bool:
        with _registry_lock:
            sbx = _registry.get(sandbox_id)
        return sbx._die("it was killed") if sbx is not None else False

    kill = _hybrid(_kill_class).instance(_kill_instance)

    def _set_timeout_instance(self, timeout: float, request_timeout: Optional[float] = None) -> None:
        """The sandbox is killed `timeout` seconds from now."""
        seconds = _check_seconds("timeout", timeout, allow_zero=False)
        with self._lock:
            self._alive()
            self._arm(seconds)

    def _set_timeout_class(cls, sandbox_id: str, timeout: float, **_ignored) -> None:
        _lookup(sandbox_id).set_timeout(timeout)

    set_timeout = _hybrid(_set_timeout_class).instance(_set_timeout_instance)

    def _info(self) -> SandboxInfo:
        return SandboxInfo(sandbox_id=self.sandbox_id, template_id=self._template,
                           name=self._template, metadata=dict(self._metadata),
                           started_at=self._started_at, end_at=self._end_at)

    def _get_info_instance(self, request_timeout: Optional[float] = None) -> SandboxInfo:
        self._alive()
        return self._info()

    def _get_info_class(cls, sandbox_id: str, **_ignored) -> SandboxInfo:
        return _lookup(sandbox_id).get_info()

    get_info = _hybrid(_get_info_class).instance(_get_info_instance)

    def is_running(self, request_timeout: Optional[float] = None) -> bool:
        if self._dead is not None:
            return False
        try:
            self._box.ping()
            return True
        except ztee.Error:
            return False

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"<ztee.e2b.Sandbox {self.sandbox_id}{' (dead)' if self._dead else ''}>"

    # -- accounts and paths --

    def _account(self, user: Optional[str]) -> tuple:
        """(account name, home) for a user argument; raises for an unknown one."""
        name = DEFAULT_USER if user is None else user
        if not isinstance(name, str) or not name:
            raise InvalidArgumentException(f"user must be an account name, not {user!r}")
        if self._accounts is None or name not in self._accounts:
            self._alive()
            try:
                text = self._box.read_file("/etc/passwd", 1 << 20).decode("utf-8", "replace")
            except ztee.Error as e:
                raise self._dead_error() or _translate(e, "read /etc/passwd") from None
            accounts = {}
            for line in text.splitlines():
                f = line.split(":")
                if len(f) >= 6:
                    accounts[f[0]] = f[5] or "/"
            self._accounts = accounts
        if name not in self._accounts:
            raise InvalidArgumentException(
                f"user {name!r} does not exist in sandbox {self.sandbox_id}; use \"user\" "
                f"(the default) or \"root\", or create the account first (as root)")
        return name, self._accounts[name]

    def _workdir(self, account: str, home: str) -> str:
        """A command's default cwd: the account's home, or "/" where it has
        none (e.g. nobody's /nonexistent)."""
        if account not in self._homes:
            try:
                fi = self._box.stat(home)
                self._homes[account] = home if fi.type == "dir" else "/"
            except ztee.NotFoundError:
                self._homes[account] = "/"
            except ztee.Error as e:
                raise self._dead_error() or _translate(e, f"stat {home}") from None
        return self._homes[account]

    @staticmethod
    def _resolve(path: str, home: str) -> str:
        if path == "~" or path.startswith("~/"):
            path = home + path[1:]
        elif not path.startswith("/"):
            path = posixpath.join(home, path)
        return posixpath.normpath(path) if path != "/" else "/"

    # -- calls libztee cannot serve --

    def get_host(self, port: int) -> str:
        raise _unsupported("get_host", "sandboxes expose no ports; use commands and files")

    def get_metrics(self, *a, **k):
        raise _unsupported("get_metrics")

    def upload_url(self, *a, **k):
        raise _unsupported("upload_url", "use files.write")

    def download_url(self, *a, **k):
        raise _unsupported("download_url", "use files.read")

    def pause(self, *a, **k):
        raise _unsupported("pause")

    beta_pause = pause

    @classmethod
    def resume(cls, *a, **k):
        raise _unsupported("resume")

    @property
    def sandbox_domain(self) -> Optional[str]:
        return None


# ---- asyncio -----------------------------------------------------------------------------


def _threadsafe_callback(fn: Optional[Callable], loop: asyncio.AbstractEventLoop):
    """A callback usable from a worker thread; a coroutine function runs on `loop`."""
    if fn is None:
        return None

    def call(arg):
        r = fn(arg)
        if inspect.isawaitable(r):
            asyncio.run_coroutine_threadsafe(r, loop).result()
    return call


class _AsyncProxy:
    """Async methods over a sync object: each call runs in asyncio.to_thread."""

    def __init__(self, target):
        self._target = target

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        async def call(*args, **kwargs):
            loop = asyncio.get_running_loop()
            for k in ("on_stdout", "on_stderr"):
                if k in kwargs:
                    kwargs[k] = _threadsafe_callback(kwargs[k], loop)
            r = await asyncio.to_thread(attr, *args, **kwargs)
            return _AsyncProxy(r) if isinstance(r, CommandHandle) else r
        return call


class AsyncSandbox:
    """Sandbox with async methods (each runs the sync call in asyncio.to_thread).

        sbx = await AsyncSandbox.create()
        r = await sbx.commands.run("echo hi")
    """

    def __init__(self, sync: Sandbox):
        self._sync = sync
        self.sandbox_id = sync.sandbox_id
        self.commands = _AsyncProxy(sync.commands)
        self.files = _AsyncProxy(sync.files)
        self.pty = _AsyncProxy(sync.pty)

    @classmethod
    async def create(cls, *args, **kwargs) -> "AsyncSandbox":
        return cls(await asyncio.to_thread(Sandbox.create, *args, **kwargs))

    @classmethod
    async def connect(cls, sandbox_id: str, **kwargs) -> "AsyncSandbox":
        return cls(await asyncio.to_thread(Sandbox.connect, sandbox_id, **kwargs))

    @classmethod
    async def list(cls, *args, **kwargs) -> SandboxList:  # noqa: A003
        return Sandbox.list(*args, **kwargs)

    def _kill_instance(self, **_ignored):
        return asyncio.to_thread(self._sync.kill)

    def _kill_class(cls, sandbox_id: str, **_ignored):
        return asyncio.to_thread(Sandbox.kill, sandbox_id)

    kill = _hybrid(_kill_class).instance(_kill_instance)

    def _set_timeout_instance(self, timeout: float, **_ignored):
        return asyncio.to_thread(self._sync.set_timeout, timeout)

    def _set_timeout_class(cls, sandbox_id: str, timeout: float, **_ignored):
        return asyncio.to_thread(Sandbox.set_timeout, sandbox_id, timeout)

    set_timeout = _hybrid(_set_timeout_class).instance(_set_timeout_instance)

    def _get_info_instance(self, **_ignored):
        return asyncio.to_thread(self._sync.get_info)

    def _get_info_class(cls, sandbox_id: str, **_ignored):
        return asyncio.to_thread(Sandbox.get_info, sandbox_id)

    get_info = _hybrid(_get_info_class).instance(_get_info_instance)

    async def is_running(self, **_ignored) -> bool:
        return await asyncio.to_thread(self._sync.is_running)

    def __getattr__(self, name):
        return getattr(_AsyncProxy(self._sync), name)

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self._sync.kill)
