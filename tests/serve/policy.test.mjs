// `ztee serve --policy --audit --approver-url` with the real E2B JavaScript
// SDK: every command and file write is classified; refused calls reach the
// SDK as errors; approvals come from a real HTTP approver on loopback (or
// do not come, and the call is denied); the audit log verifies and holds
// the records in order. ONE server for the whole file.
//
// Needs: ZTEE_BIN (the ztee CLI), root (the jail), the guest image.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import http from 'node:http'
import { keygen, startServe, stopServe } from './harness.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const sdkPresent = existsSync(join(here, 'node_modules', 'e2b', 'package.json'))
const skip = sdkPresent ? false : 'SKIP: tests/serve/node_modules is missing: run `tools/dev setup` (npm ci in tests/serve)'
if (skip) console.log(skip)

const policy = {
  version: 1,
  tiers: {
    L0: { action: 'run' },
    L1: { action: 'run', timeout_ms: 1500, output_cap: 1000 },
    L2: { action: 'audit' },
    L4: { action: 'approve', approval_timeout_ms: 2000 },
    L5: { action: 'deny' },
  },
  rules: [
    // A command that reads an open stdin runs whatever it is sent later, unclassified.
    { name: 'interactive', tool: ['e2b.commands.run'], labels: ['stdin'], tier: 'L5' },
    { name: 'harmless', tool: ['e2b.commands.run'], command: '^(echo|true)( [A-Za-z0-9 _.-]*)?$', tier: 'L0' },
    { name: 'bounded', tool: ['e2b.commands.run'], command: '^(sleep|seq) [0-9]+$', tier: 'L1' },
    { name: 'read-files', tool: ['e2b.commands.run'], command: '^cat [A-Za-z0-9/._-]+$', tier: 'L2' },
    { name: 'removals', tool: ['e2b.commands.run'], command: '^rm [A-Za-z0-9/._-]+$', tier: 'L4' },
    { name: 'scratch-writes', tool: ['e2b.files.write'], command: '^(write|mkdir|remove|move)( /tmp/[A-Za-z0-9._/-]+)+$', tier: 'L2' },
  ],
}

let e2b, server, base, key, dir, approver, serverLog = ''
const asked = []  // what the approver received
const held = []   // replies never sent (the "hang" case), ended in after()
const auditFile = () => join(dir, 'audit.jsonl')

before(async () => {
  if (skip) return
  assert.ok(process.env.ZTEE_BIN, 'ZTEE_BIN must name the ztee CLI')
  dir = mkdtempSync(join(tmpdir(), 'ztee-serve-policy-'))
  key = keygen(join(dir, 'keys'), ['--name', 'main'])
  writeFileSync(join(dir, 'policy.json'), JSON.stringify(policy, null, 2))
  writeFileSync(join(dir, 'audit.key'), 'a test key of the audit log, 32+ bytes long\n')
  // The approver: approves removing approved-*, denies denied-*, never answers hang-*.
  approver = http.createServer((req, res) => {
    let body = ''
    req.on('data', d => { body += d })
    req.on('end', () => {
      const call = JSON.parse(body)
      asked.push(call)
      res.setHeader('Content-Type', 'application/json')
      if (call.text.includes('late-')) setTimeout(() => res.end(JSON.stringify({ approve: true, by: 'slow-approver' })), 1500)
      else if (call.text.includes('approved-')) res.end(JSON.stringify({ approve: true, by: 'test-approver' }))
      else if (call.text.includes('denied-')) res.end(JSON.stringify({ approve: false, by: 'test-approver', reason: 'not this one' }))
      else held.push(res)
    })
  })
  await new Promise(r => approver.listen(0, '127.0.0.1', r))
  ;({ proc: server, base } = await startServe(['--keys', join(dir, 'keys'),
    '--pool', '1', '--node', 'pol', '--state-dir', join(dir, 'state'), '--policy', join(dir, 'policy.json'),
    // batch: the records' fsync off the server's loop (the default, fsync, is AuditLog's own tests').
    '--audit', auditFile(), '--audit-key-file', join(dir, 'audit.key'), '--audit-durability', 'batch',
    '--approver-url', `http://127.0.0.1:${approver.address().port}/approve`], d => { serverLog += d }))
  process.env.E2B_API_URL = base
  process.env.E2B_SANDBOX_URL = base
  process.env.E2B_API_KEY = key
  e2b = await import('e2b')
})

