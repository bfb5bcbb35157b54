"""ztee.e2b: E2B-style usage over real sandboxes. One sandbox serves most
tests; the lifetime tests (timeout expiry, context manager) and the
quickstart example boot their own."""
import asyncio
import io
import os
import subprocess
import sys
import threading
import time

import pytest

import ztee
from ztee import e2b
from ztee.e2b import (AsyncSandbox, CommandExitException, EntryInfo, FileType,
                      InvalidArgumentException, NotFoundException, NotSupportedError, Sandbox,
                      SandboxException, TimeoutException, WriteEntry)

from conftest import IMAGE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sbx():
    box = Sandbox.create(envs={"FROM_CREATE": "c", "SHADOWED": "create"},
                         metadata={"suite": "e2b"})
    yield box
    box.kill()


# ---- no sandbox needed ----------------------------------------------------------------


def test_exceptions_are_e2b_names_and_ztee_errors():
    for cls, base in [(TimeoutException, ztee.TimeoutError),
                      (NotFoundException, ztee.NotFoundError),
                      (InvalidArgumentException, ztee.InvalidArgumentError),
                      (e2b.SandboxClosedException, ztee.ClosedError),
                      (e2b.NotEnoughSpaceException, ztee.Error),
                      (NotSupportedError, ztee.Error)]:
        err = cls("boom")
        assert isinstance(err, SandboxException) and isinstance(err, base), cls
        assert str(err) == "boom" and err.code < 0
    assert issubclass(TimeoutException, TimeoutError)  # the builtin, through ztee.TimeoutError
    assert issubclass(NotSupportedError, NotImplementedError)
    assert e2b.NotSupportedException is NotSupportedError
    assert issubclass(CommandExitException, SandboxException)
    assert not issubclass(CommandExitException, ztee.Error)  # an exit code is not a libztee failure


def test_bad_create_arguments_fail_before_booting():
    before = len(Sandbox.list())
    with pytest.raises(InvalidArgumentException, match="no E2B template registry"):
        Sandbox.create("code-interpreter-v1")
    with pytest.raises(InvalidArgumentException, match="neither a libztee image"):
        Sandbox.create("/tmp")
    with pytest.raises(InvalidArgumentException, match="timeout"):
        Sandbox.create(timeout=-5)
    with pytest.raises(InvalidArgumentException, match="envs"):
        Sandbox.create(envs={"A": 1})
    with pytest.raises(NotSupportedError, match="allow_internet_access"):
        Sandbox.create(allow_internet_access=True)
    with pytest.raises(TypeError, match="no_such_option"):
        Sandbox.create(no_such_option=1)
    with pytest.raises(NotFoundException):
        Sandbox.connect("sb-does-not-exist")
    assert Sandbox.kill("sb-does-not-exist") is False
    assert len(Sandbox.list()) == before


# ---- commands -------------------------------------------------------------------------


def test_run_code_as_user_in_home(sbx):
    r = sbx.commands.run("python3 -c 'print(6*7)'; whoami; pwd; echo $HOME")
    assert isinstance(r, e2b.CommandResult)
    assert r.stdout == "42\nuser\n/home/user\n/home/user\n"
    assert r.stderr == "" and r.exit_code == 0 and r.error is None
    assert sbx.sandbox_id.startswith("sb-")


def test_envs_of_create_and_of_the_command(sbx):
    r = sbx.commands.run('echo "$FROM_CREATE $SHADOWED $OWN"',
                         envs={"SHADOWED": "command", "OWN": "o w n"})
    assert r.stdout == "c command o w n\n"


def test_user_and_cwd(sbx):
    r = sbx.commands.run("id -u; pwd", user="root")
    assert r.stdout == "0\n/root\n"
    r = sbx.commands.run("pwd; ls", cwd="/etc")
    assert r.stdout.startswith("/etc\n") and "passwd" in r.stdout
    r = sbx.commands.run("id -un; pwd", user="nobody")  # an account of the image, no home
    assert r.stdout == "nobody\n/\n"
    with pytest.raises(InvalidArgumentException, match="'ghost' does not exist"):
        sbx.commands.run("true", user="ghost")
    with pytest.raises(NotFoundException):
        sbx.commands.run("true", cwd="/no/such/dir")


