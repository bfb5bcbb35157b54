// `ztee serve` with the real E2B JavaScript SDK (npm `e2b`, pinned by
// package-lock.json, installed by `tools/dev setup`), plus bad input with
// curl and raw sockets. ONE server for the whole file; SDK code runs
// unchanged, configured only by E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY.
//
// Needs: ZTEE_BIN (the ztee CLI), root (the jail), the guest image.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import net from 'node:net'
import http from 'node:http'
import { keygen, startServe, stopServe, vmmsOf, stillRunning, eventually } from './harness.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const sdkPresent = existsSync(join(here, 'node_modules', 'e2b', 'package.json'))
const skip = sdkPresent ? false : 'SKIP: tests/serve/node_modules is missing: run `tools/dev setup` (npm ci in tests/serve)'
if (skip) console.log(skip)

let e2b, server, base, key, key2, dir, serverLog = ''
const stateDir = () => join(dir, 'state')

before(async () => {
  if (skip) return
  assert.ok(process.env.ZTEE_BIN, 'ZTEE_BIN must name the ztee CLI')
  dir = mkdtempSync(join(tmpdir(), 'ztee-serve-test-'))
  key = keygen(join(dir, 'keys'), ['--name', 'main'])
  key2 = keygen(join(dir, 'keys'), ['--name', 'small', '--max-sandboxes', '1'])
  ;({ proc: server, base } = await startServe(['--keys', join(dir, 'keys'), '--pool', '2', '--node', 'solo',
    '--state-dir', stateDir(), '--max-body-mib', '4', '--header-timeout-ms', '1000'], d => { serverLog += d }))
  process.env.E2B_API_URL = base
  process.env.E2B_SANDBOX_URL = base
  process.env.E2B_API_KEY = key
  e2b = await import('e2b')
})