after(async () => {
  if (skip || !server) return
  for (const res of held) res.destroy()
  approver.close()
  if (server.exitCode === null && server.signalCode === null)
    assert.equal(await stopServe(server), 0, `ztee serve did not stop cleanly on SIGTERM: ${serverLog}`)
  rmSync(dir, { recursive: true, force: true })
})

function ztee(args) {
  return new Promise(resolve => {
    execFile(process.env.ZTEE_BIN, args, { encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }))
  })
}

const sha = s => createHash('sha256').update(s).digest('hex')
const records = () => readFileSync(auditFile(), 'utf8').trim().split('\n').map(l => JSON.parse(l))

// The events of one call (by the trace of its "call" record with this text).
function eventsOf(text) {
  const all = records()
  const call = all.find(r => r.event === 'call' && r.text_sha256 === sha(text))
  assert.ok(call, `no call record for ${JSON.stringify(text)}`)
  return all.filter(r => r.trace === call.trace)
}

test('CLI: --audit and --approver-url need --policy; a bad policy file is refused with its line', { skip }, async () => {
  let r = await ztee(['serve', '--keys', join(dir, 'keys'), '--listen', '127.0.0.1:0', '--audit', join(dir, 'x.jsonl')])
  assert.equal(r.code, 125)
  assert.match(r.stderr, /--audit, --audit-key-file and --approver-url need --policy FILE/)
  writeFileSync(join(dir, 'bad.json'), '{"version": 1,\n "tiers": {"L0": {"action": "maybe"}}, "rules": []}')
  r = await ztee(['serve', '--keys', join(dir, 'keys'), '--listen', '127.0.0.1:0', '--policy', join(dir, 'bad.json')])
  assert.equal(r.code, 125)
  assert.match(r.stderr, /bad\.json: line 2: /)
  r = await ztee(['serve', '--keys', join(dir, 'keys'), '--listen', '127.0.0.1:0', '--policy', join(dir, 'policy.json'),
    '--audit', join(dir, 'x.jsonl'), '--audit-durability', 'sometimes'])
  assert.equal(r.code, 125)
  assert.match(r.stderr, /--audit-durability needs fsync, batch or none/)
  r = await ztee(['serve', '--keys', join(dir, 'keys'), '--listen', '127.0.0.1:0', '--policy', join(dir, 'policy.json'),
    '--audit-durability', 'batch'])
  assert.equal(r.code, 125)
  assert.match(r.stderr, /--audit-durability needs --audit FILE/)
  assert.ok(!existsSync(join(dir, 'x.jsonl')))
})