def test_non_zero_exit_raises_with_the_result(sbx):
    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("echo partial; echo bad >&2; exit 7")
    e = info.value
    assert (e.stdout, e.stderr, e.exit_code, e.error) == ("partial\n", "bad\n", 7, "exit status 7")
    assert "bad" in str(e)
    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("no-such-program-here")
    assert info.value.exit_code == 127


def test_command_timeout(sbx):
    t = time.monotonic()
    with pytest.raises(TimeoutException, match="timeout of 1 s"):
        sbx.commands.run("sleep 30", timeout=1)
    assert time.monotonic() - t < 15
    assert sbx.commands.run("echo alive").stdout == "alive\n"
    with pytest.raises(InvalidArgumentException):
        sbx.commands.run("true", timeout=-1)


def test_streaming_callbacks_in_the_callers_thread(sbx):
    events, threads = [], set()

    def out(s):
        events.append(("out", s))
        threads.add(threading.get_ident())

    r = sbx.commands.run("for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.1; done",
                         on_stdout=out, on_stderr=lambda s: events.append(("err", s)))
    assert r.stdout == "o1\no2\no3\n" and r.stderr == "e1\ne2\ne3\n"  # still collected
    assert "".join(s for k, s in events if k == "out") == r.stdout
    assert "".join(s for k, s in events if k == "err") == r.stderr
    flat = "".join(s for _, s in events)
    assert flat.index("e1") < flat.index("o2") < flat.index("e2") < flat.index("o3")
    assert threads == {threading.get_ident()}
    # A callback may call back into the sandbox (it does not run on libztee's loop).
    got = []
    sbx.commands.run("echo x", on_stdout=lambda s: got.append(sbx.files.exists("/etc/passwd")))
    assert got == [True]


def test_raising_callback_ends_its_command(sbx):
    class Stop(Exception):
        pass

    def cb(_):
        raise Stop()

    with pytest.raises(Stop):
        sbx.commands.run("echo go; sleep 60", on_stdout=cb)
    deadline = time.monotonic() + 15
    while sbx.commands.list() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sbx.commands.list() == []


def test_background_command_kill(sbx):
    h = sbx.commands.run("echo started; sleep 120", background=True)
    assert isinstance(h.pid, int) and h.pid > 0
    assert [p.pid for p in sbx.commands.list()] == [h.pid]
    info = sbx.commands.list()[0]
    assert info.cmd == "/bin/bash" and info.args == ["-c", "echo started; sleep 120"]
    assert info.cwd == "/home/user" and info.envs["FROM_CREATE"] == "c"
    deadline = time.monotonic() + 30
    while "started" not in h.stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    assert h.stdout == "started\n"
    t = time.monotonic()
    assert sbx.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException) as info:
        h.wait()
    assert time.monotonic() - t < 10
    assert info.value.exit_code == -1 and info.value.error == "signal: killed"
    assert sbx.commands.list() == []
    assert sbx.commands.kill(h.pid) is False and h.kill() is False
    with pytest.raises(NotFoundException):
        sbx.commands.connect(h.pid)


def test_background_command_streams_and_waits(sbx):
    seen = []
    done = threading.Event()

    def out(s):
        seen.append(s)
        if "b" in "".join(seen):
            done.set()

    h = sbx.commands.run("echo a; sleep 0.5; echo b; exit 0", background=True, on_stdout=out)
    assert done.wait(30), "the background callback got no output"
    r = h.wait()
    assert r.stdout == "a\nb\n" and r.exit_code == 0 and "".join(seen) == "a\nb\n"
    late = []
    assert h.wait(on_stdout=late.append).stdout == "a\nb\n"
    assert "".join(late) == "a\nb\n"  # replayed to a late callback
    assert "".join(t[0] for t in h if t[0]) == "a\nb\n"    # iterating replays the output
    h2 = sbx.commands.run("sleep 0.2; exit 4", background=True)
    with pytest.raises(CommandExitException) as info:
        h2.wait()
    assert info.value.exit_code == 4 and h2.exit_code == 4


def test_connect_to_a_running_command(sbx):
    h = sbx.commands.run("sleep 0.5; echo done", background=True)
    h2 = sbx.commands.connect(h.pid)
    assert h2.wait().stdout == "done\n"


def _until(pred, seconds=20):
    deadline = time.monotonic() + seconds
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()


