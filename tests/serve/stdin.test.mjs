// `ztee serve`: stdin of a running command and signals, with the real E2B
// JavaScript SDK (commands.run with stdin: true, sendStdin, closeStdin, kill,
// and the SDK's own Connect client for SendSignal with other signals), plus
// StreamInput as raw Connect (the SDK never calls it).
//
// Needs: ZTEE_BIN (the ztee CLI), root (the jail), the guest image.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { keygen, startServe, stopServe, eventually as waitFor } from './harness.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const sdkPresent = existsSync(join(here, 'node_modules', 'e2b', 'package.json'))
const skip = sdkPresent ? false : 'SKIP: tests/serve/node_modules is missing: run `tools/dev setup` (npm ci in tests/serve)'
if (skip) console.log(skip)

let e2b, server, base, key, dir, sbx, serverLog = ''

before(async () => {
  if (skip) return
  assert.ok(process.env.ZTEE_BIN, 'ZTEE_BIN must name the ztee CLI')
  dir = mkdtempSync(join(tmpdir(), 'ztee-serve-stdin-'))
  key = keygen(join(dir, 'keys'), ['--name', 'stdin'])
  ;({ proc: server, base } = await startServe(['--keys', join(dir, 'keys'), '--state-dir', join(dir, 'state')],
    d => { serverLog += d }))
  process.env.E2B_API_URL = base
  process.env.E2B_SANDBOX_URL = base
  process.env.E2B_API_KEY = key
  e2b = await import('e2b')
  sbx = await e2b.Sandbox.create({ timeoutMs: 120_000 })
})

after(async () => {
  if (skip || !server) return
  try {
    if (sbx) await sbx.kill()
  } finally {
    const code = await stopServe(server)
    rmSync(dir, { recursive: true, force: true })
    assert.equal(code, 0, `ztee serve did not stop cleanly on SIGTERM: ${serverLog}`)
  }
})

const eventually = (fn, ms = 20000) => waitFor(fn, ms, 20)

const byPid = pid => ({ process: { selector: { case: 'pid', value: pid } } })

test('sendStdin reaches cat piece by piece; closeStdin ends it; input after close or exit fails', { skip }, async () => {
  let out = ''
  const h = await sbx.commands.run('cat', { background: true, stdin: true, onStdout: d => { out += d } })
  await sbx.commands.sendStdin(h.pid, 'one\n')
  assert.ok(await eventually(() => out === 'one\n'), `cat echoed ${JSON.stringify(out)}`)
  await h.sendStdin('two\n')  // the handle's own method
  assert.ok(await eventually(() => out === 'one\ntwo\n'), `cat echoed ${JSON.stringify(out)}`)
  await sbx.commands.closeStdin(h.pid)
  const r = await h.wait()
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'one\ntwo\n')
  await assert.rejects(sbx.commands.sendStdin(h.pid, 'late'), e => e instanceof e2b.NotFoundError)

  // Closed but still running: input is refused, saying why.
  const h2 = await sbx.commands.run('cat; echo done; sleep 30', { background: true, stdin: true })
  await h2.closeStdin()
  await assert.rejects(sbx.commands.sendStdin(h2.pid, 'x'), /stdin was closed/)
  assert.equal(await sbx.commands.kill(h2.pid), true)
  await assert.rejects(h2.wait(), e => e instanceof e2b.CommandExitError && e.exitCode === -1)

  // Started without stdin: SendInput and CloseStdin say how to get one.
  const h3 = await sbx.commands.run('sleep 30', { background: true })
  await assert.rejects(sbx.commands.sendStdin(h3.pid, 'x'), /started without stdin/)
  await assert.rejects(sbx.commands.closeStdin(h3.pid), /started without stdin/)
  assert.equal(await sbx.commands.kill(h3.pid), true)
  await assert.rejects(h3.wait(), e => e instanceof e2b.CommandExitError)
  await assert.rejects(sbx.commands.sendStdin(99999, 'x'), e => e instanceof e2b.NotFoundError)
})

test('binary stdin arrives byte for byte', { skip }, async () => {
  const bytes = new Uint8Array(200_000)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + (i >> 8)) & 0xff
  const h = await sbx.commands.run('sha256sum', { background: true, stdin: true })
  for (let off = 0; off < bytes.length; off += 65536) await sbx.commands.sendStdin(h.pid, bytes.subarray(off, off + 65536))
  await sbx.commands.closeStdin(h.pid)
  const r = await h.wait()
  assert.equal(r.stdout.split(' ')[0], createHash('sha256').update(bytes).digest('hex'))
})

