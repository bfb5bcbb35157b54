// Workspaces in the Node binding: one sandbox with a mounted host directory
// for the file (a cold boot), then diff, patch and the reviewed export.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  Runtime, Sandbox, ConflictError, InvalidArgumentError, NotFoundError, ZteeError, hasFeature,
} from 'ztee';
import { sandboxDirs, tempStateDir } from './helpers.mjs';

const stateDir = tempStateDir('workspace');
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'ztee-node-ws.'));
const host = path.join(base, 'repo');
const diffLog = path.join(base, 'diff.jsonl');
const read = (p) => (fs.existsSync(p) ? fs.readFileSync(p, 'utf8') : '<missing>');
let rt;
let sb;

before(async () => {
  fs.mkdirSync(host);
  fs.writeFileSync(path.join(host, 'main.txt'), 'one\n');
  fs.writeFileSync(path.join(host, 'other.txt'), 'two\n');
  fs.writeFileSync(path.join(host, 'gone.txt'), 'bye\n');
  rt = await Runtime.create({ stateDir });
});

after(async () => {
  if (sb?.alive) await sb.destroy();
  rt?.close();
  assert.deepEqual(sandboxDirs(stateDir), [], 'a sandbox was left in the state dir');
  fs.rmSync(stateDir, { recursive: true, force: true });
  fs.rmSync(base, { recursive: true, force: true });
});

test('bad mounts reject before anything boots', async () => {
  assert.equal(hasFeature('workspaces'), true);
  await assert.rejects(Sandbox.create({ runtime: rt, mounts: [{ hostDir: 'relative', guestPath: '/work' }] }),
    (e) => e instanceof InvalidArgumentError && /absolute/.test(e.message));
  await assert.rejects(Sandbox.create({ runtime: rt, mounts: [{ hostDir: host, guestPath: '/proc/x' }] }),
    (e) => e instanceof InvalidArgumentError && e.message.includes('/proc/x'));
  await assert.rejects(Sandbox.create({ runtime: rt, mounts: [{ hostDir: path.join(base, 'missing'), guestPath: '/work' }] }),
    NotFoundError);
  await assert.rejects(Sandbox.create({ runtime: rt, mounts: [{ hostDir: host }] }), InvalidArgumentError);
  await assert.rejects(Sandbox.create({ runtime: rt, mounts: host }), InvalidArgumentError);
});

test('guest writes stay in the guest and show in the diff and the patch', async () => {
  sb = await Sandbox.create({ runtime: rt, mounts: [{ hostDir: host, guestPath: '/work' }], diffLog });
  const r = await sb.run('cat /work/main.txt && echo changed >> /work/main.txt && echo x >> /work/other.txt && ' +
                         'rm /work/gone.txt && mkdir /work/sub && echo n > /work/sub/new.txt');
  assert.equal(r.exitCode, 0, r.stderr);
  assert.equal(r.stdout, 'one\n');
  assert.equal(read(path.join(host, 'main.txt')), 'one\n');
  const changes = await sb.diff('/work');
  assert.deepEqual(changes.map((c) => [c.kind, c.path]), [
    ['deleted', 'gone.txt'], ['modified', 'main.txt'], ['modified', 'other.txt'],
    ['created', 'sub'], ['created', 'sub/new.txt']]);
  const created = changes[4];
  assert.equal(created.type, 'file');
  assert.equal(created.size, 2);
  assert.equal(created.mount, '/work');
  assert.match(created.sha256, /^[0-9a-f]{64}$/);
  assert.equal(created.mode & 0o777, 0o644);
  assert.equal(Object.keys(created).length, 8);  // plain data
  await assert.rejects(sb.diff('/elsewhere'), NotFoundError);
  const patch = await sb.patch({ mount: '/work' });
  assert.match(patch, /\+changed/);
  const only = await sb.patch({ paths: ['other.txt'] });
  assert.match(only, /\+x/);
  assert.doesNotMatch(only, /main\.txt/);
});

test('an approver that throws writes nothing', async () => {
  await assert.rejects(sb.exportChanges({
    approve: (c) => {
      if (c.path === 'sub/new.txt') throw new Error('reviewer crashed');
      return true;
    },
  }), /reviewer crashed/);
  assert.equal(read(path.join(host, 'main.txt')), 'one\n');
  assert.equal(fs.existsSync(path.join(host, 'gone.txt')), true);
});

test('export applies what the approver approves; a change altered after approval is declined', async () => {
  const asked = [];
  const res = await sb.exportChanges({
    approve: async (c) => {
      asked.push(c.path);
      // The guest rewrites this one while the reviewer looks at it.
      if (c.path === 'sub/new.txt') await sb.run('echo swapped > /work/sub/new.txt');
      return c.path === 'main.txt' || c.path === 'sub/new.txt';
    },
  });
  assert.deepEqual(asked, ['gone.txt', 'main.txt', 'other.txt', 'sub', 'sub/new.txt']);
  assert.deepEqual(res.applied.map((c) => c.path), ['main.txt']);
  assert.deepEqual(res.declined.map((c) => c.path), ['gone.txt', 'other.txt', 'sub', 'sub/new.txt']);
  assert.equal(res.declined[3].size, 8);  // the swapped content: not written
  assert.equal(read(path.join(host, 'main.txt')), 'one\nchanged\n');
  assert.equal(read(path.join(host, 'other.txt')), 'two\n');
  assert.equal(fs.existsSync(path.join(host, 'sub')), false);
});

test('export to a destination directory; bad paths', async () => {
  const dest = path.join(base, 'dest');
  fs.mkdirSync(dest);
  const res = await sb.exportChanges({ mount: '/work', paths: ['sub'], destDir: dest });
  assert.deepEqual(res.applied.map((c) => c.path).sort(), ['sub', 'sub/new.txt']);
  assert.equal(read(path.join(dest, 'sub', 'new.txt')), 'swapped\n');
  await assert.rejects(sb.exportChanges({ paths: ['nope.txt'] }),
    (e) => e instanceof InvalidArgumentError && e.message.includes('nope.txt'));
  await assert.rejects(sb.exportChanges({ destDir: path.join(base, 'no-such-dir') }), NotFoundError);
  await assert.rejects(sb.exportChanges({ approve: 'yes' }), InvalidArgumentError);
});

test('a host edit is a conflict and nothing is applied', async () => {
  fs.writeFileSync(path.join(host, 'other.txt'), 'edited on the host\n');
  await assert.rejects(sb.exportChanges({ paths: ['other.txt', 'sub'] }), (e) => {
    assert.ok(e instanceof ConflictError && e instanceof ZteeError);
    assert.equal(e.code, 'ZTEE_E_CONFLICT');
    assert.equal(e.status, -15);
    assert.match(e.message, /other\.txt/);
    return true;
  });
  assert.equal(read(path.join(host, 'other.txt')), 'edited on the host\n');
  assert.equal(fs.existsSync(path.join(host, 'sub')), false);
});

test('destroy writes the diff log', async () => {
  const id = sb.id;
  await sb.destroy();
  const records = fs.readFileSync(diffLog, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(records.length, 1);
  assert.equal(records[0].sandbox, id);
  const ours = records[0].changes.filter((c) => c.mount === '/work').map((c) => c.path);
  assert.deepEqual(ours, ['gone.txt', 'main.txt', 'other.txt', 'sub', 'sub/new.txt']);
});