def test_stdin_in_pieces_then_eof(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(h.pid, "one\n")
    assert _until(lambda: h.stdout == "one\n"), h.stdout  # each piece arrives while cat runs
    h.send_stdin("tw\u00e9\n".encode())                    # the handle's own call; bytes
    assert _until(lambda: h.stdout == "one\ntw\u00e9\n"), h.stdout
    sbx.commands.send_stdin(h.pid, "no newline")
    assert _until(lambda: h.stdout.endswith("no newline")), h.stdout
    assert h.exit_code is None  # still reading
    sbx.commands.close_stdin(h.pid)  # EOF: cat ends
    r = h.wait()
    assert r.stdout == "one\ntw\u00e9\nno newline" and r.stderr == "" and r.exit_code == 0
    with pytest.raises(NotFoundException, match="no running command"):
        sbx.commands.send_stdin(h.pid, "late")
    with pytest.raises(NotFoundException):
        h.close_stdin()
    with pytest.raises(NotFoundException):
        sbx.commands.send_stdin(9999, "x")


def test_stdin_refused_when_closed_or_never_open(sbx):
    h = sbx.commands.run("cat; echo eof; sleep 30", background=True, stdin=True)
    h.close_stdin()
    assert _until(lambda: h.stdout == "eof\n"), h.stdout
    h.close_stdin()  # again: nothing
    with pytest.raises(InvalidArgumentException, match="was closed"):
        h.send_stdin("x")
    assert sbx.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        h.wait()
    h2 = sbx.commands.run("sleep 30", background=True)
    with pytest.raises(InvalidArgumentException, match="started without stdin.*stdin=True"):
        sbx.commands.send_stdin(h2.pid, "x")
    with pytest.raises(InvalidArgumentException, match="started without stdin"):
        h2.close_stdin()
    with pytest.raises(InvalidArgumentException, match="str or bytes"):
        sbx.commands.send_stdin(h2.pid, 5)
    assert h2.kill() is True
    with pytest.raises(InvalidArgumentException, match="True or False"):
        sbx.commands.run("cat", stdin="data")
    assert sbx.commands.run("cat; echo end").stdout == "end\n"  # without stdin=True: empty


def test_kill_a_background_command_reading_stdin(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True)
    h.send_stdin("x\n")
    assert _until(lambda: h.stdout == "x\n"), h.stdout
    t = time.monotonic()
    assert h.kill() is True
    with pytest.raises(CommandExitException) as info:
        h.wait()
    assert time.monotonic() - t < 10
    assert info.value.exit_code == -1 and info.value.error == "signal: killed"
    assert info.value.stdout == "x\n"
    with pytest.raises(NotFoundException):
        h.send_stdin("y")
    assert h.kill() is False


def test_stdin_of_a_foreground_run_and_async(sbx):
    got = {}
    t = threading.Thread(target=lambda: got.update(r=sbx.commands.run("wc -c", stdin=True)))
    t.start()
    assert _until(lambda: any(p.args == ["-c", "wc -c"] for p in sbx.commands.list()))
    pid = next(p.pid for p in sbx.commands.list() if p.args == ["-c", "wc -c"])
    sbx.commands.send_stdin(pid, b"12345")
    sbx.commands.close_stdin(pid)
    t.join(30)
    assert got["r"].stdout.strip() == "5"

    async def main():
        a = await AsyncSandbox.connect(sbx.sandbox_id)
        h = await a.commands.run("cat", background=True, stdin=True)
        await h.send_stdin("async ")
        await a.commands.send_stdin(h.pid, "stdin")
        await h.close_stdin()
        return (await h.wait()).stdout

    assert asyncio.run(main()) == "async stdin"


# ---- files ----------------------------------------------------------------------------


def test_write_read_list(sbx):
    info = sbx.files.write("/home/user/proj/src/main.py", "print('hi')\n")
    assert (info.name, info.path, info.type) == ("main.py", "/home/user/proj/src/main.py", FileType.FILE)
    sbx.files.write("proj/data.bin", b"\x00\xffbin")          # relative to the home
    sbx.files.write("/home/user/proj/from_io.txt", io.BytesIO(b"from a file object"))
    assert sbx.files.read("/home/user/proj/src/main.py") == "print('hi')\n"
    assert sbx.files.read("~/proj/data.bin", format="bytes") == bytearray(b"\x00\xffbin")
    assert b"".join(sbx.files.read("proj/from_io.txt", format="stream")) == b"from a file object"
    assert sbx.commands.run("python3 proj/src/main.py").stdout == "hi\n"
    # Written as the account: it can change what the shim wrote.
    r = sbx.commands.run("stat -c '%U %a' proj proj/src proj/src/main.py && echo more >> proj/data.bin")
    assert r.stdout == "user 755\nuser 755\nuser 644\n"

    top = sbx.files.list("/home/user/proj")
    assert [(e.name, e.type) for e in top] == [("data.bin", FileType.FILE),
                                                ("from_io.txt", FileType.FILE),
                                                ("src", FileType.DIR)]
    data = top[0]
    assert isinstance(data, EntryInfo)
    assert data.path == "/home/user/proj/data.bin" and data.size == len(b"\x00\xffbin") + 5
    assert data.mode == 0o644 and data.permissions == "-rw-r--r--"
    assert top[2].permissions == "drwxr-xr-x"
    deep = sbx.files.list("/home/user/proj", depth=2)
    assert "/home/user/proj/src/main.py" in [e.path for e in deep] and len(deep) == 4
    with pytest.raises(InvalidArgumentException, match="not a directory"):
        sbx.files.list("/home/user/proj/data.bin")
    with pytest.raises(InvalidArgumentException, match="depth"):
        sbx.files.list("/home/user", depth=0)


def test_write_many_entries(sbx):
    infos = sbx.files.write([WriteEntry("/tmp/many/a.txt", "A"), {"path": "/tmp/many/b.txt", "data": b"B"}])
    assert [i.path for i in infos] == ["/tmp/many/a.txt", "/tmp/many/b.txt"]
    assert sbx.files.read("/tmp/many/a.txt") + sbx.files.read("/tmp/many/b.txt") == "AB"
    with pytest.raises(InvalidArgumentException):
        sbx.files.write("/tmp/x", 12345)


def test_exists_info_make_dir_rename_remove(sbx):
    assert sbx.files.exists("/etc/passwd") and not sbx.files.exists("/no/such")
    info = sbx.files.get_info("/etc/passwd")
    assert (info.name, info.type, info.path) == ("passwd", FileType.FILE, "/etc/passwd")
    assert info.size > 0 and info.modified_time is not None and info.modified_time.year >= 2000
    with pytest.raises(NotFoundException):
        sbx.files.get_info("/no/such")

    assert sbx.files.make_dir("/home/user/d1/d2") is True
    assert sbx.files.make_dir("/home/user/d1/d2") is False
    assert sbx.files.get_info("/home/user/d1/d2").type == FileType.DIR
    sbx.files.write("/home/user/d1/f.txt", "f")
    with pytest.raises(InvalidArgumentException, match="not a directory"):
        sbx.files.make_dir("/home/user/d1/f.txt")

    moved = sbx.files.rename("/home/user/d1/f.txt", "/home/user/d1/d2/g.txt")
    assert (moved.name, moved.path, moved.type) == ("g.txt", "/home/user/d1/d2/g.txt", FileType.FILE)
    assert not sbx.files.exists("/home/user/d1/f.txt") and sbx.files.read("d1/d2/g.txt") == "f"
    with pytest.raises(NotFoundException):
        sbx.files.rename("/home/user/d1/f.txt", "/home/user/x")

    sbx.files.remove("/home/user/d1")   # a tree
    assert not sbx.files.exists("/home/user/d1")
    with pytest.raises(NotFoundException):
        sbx.files.remove("/home/user/d1")
    with pytest.raises(NotFoundException):
        sbx.files.read("/home/user/d1/d2/g.txt")
    with pytest.raises(InvalidArgumentException):
        sbx.files.read("/tmp")
    with pytest.raises(InvalidArgumentException, match="format"):
        sbx.files.read("/etc/passwd", format="json")


def test_files_act_as_the_account(sbx):
    with pytest.raises(e2b.SandboxError, match="Permission denied") as info:
        sbx.files.write("/etc/e2b-test.conf", "x")
    assert isinstance(info.value, ztee.Error) and info.value.errno == 13
    assert not sbx.files.exists("/etc/e2b-test.conf")
    sbx.files.write("/etc/e2b-test.conf", "x", user="root")
    assert sbx.commands.run("stat -c %U /etc/e2b-test.conf", user="root").stdout == "root\n"
    with pytest.raises(e2b.SandboxError, match="Permission denied"):
        sbx.files.remove("/etc/e2b-test.conf")
    sbx.files.remove("/etc/e2b-test.conf", user="root")
    assert not sbx.files.exists("/etc/e2b-test.conf")


def test_unsupported_calls_say_so(sbx):
    calls = {
        "pty.create": lambda: sbx.pty.create(size=None),
        "files.watch_dir": lambda: sbx.files.watch_dir("/tmp", lambda ev: None),
        "get_host": lambda: sbx.get_host(8080),
        "pty.send_stdin": lambda: sbx.pty.send_stdin(1, b"x"),
        "pause": lambda: sbx.pause(),
        "upload_url": lambda: sbx.upload_url("/tmp/x"),
    }
    for name, call in calls.items():
        with pytest.raises(NotSupportedError) as info:
            call()
        assert name in str(info.value) and info.value.code == -14, name
    assert sbx.commands.run("echo still here").stdout == "still here\n"


def test_registry_and_info(sbx):
    assert Sandbox.connect(sbx.sandbox_id) is sbx
    assert Sandbox(sandbox_id=sbx.sandbox_id) is sbx      # E2B v1's connect form
    ids = [i.sandbox_id for i in Sandbox.list()]
    assert sbx.sandbox_id in ids
    page = Sandbox.list(query=e2b.SandboxQuery(metadata={"suite": "e2b"}))
    assert [i.sandbox_id for i in page.next_items()] == [sbx.sandbox_id] and not page.has_next
    assert Sandbox.list(query=e2b.SandboxQuery(metadata={"suite": "other"})) == []
    info = sbx.get_info()
    assert info.sandbox_id == sbx.sandbox_id and info.template_id == "base"
    assert info.metadata == {"suite": "e2b"}
    assert 0 < (info.end_at - info.started_at).total_seconds() <= 301
    assert Sandbox.get_info(sbx.sandbox_id).sandbox_id == sbx.sandbox_id
    sbx.set_timeout(600)
    assert 595 < (sbx.get_info().end_at - e2b._now()).total_seconds() <= 600
    assert sbx.is_running()


def test_async_sandbox(sbx):
    async def main():
        a = await AsyncSandbox.connect(sbx.sandbox_id)
        chunks = []

        async def on_out(s):
            chunks.append(s)

        r = await a.commands.run("echo async", on_stdout=on_out)
        await a.files.write("/tmp/async.txt", "aw")
        h = await a.commands.run("sleep 0.2; echo bg", background=True)
        bg = await h.wait()
        return r.stdout, "".join(chunks), await a.files.read("/tmp/async.txt"), bg.stdout, \
            await a.is_running()

    assert asyncio.run(main()) == ("async\n", "async\n", "aw", "bg\n", True)


# ---- lifetimes (own sandboxes) -------------------------------------------------------------


def test_sandbox_timeout_kills_it():
    s = Sandbox(timeout=60, template=IMAGE_DIR)   # the constructor form; an image by path
    try:
        h = s.commands.run("sleep 40", background=True)  # outlives the timeout, not a broken timer
        s.set_timeout(3)
        t = time.monotonic()
        with pytest.raises(TimeoutException, match="timeout passed"):
            h.wait()
        assert time.monotonic() - t < 30
        assert not s.is_running()
        with pytest.raises(TimeoutException, match="timeout passed"):
            s.commands.run("true")
        with pytest.raises(TimeoutException):
            s.files.read("/etc/passwd")
        assert s.sandbox_id not in [i.sandbox_id for i in Sandbox.list()]
        with pytest.raises(NotFoundException):
            Sandbox.connect(s.sandbox_id)
        assert s.kill() is False
    finally:
        s.kill()


def test_context_manager_kills():
    with Sandbox.create(timeout=120) as s:
        assert s.commands.run("echo in").stdout == "in\n"
        sid = s.sandbox_id
        assert Sandbox.kill(sid) is True   # the class form
        assert not s.is_running()
        with pytest.raises(e2b.SandboxClosedException, match="killed"):
            s.commands.run("true")
    assert s.kill() is False
    assert sid not in [i.sandbox_id for i in Sandbox.list()]


def test_quickstart_example_runs():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    r = subprocess.run([sys.executable, os.path.join(REPO, "examples", "e2b_quickstart.py")],
                       capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("42\nHello from the sandbox\nfile hello.txt\nrunning: True\n"
                        "exit code: 3\n"), r.stdout + r.stderr
