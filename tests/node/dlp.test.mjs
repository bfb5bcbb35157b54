// Output DLP on a sandbox in the Node binding (options.dlp / dlpBlock).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Runtime, Sandbox, InvalidArgumentError, PermissionError } from 'ztee';
import { tempStateDir } from './helpers.mjs';

const stateDir = tempStateDir('dlp');
let rt;
let sb;

before(async () => {
  rt = await Runtime.create({ stateDir });
  sb = await Sandbox.create({ runtime: rt, dlp: true, dlpBlock: ['ssn'] });
});

after(async () => {
  if (sb?.alive) await sb.destroy();
  rt?.close();
});

test('collected output is redacted and the findings counted', async () => {
  const r = await sb.run("printf 'pay 4111 1111 1111 1111\\n'; echo bob@example.com >&2");
  assert.equal(r.stdout, 'pay [REDACTED:card]\n');
  assert.equal(r.stderr, '[REDACTED:email]\n');
  assert.equal(r.dlpFindings, 2);
});

test('streamed output never carries the raw value', async () => {
  const chunks = [];
  await sb.run("printf 'id 4111 1111'; sleep 0.3; printf ' 1111 1111 end\\n'", { onStdout: (c) => chunks.push(c) });
  assert.equal(chunks.join(''), 'id [REDACTED:card] end\n');
  for (const c of chunks) assert.ok(!c.includes('4111'), c);
});

test('a block-mode detector withholds the output; reads are scanned', async () => {
  await assert.rejects(sb.run('echo 219-09-9999'), (e) => e instanceof PermissionError && !e.message.includes('219-09-9999'));
  await sb.files.write('/tmp/c.txt', 'card=5555555555554444\n');
  assert.equal(await sb.files.read('/tmp/c.txt', { encoding: 'utf8' }), 'card=[REDACTED:card]\n');
});

test('an unknown detector is refused', async () => {
  await assert.rejects(Sandbox.create({ runtime: rt, dlpBlock: ['no_such_detector'] }), InvalidArgumentError);
});
