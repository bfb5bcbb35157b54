// ztee/e2b: E2B-style JS usage over real sandboxes. One sandbox serves most
// tests; the lifetime tests (timeout expiry, asyncDispose) boot their own,
// and the quickstart example runs as its own process.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ztee from 'ztee';
import {
  Sandbox, CommandExitError, SandboxError, TimeoutError, NotFoundError, FileNotFoundError,
  SandboxNotFoundError, InvalidArgumentError, NotEnoughSpaceError, SandboxClosedError, NotSupportedError,
  AuthenticationError, FileType,
} from 'ztee/e2b';
import DefaultSandbox from 'ztee/e2b';
import { sandboxDirs, tempStateDir, waitFor } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const IMAGE_DIR = process.env.ZTEE_IMAGE_DIR || '/var/lib/ztee/images/default';
const stateDir = tempStateDir('e2b');
let rt;
let sbx;

before(async () => {
  rt = await ztee.Runtime.create({ stateDir });
  sbx = await Sandbox.create({ envs: { FROM_CREATE: 'c', SHADOWED: 'create' }, metadata: { suite: 'e2b' },
                               zteeOptions: { runtime: rt } });
});

after(async () => {
  await sbx?.kill();
  rt?.close();
  assert.deepEqual(sandboxDirs(stateDir), [], 'a sandbox was left in the state dir');
  fs.rmSync(stateDir, { recursive: true, force: true });
});

// ---- no sandbox needed ----------------------------------------------------------------

describe('module', () => {
  test('ESM and CommonJS entries give the same objects', () => {
    const cjs = createRequire(import.meta.url)('ztee/e2b');
    assert.equal(cjs.Sandbox, Sandbox);
    assert.equal(cjs.CommandExitError, CommandExitError);
    assert.equal(DefaultSandbox, Sandbox);
    assert.throws(() => new Sandbox(), /Sandbox\.create/);
  });

  test('errors carry E2B names and are also the binding errors', () => {
    for (const [Cls, Base] of [[TimeoutError, ztee.TimeoutError], [NotFoundError, ztee.NotFoundError],
                               [FileNotFoundError, ztee.NotFoundError], [SandboxNotFoundError, ztee.NotFoundError],
                               [InvalidArgumentError, ztee.InvalidArgumentError],
                               [SandboxClosedError, ztee.ClosedError], [NotEnoughSpaceError, ztee.GuestError],
                               [NotSupportedError, ztee.UnsupportedError], [SandboxError, ztee.ZteeError]]) {
      const e = new Cls('boom');
      assert.ok(e instanceof SandboxError, Cls.name);
      assert.ok(e instanceof Base && e instanceof ztee.ZteeError && e instanceof Error, Cls.name);
      assert.equal(e.message, 'boom');
      assert.equal(e.name, Cls.name);
      assert.ok(e.status < 0 && e.code.startsWith('ZTEE_E_'), Cls.name);
    }
    assert.equal(new TimeoutError('x').code, 'ZTEE_E_TIMEOUT');
    assert.ok(new FileNotFoundError('x') instanceof NotFoundError);
    // The binding's own errors are not the shim's.
    assert.ok(!(new ztee.TimeoutError('x') instanceof SandboxError));
    assert.ok(!(new Error('x') instanceof SandboxError));
    const exit = new CommandExitError({ stdout: 'o', stderr: 'e', exitCode: 2, error: 'exit status 2' });
    assert.ok(exit instanceof CommandExitError && exit instanceof SandboxError && exit instanceof Error);
    assert.ok(!(exit instanceof ztee.ZteeError), 'an exit code is not a libztee failure');
    assert.ok(!(new AuthenticationError('x') instanceof SandboxError));
    assert.deepEqual(FileType, { FILE: 'file', DIR: 'dir', SYMLINK: 'symlink' });
  });

  test('bad create arguments fail before booting', async () => {
    const before = (await Sandbox.list()).length;
    await assert.rejects(Sandbox.create('code-interpreter-v1'), (e) =>
      e instanceof InvalidArgumentError && /no E2B template registry/.test(e.message));
    await assert.rejects(Sandbox.create('/tmp'), /neither a libztee image/);
    await assert.rejects(Sandbox.create({ template: '/tmp' }), /neither a libztee image/);
    await assert.rejects(Sandbox.create({ timeoutMs: -5 }), InvalidArgumentError);
    await assert.rejects(Sandbox.create({ envs: { A: 1 } }), (e) => e instanceof InvalidArgumentError && /envs/.test(e.message));
    await assert.rejects(Sandbox.create({ allowInternetAccess: true }), (e) =>
      e instanceof NotSupportedError && /allowInternetAccess/.test(e.message) && e.code === 'ZTEE_E_UNSUPPORTED');
    await assert.rejects(Sandbox.create({ noSuchOption: 1 }), /unknown option\(s\) noSuchOption/);
    await assert.rejects(Sandbox.create({ zteeOptions: { imageDir: IMAGE_DIR } , template: IMAGE_DIR }), /clash/);
    await assert.rejects(Sandbox.connect('sb-does-not-exist'), (e) =>
      e instanceof SandboxNotFoundError && e instanceof NotFoundError && e instanceof ztee.NotFoundError);
    assert.equal(await Sandbox.kill('sb-does-not-exist'), false);
    await assert.rejects(Sandbox.getInfo('sb-does-not-exist'), NotFoundError);
    assert.equal((await Sandbox.list()).length, before);
  });
});

