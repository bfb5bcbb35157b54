"""The control plane from Python: policies, the audit log and the gate over
real sandboxes. One pool serves the module (one boot, then clones)."""
import os
import threading
import time

import pytest

import ztee

from conftest import IMAGE_DIR

POLICY = """{
  "version": 1,
  "tiers": {
    "L0": {"action": "run", "timeout_ms": 30000},
    "L2": {"action": "audit", "timeout_ms": 30000},
    "L4": {"action": "approve", "approval_timeout_ms": 2500},
    "L5": {"action": "deny"}
  },
  "rules": [
    {"name": "forbidden", "tool": "format_disk", "tier": "L5"},
    {"name": "pii", "labels": ["pii"], "tier": "L4"},
    {"name": "reads", "tool": ["read_file", "cat"], "tier": "L0"},
    {"name": "writes", "tool": "write_file", "tier": "L2"},
    {"name": "code", "tool": ["python", "shell"], "tier": "L4"}
  ]
}
"""

SECRET = "zt-py-7Hq2-LIVE-4411"
DIR_SECRET = "zt-dir-K9-LIVE-0007"
KEY = b"py-audit-key"


@pytest.fixture(scope="module")
def rt():
    manifest = os.path.join(IMAGE_DIR, "manifest.json")
    if not os.path.exists(manifest):
        pytest.fail(f"no guest image at {IMAGE_DIR} (missing {manifest}): "
                    f"run `ztee image build --out {IMAGE_DIR}` or set ZTEE_IMAGE_DIR", pytrace=False)
    return ztee.Runtime(image_dir=IMAGE_DIR)


@pytest.fixture(scope="module")
def pool(rt):
    with ztee.Pool(runtime=rt, min_ready=1, max_total=2, lease_timeout=60) as p:
        yield p


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    (d / "secrets").mkdir()
    (d / "secrets" / "DIR_KEY").write_text(DIR_SECRET + "\n")
    return d


class Approvals:
    """The module gate's approver: each test sets `fn`."""

    def __init__(self):
        self.fn = None
        self.requests = []

    def __call__(self, req):
        self.requests.append(req)
        if self.fn is None:
            return None
        return self.fn(req)


@pytest.fixture(scope="module")
def env(rt, pool, workdir):
    log_path = str(workdir / "audit.jsonl")
    audit = ztee.AuditLog(log_path, durability="fsync", hmac_key=KEY)
    approvals = Approvals()
    gate = ztee.Gate(runtime=rt, policy=ztee.Policy.parse(POLICY), audit=audit, approver=approvals,
                     secrets={"API_KEY": SECRET}, pool=pool)
    yield gate, approvals, log_path
    gate.close()
    audit.close()


def log_text(path):
    with open(path) as f:
        return f.read()


# ---- policy -------------------------------------------------------------------------


def test_policy_parse_error_names_the_line():
    bad = POLICY.replace('"tier": "L2"}', '"tier": "L2", "colour": "red"}')
    with pytest.raises(ztee.InvalidArgumentError) as e:
        ztee.Policy.parse(bad)
    assert "line 13" in str(e.value) and "colour" in str(e.value)
    with pytest.raises(ztee.InvalidArgumentError, match="line 3"):
        ztee.Policy.parse('{"version": 1,\n "tiers": {\n  "L0": {"action": "launch"}}}')
    with pytest.raises(ztee.NotFoundError):
        ztee.Policy.load("/nonexistent/policy.json")


