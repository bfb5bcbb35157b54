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
