// Pools, and what is left behind by sandboxes and pools nobody destroyed:
// collected ones (the finalizer backstop) and a process that exits.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import { Runtime, Pool, ClosedError, InvalidArgumentError, TimeoutError } from 'ztee';
import { leftovers, sandboxDirs, tempStateDir, waitFor } from './helpers.mjs';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
const here = path.dirname(fileURLToPath(import.meta.url));

const stateDir = tempStateDir('pool');
let rt;
let pool;

before(async () => {
  rt = await Runtime.create({ stateDir });
  pool = await Pool.create({ runtime: rt, minReady: 1, maxTotal: 3, warmUp: 'true' });
});

after(async () => {
  await pool?.close();
  rt?.close();
  // Everything closed or collected: no sandbox is left in the state dir.
  assert.ok(await collect(() => sandboxDirs(stateDir).length === 0), `left: ${sandboxDirs(stateDir).join(', ')}`);
  fs.rmSync(stateDir, { recursive: true, force: true });
});

async function collect(cond) {
  return waitFor(() => {
    gc();
    return cond();
  }, 60000, 200);
}

describe('pool', () => {
  test('lease hands out READY sandboxes; stats count them', async () => {
    const a = await pool.lease({ timeoutMs: 120000 });
    const b = await pool.lease({ timeoutMs: 120000 });
    assert.notEqual(a.id, b.id);
    const [ra, rb] = await Promise.all([a.run('hostname; echo a > /tmp/who'), b.run('cat /tmp/who 2>/dev/null || echo none')]);
    assert.equal(ra.exitCode, 0);
    assert.equal(rb.stdout, 'none\n');  // never shared
    const st = pool.stats();
    assert.equal(st.leased, 2);
    assert.ok(st.leases >= 2);
    assert.equal(st.leaseWaitHist.reduce((x, y) => x + y, 0), st.leases);
    assert.equal(typeof st.lastError, 'string');
    await a.destroy();
    await b[Symbol.asyncDispose]();
    assert.deepEqual(leftovers(stateDir, a.id), []);
    assert.equal(pool.stats().leased, 0);
  });

  test('bad options and a lease timeout', async () => {
    await assert.rejects(Pool.create({ runtime: rt, minReady: 3, maxTotal: 2 }), InvalidArgumentError);
    await assert.rejects(pool.lease({ timeoutMs: 0 }), InvalidArgumentError);
    // max_total 3: with 3 leased, a fourth lease times out.
    const held = [];
    for (let i = 0; i < 3; i++) held.push(await pool.lease({ timeoutMs: 120000 }));
    await assert.rejects(pool.lease({ timeoutMs: 300 }), (e) => e instanceof TimeoutError && e.code === 'ZTEE_E_TIMEOUT');
    assert.ok(pool.stats().leaseTimeouts >= 1);
    await Promise.all(held.map((s) => s.destroy()));
  });
});

describe('nothing left behind', () => {
  test('a sandbox collected without destroy() is destroyed', async () => {
    let sb = await pool.lease({ timeoutMs: 120000 });
    const id = sb.id;
    assert.equal((await sb.run('echo hi')).stdout, 'hi\n');
    assert.notEqual(leftovers(stateDir, id).length, 0, 'a live sandbox shows nothing on the host');
    sb = null;
    assert.ok(await collect(() => leftovers(stateDir, id).length === 0),
              `after GC: ${leftovers(stateDir, id).join(', ')}`);
  });

  test('a pool collected without close() destroys its sandboxes', async () => {
    // A runtime and state dir of its own: the sandboxes there are this pool's.
    const dir = tempStateDir('pool-gc');
    const rt2 = await Runtime.create({ stateDir: dir });
    let p = await Pool.create({ runtime: rt2, minReady: 1, maxTotal: 1, coldBoot: true });
    assert.ok(await waitFor(() => p.stats().ready === 1, 120000), 'the pool never got a READY sandbox');
    const ids = sandboxDirs(dir);
    assert.equal(ids.length, 1);
    p = null;
    assert.ok(await collect(() => leftovers(dir, ids[0]).length === 0), `after GC: ${leftovers(dir, ids[0]).join(', ')}`);
    rt2.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const how of ['process.exit', 'end of script']) {
    test(`a process that exits without destroying (${how}) leaves nothing`, () => {
      // The child runs where 'ztee' resolves (the staged package), with a
      // command still running in its sandbox.
      const script = `
        import { Runtime, Sandbox } from 'ztee';
        const rt = await Runtime.create({ stateDir: ${JSON.stringify(stateDir)} });
        const sb = await Sandbox.create({ runtime: rt });
        console.log(sb.id);
        ${how === 'process.exit'
          ? "sb.run('sleep 60'); setTimeout(() => process.exit(0), 300);"
          : "await sb.run('echo hi');"}
      `;
      const id = execFileSync(process.execPath, ['--input-type=module', '-e', script],
                              { cwd: here, encoding: 'utf8', timeout: 120000 }).trim();
      assert.match(id, /^sb-[0-9a-f]+$/);
      assert.deepEqual(leftovers(stateDir, id), []);
    });
  }

  test('a closed pool refuses leases, keeps its stats', async () => {
    const p = await Pool.create({ runtime: rt, minReady: 1, maxTotal: 1, coldBoot: true });
    await p.close();
    await assert.rejects(p.lease({ timeoutMs: 1000 }), ClosedError);
    assert.equal(typeof p.stats().created, 'number');
    await p.close();  // idempotent
  });
});