def test_policy_classify(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(POLICY)
    p = ztee.Policy.load(path)
    d = p.classify(tool="cat", command="cat /etc/hostname")
    assert (d.tier, d.action, d.rule, d.rule_index) == (0, "run", "reads", 2)
    assert "L0 run" in d.reason
    assert p.classify(tool="write_file", command="true").action == "audit"
    assert p.classify(tool="read_file", command="cat x", labels=["pii"]).rule == "pii"
    assert p.classify(tool="format_disk").action == "deny"
    none = p.classify(tool="launch_rocket", command="go")
    assert none.action == "deny" and none.rule_index == -1 and none.rule == ""
    assert "fail closed" in none.reason
    default = ztee.Policy.default()
    assert default.classify(tool="read_file", command="cat x").action == "run"
    assert default.classify(tool="read_file", command="cat x", writes=["/x"]).action != "run"
    assert default.classify(tool="python", command="python3 x.py").action == "approve"
    assert default.classify(tool="grep", command="grep x", network=["198.18.0.1"]).tier == 4
    assert '"read-only-tools"' in ztee.Policy.default_json()
    with pytest.raises(TypeError):
        p.classify(tool="cat", labels="pii")


# ---- gate ---------------------------------------------------------------------------


def test_each_tier(env, pool):
    gate, _, log_path = env
    before = pool.stats()["leases"]
    r = gate.call("cat", command="cat /etc/hostname >/dev/null && echo read-ok", trace_id="p-run")
    assert r.ran and r.decision.action == "run" and r.decision.tier == 0
    assert r.stdout == "read-ok\n" and r.result.exit_code == 0
    assert r.sandbox_id.startswith("sb-") and r.denial == ""
    r = gate.call("write_file", argv=["sh", "-c", "echo data > /tmp/f && cat /tmp/f"], writes=["/tmp/f"],
                  trace_id="p-audit")
    assert r.ran and r.decision.action == "audit" and r.stdout == "data\n"
    assert pool.stats()["leases"] == before + 2  # both served by the pool

    r = gate.call("format_disk", command="mkfs /dev/vda", trace_id="p-deny")
    assert not r.ran and r.result is None and r.decision.rule == "forbidden" and r.denial
    r = gate.call("launch_rocket", command="true")
    assert not r.ran and "fail closed" in r.denial
    r = gate.call("cat", command="true", network=["198.18.0.9"])
    assert not r.ran and 'network "198.18.0.9" is not allowed at tier L0' in r.denial
    assert pool.stats()["leases"] == before + 2
    with pytest.raises(ztee.InvalidArgumentError, match="nothing to run"):
        gate.call("cat")
    with pytest.raises(ztee.InvalidArgumentError, match="not both"):
        gate.call("cat", command="true", argv=["true"])
    log = log_text(log_path)
    assert '"trace":"p-run","event":"exec"' in log
    assert '"trace":"p-deny","event":"denied"' in log


def test_approval_granted_at_once_and_by_name(env):
    gate, approvals, _ = env
    left = []
    approvals.fn = lambda req: left.append(req.time_left) or True  # while the request is pending
    r = gate.call("python", command="python3 -c 'print(6*7)'", trace_id="p-ok")
    assert r.ran and r.decision.action == "approve" and r.approved_by == "approver" and r.stdout == "42\n"
    req = approvals.requests[-1]
    assert req.description["tool"] == "python" and req.description["tier"] == "L4"
    assert req.description["trace"] == "p-ok" and 0 < left[0] <= 2.5
    approvals.fn = lambda req: "alice"
    r = gate.call("shell", command="echo named")
    assert r.ran and r.approved_by == "alice"


def test_approval_from_another_thread(env):
    gate, approvals, _ = env
    threads = []

    def later(req):
        def answer():
            time.sleep(0.3)
            req.approve("bob via webhook")
        t = threading.Thread(target=answer)
        t.start()
        threads.append(t)

    approvals.fn = later
    t0 = time.monotonic()
    r = gate.call("shell", command="echo later", trace_id="p-thread")
    for t in threads:
        t.join()
    assert r.ran and r.approved_by == "bob via webhook" and r.stdout == "later\n"
    assert time.monotonic() - t0 >= 0.3
    # The token is spent.
    with pytest.raises(ztee.NotFoundError):
        gate.approve(approvals.requests[-1].token, "again")


def test_approval_denied(env, pool):
    gate, approvals, _ = env
    before = pool.stats()["leases"]
    approvals.fn = lambda req: False
    r = gate.call("shell", command="echo no")
    assert not r.ran and r.result is None and "the approver said no" in r.denial
    approvals.fn = lambda req: req.deny("not today", "carol")
    r = gate.call("shell", command="echo no")
    assert not r.ran and r.denial == "denied by carol: not today"
    assert pool.stats()["leases"] == before


def test_approval_late_is_denied_and_ignored(env):
    gate, approvals, log_path = env
    approvals.fn = lambda req: None  # never answered in time
    t0 = time.monotonic()
    r = gate.call("shell", command="echo late", trace_id="p-late")
    assert time.monotonic() - t0 >= 2.5
    assert not r.ran and "no approval within 2500 ms" in r.denial
    token = approvals.requests[-1].token
    with pytest.raises(ztee.NotFoundError):
        gate.approve(token, "too-late")
    assert f'"event":"approval_ignored","token":"{token}"' in log_text(log_path)


def test_raising_approver_denies(env):
    gate, approvals, _ = env

    def boom(req):
        raise RuntimeError("chat service down")

    approvals.fn = boom
    r = gate.call("shell", command="echo x")
    assert not r.ran and "RuntimeError: chat service down" in r.denial


def test_secrets_from_dict_scrubbed_from_output_and_log(env):
    gate, approvals, log_path = env
    streamed = []
    r = gate.call("write_file",
                  command='echo "$API_KEY"; cat /tmp/cred; echo; printf %s "$API_KEY" | base64; '
                          'echo "err $API_KEY" >&2',
                  env={"API_KEY": "secret://API_KEY", "PLAIN": "visible-value"},
                  files={"/tmp/cred": "secret://API_KEY", "/tmp/bin": b"\x00\x01"},
                  on_stderr=streamed.append, trace_id="p-secret")
    assert r.ran
    assert r.stdout == "[secret:API_KEY]\n[secret:API_KEY]\n[secret:API_KEY]\n"
    assert "".join(streamed) == "err [secret:API_KEY]\n" and r.stderr == ""
    log = log_text(log_path)
    assert SECRET not in log and "visible-value" not in log
    assert '"trace":"p-secret","event":"secrets","names":["API_KEY"]' in log
    # Unknown: NotFoundError, nothing runs.
    with pytest.raises(ztee.NotFoundError, match="secret://NOPE"):
        gate.call("cat", command="true", env={"X": "secret://NOPE"})


def test_secrets_dir_callable_and_env(rt, pool, workdir, monkeypatch):
    calls = []

    def resolve(name):
        calls.append(name)
        return "from-callable-5521" if name == "CB_KEY" else None

    monkeypatch.setenv("ZTEE_PYTEST_SECRET_ENV_KEY", "from-env-8830")
    log_path = str(workdir / "dir.jsonl")
    with ztee.AuditLog(log_path, durability="none") as audit, \
            ztee.Gate(runtime=rt, policy=ztee.Policy.parse(POLICY), audit=audit, secrets=resolve,
                      secrets_dir=str(workdir / "secrets"), secrets_env_prefix="ZTEE_PYTEST_SECRET_",
                      pool=pool) as gate:
        r = gate.call("cat", command='echo "$A $B $C"',
                      env={"A": "secret://CB_KEY", "B": "secret://DIR_KEY", "C": "secret://ENV_KEY"})
        assert r.ran and r.stdout == "[secret:CB_KEY] [secret:DIR_KEY] [secret:ENV_KEY]\n"
        # The callable is asked first; unknown names fall through to the dir, then the environment.
        assert calls == ["CB_KEY", "DIR_KEY", "ENV_KEY"]
        with pytest.raises(ztee.NotFoundError) as e:
            gate.call("cat", command="true", env={"X": "secret://MISSING"})
        assert "resolver callback" in str(e.value) and "ZTEE_PYTEST_SECRET_MISSING" in str(e.value)

        def raising(name):
            raise KeyError("vault unreachable")

    log = log_text(log_path)
    assert DIR_SECRET not in log and "from-callable-5521" not in log and "from-env-8830" not in log
    with ztee.Gate(runtime=rt, policy=ztee.Policy.parse(POLICY), secrets=raising, pool=pool) as gate:
        with pytest.raises(KeyError, match="vault unreachable"):
            gate.call("cat", command="true", env={"X": "secret://ANY"})


# ---- audit log ----------------------------------------------------------------------


def test_audit_log_append_verify_tamper(tmp_path):
    path = tmp_path / "own.jsonl"
    with ztee.AuditLog(path, durability="batch", hmac_key=KEY) as log:
        assert log.append("login", "t-1", {"user": "alice", "n": 3}) == 1
        assert log.append("note", fields={"text": "two\nlines", "list": [1, None]}) == 2
        with pytest.raises(ztee.InvalidArgumentError, match='"seq"'):
            log.append("x", fields={"seq": 1})
        log.flush()
    rep = ztee.verify_audit_log(path, key=KEY)
    assert rep.ok and rep.records == 2 and rep.problem == ""
    assert not ztee.verify_audit_log([path], key=b"wrong")
    text = path.read_text()
    assert text.count("\n") == 2
    edited = tmp_path / "edited.jsonl"
    edited.write_text(text.replace('"n":3', '"n":4'))
    rep = ztee.verify_audit_log([edited])
    assert not rep.ok and "record 2" in rep.problem
    with pytest.raises(ztee.InvalidArgumentError):
        ztee.AuditLog(tmp_path / "x.jsonl", durability="sometimes")


def test_gate_log_verifies_and_edit_is_found(env, tmp_path):
    gate, _, log_path = env
    r = gate.call("cat", command="true", trace_id="p-verify")
    assert r.ran
    rep = ztee.verify_audit_log([log_path], key=KEY)
    assert rep.ok, rep.problem
    assert rep.records >= 20
    text = log_text(log_path)
    pos = text.index('"code":0')
    copy = tmp_path / "gate-edited.jsonl"
    copy.write_text(text[:pos + 7] + "1" + text[pos + 8:])
    bad = ztee.verify_audit_log([copy], key=KEY)
    assert not bad.ok and "HMAC does not match" in bad.problem


def test_policy_from_python_structures():
    p = ztee.Policy.from_dict({"version": 1, "tiers": {"L0": {"action": "run"}, "L5": {"action": "deny"}},
                               "rules": [{"name": "reads", "tool": ["read_*"], "tier": "L0"},
                                         {"name": "rest", "tool": "*", "tier": "L5"}]})
    assert p.classify(tool="read_file", command="cat x").rule == "reads"
    assert p.classify(tool="python", command="x").action == "deny"
    with pytest.raises(ztee.InvalidArgumentError, match="unknown tier"):
        ztee.Policy.from_dict({"version": 1, "rules": [{"tool": "x", "tier": "L8"}]})


def test_gate_output_dlp_redacts_and_blocks(rt, pool):
    g = ztee.Gate(runtime=rt, dlp=True, pool=pool)
    r = g.call("read_file", command="echo 'card 4111-1111-1111-1111, mail jane.doe@example.org'")
    assert r.ran and not r.blocked
    assert r.stdout == "card [REDACTED:card], mail [REDACTED:email]\n"
    assert r.dlp_findings == 2
    g.close()
    g = ztee.Gate(runtime=rt, dlp_block=["card"], pool=pool)
    r = g.call("read_file", command="echo 4111111111111111")
    assert r.ran and r.blocked and r.stdout == "" and "output blocked" in r.denial and "4111" not in r.denial
    g.close()
    with pytest.raises(ztee.InvalidArgumentError, match="no_such_detector"):
        ztee.Gate(runtime=rt, dlp_block=["no_such_detector"])
