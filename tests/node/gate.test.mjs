// The control plane from Node: policies, the gate (tiers, approvals answered
// at once, later, never, or by a throwing approver; secrets from a JS
// resolver scrubbed from output and log; AbortSignal) and the audit log,
// against real sandboxes from one pool shared by the file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  Runtime, Pool, Policy, AuditLog, Gate, Sandbox, verifyAuditLog, ClosedError, InternalError,
  ImageError, InvalidArgumentError, NotFoundError, TimeoutError,
} from 'ztee';
import { sandboxDirs, tempStateDir, waitFor } from './helpers.mjs';

const POLICY = `{
  "version": 1,
  "tiers": {
    "L0": {"action": "run", "timeout_ms": 30000},
    "L4": {"action": "approve", "approval_timeout_ms": 1500},
    "L5": {"action": "deny"}
  },
  "rules": [
    {"name": "reads", "tool": "read_file", "tier": "L0"},
    {"name": "code", "tool": ["python", "shell"], "tier": "L4"},
    {"name": "never", "tool": "format_disk", "tier": "L5"}
  ]
}`;
const SECRET = 'node-s3cr3t-VALUE-4471';
const ASYNC_SECRET = 'node-later-SECRET-0815';

const stateDir = tempStateDir('gate');
const logPath = path.join(stateDir, 'audit.jsonl');
let rt;
let pool;
let log;
let gate;
let mode = 'now';  // how the approver answers
const late = [];   // answers given after the call returned
const asked = [];  // the approvals the approver saw

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  rt = await Runtime.create({ stateDir });
  pool = await Pool.create({ runtime: rt, minReady: 1, maxTotal: 2 });
  log = await AuditLog.open({ path: logPath, hmacKey: 'k', durability: 'batch', batchMs: 20 });
  const policy = Policy.parse(POLICY);
  gate = await Gate.create(rt, {
    policy,
    audit: log,
    pool,
    approver: (a) => {
      asked.push(a);
      switch (mode) {
        case 'now':
          a.approve('alice');
          return undefined;
        case 'later':
          return sleep(200).then(() => a.approve('bob'));
        case 'no':
          a.deny('not today', 'carol');
          return undefined;
        case 'throw':
          throw new Error('chat service down');
        case 'reject':
          return sleep(50).then(() => { throw new Error('webhook returned 502'); });
        case 'silent':
          late.push(sleep(2000).then(() => assert.throws(() => a.approve('too late'), NotFoundError)));
          return undefined;
        default:
          return undefined;  // never answered
      }
    },
    secrets: (name) => {
      if (name === 'TOKEN') return SECRET;
      if (name === 'ATOKEN') return sleep(50).then(() => Buffer.from(ASYNC_SECRET));
      if (name === 'BROKEN') throw new Error('vault sealed');
      if (name === 'REJECTS') return Promise.reject(new Error('vault unreachable'));
      return undefined;
    },
  });
  policy.close();  // the gate keeps its own reference
});

after(async () => {
  gate?.close();
  log?.close();
  await pool?.close();
  rt?.close();
  // Every call's sandbox was destroyed after it: none is left in the state dir.
  assert.ok(await waitFor(() => sandboxDirs(stateDir).length === 0, 30000), `left: ${sandboxDirs(stateDir).join(', ')}`);
  fs.rmSync(stateDir, { recursive: true, force: true });
});

