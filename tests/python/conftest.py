import os

import pytest

import ztee

IMAGE_DIR = os.environ.get("ZTEE_IMAGE_DIR") or "/var/lib/ztee/images/default"


@pytest.fixture(scope="module")
def sb():
    """One booted sandbox per test module (a boot takes seconds under TCG).
    Without the guest image this fails, never skips: CI always builds it."""
    manifest = os.path.join(IMAGE_DIR, "manifest.json")
    if not os.path.exists(manifest):
        pytest.fail(f"no guest image at {IMAGE_DIR} (missing {manifest}): "
                    f"run `ztee image build --out {IMAGE_DIR}` or set ZTEE_IMAGE_DIR",
                    pytrace=False)
    rt = ztee.Runtime(image_dir=IMAGE_DIR)
    with ztee.Sandbox(runtime=rt) as box:
        yield box