// ---- commands -------------------------------------------------------------------------

describe('commands', () => {
  test('run code as "user" in its home', async () => {
    assert.match(sbx.sandboxId, /^sb-[0-9a-f]+$/);
    const r = await sbx.commands.run("python3 -c 'print(6*7)'; whoami; pwd; echo $HOME");
    assert.deepEqual(r, { stdout: '42\nuser\n/home/user\n/home/user\n', stderr: '', exitCode: 0, error: undefined });
  });

  test('envs of create and of the command', async () => {
    const r = await sbx.commands.run('echo "$FROM_CREATE $SHADOWED $OWN"',
                                     { envs: { SHADOWED: 'command', OWN: 'o w n' } });
    assert.equal(r.stdout, 'c command o w n\n');
  });

  test('user and cwd', async () => {
    assert.equal((await sbx.commands.run('id -u; pwd', { user: 'root' })).stdout, '0\n/root\n');
    const etc = await sbx.commands.run('pwd; ls', { cwd: '/etc' });
    assert.ok(etc.stdout.startsWith('/etc\n') && etc.stdout.includes('passwd'));
    assert.equal((await sbx.commands.run('pwd', { cwd: 'sub/..' })).stdout, '/home/user\n');
    // An account of the image without a home runs in /.
    assert.equal((await sbx.commands.run('id -un; pwd', { user: 'nobody' })).stdout, 'nobody\n/\n');
    await assert.rejects(sbx.commands.run('true', { user: 'ghost' }), (e) =>
      e instanceof InvalidArgumentError && /"ghost" does not exist/.test(e.message));
    await assert.rejects(sbx.commands.run('true', { cwd: '/no/such/dir' }), NotFoundError);
    await assert.rejects(sbx.commands.run(''), InvalidArgumentError);
    await assert.rejects(sbx.commands.run('true', { envs: { A: 1 } }), InvalidArgumentError);
    await assert.rejects(sbx.commands.run('true', { onStdout: 'nope' }), InvalidArgumentError);
  });

  test('a non-zero exit rejects with CommandExitError carrying the result', async () => {
    await assert.rejects(sbx.commands.run('echo partial; echo bad >&2; exit 7'), (e) => {
      assert.ok(e instanceof CommandExitError && e instanceof SandboxError);
      assert.deepEqual([e.stdout, e.stderr, e.exitCode, e.error], ['partial\n', 'bad\n', 7, 'exit status 7']);
      assert.match(e.message, /code 7.*bad/);
      return true;
    });
    await assert.rejects(sbx.commands.run('no-such-program-here'), (e) => e.exitCode === 127);
  });

  test('a command timeout kills it and rejects with TimeoutError', async () => {
    const t = Date.now();
    await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1000 }), (e) =>
      e instanceof TimeoutError && e instanceof SandboxError && /timeout of 1000 ms/.test(e.message));
    assert.ok(Date.now() - t < 15000);
    assert.equal((await sbx.commands.run('echo alive')).stdout, 'alive\n');
    assert.equal((await sbx.commands.run('sleep 0.2; echo none', { timeoutMs: 0 })).stdout, 'none\n');
    await assert.rejects(sbx.commands.run('true', { timeoutMs: -1 }), InvalidArgumentError);
  });

  test('output callbacks: in order, async ones awaited, results still hold the output', async () => {
    const events = [];
    const r = await sbx.commands.run('for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.1; done', {
      onStdout: async (s) => {
        await new Promise((res) => setTimeout(res, 200));  // longer than the run lasts after its last line
        events.push(['out', s]);
      },
      onStderr: (s) => { events.push(['err', s]); },
    });
    assert.equal(r.stdout, 'o1\no2\no3\n');
    assert.equal(r.stderr, 'e1\ne2\ne3\n');
    assert.equal(events.filter(([k]) => k === 'out').map(([, s]) => s).join(''), r.stdout);
    assert.equal(events.filter(([k]) => k === 'err').map(([, s]) => s).join(''), r.stderr);
    const flat = events.map(([, s]) => s).join('');
    assert.ok(flat.indexOf('e1') < flat.indexOf('o2') && flat.indexOf('o2') < flat.indexOf('e2') &&
              flat.indexOf('e2') < flat.indexOf('o3'), flat);
    // A callback may call back into the sandbox.
    const got = [];
    await sbx.commands.run('echo x', { onStdout: async () => { got.push(await sbx.files.exists('/etc/passwd')); } });
    assert.deepEqual(got, [true]);
  });

  test('a throwing callback kills its command and the run rejects with its error', async () => {
    class Stop extends Error {}
    const t = Date.now();
    await assert.rejects(sbx.commands.run('echo go; sleep 60', { onStdout: () => { throw new Stop(); } }), Stop);
    await assert.rejects(sbx.commands.run('echo go; sleep 60', { onStdout: async () => { throw new Stop(); } }), Stop);
    assert.ok(Date.now() - t < 20000);
    assert.deepEqual(await sbx.commands.list(), []);
  });

  test('an AbortSignal kills a foreground run', async () => {
    const t = Date.now();
    await assert.rejects(sbx.commands.run('sleep 60', { signal: AbortSignal.timeout(500) }),
                         (e) => e.name === 'TimeoutError' && !(e instanceof SandboxError));  // the signal's reason
    assert.ok(Date.now() - t < 15000);
    assert.deepEqual(await sbx.commands.list(), []);
  });

  test('background: list, kill, wait rejects with "signal: killed"', async () => {
    const h = await sbx.commands.run('echo started; sleep 120', { background: true });
    assert.ok(Number.isInteger(h.pid) && h.pid > 0);
    assert.equal(h.exitCode, undefined);
    const procs = await sbx.commands.list();
    assert.deepEqual(procs.map((p) => p.pid), [h.pid]);
    assert.equal(procs[0].cmd, '/bin/bash');
    assert.deepEqual(procs[0].args, ['-c', 'echo started; sleep 120']);
    assert.equal(procs[0].cwd, '/home/user');
    assert.equal(procs[0].envs.FROM_CREATE, 'c');
    assert.ok(await waitFor(() => h.stdout.includes('started'), 30000), 'no output from the background command');
    assert.equal(h.stdout, 'started\n');
    const t = Date.now();
    assert.equal(await sbx.commands.kill(h.pid), true);
    await assert.rejects(h.wait(), (e) => e instanceof CommandExitError && e.exitCode === -1 &&
                                          e.error === 'signal: killed' && e.stdout === 'started\n');
    assert.ok(Date.now() - t < 10000);
    assert.equal(h.exitCode, -1);
    assert.equal(h.error, 'signal: killed');
    assert.deepEqual(await sbx.commands.list(), []);
    assert.equal(await sbx.commands.kill(h.pid), false);
    assert.equal(await h.kill(), false);
    await assert.rejects(sbx.commands.connect(h.pid), NotFoundError);
  });

  test('background: callbacks stream, wait gives the result, connect replays', async () => {
    let seen = '';
    const h = await sbx.commands.run('echo a; sleep 0.5; echo b', { background: true, onStdout: (s) => { seen += s; } });
    const h2 = await sbx.commands.connect(h.pid);
    let replayed = '';
    const h3 = await sbx.commands.connect(h.pid, { onStdout: (s) => { replayed += s; } });
    assert.ok(await waitFor(() => seen.includes('a'), 30000));
    assert.ok(!seen.includes('b'), 'the callback ran only at the end');
    const r = await h.wait();
    assert.deepEqual(r, { stdout: 'a\nb\n', stderr: '', exitCode: 0, error: undefined });
    assert.equal(seen, 'a\nb\n');
    assert.equal((await h2.wait()).stdout, 'a\nb\n');
    await h3.wait();
    assert.equal(replayed, 'a\nb\n');
    const h4 = await sbx.commands.run('sleep 0.2; exit 4', { background: true });
    await assert.rejects(h4.wait(), (e) => e instanceof CommandExitError && e.exitCode === 4);
    assert.equal(h4.exitCode, 4);
    assert.equal(h4.error, 'exit status 4');
    // disconnect() stops the callbacks; the command runs on.
    let late = '';
    const h5 = await sbx.commands.run('sleep 0.5; echo late', { background: true, onStdout: (s) => { late += s; } });
    await h5.disconnect();
    assert.equal((await h5.wait()).stdout, 'late\n');
    assert.equal(late, '');
  });

  test('stdin: sendStdin in pieces reaches cat, closeStdin ends it, then NotFoundError', async () => {
    let seen = '';
    const h = await sbx.commands.run('cat', { background: true, stdin: true, onStdout: (s) => { seen += s; } });
    await sbx.commands.sendStdin(h.pid, 'one\n');
    assert.ok(await waitFor(() => h.stdout === 'one\n', 20000, 20), JSON.stringify(h.stdout));  // while cat runs
    await h.sendStdin(new TextEncoder().encode('tw\u00e9\n'));  // the handle's own call; bytes
    assert.ok(await waitFor(() => h.stdout === 'one\ntw\u00e9\n', 20000, 20), JSON.stringify(h.stdout));
    await sbx.commands.sendStdin(h.pid, 'no newline');
    assert.ok(await waitFor(() => h.stdout.endsWith('no newline'), 20000, 20), JSON.stringify(h.stdout));
    assert.equal(h.exitCode, undefined);  // still reading
    await sbx.commands.closeStdin(h.pid);  // EOF: cat ends
    const r = await h.wait();
    assert.deepEqual(r, { stdout: 'one\ntw\u00e9\nno newline', stderr: '', exitCode: 0, error: undefined });
    assert.equal(seen, r.stdout);
    await assert.rejects(sbx.commands.sendStdin(h.pid, 'late'), (e) =>
      e instanceof NotFoundError && /no running command/.test(e.message));
    await assert.rejects(h.closeStdin(), NotFoundError);
    await assert.rejects(sbx.commands.sendStdin(9999, 'x'), NotFoundError);
  });

  test('stdin: refused when closed or never opened, with the reason', async () => {
    const h = await sbx.commands.run('cat; echo eof; sleep 30', { background: true, stdin: true });
    await h.closeStdin();
    assert.ok(await waitFor(() => h.stdout === 'eof\n', 20000, 20), JSON.stringify(h.stdout));
    await h.closeStdin();  // again: nothing
    await assert.rejects(h.sendStdin('x'), (e) => e instanceof InvalidArgumentError && /was closed/.test(e.message));
    assert.equal(await sbx.commands.kill(h.pid), true);
    await assert.rejects(h.wait(), CommandExitError);
    const h2 = await sbx.commands.run('sleep 30', { background: true });
    await assert.rejects(sbx.commands.sendStdin(h2.pid, 'x'), (e) =>
      e instanceof InvalidArgumentError && /started without stdin.*stdin: true/.test(e.message));
    await assert.rejects(h2.closeStdin(), (e) => e instanceof InvalidArgumentError && /started without stdin/.test(e.message));
    await assert.rejects(sbx.commands.sendStdin(h2.pid, 5), (e) =>
      e instanceof InvalidArgumentError && /string or a Uint8Array/.test(e.message));
    assert.equal(await h2.kill(), true);
    await assert.rejects(h2.wait(), CommandExitError);
    await assert.rejects(sbx.commands.run('cat', { stdin: 'data' }), (e) =>
      e instanceof InvalidArgumentError && /true or false/.test(e.message));
    assert.equal((await sbx.commands.run('cat; echo end')).stdout, 'end\n');  // without stdin: true: empty
  });

  test('stdin: kill of a background command reading its stdin; a foreground run with stdin', async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true });
    await h.sendStdin('x\n');
    assert.ok(await waitFor(() => h.stdout === 'x\n', 20000, 20), JSON.stringify(h.stdout));
    const t = Date.now();
    assert.equal(await h.kill(), true);
    await assert.rejects(h.wait(), (e) => e instanceof CommandExitError && e.exitCode === -1 &&
                                          e.error === 'signal: killed' && e.stdout === 'x\n');
    assert.ok(Date.now() - t < 10000);
    await assert.rejects(h.sendStdin('y'), NotFoundError);
    assert.equal(await h.kill(), false);
    // A foreground run with stdin: true is fed from elsewhere by its pid.
    const run = sbx.commands.run('wc -c', { stdin: true });
    let pid;
    assert.ok(await waitFor(async () => {
      pid = (await sbx.commands.list()).find((p) => p.args[1] === 'wc -c')?.pid;
      return pid !== undefined;
    }, 20000, 20));
    await sbx.commands.sendStdin(pid, '12345');
    await sbx.commands.closeStdin(pid);
    assert.equal((await run).stdout.trim(), '5');
  });

  test('concurrent runs get their own pids and output', async () => {
    const hs = await Promise.all(Array.from({ length: 6 }, (_, i) =>
      sbx.commands.run(`sleep 0.$((${i} % 3)); echo out-${i}`, { background: true })));
    assert.equal(new Set(hs.map((h) => h.pid)).size, 6);
    const rs = await Promise.all(hs.map((h) => h.wait()));
    rs.forEach((r, i) => assert.equal(r.stdout, `out-${i}\n`));
  });
});