describe('policy', () => {
  test('a parse error names the line', () => {
    assert.throws(() => Policy.parse('{"version": 1,\n"rules": [{"tool": "x", "tier": "L9"}]}'),
      (e) => e instanceof InvalidArgumentError && /line 2/.test(e.message));
    const file = path.join(stateDir, 'bad.json');
    fs.writeFileSync(file, '{"version": 1,\n\n"tiers": {"L0": {"action": "hop"}}}');
    assert.throws(() => Policy.load(file), (e) => e instanceof InvalidArgumentError &&
      e.message.includes(file) && /line 3/.test(e.message));
    assert.throws(() => Policy.load(path.join(stateDir, 'missing.json')), NotFoundError);
    const ok = path.join(stateDir, 'ok.json');
    fs.writeFileSync(ok, POLICY);
    assert.equal(Policy.load(ok).classify({ tool: 'format_disk', command: 'x' }).rule, 'never');
  });

  test('classify', () => {
    const p = Policy.default();
    const py = p.classify({ tool: 'python', command: 'python3 -c 1' });
    assert.deepEqual({ ...py, ruleIndex: undefined },
      { tier: 4, action: 'approve', ruleIndex: undefined, rule: 'code-execution',
        reason: 'rule "code-execution" -> L4 approve' });
    assert.ok(Number.isInteger(py.ruleIndex) && py.ruleIndex >= 0);
    const d = p.classify({ tool: 'mystery', command: 'x' });
    assert.equal(d.action, 'deny');
    assert.equal(d.ruleIndex, -1);
    assert.equal(p.classify({ tool: 'read_file' }).action, 'run');
    assert.equal(p.classify({ tool: 'read_file', labels: ['pii'] }).action, 'approve');
    assert.match(Policy.defaultJson, /"version": 1/);
    assert.throws(() => p.classify({ command: 'x' }), InvalidArgumentError);
    p.close();
    assert.throws(() => p.classify({ tool: 'read_file' }), ClosedError);
  });
});