test('sendStdin waits while the command does not read (as envd does), then all of it arrives', { skip }, async () => {
  // 8 MiB in 512 KiB calls to a command that reads nothing for its first
  // seconds: the guest takes 1 MiB ahead of it and the host 1 MiB more, so
  // most calls must wait for room rather than fail.
  const bytes = new Uint8Array(8 << 20)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + (i >> 12)) & 0xff
  const h = await sbx.commands.run('sleep 2; sha256sum', { background: true, stdin: true })
  for (let off = 0; off < bytes.length; off += 512 << 10) await sbx.commands.sendStdin(h.pid, bytes.subarray(off, off + (512 << 10)))
  await sbx.commands.closeStdin(h.pid)
  const r = await h.wait()
  assert.equal(r.stdout.split(' ')[0], createHash('sha256').update(bytes).digest('hex'))

  // Calls still waiting when the command ends fail with NotFound; none is lost
  // (concurrent calls may reach the server in any order: the SDK opens
  // several connections).
  const h2 = await sbx.commands.run('sleep 1; exit 3', { background: true, stdin: true })
  const piece = new Uint8Array(512 << 10)
  const sends = []
  for (let i = 0; i < 12; i++) sends.push(sbx.commands.sendStdin(h2.pid, piece))
  const settled = await Promise.allSettled(sends)
  const failed = settled.filter(s => s.status === 'rejected')
  assert.ok(failed.length > 0, 'some calls had to wait for the command, which never read')
  for (const f of failed) assert.ok(f.reason instanceof e2b.NotFoundError, String(f.reason))
  await assert.rejects(h2.wait(), e => e instanceof e2b.CommandExitError && e.exitCode === 3)

  // Past 8 MiB waiting on the server, a call is refused at once (RateLimitError).
  const h3 = await sbx.commands.run('sleep 60', { background: true, stdin: true })
  // 12 MiB at once: about 2 MiB go in (host buffer and guest window), 8 MiB
  // wait, the rest is refused (the calls may reach the server in any order).
  let limited = 0
  const flood = []
  for (let i = 0; i < 24; i++)  // each settles to null (in) or its error
    flood.push(sbx.commands.sendStdin(h3.pid, piece).then(() => null, e => { if (e instanceof e2b.RateLimitError) limited++; return e }))
  assert.ok(await eventually(() => limited > 0), 'no call was refused past 8 MiB')
  assert.equal(await sbx.commands.kill(h3.pid), true)
  let waitedThenEnded = 0
  for (const e of await Promise.all(flood)) {
    if (e === null) continue
    assert.ok(e instanceof e2b.RateLimitError || e instanceof e2b.NotFoundError, String(e))
    if (e instanceof e2b.NotFoundError) waitedThenEnded++
  }
  assert.ok(limited >= 2 && limited <= 6, `${limited} of 24 calls refused`)
  assert.ok(waitedThenEnded >= 12, `${waitedThenEnded} calls were waiting when the command was killed`)
})