// ---- files ----------------------------------------------------------------------------

describe('files', () => {
  test('write, read in every format, list', async () => {
    const info = await sbx.files.write('/home/user/proj/src/main.py', "print('hi')\n");
    assert.deepEqual(info, { name: 'main.py', type: 'file', path: '/home/user/proj/src/main.py' });
    await sbx.files.write('proj/data.bin', new Uint8Array([0, 0xff, 0x62, 0x69, 0x6e]));  // relative to the home
    await sbx.files.write('/home/user/proj/blob.txt', new Blob(['from a blob']));
    await sbx.files.write('~/proj/stream.txt', new ReadableStream({
      start(c) { c.enqueue(new TextEncoder().encode('from a ')); c.enqueue(new TextEncoder().encode('stream')); c.close(); },
    }));
    assert.equal(await sbx.files.read('/home/user/proj/src/main.py'), "print('hi')\n");
    const bytes = await sbx.files.read('~/proj/data.bin', { format: 'bytes' });
    assert.ok(bytes instanceof Uint8Array && !Buffer.isBuffer(bytes));
    assert.deepEqual([...bytes], [0, 0xff, 0x62, 0x69, 0x6e]);
    const blob = await sbx.files.read('proj/blob.txt', { format: 'blob' });
    assert.ok(blob instanceof Blob);
    assert.equal(await blob.text(), 'from a blob');
    const stream = await sbx.files.read('proj/stream.txt', { format: 'stream' });
    let text = '';
    for await (const chunk of stream) text += Buffer.from(chunk).toString();
    assert.equal(text, 'from a stream');
    assert.equal((await sbx.commands.run('python3 proj/src/main.py')).stdout, 'hi\n');
    // Written as the account: it owns what the shim made.
    const r = await sbx.commands.run("stat -c '%U %a' proj proj/src proj/src/main.py && echo more >> proj/data.bin");
    assert.equal(r.stdout, 'user 755\nuser 755\nuser 644\n');

    const top = await sbx.files.list('/home/user/proj');
    assert.deepEqual(top.map((e) => [e.name, e.type]),
                     [['blob.txt', 'file'], ['data.bin', 'file'], ['src', 'dir'], ['stream.txt', 'file']]);
    const data = top[1];
    assert.equal(data.path, '/home/user/proj/data.bin');
    assert.equal(data.size, 5 + 5);
    assert.equal(data.mode, 0o644);
    assert.equal(data.permissions, '-rw-r--r--');
    assert.equal(data.owner, undefined);
    assert.equal(top[2].permissions, 'drwxr-xr-x');
    const deep = await sbx.files.list('/home/user/proj', { depth: 2 });
    assert.ok(deep.map((e) => e.path).includes('/home/user/proj/src/main.py'));
    assert.equal(deep.length, 5);
    await assert.rejects(sbx.files.list('/home/user/proj/data.bin'), (e) =>
      e instanceof InvalidArgumentError && /not a directory/.test(e.message));
    await assert.rejects(sbx.files.list('/home/user', { depth: 0 }), /depth/);
    await assert.rejects(sbx.files.list('/no/such/dir'), FileNotFoundError);
    await assert.rejects(sbx.files.read('/etc/passwd', { format: 'json' }), /format/);
    await assert.rejects(sbx.files.write('/tmp/x', 12345), InvalidArgumentError);
    await assert.rejects(sbx.files.write('/tmp/x'), /data is missing/);
  });

  test('write many entries', async () => {
    const infos = await sbx.files.write([{ path: '/tmp/many/a.txt', data: 'A' }, { path: '/tmp/many/b.txt', data: new TextEncoder().encode('B').buffer }]);
    assert.deepEqual(infos.map((i) => i.path), ['/tmp/many/a.txt', '/tmp/many/b.txt']);
    assert.equal((await sbx.files.read('/tmp/many/a.txt')) + (await sbx.files.read('/tmp/many/b.txt')), 'AB');
    const more = await sbx.files.writeFiles([{ path: '/tmp/many/c.txt', data: 'C' }]);
    assert.equal(more[0].name, 'c.txt');
    await assert.rejects(sbx.files.write([{ path: '/tmp/x' }]), InvalidArgumentError);
  });

  test('exists, getInfo, makeDir, rename, remove', async () => {
    assert.equal(await sbx.files.exists('/etc/passwd'), true);
    assert.equal(await sbx.files.exists('/no/such'), false);
    const info = await sbx.files.getInfo('/etc/passwd');
    assert.deepEqual([info.name, info.type, info.path], ['passwd', 'file', '/etc/passwd']);
    assert.ok(info.size > 0 && info.modifiedTime instanceof Date && info.modifiedTime.getFullYear() >= 2000);
    await assert.rejects(sbx.files.getInfo('/no/such'), FileNotFoundError);

    assert.equal(await sbx.files.makeDir('/home/user/d1/d2'), true);
    assert.equal(await sbx.files.makeDir('/home/user/d1/d2'), false);
    assert.equal((await sbx.files.getInfo('/home/user/d1/d2')).type, 'dir');
    await sbx.files.write('/home/user/d1/f.txt', 'f');
    await assert.rejects(sbx.files.makeDir('/home/user/d1/f.txt'), /not a directory/);

    const moved = await sbx.files.rename('/home/user/d1/f.txt', '/home/user/d1/d2/g.txt');
    assert.deepEqual([moved.name, moved.path, moved.type], ['g.txt', '/home/user/d1/d2/g.txt', 'file']);
    assert.equal(await sbx.files.exists('/home/user/d1/f.txt'), false);
    assert.equal(await sbx.files.read('d1/d2/g.txt'), 'f');
    await assert.rejects(sbx.files.rename('/home/user/d1/f.txt', '/home/user/x'), FileNotFoundError);

    await sbx.files.remove('/home/user/d1');  // a tree
    assert.equal(await sbx.files.exists('/home/user/d1'), false);
    await assert.rejects(sbx.files.remove('/home/user/d1'), FileNotFoundError);
    await assert.rejects(sbx.files.read('/home/user/d1/d2/g.txt'), (e) =>
      e instanceof FileNotFoundError && e instanceof ztee.NotFoundError);
    await assert.rejects(sbx.files.read('/tmp'), InvalidArgumentError);
  });

  test('writes act as the account', async () => {
    await assert.rejects(sbx.files.write('/etc/e2b-test.conf', 'x'), (e) =>
      e instanceof SandboxError && e instanceof ztee.ZteeError && e.errno === 13 &&
      e.code === 'ZTEE_E_PERMISSION' && /Permission denied/.test(e.message));
    assert.equal(await sbx.files.exists('/etc/e2b-test.conf'), false);
    await sbx.files.write('/etc/e2b-test.conf', 'x', { user: 'root' });
    assert.equal((await sbx.commands.run('stat -c %U /etc/e2b-test.conf', { user: 'root' })).stdout, 'root\n');
    await assert.rejects(sbx.files.remove('/etc/e2b-test.conf'), /Permission denied/);
    await sbx.files.remove('/etc/e2b-test.conf', { user: 'root' });
    assert.equal(await sbx.files.exists('/etc/e2b-test.conf'), false);
    await assert.rejects(sbx.files.write('/tmp/y', 'y', { user: 'ghost' }), InvalidArgumentError);
  });
});