describe('gate', () => {
  test('run tier and deny tier', async () => {
    const r = await gate.call({ tool: 'read_file', command: 'echo read-ok', traceId: 'node-1' });
    assert.equal(r.ran, true);
    assert.equal(r.decision.action, 'run');
    assert.equal(r.decision.rule, 'reads');
    assert.equal(r.result.stdout, 'read-ok\n');
    assert.match(r.sandboxId, /^sb-/);
    const d = await gate.call({ tool: 'format_disk', command: 'true' });
    assert.equal(d.ran, false);
    assert.equal(d.decision.rule, 'never');
    assert.equal(d.decision.action, 'deny');
    assert.equal(d.result, null);
    assert.notEqual(d.denial, '');
    await assert.rejects(gate.call({ tool: 'read_file' }), InvalidArgumentError);
  });

  test('approvals: at once, later, denied', async () => {
    for (const [m, who] of [['now', 'alice'], ['later', 'bob']]) {
      mode = m;
      asked.length = 0;
      const r = await gate.call({ tool: 'python', argv: ['python3', '-c', 'print(6*7)'], labels: ['x'] });
      assert.equal(r.ran, true, `${m}: ${r.denial}`);
      assert.equal(r.approvedBy, who);
      assert.equal(r.result.stdout, '42\n');
      const a = asked[0];
      assert.equal(a.description.tool, 'python');
      assert.equal(a.description.tier, 'L4');
      assert.deepEqual(a.description.labels, ['x']);
      assert.equal(JSON.parse(a.descriptionJson).rule, 'code');
      assert.ok(a.deadlineMs > 0 && a.deadlineMs <= 1500, `deadline ${a.deadlineMs}`);
    }
    mode = 'no';
    const r = await gate.call({ tool: 'shell', command: 'true' });
    assert.equal(r.ran, false);
    assert.equal(r.denial, 'denied by carol: not today');
  });

  test('a throwing or rejecting approver denies; silence denies at the deadline', async () => {
    mode = 'throw';
    let r = await gate.call({ tool: 'shell', command: 'true' });
    assert.equal(r.ran, false);
    assert.match(r.denial, /the approver threw: chat service down/);
    mode = 'reject';
    r = await gate.call({ tool: 'shell', command: 'true' });
    assert.equal(r.ran, false);
    assert.match(r.denial, /the approver rejected: webhook returned 502/);
    mode = 'silent';
    const t0 = Date.now();
    r = await gate.call({ tool: 'shell', command: 'true' });
    assert.equal(r.ran, false);
    assert.match(r.denial, /no approval within 1500 ms/);
    assert.ok(Date.now() - t0 >= 1400, 'denied before the deadline');
    await Promise.all(late);  // the late answer was refused with NotFoundError
    // The JS thread stayed free while the gate waited: timers kept running.
    mode = 'never';
    let ticks = 0;
    const timer = setInterval(() => ticks++, 50);
    r = await gate.call({ tool: 'shell', command: 'true' });
    clearInterval(timer);
    assert.equal(r.ran, false);
    assert.ok(ticks >= 15, `only ${ticks} timer ticks during a 1.5 s wait`);
  });

  test('secrets from a JS resolver (sync and async) are scrubbed', async () => {
    mode = 'now';
    let streamed = '';
    const r = await gate.call({
      tool: 'shell',
      traceId: 'node-secret',
      command: 'printf %s "$TOKEN" | head -c 5; sleep 0.2; printf \'%s\\n\' "$TOKEN" | tail -c +6; ' +
        'cat /tmp/tok; echo; echo "${#TOKEN} ${#A}"; echo "$A" >&2; printf %s "$TOKEN" | base64 >&2',
      env: { TOKEN: 'secret://TOKEN', A: 'secret://ATOKEN' },
      files: { '/tmp/tok': 'secret://ATOKEN' },
      onStdout: (s) => { streamed += s; },
    });
    assert.equal(r.ran, true, r.denial);
    assert.equal(streamed, `[secret:TOKEN]\n[secret:ATOKEN]\n${SECRET.length} ${ASYNC_SECRET.length}\n`);
    assert.equal(r.result.stdout, '');  // streamed, not collected
    assert.equal(r.result.stderr, '[secret:ATOKEN]\n[secret:TOKEN]\n');
  });

  test('an unknown, a throwing, a rejecting and a silent secret resolver', async () => {
    await assert.rejects(gate.call({ tool: 'read_file', command: 'true', env: { X: 'secret://NOPE' } }),
      (e) => e instanceof NotFoundError && e.message.includes('secret://NOPE'));
    await assert.rejects(gate.call({ tool: 'read_file', command: 'true', env: { X: 'secret://BROKEN' } }),
      (e) => e instanceof InternalError && e.message.includes('vault sealed'));
    await assert.rejects(gate.call({ tool: 'read_file', command: 'true', files: { '/tmp/x': 'secret://REJECTS' } }),
      (e) => e instanceof InternalError && e.message.includes('vault unreachable'));
    const slow = await Gate.create(rt, { secrets: () => new Promise(() => {}), secretTimeoutMs: 300 });
    await assert.rejects(slow.call({ tool: 'read_file', command: 'true', env: { X: 'secret://S' } }),
      (e) => e instanceof TimeoutError && /did not answer for "S" within 300 ms/.test(e.message));
    slow.close();
  });

  test('AbortSignal ends a running call and an approval wait', async () => {
    const t0 = Date.now();
    await assert.rejects(
      gate.call({ tool: 'read_file', command: 'sleep 30', signal: AbortSignal.timeout(1500) }),
      (e) => e.name === 'TimeoutError' && e.result?.ran === true && e.result.result.cancelled === true);
    assert.ok(Date.now() - t0 < 20000, `the aborted call took ${Date.now() - t0} ms`);
    mode = 'never';
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('user pressed stop')), 200);
    const t1 = Date.now();
    await assert.rejects(gate.call({ tool: 'shell', command: 'true', signal: ac.signal }),
      (e) => e.message === 'user pressed stop' && e.result?.ran === false && /aborted/.test(e.result.denial));
    assert.ok(Date.now() - t1 < 1400, 'the abort waited for the approval deadline');
  });

  test('a throwing output callback kills the command and rejects with its error', async () => {
    const boom = new Error('sink full');
    const t0 = Date.now();
    await assert.rejects(gate.call({
      tool: 'read_file', command: 'echo first; sleep 30; echo never',
      onStdout: () => { throw boom; },
    }), (e) => e === boom);
    assert.ok(Date.now() - t0 < 20000, `the command ran on for ${Date.now() - t0} ms`);
  });

  test('a call in flight keeps a closed gate; later calls are refused', async () => {
    const g = await Gate.create(rt, { pool, policy: Policy.parse(POLICY) });
    const p = g.call({ tool: 'read_file', command: 'sleep 0.3; echo still-here' });
    g.close();
    const r = await p;
    assert.equal(r.result.stdout, 'still-here\n');
    await assert.rejects(g.call({ tool: 'read_file', command: 'true' }), ClosedError);
    assert.throws(() => g.approve('x', 'y'), ClosedError);
    // An approval of a call in flight can still be answered after close().
    const g2 = await Gate.create(rt, {
      pool, policy: Policy.parse(POLICY), approver: (a) => sleep(300).then(() => a.approve('after-close')),
    });
    const p2 = g2.call({ tool: 'shell', command: 'echo approved' });
    g2.close();
    const r2 = await p2;
    assert.equal(r2.approvedBy, 'after-close', r2.denial);
    assert.equal(r2.result.stdout, 'approved\n');
  });
});

