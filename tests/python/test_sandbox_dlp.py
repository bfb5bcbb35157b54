"""Sandbox(dlp=...): output DLP on a plain sandbox's execs and reads."""
import os

import pytest

import ztee

IMAGE_DIR = os.environ.get("ZTEE_IMAGE_DIR") or "/var/lib/ztee/images/default"


@pytest.fixture(scope="module")
def dsb():
    rt = ztee.Runtime(image_dir=IMAGE_DIR)
    with ztee.Sandbox(runtime=rt, dlp=True, dlp_block=["ssn"]) as box:
        yield box


def test_collected_output_is_redacted_and_counted(dsb):
    r = dsb.exec(["sh", "-c", "printf 'pay 4111 1111 1111 1111\\n'; echo bob@example.com >&2"])
    assert r.exit_code == 0
    assert r.stdout == "pay [REDACTED:card]\n"
    assert r.stderr == "[REDACTED:email]\n"
    assert r.dlp_findings == 2


def test_streamed_output_never_carries_the_raw_value(dsb):
    seen = []
    r = dsb.exec(["sh", "-c", "printf 'id 4111 1111'; sleep 0.3; printf ' 1111 1111 end\\n'"],
                 on_stdout=seen.append)
    assert r.exit_code == 0
    joined = b"".join(x if isinstance(x, bytes) else x.encode() for x in seen)
    assert joined == b"id [REDACTED:card] end\n"
    assert all(b"4111" not in (x if isinstance(x, bytes) else x.encode()) for x in seen)


def test_block_mode_withholds_output_and_read(dsb):
    with pytest.raises(ztee.Error) as e:
        dsb.exec(["echo", "219-09-9999"])
    assert e.value.status_name == "ZTEE_E_PERMISSION"
    assert "219-09-9999" not in str(e.value)
    dsb.write_file("/tmp/c.txt", b"card=5555555555554444\n")
    assert dsb.read_file("/tmp/c.txt") == b"card=[REDACTED:card]\n"


def test_unknown_detector_is_refused():
    with pytest.raises(ztee.InvalidArgumentError):
        ztee.Sandbox(dlp_block=["no_such_detector"])
    with pytest.raises(TypeError):
        ztee.Sandbox(dlp_block="card")
