// The Node binding over real sandboxes: one sandbox booted for the file,
// shared by the tests (node --test runs them one after another).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import {
  Runtime, Sandbox, Process, ZteeError, InvalidArgumentError, NotFoundError, ClosedError, TimeoutError,
  version, hasFeature,
} from 'ztee';
import { leftovers, sandboxDirs, tempStateDir } from './helpers.mjs';

const stateDir = tempStateDir('sandbox');
let rt;
let sb;

before(async () => {
  rt = await Runtime.create({ stateDir });
  sb = await Sandbox.create({ runtime: rt });
});

after(async () => {
  if (sb?.alive) await sb.destroy();
  rt?.close();
  assert.deepEqual(sandboxDirs(stateDir), [], 'a sandbox was left in the state dir');
  fs.rmSync(stateDir, { recursive: true, force: true });
});

describe('module', () => {
  test('version, features, backend', () => {
    assert.match(version(), /^\d+\.\d+\.\d+$/);
    assert.equal(hasFeature('qemu'), true);
    assert.equal(hasFeature('no-such-feature'), false);
    assert.match(rt.backend, /^qemu\/(kvm|tcg) \(/);
    assert.equal(rt.backend.startsWith('qemu/kvm'), hasFeature('kvm'));
  });
});

describe('run and exec', () => {
  test('stdout, stderr, exit code, env, cwd, stdin', async () => {
    assert.match(sb.id, /^sb-[0-9a-f]+$/);
    await sb.ping();
    const r = await sb.run('echo "$GREETING" from $(pwd); echo oops >&2; exit 3',
                           { env: { GREETING: 'hello' }, cwd: '/tmp' });
    assert.equal(r.stdout, 'hello from /tmp\n');
    assert.equal(r.stderr, 'oops\n');
    assert.equal(r.exitCode, 3);
    assert.equal(r.ok, false);
    assert.equal(r.timedOut, false);
    assert.equal(r.cancelled, false);
    const cat = await sb.exec(['cat'], { stdin: Buffer.from([0, 1, 2, 0xff]), encoding: 'buffer' });
    assert.deepEqual(cat.stdout, Buffer.from([0, 1, 2, 0xff]));
    const py = await sb.exec(['python3', '-c', 'import sys; print(sys.argv[1:])', 'a b', "c'd"]);
    assert.equal(py.stdout, `['a b', "c'd"]\n`);
    assert.equal(py.ok, true);
  });

  test('20 concurrent runs on one sandbox all get their own output', async () => {
    const n = 20;
    const results = await Promise.all(Array.from({ length: n }, (_, i) =>
      sb.run(`sleep 0.$((${i} % 3)); echo out-${i}; echo err-${i} >&2; exit ${i}`)));
    results.forEach((r, i) => {
      assert.equal(r.stdout, `out-${i}\n`);
      assert.equal(r.stderr, `err-${i}\n`);
      assert.equal(r.exitCode, i);
    });
    // The same with streaming callbacks: each run's chunks reach its own callback.
    const seen = Array.from({ length: n }, () => '');
    const streamed = await Promise.all(Array.from({ length: n }, (_, i) =>
      sb.run(`for k in 1 2 3; do echo ${i}-$k; done`, { onStdout: (d) => { seen[i] += d; } })));
    streamed.forEach((r, i) => {
      assert.equal(r.exitCode, 0);
      assert.equal(r.stdout, '');  // streamed, not collected
      assert.equal(seen[i], `${i}-1\n${i}-2\n${i}-3\n`);
    });
  });

  test('a missing command is a NotFoundError with code and status', async () => {
    await assert.rejects(sb.exec(['no-such-command-here']), (e) => {
      assert.ok(e instanceof NotFoundError);
      assert.ok(e instanceof ZteeError);
      assert.equal(e.code, 'ZTEE_E_NOT_FOUND');
      assert.equal(e.status, -4);
      assert.equal(typeof e.errno, 'number');
      assert.match(e.message, /no-such-command-here/);
      return true;
    });
    await assert.rejects(sb.run('true', { cwd: '/no/such/dir' }), NotFoundError);
  });

  test('bad arguments are InvalidArgumentErrors', async () => {
    const isInvalid = (re) => (e) => {
      assert.ok(e instanceof InvalidArgumentError, `${e}`);
      assert.equal(e.code, 'ZTEE_E_INVALID_ARGUMENT');
      assert.equal(e.status, -1);
      assert.match(e.message, re);
      return true;
    };
    await assert.rejects(sb.run(['echo']), isInvalid(/shell command string/));
    await assert.rejects(sb.exec('echo hi'), isInvalid(/array of strings/));
    await assert.rejects(sb.run('true', { timeoutMs: -5 }), isInvalid(/timeoutMs/));
    await assert.rejects(sb.run('true', { env: { A: 1 } }), isInvalid(/env\.A/));
    await assert.rejects(Sandbox.create({ runtime: rt, vcpus: -1 }), isInvalid(/vcpus/));
    // Checked by libztee itself (its message read on the failing thread).
    await assert.rejects(Sandbox.create({ runtime: rt, allow: ['not-an-address'] }), isInvalid(/not-an-address/));
    await assert.rejects(sb.files.read('/etc/passwd', { maxBytes: 4 }), isInvalid(/.+/));
    assert.throws(() => new Runtime({ stateDir, accel: 'warp' }), isInvalid(/warp/));
  });

  test('timeoutMs kills the command: timedOut', async () => {
    const t0 = Date.now();
    const r = await sb.run('echo started; sleep 30', { timeoutMs: 500 });
    assert.equal(r.timedOut, true);
    assert.equal(r.ok, false);
    assert.equal(r.stdout, 'started\n');
    assert.ok(Date.now() - t0 < 15000, `took ${Date.now() - t0} ms`);
  });
});

describe('streaming', () => {
  test('callbacks get the output in order, strings or Buffers', async () => {
    const out = [];
    const err = [];
    const r = await sb.run('for i in 1 2 3 4 5; do echo o$i; echo e$i >&2; sleep 0.05; done',
                           { onStdout: (d) => out.push(d), onStderr: (d) => err.push(d) });
    assert.equal(r.exitCode, 0);
    assert.equal(out.join(''), 'o1\no2\no3\no4\no5\n');
    assert.equal(err.join(''), 'e1\ne2\ne3\ne4\ne5\n');
    assert.ok(out.length >= 2, `one chunk only: output was not streamed (${out.length})`);
    // A UTF-8 character split across chunks is not broken.
    const text = [];
    await sb.run("printf '\\303'; sleep 0.2; printf '\\251\\n'", { onStdout: (d) => text.push(d) });
    assert.equal(text.join(''), 'é\n');
    const bufs = [];
    await sb.run("printf '\\000\\001'", { onStdout: (d) => bufs.push(d), encoding: 'buffer' });
    assert.deepEqual(Buffer.concat(bufs), Buffer.from([0, 1]));
 
    // A stream without a callback is collected into the result, as without callbacks.
    const only = [];
    const half = await sb.run('echo to-out; echo to-err >&2', { onStdout: (d) => only.push(d) });
    assert.equal(only.join(''), 'to-out\n');
    assert.equal(half.stdout, '');
    assert.equal(half.stderr, 'to-err\n');
  });

  test('async iterator yields {stream, data}; .result is the run', async () => {
    const chunks = [];
    const s = sb.stream('echo a; sleep 0.1; echo b >&2; sleep 0.1; echo c; exit 4');
    for await (const c of s) chunks.push(c);
    assert.equal(chunks.filter((c) => c.stream === 'stdout').map((c) => c.data).join(''), 'a\nc\n');
    assert.equal(chunks.filter((c) => c.stream === 'stderr').map((c) => c.data).join(''), 'b\n');
    assert.equal((await s.result).exitCode, 4);
  });

  test('leaving the loop early kills the command', async () => {
    const t0 = Date.now();
    const s = sb.stream(['sh', '-c', 'echo first; sleep 30; echo never']);
    for await (const c of s) {
      assert.equal(c.data, 'first\n');
      break;
    }
    assert.ok(Date.now() - t0 < 15000, `took ${Date.now() - t0} ms`);
    await assert.rejects(s.result, { name: 'AbortError' });
  });

  test('a callback that throws kills the command and rejects the run with its error', async () => {
    const boom = new Error('callback failed');
    let calls = 0;
    const t0 = Date.now();
    await assert.rejects(
      sb.run('echo one; sleep 30; echo two', { onStdout: () => { calls++; throw boom; } }),
      (e) => e === boom);
    assert.equal(calls, 1);
    assert.ok(Date.now() - t0 < 15000, `the command was not killed (${Date.now() - t0} ms)`);
    // No process of it is left, and the sandbox still works.
    const ps = await sb.run('ps -eo args | grep -c "[s]leep 30" || true');
    assert.equal(ps.stdout.trim(), '0');
    assert.equal((await sb.run('echo still alive')).stdout, 'still alive\n');
  });
});

describe('cancellation', () => {
  test('AbortSignal kills the command; the run rejects with the reason, result attached', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 500);
    const t0 = Date.now();
    await assert.rejects(sb.run('echo started; sleep 30', { signal: ac.signal }), (e) => {
      assert.equal(e.name, 'AbortError');
      assert.equal(e.result.cancelled, true);
      assert.equal(e.result.signal, 9);
      assert.equal(e.result.exitCode, -1);
      assert.equal(e.result.stdout, 'started\n');
      return true;
    });
    assert.ok(Date.now() - t0 < 15000, `took ${Date.now() - t0} ms`);
    // An already aborted signal: nothing runs.
    const reason = new Error('stop');
    await assert.rejects(sb.run('touch /tmp/ran', { signal: AbortSignal.abort(reason) }), (e) => e === reason);
    assert.equal(await sb.files.exists('/tmp/ran'), false);
    // AbortSignal.timeout: a caller's deadline.
    await assert.rejects(sb.run('sleep 30', { signal: AbortSignal.timeout(300) }), { name: 'TimeoutError' });
  });
});