// ---- the sandbox ----------------------------------------------------------------------

describe('sandbox', () => {
  test('calls libztee cannot serve reject with NotSupportedError naming the call', async () => {
    const calls = {
      'pty.create': () => sbx.pty.create({ cols: 80, rows: 24, onData: () => {} }),
      'files.watchDir': () => sbx.files.watchDir('/tmp', () => {}),
      'pty.sendInput': () => sbx.pty.sendInput(1, new Uint8Array([120])),
      pause: () => sbx.pause(),
      uploadUrl: () => sbx.uploadUrl('/tmp/x'),
      getMetrics: () => sbx.getMetrics(),
    };
    for (const [name, call] of Object.entries(calls)) {
      await assert.rejects(call(), (e) => e instanceof NotSupportedError && e.message.includes(name) &&
                                          e.status === -14, name);
    }
    assert.throws(() => sbx.getHost(8080), (e) => e instanceof NotSupportedError && /getHost/.test(e.message));
    assert.equal((await sbx.commands.run('echo still here')).stdout, 'still here\n');
  });

  test('registry, info, setTimeout, isRunning', async () => {
    assert.equal(await Sandbox.connect(sbx.sandboxId), sbx);
    assert.equal(await sbx.connect(), sbx);
    assert.ok((await Sandbox.list()).map((i) => i.sandboxId).includes(sbx.sandboxId));  // E2B v1's form
    const pages = Sandbox.list({ query: { metadata: { suite: 'e2b' } } });              // the paginator
    assert.equal(pages.hasNext, true);
    assert.deepEqual((await pages.nextItems()).map((i) => i.sandboxId), [sbx.sandboxId]);
    assert.equal(pages.hasNext, false);
    await assert.rejects(pages.nextItems(), SandboxError);
    assert.deepEqual(await Sandbox.list({ query: { metadata: { suite: 'other' } } }), []);
    assert.deepEqual(await Sandbox.list({ query: { state: ['paused'] } }), []);
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, 'base');
    assert.equal(info.state, 'running');
    assert.deepEqual(info.metadata, { suite: 'e2b' });
    const life = info.endAt - info.startedAt;
    assert.ok(life > 0 && life <= 300000 + 1000, String(life));
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).sandboxId, sbx.sandboxId);
    await sbx.setTimeout(600000);
    const left = (await sbx.getInfo()).endAt - Date.now();
    assert.ok(left > 595000 && left <= 600000, String(left));
    await Sandbox.setTimeout(sbx.sandboxId, 900000);
    await Sandbox.connect(sbx.sandboxId, { timeoutMs: 700000 });
    assert.ok((await sbx.getInfo()).endAt - Date.now() <= 700000);
    await assert.rejects(sbx.setTimeout(-1), InvalidArgumentError);
    assert.equal(await sbx.isRunning(), true);
  });
});