after(async () => {
  if (skip || !server) return
  // The VMMs this server runs now (at least its ready pool), by pid: all of
  // them must be gone once it has stopped.
  const children = vmmsOf(server.pid)
  const code = await stopServe(server)
  try {
    assert.equal(code, 0, `ztee serve did not stop cleanly on SIGTERM: ${serverLog}`)
    assert.ok(children.length >= 2, `the server ran ${children.length} VMMs before SIGTERM, not its pool of 2`)
    // Every sandbox of this server is gone: none of its VMMs still runs.
    assert.deepEqual(stillRunning(children), [])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

// Command lines of running QEMU processes that mention `needle`.
function vmms(needle) {
  return vmmsOf(null).map(v => v.argv).filter(a => a.includes(needle))
}

function curl(args) {
  return new Promise(resolve => {
    execFile('curl', ['-s', '-o', '-', '-w', '\n%{http_code}', ...args], { encoding: 'utf8', maxBuffer: 1 << 26 }, (err, out) => {
      const nl = out.lastIndexOf('\n')
      resolve({ status: Number(out.slice(nl + 1)), body: out.slice(0, nl) })
    })
  })
}

function ztee(args) {
  return new Promise(resolve => {
    execFile(process.env.ZTEE_BIN, args, { encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ code: err ? err.code : 0, stdout, stderr }))
  })
}

test('CLI: usage errors and refused key files exit 125 with a message', { skip }, async () => {
  let r = await ztee(['serve', '--bogus'])
  assert.equal(r.code, 125)
  assert.match(r.stderr, /^ztee: serve: unknown option --bogus/)
  r = await ztee(['serve', '--listen', '127.0.0.1:0'])
  assert.equal(r.code, 125)
  assert.match(r.stderr, /no key file: pass --keys FILE/)
  r = await ztee(['serve', '--keys', join(dir, 'missing')])
  assert.equal(r.code, 125)
  assert.match(r.stderr, /cannot read key file .*missing.*ztee serve keygen/)
  r = await ztee(['serve', '--keys', join(dir, 'keys'), '--listen', 'nowhere'])
  assert.equal(r.code, 125)
  assert.match(r.stderr, /--listen nowhere: expected ADDR:PORT/)
  r = await ztee(['serve', 'keygen'])
  assert.equal(r.code, 125)
  assert.ok(!readFileSync(join(dir, 'keys'), 'utf8').includes(key), 'the key file must not hold the key itself')
})

// One sandbox shared by the command and file tests.
let sbx
test('create, getInfo, isRunning', { skip }, async () => {
  sbx = await e2b.Sandbox.create({ timeoutMs: 120_000, metadata: { suite: 'serve', n: '1' }, envs: { GLOBAL_VAR: 'g' } })
  assert.match(sbx.sandboxId, /^sb-[0-9a-f]+-solo$/)  // the libztee id and the node (--node)
  const info = await sbx.getInfo()
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.equal(info.templateId, 'base')
  assert.deepEqual(info.metadata, { suite: 'serve', n: '1' })
  assert.equal(info.state, 'running')
  assert.ok(info.endAt - info.startedAt >= 119_000)
  assert.equal(await sbx.isRunning(), true)
})

test('commands.run: foreground, envs, cwd, user, callbacks', { skip }, async () => {
  const out = [], err = []
  const r = await sbx.commands.run('echo "$GLOBAL_VAR $LOCAL_VAR"; pwd; id -un; echo oops >&2', {
    envs: { LOCAL_VAR: 'l' }, onStdout: d => out.push(d), onStderr: d => err.push(d),
  })
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'g l\n/home/user\nuser\n')  // E2B's default account
  assert.equal(r.stderr, 'oops\n')
  assert.equal(out.join(''), r.stdout)
  assert.equal(err.join(''), 'oops\n')
  const c = await sbx.commands.run('pwd; id -un', { cwd: '/tmp', user: 'nobody' })
  assert.equal(c.stdout, '/tmp\nnobody\n')
  assert.equal((await sbx.commands.run('pwd; id -un', { user: 'root' })).stdout, '/root\nroot\n')
})

test('commands.run: non-zero exit is CommandExitError; timeoutMs kills', { skip }, async () => {
  await assert.rejects(sbx.commands.run('echo partial; echo bad >&2; exit 7'), e => {
    assert.ok(e instanceof e2b.CommandExitError, String(e))
    assert.equal(e.exitCode, 7)
    assert.equal(e.stdout, 'partial\n')
    assert.equal(e.stderr, 'bad\n')
    return true
  })
  const t0 = Date.now()
  await assert.rejects(sbx.commands.run('sleep 30', { timeoutMs: 1500 }), e => e instanceof e2b.TimeoutError)
  assert.ok(Date.now() - t0 < 10_000)
  // The server killed it at the same deadline.
  assert.ok(await eventually(async () => (await sbx.commands.list()).length === 0))
})

test('background commands: list, connect (with replay), kill, wait', { skip }, async () => {
  const seen = []
  const h = await sbx.commands.run('for i in 1 2 3; do echo $i; sleep 0.2; done', { background: true, onStdout: d => seen.push(d) })
  assert.ok(h.pid > 0)
  const done = await h.wait()
  assert.equal(done.stdout, '1\n2\n3\n')
  assert.equal(seen.join(''), '1\n2\n3\n')

  let sawStart
  const started = new Promise(r => { sawStart = r })
  const long = await sbx.commands.run('echo started; sleep 0.5; echo while-detached; sleep 60',
    { background: true, timeoutMs: 0, onStdout: d => d.includes('started') && sawStart() })
  await started
  const listed = await sbx.commands.list()
  assert.equal(listed.length, 1)
  assert.equal(listed[0].pid, long.pid)
  assert.equal(listed[0].cmd, '/bin/bash')
  await long.disconnect()  // the command goes on
  await new Promise(r => setTimeout(r, 1500))
  const again = await sbx.commands.connect(long.pid)
  // The output so far (also from while it was detached) is replayed.
  assert.ok(await eventually(() => again.stdout === 'started\nwhile-detached\n'), `stdout: ${JSON.stringify(again.stdout)}`)
  assert.equal(await sbx.commands.kill(long.pid), true)
  await assert.rejects(again.wait(), e => e instanceof e2b.CommandExitError && e.exitCode === -1)
  assert.ok(await eventually(async () => (await sbx.commands.list()).length === 0))
  assert.equal(await sbx.commands.kill(long.pid), false)
  await assert.rejects(sbx.commands.connect(99999), e => e instanceof e2b.NotFoundError)
})

test('unsupported calls fail clearly', { skip }, async () => {
  await assert.rejects(sbx.files.watchDir('/tmp', () => {}), /watching directories is not supported/)
  await assert.rejects(sbx.pause(), /not supported by ztee serve/)
  await assert.rejects(e2b.Sandbox.create({ allowInternetAccess: true }), /have no network/)
  await assert.rejects(e2b.Sandbox.create({ network: { allowOut: ['192.0.2.1'] } }), /have no network/)
  await assert.rejects(e2b.Sandbox.create({ lifecycle: { onTimeout: 'pause' } }), /autoPause is not supported/)
})

test('files: text, bytes, list, exists, makeDir, rename, remove, getInfo', { skip }, async () => {
  const w = await sbx.files.write('/tmp/t/hello.txt', 'héllo\n')
  assert.equal(w.path, '/tmp/t/hello.txt')
  assert.equal(await sbx.files.read('/tmp/t/hello.txt'), 'héllo\n')
  const bytes = new Uint8Array(256).map((_, i) => i)
  await sbx.files.write('/tmp/t/bin', bytes)
  assert.deepEqual(await sbx.files.read('/tmp/t/bin', { format: 'bytes' }), bytes)
  await sbx.files.write('/tmp/t/octet', 'as octet-stream', { useOctetStream: true })
  assert.equal(await sbx.files.read('/tmp/t/octet'), 'as octet-stream')
  assert.equal(await (await sbx.files.read('/tmp/t/octet', { format: 'blob' })).text(), 'as octet-stream')
  const chunks = []
  for await (const c of await sbx.files.read('/tmp/t/octet', { format: 'stream' })) chunks.push(Buffer.from(c))
  assert.equal(Buffer.concat(chunks).toString(), 'as octet-stream')
  await sbx.files.write('/tmp/t/octet', 'z'.repeat(100_000), { gzip: true })  // Content-Encoding: gzip
  assert.equal(await sbx.files.read('/tmp/t/octet', { gzip: true }), 'z'.repeat(100_000))
  await sbx.files.remove('/tmp/t/octet')
  await sbx.files.write([{ path: 'rel.txt', data: 'r' }, { path: '/tmp/t/two', data: '2' }])
  assert.equal((await sbx.commands.run('cat /home/user/rel.txt /tmp/t/two')).stdout, 'r2')
  // Written as the default account, as in E2B; user: 'root' writes as root.
  await sbx.files.write('/tmp/t/root-owned', 'x', { user: 'root' })
  assert.equal((await sbx.commands.run('stat -c %U /home/user/rel.txt /tmp/t/root-owned')).stdout, 'user\nroot\n')
  assert.deepEqual((await sbx.files.list('/tmp/t')).map(e => e.name).sort(), ['bin', 'hello.txt', 'root-owned', 'two'])
  assert.equal(await sbx.files.exists('/tmp/t/bin'), true)
  assert.equal(await sbx.files.exists('/tmp/t/nope'), false)
  assert.equal(await sbx.files.makeDir('/tmp/t/a/b'), true)
  assert.equal(await sbx.files.makeDir('/tmp/t/a/b'), false)
  const deep = await sbx.files.list('/tmp/t', { depth: 3 })
  assert.ok(deep.some(e => e.path === '/tmp/t/a/b' && e.type === 'dir'))
  const moved = await sbx.files.rename('/tmp/t/hello.txt', '/tmp/t/a/moved.txt')
  assert.equal(moved.path, '/tmp/t/a/moved.txt')
  const info = await sbx.files.getInfo('/tmp/t/a/moved.txt')
  assert.equal(info.type, 'file')
  assert.equal(info.size, 7)
  assert.equal(info.permissions, '-rw-r--r--')
  await assert.rejects(sbx.files.read('/tmp/t/nope'), e => e instanceof e2b.NotFoundError)
  await assert.rejects(sbx.files.getInfo('/tmp/t/nope'), e => e instanceof e2b.NotFoundError)
  await sbx.files.remove('/tmp/t')
  assert.equal(await sbx.files.exists('/tmp/t'), false)
})

test('an unchanged SDK program runs against the server', { skip }, async () => {
  const out = await new Promise((resolve, reject) => {
    execFile(process.execPath, [join(here, 'quickstart.mjs')], {
      cwd: here, encoding: 'utf8',
      env: { PATH: process.env.PATH, E2B_API_URL: base, E2B_SANDBOX_URL: base, E2B_API_KEY: key },
    }, (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout)))
  })
  assert.equal(out, '45\n')
})

