"""Lifecycle: destroy twice, handles after destroy, context managers, free order.
Uses its own sandbox (module-scoped fixture in conftest)."""
import gc

import pytest

import ztee


def test_ping(sb):
    sb.ping()


def test_free_runtime_first(sb):
    # The fixture's runtime is only referenced by the sandbox: drop ours and
    # collect; the C handle keeps the runtime alive.
    sb.runtime.close()
    gc.collect()
    assert sb.run("echo alive").stdout == "alive\n"


def test_destroy_twice(sb):
    sb.destroy()
    with pytest.raises(ztee.ClosedError) as ei:
        sb.destroy()
    assert ei.value.code == -9
    with pytest.raises(ztee.ClosedError):
        sb.run("true")
    with pytest.raises(ztee.ClosedError):
        sb.ping()
    sb.close()
    sb.close()  # idempotent
    with pytest.raises(ztee.ClosedError):
        sb.id


def test_network_policy():
    """allow= reaches the C ABI: a bad entry is refused with the entry quoted;
    a good one gives the guest eth0 (no packet is sent here)."""
    with pytest.raises(ztee.InvalidArgumentError, match='"198.18.0.10:99999"'):
        ztee.Sandbox(allow=["198.18.0.10:99999"])
    with pytest.raises(TypeError):
        ztee.Sandbox(allow="198.18.0.10:80")
    assert ztee.has_feature("network") is True
    with ztee.Sandbox(allow=["198.18.0.10:47080/tcp"], dns="198.18.0.53") as sb:
        assert sb.run("ls /sys/class/net").stdout == "eth0\nlo\n"
        assert sb.run("cat /etc/resolv.conf").stdout == "nameserver 198.18.0.53\n"