// ---- lifetimes (own sandboxes) ---------------------------------------------------------------

describe('lifetimes', () => {
  test('the sandbox timeout kills it; asyncDispose and the class kill end one', async () => {
    // Boot both at once: a template given by path, and the default image.
    const [s, d] = await Promise.all([
      Sandbox.create(IMAGE_DIR, { timeoutMs: 60000, zteeOptions: { runtime: rt } }),
      Sandbox.create({ timeoutMs: 120000, zteeOptions: { runtime: rt } }),
    ]);
    try {
      const h = await s.commands.run('sleep 40', { background: true });  // outlives the timeout
      await s.setTimeout(3000);
      const t = Date.now();
      await assert.rejects(h.wait(), (e) => e instanceof TimeoutError && /timeout passed/.test(e.message));
      assert.ok(Date.now() - t < 30000);
      assert.equal(await s.isRunning(), false);
      await assert.rejects(s.commands.run('true'), (e) => e instanceof TimeoutError && /timeout passed/.test(e.message));
      await assert.rejects(s.files.read('/etc/passwd'), TimeoutError);
      assert.ok(!(await Sandbox.list()).map((i) => i.sandboxId).includes(s.sandboxId));
      await assert.rejects(Sandbox.connect(s.sandboxId), SandboxNotFoundError);
      assert.equal(await s.kill(), false);

      assert.equal((await d.commands.run('echo in')).stdout, 'in\n');
      assert.equal(await Sandbox.kill(d.sandboxId), true);  // the class form
      assert.equal(await d.isRunning(), false);
      await assert.rejects(d.commands.run('true'), (e) => e instanceof SandboxClosedError && /killed/.test(e.message) &&
                                                          e instanceof SandboxError && e instanceof ztee.ClosedError);
      await d[Symbol.asyncDispose]();  // a second end is fine
      assert.equal(await d.kill(), false);
    } finally {
      await s.kill();
      await d[Symbol.asyncDispose]();
    }
    assert.deepEqual(sandboxDirs(stateDir).filter((x) => x === s.sandboxId || x === d.sandboxId), []);
  });

  test('examples/e2b_quickstart.mjs prints what E2B code would', async () => {
    const script = path.join(here, '..', 'examples', 'e2b_quickstart.mjs');
    const { stdout } = await new Promise((resolve, reject) => {
      execFile(process.execPath, [script], { cwd: path.join(here, '..'), timeout: 120000 }, (err, out, errOut) =>
        (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve({ stdout: out })));
    });
    assert.equal(stdout, '42\nHello from the sandbox\nfile hello.txt\nrunning: true\nexit code: 3\n');
  });
});