test('Sandbox.list (metadata filter, pages), connect, setTimeout, kill', { skip }, async () => {
  const other = await e2b.Sandbox.create({ metadata: { suite: 'serve', n: '2' } })
  const mine = []
  const pager = e2b.Sandbox.list({ query: { metadata: { suite: 'serve' } }, limit: 1 })
  let pages = 0
  while (pager.hasNext) {
    const items = await pager.nextItems()
    pages += 1
    mine.push(...items.map(s => s.sandboxId))
  }
  assert.deepEqual(mine.sort(), [sbx.sandboxId, other.sandboxId].sort())
  assert.equal(pages, 2)
  const only = await e2b.Sandbox.list({ query: { metadata: { n: '2' } } }).nextItems()
  assert.deepEqual(only.map(s => s.sandboxId), [other.sandboxId])

  const conn = await e2b.Sandbox.connect(other.sandboxId)
  assert.equal((await conn.commands.run('echo via-connect')).stdout, 'via-connect\n')
  // A short timeout: the server kills the sandbox when it passes.
  await conn.setTimeout(1500)
  await new Promise(r => setTimeout(r, 3500))
  assert.equal(await conn.isRunning(), false)
  await assert.rejects(e2b.Sandbox.getInfo(other.sandboxId), e => e instanceof e2b.SandboxNotFoundError)
  assert.equal(await e2b.Sandbox.kill(other.sandboxId), false)

  await assert.rejects(e2b.Sandbox.connect('sb-000000000000'), e => e instanceof e2b.SandboxNotFoundError)
})