describe('stdin and signals (spawn)', () => {
  // Resolves once the collected output equals `want` (30 s at most).
  const until = async (get, want) => {
    const end = Date.now() + 30000;
    while (get() !== want) {
      if (Date.now() > end) throw new Error(`output stayed ${JSON.stringify(get())}, want ${JSON.stringify(want)}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  test('write() feeds cat in pieces, in order; end() is EOF', async () => {
    const t0 = Date.now();
    let out = '';
    const p = sb.spawn(['cat'], { onStdout: (d) => { out += d; } });
    assert.ok(p instanceof Process);
    await p.write('one\n');
    await until(() => out, 'one\n');
    await p.write(Buffer.from('two\n'));
    await until(() => out, 'one\ntwo\n');
    // Not awaited: they still apply in call order, end() last.
    const w = [p.write(new Uint8Array([116, 104, 114, 101, 101])), p.write('!'), p.end()];
    const r = await p.result;
    await Promise.all(w);
    assert.equal(r.exitCode, 0);
    assert.equal(out, 'one\ntwo\nthree!');
    assert.equal(p.ended, true);
    await assert.rejects(p.write('late'), ClosedError);
    await p.end();  // idempotent
    console.log(`# spawn pieces: ${Date.now() - t0} ms`);
  });

  test('4 MiB in one write() reaches the guest intact (sha256)', async () => {
    const t0 = Date.now();
    const data = crypto.randomBytes(4 << 20);
    const p = sb.spawn("sha256sum | cut -d' ' -f1", { timeoutMs: 60000 });
    await p.write(data);  // past the 1 MiB bound: waits for the sandbox to take it
    await p.end();
    const r = await p.result;
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout.trim(), crypto.createHash('sha256').update(data).digest('hex'));
    assert.equal(Process.INPUT_MAX_BUFFERED, 1 << 20);
    console.log(`# spawn 4 MiB: ${Date.now() - t0} ms`);
  });

  test('kill() sends a signal: a trap for SIGUSR1 prints and exits; SIGTERM ends sleep', async () => {
    const t0 = Date.now();
    let out = '';
    const p = sb.spawn("trap 'echo got USR1; exit 7' USR1; echo ready; while :; do sleep 0.05; done",
      { onStdout: (d) => { out += d; }, timeoutMs: 30000 });
    await until(() => out, 'ready\n');
    p.kill('SIGUSR1');
    const r = await p.result;
    assert.equal(r.exitCode, 7);
    assert.equal(r.signal, 0);
    assert.equal(r.cancelled, false);
    assert.equal(out, 'ready\ngot USR1\n');
    let out2 = '';
    const q = sb.spawn('echo ready; sleep 30', { onStdout: (d) => { out2 += d; } });
    await until(() => out2, 'ready\n');
    q.kill(15);
    const r2 = await q.result;
    assert.equal(r2.signal, 15);
    assert.equal(r2.exitCode, -1);
    assert.equal(r2.cancelled, false);
    // Right after spawn(), before the command runs in the guest: it follows the start.
    for (let i = 0; i < 3; i++) {
      const s = sb.spawn(['sleep', '60'], { timeoutMs: 20000 });
      s.kill('SIGTERM');
      const r3 = await s.result;
      assert.equal(r3.signal, 15, `round ${i}: timedOut ${r3.timedOut}`);
    }
    console.log(`# spawn signals: ${Date.now() - t0} ms`);
  });

  test('bad signals, a command that ended, stdin in opts: clear errors', async () => {
    const p = sb.spawn('true');
    for (const bad of [0, 65, -1, 1.5, 'SIGNOPE', null]) {
      assert.throws(() => p.kill(bad), InvalidArgumentError, `kill(${String(bad)})`);
    }
    const r = await p.result;
    assert.equal(r.exitCode, 0);
    assert.throws(() => p.kill('SIGUSR1'), (e) => e instanceof ClosedError && /has ended/.test(e.message));
    await assert.rejects(p.write('late'), (e) => e instanceof ClosedError && /ended/.test(e.message));
    await assert.rejects(p.write(42), InvalidArgumentError);
    await assert.rejects(sb.spawn('cat', { stdin: 'x' }).result, InvalidArgumentError);
    // After end(), write() is refused even while the command runs.
    const q = sb.spawn('sleep 0.5; cat');
    await q.end();
    await assert.rejects(q.write('x'), (e) => e instanceof InvalidArgumentError && /after close/.test(e.message));
    assert.equal((await q.result).exitCode, 0);
  });
});

