"""Workspaces: a host directory mounted read-only, the diff, the patch and the
reviewed export. One mounted sandbox for the whole module (a cold boot)."""
import json
import os

import pytest

import ztee
from conftest import IMAGE_DIR


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    base = tmp_path_factory.mktemp("workspace")
    host = base / "repo"
    host.mkdir()
    (host / "main.txt").write_text("one\n")
    (host / "other.txt").write_text("two\n")
    (host / "gone.txt").write_text("bye\n")
    log = base / "diff.jsonl"
    rt = ztee.Runtime(image_dir=IMAGE_DIR)
    sb = ztee.Sandbox(runtime=rt, mounts=[ztee.Mount(str(host), "/work")], diff_log=str(log))
    yield sb, host, log, base
    sb.close()


def test_bad_mounts_raise_before_anything_runs(tmp_path):
    rt = ztee.Runtime(image_dir=IMAGE_DIR)
    with pytest.raises(ztee.InvalidArgumentError, match="absolute"):
        ztee.Sandbox(runtime=rt, mounts=[("relative/dir", "/work")])
    with pytest.raises(ztee.InvalidArgumentError, match="/proc/x"):
        ztee.Sandbox(runtime=rt, mounts=[(str(tmp_path), "/proc/x")])
    with pytest.raises(ztee.NotFoundError):
        ztee.Sandbox(runtime=rt, mounts=[(str(tmp_path / "missing"), "/work")])
    with pytest.raises(TypeError):
        ztee.Sandbox(runtime=rt, mounts=str(tmp_path))
    assert ztee.has_feature("workspaces")


def test_guest_writes_stay_in_the_guest_and_show_in_the_diff(ws):
    sb, host, _, _ = ws
    r = sb.run("cat /work/main.txt && echo changed >> /work/main.txt && echo x >> /work/other.txt && "
               "rm /work/gone.txt && mkdir /work/sub && echo n > /work/sub/new.txt")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "one\n"
    assert (host / "main.txt").read_text() == "one\n"  # the host is untouched
    assert not (host / "sub").exists()
    changes = sb.diff("/work")
    by_path = {c.path: c for c in changes}
    assert set(by_path) == {"main.txt", "other.txt", "gone.txt", "sub", "sub/new.txt"}
    assert by_path["main.txt"].kind == "modified" and by_path["main.txt"].type == "file"
    assert by_path["gone.txt"].kind == "deleted"
    assert by_path["sub"].kind == "created" and by_path["sub"].type == "dir"
    new = by_path["sub/new.txt"]
    assert new.kind == "created" and new.size == 2 and new.mount == "/work" and len(new.sha256) == 64
    assert new.mode & 0o777 == 0o644 and new.link_target == ""
    assert all(c.mount == "/work" for c in changes)
    # None: the mounts and the guest's own filesystem.
    assert {c.path for c in sb.diff()} >= set(by_path)
    with pytest.raises(ztee.NotFoundError):
        sb.diff("/elsewhere")


def test_patch_shows_text_changes(ws):
    sb, _, _, _ = ws
    text = sb.patch("/work")
    assert "+changed" in text and "main.txt" in text
    only = sb.patch(paths=["other.txt"])
    assert "+x" in only and "main.txt" not in only


def test_export_applies_only_what_the_approver_approves(ws):
    sb, host, _, _ = ws
    asked = []

    def approve(change):
        asked.append(change.path)
        return change.path == "main.txt"

    res = sb.export_changes(approve=approve)
    assert sorted(asked) == ["gone.txt", "main.txt", "other.txt", "sub", "sub/new.txt"]
    assert [c.path for c in res.applied] == ["main.txt"]
    assert sorted(c.path for c in res.declined) == ["gone.txt", "other.txt", "sub", "sub/new.txt"]
    assert (host / "main.txt").read_text() == "one\nchanged\n"
    assert (host / "other.txt").read_text() == "two\n"
    assert (host / "gone.txt").exists() and not (host / "sub").exists()


def test_an_approver_that_raises_applies_nothing(ws):
    sb, host, _, _ = ws

    def approve(change):
        if change.path == "sub/new.txt":
            raise RuntimeError("reviewer crashed")
        return True

    with pytest.raises(RuntimeError, match="reviewer crashed"):
        sb.export_changes(paths=["sub", "gone.txt"], approve=approve)
    assert not (host / "sub").exists() and (host / "gone.txt").exists()


def test_a_change_edited_after_review_is_declined(ws):
    sb, host, _, _ = ws

    def approve(change):
        # The guest rewrites the file while the reviewer looks at it.
        assert sb.run("echo swapped > /work/sub/new.txt").exit_code == 0
        return True

    res = sb.export_changes(paths=["sub/new.txt"], approve=approve)
    assert res.applied == []
    assert [c.path for c in res.declined] == ["sub/new.txt"]
    assert res.declined[0].size == len("swapped\n")
    assert not (host / "sub").exists()


def test_export_to_a_destination_directory(ws):
    sb, host, _, base = ws
    dest = base / "dest"
    dest.mkdir()
    res = sb.export_changes(mount="/work", paths=["sub", "gone.txt"], dest_dir=str(dest))
    assert sorted(c.path for c in res.applied) == ["sub", "sub/new.txt"]
    assert (dest / "sub" / "new.txt").read_text() == "swapped\n"
    assert (host / "gone.txt").exists()  # deletions are not applied elsewhere
    with pytest.raises(ztee.NotFoundError):
        sb.export_changes(dest_dir=str(base / "no-such-dir"))
    with pytest.raises(ztee.InvalidArgumentError, match="nope.txt"):
        sb.export_changes(paths=["nope.txt"])


def test_a_host_edit_is_a_conflict_and_nothing_is_applied(ws):
    sb, host, _, _ = ws
    (host / "other.txt").write_text("edited on the host\n")
    with pytest.raises(ztee.ConflictError, match="other.txt") as e:
        sb.export_changes(paths=["other.txt", "sub"])
    assert e.value.status_name == "ZTEE_E_CONFLICT"
    assert (host / "other.txt").read_text() == "edited on the host\n"
    assert not (host / "sub").exists()


def test_destroy_writes_the_diff_log(ws):
    sb, _, log, _ = ws
    sid = sb.id
    sb.destroy()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 1 and records[0]["sandbox"] == sid
    ours = [c for c in records[0]["changes"] if c["mount"] == "/work"]
    assert [(c["kind"], c["path"]) for c in ours] == [
        ("deleted", "gone.txt"), ("modified", "main.txt"), ("modified", "other.txt"),
        ("created", "sub"), ("created", "sub/new.txt")]
