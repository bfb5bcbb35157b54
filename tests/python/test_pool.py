"""Pools, pause/resume, snapshots and clones. Two boots in all: the pool's
template sandbox and the snapshottable one; everything else is a clone."""
import os
import threading
import time

import pytest

import ztee

from conftest import IMAGE_DIR


def _need_image():
    manifest = os.path.join(IMAGE_DIR, "manifest.json")
    if not os.path.exists(manifest):
        pytest.fail(f"no guest image at {IMAGE_DIR} (missing {manifest}): "
                    f"run `ztee image build --out {IMAGE_DIR}` or set ZTEE_IMAGE_DIR",
                    pytrace=False)


@pytest.fixture(scope="module")
def rt():
    _need_image()
    return ztee.Runtime(image_dir=IMAGE_DIR)


@pytest.fixture(scope="module")
def pool(rt):
    """One pool for the module: it boots one sandbox, snapshots it and clones."""
    with ztee.Pool(runtime=rt, min_ready=1, max_total=2, lease_timeout=60) as p:
        yield p


def test_features():
    assert ztee.has_feature("pool") and ztee.has_feature("snapshot")


def test_bad_arguments():
    with pytest.raises(ztee.InvalidArgumentError):
        ztee.Pool(min_ready=0)
    with pytest.raises(ztee.InvalidArgumentError):
        ztee.Pool(min_ready=3, max_total=2)
    with pytest.raises(TypeError):
        ztee.Pool(no_such_option=1)


def test_lease_run(pool):
    with pool.lease() as sb:
        assert sb.id.startswith("sb-")
        assert sb.run("echo hi").stdout == "hi\n"
    # Destroyed on exit: never recycled.
    with pytest.raises(ztee.ClosedError):
        sb.run("true")


def test_stats(pool):
    before = pool.stats()
    with pool.lease() as sb:
        sb.run("true")
        s = pool.stats()
        assert s["leased"] == 1
    assert set(s) == {"ready", "starting", "leased", "created", "failed", "leases",
                      "lease_timeouts", "consecutive_failures", "backing_off", "last_error",
                      "lease_wait_hist"}
    assert s["leases"] == before["leases"] + 1
    assert s["created"] >= s["leases"]
    assert s["failed"] == 0 and s["consecutive_failures"] == 0
    assert s["backing_off"] is False and s["last_error"] == ""
    assert len(s["lease_wait_hist"]) == 8
    assert sum(s["lease_wait_hist"]) == s["leases"]
    assert s["ready"] + s["starting"] + s["leased"] <= 2


def test_two_leases_differ_and_exhaustion(pool):
    with pool.lease() as a, pool.lease() as b:
        assert a.id != b.id
        a.write_file("/tmp/mine", "a")
        assert b.run("cat /tmp/mine 2>/dev/null || echo none").stdout == "none\n"
        # max_total is 2: a third lease times out.
        timeouts = pool.stats()["lease_timeouts"]
        t0 = time.monotonic()
        with pytest.raises(ztee.TimeoutError):
            pool.lease(timeout=0.3)
        assert time.monotonic() - t0 < 10
        assert pool.stats()["lease_timeouts"] == timeouts + 1


def test_pause_resume(pool):
    with pool.lease() as sb:
        sb.pause()
        sb.resume()
        assert sb.run("echo ok").stdout == "ok\n"
        sb.pause()
        t = threading.Timer(0.5, sb.resume)
        t.start()
        t0 = time.monotonic()
        # The exec waits for the resume (and the GIL is free for the timer).
        assert sb.run("echo after").stdout == "after\n"
        assert time.monotonic() - t0 >= 0.4
        t.join()


def test_snapshot_and_clone(rt, tmp_path):
    tpl = str(tmp_path / "tpl")
    with ztee.Sandbox(runtime=rt, snapshottable=True) as src:
        src.write_file("/tmp/from-template", "tpl\n")
        with pytest.raises(ztee.InvalidArgumentError):
            src.snapshot("relative/tpl")
        src.snapshot(tpl)
        with pytest.raises(ztee.ClosedError):
            src.run("true")
    assert os.path.exists(os.path.join(tpl, "template.json"))

    # guest_aslr: the clone's own choice, not the template's default.
    with ztee.Sandbox(runtime=rt, template_dir=tpl, guest_aslr=True) as clone:
        assert clone.run("echo hi").stdout == "hi\n"
        assert clone.read_file("/tmp/from-template") == b"tpl\n"
        assert clone.run("cat /proc/sys/kernel/randomize_va_space").stdout == "2\n"
    with pytest.raises(TypeError, match="guest_aslr"):
        ztee.Sandbox(runtime=rt, template_dir=tpl, guest_aslr="off")

    # A pool of clones of that template; close() keeps leased sandboxes.
    with ztee.Pool(runtime=rt, template_dir=tpl, min_ready=1, max_total=2, guest_aslr=False,
                   warm_up="echo w >> /tmp/warm-count") as p:
        sb = p.lease(timeout=60)
        p.close()
        with pytest.raises(ztee.ClosedError):
            p.lease(timeout=1)
        assert p.stats()["leases"] == 1
        with sb:
            assert sb.run("cat /tmp/from-template").stdout == "tpl\n"
            assert sb.run("cat /proc/sys/kernel/randomize_va_space").stdout == "0\n"
            assert sb.run("cat /tmp/warm-count").stdout == "w\n"


def test_not_snapshottable(pool, tmp_path):
    with pool.lease() as sb:
        with pytest.raises(ztee.InvalidArgumentError):
            sb.snapshot(str(tmp_path / "never"))
        sb.ping()  # refused arguments leave the sandbox as it was
    assert not os.path.exists(tmp_path / "never")