describe('files', () => {
  test('round trip of binary data, text, modes', async () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    await sb.files.write('/tmp/all.bin', all);
    assert.deepEqual(await sb.files.read('/tmp/all.bin'), all);
    const big = crypto.randomBytes(3 << 20);
    await sb.files.write('/tmp/big.bin', big);
    assert.deepEqual(await sb.files.read('/tmp/big.bin'), big);
    const sum = await sb.run('sha256sum /tmp/big.bin');
    assert.equal(sum.stdout.split(' ')[0], crypto.createHash('sha256').update(big).digest('hex'));
    await sb.files.write('/tmp/t.txt', 'héllo\n', { mode: 0o600 });
    assert.equal(await sb.files.read('/tmp/t.txt', { encoding: 'utf8' }), 'héllo\n');
    const st = await sb.files.stat('/tmp/t.txt');
    assert.equal(st.type, 'file');
    assert.equal(st.isFile, true);
    assert.equal(st.size, Buffer.byteLength('héllo\n'));
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(typeof st.mtimeNs, 'bigint');
    await sb.files.write('/tmp/empty', new Uint8Array(0));
    assert.equal((await sb.files.read('/tmp/empty')).length, 0);
  });

  test('mkdir, list, remove', async () => {
    await sb.files.mkdir('/tmp/d/e/f', { parents: true });
    await sb.files.mkdir('/tmp/d/e/f', { parents: true });  // exists: fine with parents
    await sb.files.write('/tmp/d/e/f/x', 'x');
    await sb.files.write('/tmp/d/y', 'y');
    const names = (await sb.files.list('/tmp/d')).map((e) => `${e.name}:${e.type}`).sort();
    assert.deepEqual(names, ['e:dir', 'y:file']);
    assert.equal((await sb.files.stat('/tmp/d/e')).isDir, true);
    await assert.rejects(sb.files.remove('/tmp/d'), ZteeError);  // not empty
    await sb.files.remove('/tmp/d', { recursive: true });
    assert.equal(await sb.files.exists('/tmp/d'), false);
    await assert.rejects(sb.files.read('/tmp/d/y'), NotFoundError);
    await assert.rejects(sb.files.mkdir('/tmp/p/q'), NotFoundError);  // parent missing
  });
});

