"""Image trust from Python: a runtime with trusted keys refuses an unsigned
image before any VMM starts; a key that is not ECDSA P-256 is refused at once."""
import subprocess

import pytest

import ztee

from conftest import IMAGE_DIR


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(d / "k.key")],
                   check=True)
    subprocess.run(["openssl", "ec", "-in", str(d / "k.key"), "-pubout", "-out", str(d / "k.pub")], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "genrsa", "-out", str(d / "rsa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(d / "rsa.key"), "-pubout", "-out", str(d / "rsa.pub")], check=True,
                   capture_output=True)
    return d


def test_unsigned_image_refused_with_trusted_keys(keys, tmp_path):
    # A copy of the manifest without a signature beside it: the runtime must
    # refuse before it looks any further (no VMM starts).
    rt = ztee.Runtime(image_dir=IMAGE_DIR, state_dir=str(tmp_path), trusted_keys=[str(keys / "k.pub")])
    with pytest.raises(ztee.ImageError, match="manifest.json.sig|unsigned|signature"):
        ztee.Sandbox(runtime=rt)
    rt.close()
    # The PEM text works as well as a path.
    pem = (keys / "k.pub").read_text()
    rt = ztee.Runtime(image_dir=IMAGE_DIR, state_dir=str(tmp_path), trusted_keys=[pem])
    with pytest.raises(ztee.ImageError):
        ztee.Sandbox(runtime=rt)
    rt.close()


def test_bad_trusted_keys(keys, tmp_path):
    with pytest.raises(ztee.InvalidArgumentError):
        ztee.Runtime(image_dir=IMAGE_DIR, state_dir=str(tmp_path), trusted_keys=[str(keys / "rsa.pub")])
    with pytest.raises(ztee.InvalidArgumentError):
        ztee.Runtime(image_dir=IMAGE_DIR, state_dir=str(tmp_path), trusted_keys=["/nonexistent/key.pub"])
    with pytest.raises(TypeError):
        ztee.Runtime(trusted_keys=str(keys / "k.pub"))