test('bad input: 401, 404, 400, 413, 429, wrong access token', { skip }, async () => {
  let r = await curl([`${base}/sandboxes`])
  assert.equal(r.status, 401)
  assert.match(JSON.parse(r.body).message, /X-API-Key/)
  r = await curl(['-H', 'X-API-Key: e2b_' + '0'.repeat(40), `${base}/sandboxes`])
  assert.equal(r.status, 401)
  assert.equal(JSON.parse(r.body).code, 401)
  await assert.rejects(e2b.Sandbox.create({ apiKey: 'e2b_' + '1'.repeat(40) }), e => e instanceof e2b.AuthenticationError)

  const auth = ['-H', `X-API-Key: ${key}`]
  r = await curl([...auth, `${base}/sandboxes/sb-000000000000`])
  assert.equal(r.status, 404)
  assert.deepEqual(Object.keys(JSON.parse(r.body)).sort(), ['code', 'message'])
  r = await curl([...auth, '-X', 'POST', '-H', 'Content-Type: application/json', '-d', '{"templateID": "base",', `${base}/sandboxes`])
  assert.equal(r.status, 400)
  assert.match(JSON.parse(r.body).message, /malformed JSON/)
  r = await curl([...auth, '-X', 'POST', '-d', '{"templateID":"no-such"}', `${base}/sandboxes`])
  assert.equal(r.status, 404)
  assert.match(JSON.parse(r.body).message, /template 'no-such' not found/)
  r = await curl([...auth, '-X', 'POST', '-d', '{"timeout":"x"}', `${base}/sandboxes`])
  assert.equal(r.status, 400)
  // Over --max-body-mib 4: refused from Content-Length, before the body is read.
  const big = await new Promise(resolve => {
    const req = http.request(`${base}/sandboxes`, { method: 'POST', headers: { 'X-API-Key': key, 'Content-Length': 5 << 20 } }, res => {
      let body = ''
      res.on('data', d => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('error', () => {})
    req.write('x'.repeat(1 << 16))
  })
  assert.equal(big.status, 413)
  assert.match(JSON.parse(big.body).message, /over the limit/)

  // Per-key limit (max_sandboxes=1): the second create gets 429 + Retry-After.
  const one = await e2b.Sandbox.create({ apiKey: key2 })
  const limited = await fetch(`${base}/sandboxes`, { method: 'POST', headers: { 'X-API-Key': key2 }, body: '{"templateID":"base"}' })
  assert.equal(limited.status, 429)
  assert.equal(limited.headers.get('retry-after'), '5')
  assert.match((await limited.json()).message, /limit/)
  // Another key does not see it.
  r = await curl([...auth, `${base}/sandboxes/${one.sandboxId}`])
  assert.equal(r.status, 404)

  // envd: the sandbox's access token is required; bad Connect JSON is invalid_argument.
  const envd = ['-H', `E2b-Sandbox-Id: ${one.sandboxId}`]
  r = await curl([...envd, `${base}/files?path=/etc/hostname`])
  assert.equal(r.status, 401)
  r = await curl([...envd, '-H', 'X-Access-Token: wrong', `${base}/files?path=/etc/hostname`])
  assert.equal(r.status, 401)
  const token = ['-H', `X-Access-Token: ${one.envdAccessToken}`]
  r = await curl([...envd, ...token, `${base}/files?path=/etc/hostname`])
  assert.equal(r.status, 200)
  // Without E2B_SANDBOX_URL the SDK addresses envd by host name: 49983-<id>.<domain>.
  r = await curl(['-H', `Host: 49983-${one.sandboxId}.e2b.example`, ...token, `${base}/files?path=/etc/hostname`])
  assert.equal(r.status, 200)
  // curl asks "Expect: 100-continue" before a body over 1 KiB: answered at once.
  const t1 = Date.now()
  r = await curl([...envd, ...token, '-X', 'POST', '-H', 'Content-Type: application/octet-stream', '--data-binary', 'x'.repeat(4096),
    `${base}/files?path=/tmp/expect&username=root`])
  assert.equal(r.status, 200)
  assert.ok(Date.now() - t1 < 900, 'the server did not answer Expect: 100-continue')
  r = await curl([...envd, ...token, '-X', 'POST', '-H', 'Content-Type: application/json', '-d', '{"path": ', `${base}/filesystem.Filesystem/Stat`])
  assert.equal(r.status, 400)
  assert.equal(JSON.parse(r.body).code, 'invalid_argument')
  r = await curl([...envd, ...token, '-X', 'POST', '-H', 'Content-Type: application/json', '-d', '{"path":"/nope"}', `${base}/filesystem.Filesystem/Stat`])
  assert.equal(r.status, 404)
  assert.equal(JSON.parse(r.body).code, 'not_found')
  r = await curl([...envd, ...token, '-X', 'POST', '-H', 'Content-Type: application/proto', '-d', 'x', `${base}/filesystem.Filesystem/Stat`])
  assert.equal(r.status, 415)
  await one.kill()
  r = await curl([...envd, `${base}/health`])
  assert.equal(r.status, 502)
})

function rawRequest(text) {
  return new Promise(resolve => {
    const s = net.connect(Number(new URL(base).port), '127.0.0.1', () => s.write(text))
    let data = ''
    s.on('data', d => { data += d })
    s.on('close', () => resolve(data))
    s.on('error', () => resolve(data))
  })
}

test('HTTP: malformed request 400, slow headers 408, keep-alive, 200 connections', { skip }, async () => {
  let resp = await rawRequest('GARBAGE\r\n\r\n')
  assert.match(resp, /^HTTP\/1\.1 400 /)
  const t0 = Date.now()
  resp = await rawRequest('GET /health HTTP/1.1\r\nHost: x\r\n')  // headers never end
  assert.match(resp, /^HTTP\/1\.1 408 /)
  assert.ok(Date.now() - t0 < 5000)
  // Two requests on one connection, the second closes it.
  resp = await rawRequest('GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  assert.equal(resp.match(/HTTP\/1\.1 200 OK/g).length, 2)
  // 3000 pipelined requests (past the 64 KiB the server buffers before it
  // stops reading): all answered, in order, on one connection.
  resp = await rawRequest('GET /health HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(2999) + 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  assert.equal(resp.match(/HTTP\/1\.1 200 OK/g).length, 3000)
  const agent = new http.Agent({ keepAlive: true, maxSockets: 200 })
  const codes = await Promise.all(Array.from({ length: 200 }, () => new Promise((resolve, reject) => {
    http.get(`${base}/health`, { agent }, res => { res.resume(); res.on('end', () => resolve(res.statusCode)) }).on('error', reject)
  })))
  agent.destroy()
  assert.deepEqual([...new Set(codes)], [200])
})

test('a client that disconnects mid-stream leaves nothing behind', { skip }, async () => {
  const box = await e2b.Sandbox.create()
  const info = JSON.parse((await curl(['-H', `X-API-Key: ${key}`, `${base}/sandboxes/${box.sandboxId}`])).body)
  const msg = Buffer.from(JSON.stringify({ process: { cmd: '/bin/sh', args: ['-c', 'while :; do echo tick; sleep 0.05; done'] } }))
  const env = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), msg])
  env.writeUInt32BE(msg.length, 1)
  // Start a streaming command, read its first events, then drop the connection.
  await new Promise((resolve, reject) => {
    const req = http.request(`${base}/process.Process/Start`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/connect+json', 'E2b-Sandbox-Id': box.sandboxId, 'X-Access-Token': info.envdAccessToken },
    }, res => {
      let got = ''
      res.on('data', d => {
        got += d
        if (got.includes('"data"')) { req.destroy(); resolve() }
      })
    })
    req.on('error', e => { if (e.code !== 'ECONNRESET') reject(e) })
    req.end(env)
  })
  // As with E2B, the command itself goes on detached; it can be found and killed.
  const procs = await box.commands.list()
  assert.equal(procs.length, 1)
  assert.equal(await box.commands.kill(procs[0].pid), true)
  assert.ok(await eventually(async () => (await box.commands.list()).length === 0))
  const vmmId = box.sandboxId.replace(/-solo$/, '')  // the libztee sandbox id
  assert.equal(vmms(vmmId).length, 1)
  await box.kill()
  assert.deepEqual(vmms(vmmId), [], 'the killed sandbox left a VMM running')
  assert.equal(await box.isRunning(), false)
})

test('kill', { skip }, async () => {
  await sbx.kill()
  assert.equal(await sbx.isRunning(), false)
  assert.equal(await e2b.Sandbox.kill(sbx.sandboxId), false)
  const left = await e2b.Sandbox.list().nextItems()
  assert.deepEqual(left, [])
})