describe('lifecycle', () => {
  test('destroy: the host is clean, later calls are ClosedErrors, dispose is idempotent', async () => {
    const other = await Sandbox.create({ runtime: rt, bootTimeoutMs: 120000 });
    const id = other.id;
    assert.notEqual(leftovers(stateDir, id).length, 0, 'a live sandbox shows nothing on the host');
    // A call in flight when the sandbox is destroyed ends, with an error.
    const running = assert.rejects(other.run('sleep 30'), ClosedError);
    await new Promise((r) => setTimeout(r, 200));
    await other.destroy();
    await running;
    assert.equal(other.alive, false);
    assert.deepEqual(leftovers(stateDir, id), []);
    await assert.rejects(other.ping(), ClosedError);
    await assert.rejects(other.run('true'), ClosedError);
    await assert.rejects(other.files.read('/etc/hostname'), ClosedError);
    await assert.rejects(other.destroy(), ClosedError);
    await other[Symbol.asyncDispose]();  // no-op once destroyed
    assert.equal(other.id, id);
  });

  test('errors keep their classes', () => {
    assert.equal(new TimeoutError('x').code, 'ZTEE_E_TIMEOUT');
    assert.equal(new TimeoutError('x').status, -7);
    assert.ok(new TimeoutError('x') instanceof ZteeError);
  });
});