test('SendSignal: SIGUSR1, SIGINT, SIGTERM reach a trap; kill after exit is false', { skip }, async () => {
  const rpc = sbx.commands.rpc  // the SDK's own Connect client for process.Process
  const script = "trap 'echo got USR1' USR1; trap 'echo got INT; exit 4' INT; trap 'echo got TERM; exit 3' TERM; " +
    'echo ready; while :; do sleep 0.05; done'
  let out = ''
  const h = await sbx.commands.run(script, { background: true, onStdout: d => { out += d } })
  assert.ok(await eventually(() => out === 'ready\n'))
  await rpc.sendSignal({ ...byPid(h.pid), signal: 10 })  // not in the proto's enum: sent as its number
  assert.ok(await eventually(() => out === 'ready\ngot USR1\n'), JSON.stringify(out))
  await rpc.sendSignal({ ...byPid(h.pid), signal: 15 })  // SIGNAL_SIGTERM
  await assert.rejects(h.wait(), e => e instanceof e2b.CommandExitError && e.exitCode === 3)
  assert.equal(out, 'ready\ngot USR1\ngot TERM\n')
  // The command is gone: kill says so (false), SendSignal is not_found.
  assert.equal(await sbx.commands.kill(h.pid), false)
  await assert.rejects(rpc.sendSignal({ ...byPid(h.pid), signal: 15 }), e => e.code === 5 /* NotFound */)

  out = ''
  const h2 = await sbx.commands.run(script, { background: true, onStdout: d => { out += d } })
  assert.ok(await eventually(() => out === 'ready\n'))
  await rpc.sendSignal({ ...byPid(h2.pid), signal: 2 })
  await assert.rejects(h2.wait(), e => e instanceof e2b.CommandExitError && e.exitCode === 4)
  assert.equal(out, 'ready\ngot INT\n')

  // No trap: SIGTERM ends it by the signal.
  out = ''
  const h3 = await sbx.commands.run('echo ready; exec sleep 30', { background: true, onStdout: d => { out += d } })
  assert.ok(await eventually(() => out === 'ready\n'))
  await rpc.sendSignal({ ...byPid(h3.pid), signal: 15 })
  await assert.rejects(h3.wait(), e => e instanceof e2b.CommandExitError && /signal: 15/.test(e.error ?? e.message))
  // Sent as soon as the start event is in: the signal follows the command's
  // start in the guest, so it is not lost.
  for (let i = 0; i < 3; i++) {
    const h5 = await sbx.commands.run('sleep 30', { background: true })
    await rpc.sendSignal({ ...byPid(h5.pid), signal: 15 })
    await assert.rejects(h5.wait(), e => e instanceof e2b.CommandExitError && /signal: 15/.test(e.error ?? e.message))
  }
  // Out of range or unspecified: invalid_argument.
  const h4 = await sbx.commands.run('sleep 30', { background: true })
  for (const signal of [0, 65])
    await assert.rejects(rpc.sendSignal({ ...byPid(h4.pid), signal }), e => e.code === 3 /* InvalidArgument */ && /1\.\.64/.test(e.message))
  assert.equal(await sbx.commands.kill(h4.pid), true)
  await assert.rejects(h4.wait(), e => e instanceof e2b.CommandExitError && e.exitCode === -1)
})

// StreamInput as a client that buffers its stream sends it: one body with
// start, data and keepalive messages (proto JSON) and the end-of-stream envelope.
async function streamInput(messages) {
  const info = await (await fetch(`${base}/sandboxes/${sbx.sandboxId}`, { headers: { 'X-API-Key': key } })).json()
  const parts = messages.map(m => {
    const body = Buffer.from(JSON.stringify(m))
    const head = Buffer.from([0, 0, 0, 0, 0])
    head.writeUInt32BE(body.length, 1)
    return Buffer.concat([head, body])
  })
  parts.push(Buffer.from([2, 0, 0, 0, 2, 0x7b, 0x7d]))  // end of stream: {}
  const res = await fetch(`${base}/process.Process/StreamInput`, {
    method: 'POST', body: Buffer.concat(parts),
    headers: { 'Content-Type': 'application/connect+json', 'E2b-Sandbox-Id': sbx.sandboxId, 'X-Access-Token': info.envdAccessToken },
  })
  const buf = Buffer.from(await res.arrayBuffer())
  const out = []
  for (let off = 0; off + 5 <= buf.length;) {
    const n = buf.readUInt32BE(off + 1)
    out.push({ flags: buf[off], json: JSON.parse(buf.subarray(off + 5, off + 5 + n).toString()) })
    off += 5 + n
  }
  return { status: res.status, messages: out }
}

test('StreamInput (raw Connect): the messages are applied when the stream ends', { skip }, async () => {
  let out = ''
  const h = await sbx.commands.run('cat', { background: true, stdin: true, onStdout: d => { out += d } })
  const b64 = s => Buffer.from(s).toString('base64')
  let r = await streamInput([{ start: { process: { pid: h.pid } } }, { data: { input: { stdin: b64('a\n') } } }, { keepalive: {} },
    { data: { input: { stdin: b64('b\n') } } }])
  assert.equal(r.status, 200)
  assert.deepEqual(r.messages, [{ flags: 0, json: {} }, { flags: 2, json: {} }])
  assert.ok(await eventually(() => out === 'a\nb\n'), JSON.stringify(out))
  // Data before start, and an unknown pid, are refused in the stream's end message.
  r = await streamInput([{ data: { input: { stdin: b64('x') } } }])
  assert.equal(r.messages.at(-1).flags, 2)
  assert.match(r.messages.at(-1).json.error.message, /must begin with a start message/)
  r = await streamInput([{ start: { process: { pid: 99999 } } }])
  assert.equal(r.messages.at(-1).json.error.code, 'not_found')
  await sbx.commands.closeStdin(h.pid)
  assert.equal((await h.wait()).stdout, 'a\nb\n')
})