describe('audit log', () => {
  test('verifies, holds no secret, and an edited copy is detected', async () => {
    assert.equal(typeof await log.append('note', 'node-1', { by: 'test' }), 'number');
    await assert.rejects(log.append('note', 'node-1', '"by":'), InvalidArgumentError);
    await log.flush();
    const rep = await verifyAuditLog([logPath], 'k');
    assert.equal(rep.ok, true, rep.problem);
    assert.ok(rep.records >= 20, `${rep.records} records`);
    const text = fs.readFileSync(logPath, 'utf8');
    assert.ok(!text.includes(SECRET) && !text.includes(ASYNC_SECRET), 'a secret value is in the audit log');
    assert.ok(text.includes('"event":"note"') && text.includes('secret'), 'records missing');
    const bad = path.join(stateDir, 'edited.jsonl');
    fs.writeFileSync(bad, text.replace('"trace":"node-1"', '"trace":"node-2"'));
    const edited = await verifyAuditLog(bad, Buffer.from('k'));
    assert.equal(edited.ok, false);
    assert.match(edited.problem, /HMAC does not match/);
    assert.equal((await verifyAuditLog(bad, 'wrong key')).ok, false);
    await assert.rejects(AuditLog.open({ path: logPath, durability: 'sometimes' }), InvalidArgumentError);
  });

});

describe('output DLP and image trust', () => {
  test('dlp redacts a card number; dlpBlock withholds the output; an unknown detector is refused', async () => {
    const g = await Gate.create(rt, { policy: Policy.parse(POLICY), pool, dlp: true });
    try {
      const r = await g.call({ tool: 'read_file', command: 'echo card 4111 1111 1111 1111' });
      assert.equal(r.ran, true);
      assert.equal(r.blocked, false);
      assert.equal(r.dlpFindings, 1);
      assert.equal(r.result.stdout, 'card [REDACTED:card]\n');
    } finally {
      g.close();
    }
    const b = await Gate.create(rt, { policy: Policy.parse(POLICY), pool, dlpBlock: ['card'] });
    try {
      const r = await b.call({ tool: 'read_file', command: 'echo 4111111111111111' });
      assert.equal(r.blocked, true);
      assert.equal(r.result.stdout, '');
      assert.match(r.denial, /output blocked/);
    } finally {
      b.close();
    }
    await assert.rejects(Gate.create(rt, { dlpBlock: ['no_such_detector'] }), InvalidArgumentError);
  });

  test('a runtime with trusted keys refuses an unsigned image before any VMM starts', async () => {
    const key = path.join(stateDir, 'trust.key');
    const pub = path.join(stateDir, 'trust.pub');
    execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key]);
    execFileSync('openssl', ['ec', '-in', key, '-pubout', '-out', pub], { stdio: 'ignore' });
    const trusting = await Runtime.create({ stateDir: path.join(stateDir, 'trust'), trustedKeys: [pub] });
    try {
      // The default image carries no signature: refused, naming the reason.
      await assert.rejects(Sandbox.create({ runtime: trusting }), (e) => e instanceof ImageError && /sig/.test(e.message));
    } finally {
      trusting.close();
    }
    await assert.rejects(Runtime.create({ stateDir, trustedKeys: ['/nonexistent/key.pub'] }), InvalidArgumentError);
    assert.throws(() => new Runtime({ stateDir, trustedKeys: 'not-a-list' }), InvalidArgumentError);
  });
});