test('SDK: commands and file writes go through the policy, the approver and the audit log', { skip, timeout: 180_000 }, async () => {
  const sbx = await e2b.Sandbox.create({ metadata: { purpose: 'policy-test' } })
  const id = sbx.sandboxId
  try {
    // run (L0) and audit (L2) tiers run.
    let r = await sbx.commands.run('echo hi')
    assert.equal(r.stdout, 'hi\n')
    r = await sbx.commands.run('true')
    assert.equal(r.exitCode, 0)
    r = await sbx.commands.run('cat /etc/hostname')
    assert.equal(r.exitCode, 0)

    // Nothing allows `ls`: refused before it runs, with the tier and why.
    await assert.rejects(sbx.commands.run('ls /'), err => {
      assert.ok(err instanceof e2b.SandboxError, `${err?.constructor?.name}: ${err?.message}`)
      assert.match(err.message, /\[permission_denied\] refused by the server's policy \(tier L5 deny, no rule of the server's policy matched\): nothing allows this call \(fail closed\)/)
      return true
    })
    // A denied shell trick: the rule's regex must match the whole line.
    await assert.rejects(sbx.commands.run('echo hi; ls /'), /permission_denied/)
    // The same allowed command with its stdin open carries the label "stdin",
    // which the first rule refuses: nothing can be fed to it unclassified.
    await assert.rejects(sbx.commands.run('cat /etc/hostname', { background: true, stdin: true }), err => {
      assert.match(err.message, /\[permission_denied\] refused by the server's policy \(tier L5 deny, rule "interactive"\)/)
      return true
    })

    // File writes: under /tmp allowed (audited), elsewhere refused (403).
    await sbx.files.write('/tmp/approved-file', 'x')
    await sbx.files.write('/tmp/denied-file', 'y')
    await sbx.files.write('/tmp/hang-file', 'z')
    assert.equal(await sbx.files.makeDir('/tmp/made'), true)
    await assert.rejects(sbx.files.write('/home/user/nope', 'n'), err => {
      assert.match(err.message, /403: refused by the server's policy \(tier L5 deny/)
      return true
    })
    await assert.rejects(sbx.files.makeDir('/home/user/nodir'), /\[permission_denied\] refused by the server's policy/)
    assert.equal(await sbx.files.exists('/home/user/nope'), false)  // reads are not classified

    // Approvals: granted -> runs; denied -> refused; no answer by the deadline -> refused.
    r = await sbx.commands.run('rm /tmp/approved-file')
    assert.equal(r.exitCode, 0)
    assert.equal(await sbx.files.exists('/tmp/approved-file'), false)
    await assert.rejects(sbx.commands.run('rm /tmp/denied-file'),
      /\[permission_denied\] refused by the server's policy \(tier L4 approve, rule "removals"\): denied by test-approver: not this one/)
    const t0 = Date.now()
    await assert.rejects(sbx.commands.run('rm /tmp/hang-file'), /tier L4 approve, rule "removals"\): no approval within 2000 ms: denied/)
    assert.ok(Date.now() - t0 >= 1900, 'the approval deadline was not waited for')
    // The client gives up (its timeoutMs) before the approval comes: approved later, it does not run.
    await sbx.files.write('/tmp/late-file', 'l')
    await assert.rejects(sbx.commands.run('rm /tmp/late-file', { timeoutMs: 500 }))
    await new Promise(r => setTimeout(r, 2000))
    assert.equal(await sbx.files.exists('/tmp/late-file'), true)
    assert.equal(await sbx.files.exists('/tmp/denied-file'), true)
    assert.equal(await sbx.files.exists('/tmp/hang-file'), true)
    // What the approver was shown.
    const q = asked.find(a => a.text === 'rm /tmp/approved-file')
    assert.ok(q, JSON.stringify(asked))
    assert.equal(q.tool, 'e2b.commands.run')
    assert.equal(q.tier, 'L4')
    assert.equal(q.rule, 'removals')
    assert.equal(q.sandbox, id)
    assert.equal(q.key, 'main')
    assert.deepEqual(q.labels, ['key:main', 'meta:purpose=policy-test'])

    // The tier's limits bound the command: its timeout and output cap.
    await assert.rejects(sbx.commands.run('sleep 30'), /timeout of 1500 ms/)
    r = await sbx.commands.run('seq 100000')
    assert.ok(r.stdout.length > 0 && r.stdout.length <= 1000, `output cap 1000 not applied: ${r.stdout.length} bytes`)
    // Still running when the sandbox is killed (its tier ends it after 1.5 s): its end is recorded too.
    await sbx.commands.run('sleep 9', { background: true })
  } finally {
    await sbx.kill()
  }

  // The audit log: intact (chain and HMAC), the records in order.
  const v = await ztee(['audit', 'verify', auditFile(), '--key-file', join(dir, 'audit.key')])
  assert.equal(v.code, 0, v.stdout + v.stderr)
  assert.match(v.stdout, /^OK: \d+ records, chain intact, every HMAC matches/)
  const text = readFileSync(auditFile(), 'utf8')
  assert.ok(!text.includes(key), 'the API key is in the audit log')
  const all = records()
  const mine = all.filter(r => r.sandbox === id)
  assert.equal(mine[0].event, 'sandbox_create')
  assert.equal(mine.at(-1).event, 'sandbox_kill')
  assert.ok(mine.every(r => r.key === 'main'))
  const ev = t => eventsOf(t).map(r => r.event)
  assert.deepEqual(ev('echo hi'), ['call', 'decision', 'exit'])
  assert.equal(eventsOf('echo hi')[2].exit_code, 0)
  assert.deepEqual(ev('cat /etc/hostname'), ['call', 'decision', 'exit'])
  assert.equal(eventsOf('cat /etc/hostname')[1].action, 'audit')
  assert.deepEqual(ev('ls /'), ['call', 'decision', 'denied'])
  assert.deepEqual(ev('rm /tmp/approved-file'), ['call', 'decision', 'approval_asked', 'approval_granted', 'exit'])
  assert.equal(eventsOf('rm /tmp/approved-file')[3].by, 'test-approver')
  assert.deepEqual(ev('rm /tmp/denied-file'), ['call', 'decision', 'approval_asked', 'approval_denied', 'denied'])
  assert.deepEqual(ev('rm /tmp/hang-file'), ['call', 'decision', 'approval_asked', 'approval_expired', 'denied'])
  assert.deepEqual(ev('rm /tmp/late-file'), ['call', 'decision', 'approval_asked', 'approval_granted', 'exit'])
  assert.equal(eventsOf('rm /tmp/late-file')[4].error, 'the client left before the call could run')
  assert.deepEqual(ev('write /home/user/nope'), ['call', 'decision', 'denied'])
  assert.deepEqual(eventsOf('write /tmp/approved-file')[0].writes, ['/tmp/approved-file'])
  assert.equal(eventsOf('sleep 30').at(-1).timed_out, true)
  assert.match(eventsOf('sleep 9').at(-1).error, /the sandbox was killed \(killed by the API\)/)
  // seq is recorded in order: the sandbox's records keep the order they happened in.
  const order = ['echo hi', 'cat /etc/hostname', 'ls /', 'rm /tmp/approved-file', 'rm /tmp/hang-file', 'seq 100000']
    .map(t => all.findIndex(r => r.event === 'call' && r.text_sha256 === sha(t)))
  assert.deepEqual([...order].sort((a, b) => a - b), order)
})

test('POST /v1/exec: an allowed command runs and is recorded; a refused one is a 403 with the reason', { skip, timeout: 120_000 }, async () => {
  const post = async body => {
    const res = await fetch(`${base}/v1/exec`, { method: 'POST', headers: { 'X-API-Key': key, 'Content-Type': 'application/json' }, body: JSON.stringify(body) })
    return { status: res.status, body: await res.json() }
  }
  let r = await post({ cmd: 'echo via-exec' })
  assert.equal(r.status, 200, JSON.stringify(r.body))
  assert.equal(r.body.stdout, 'via-exec\n')
  r = await post({ argv: ['id'] })
  assert.equal(r.status, 403)
  assert.match(r.body.message, /refused by the server's policy \(tier L5 deny, no rule of the server's policy matched\)/)
  const ok = eventsOf('echo via-exec')
  assert.deepEqual(ok.map(x => x.event), ['call', 'decision', 'exit'])
  assert.equal(ok[0].sandbox, '')
  assert.ok(ok[2].sandbox.length > 0, 'the exit record names no sandbox')
  assert.equal(ok[2].exit_code, 0)
  assert.deepEqual(eventsOf('id').map(x => x.event), ['call', 'decision', 'denied'])
})
