// Two `ztee serve` nodes behind a real nginx (Debian's) that routes with the
// shipped deploy/nginx/ztee-serve.conf: the E2B SDK, unchanged and pointed at
// the proxy, creates sandboxes that spread over both nodes, every later call
// reaches the node that runs the sandbox, a list shows both nodes'
// sandboxes, and when one node dies only its sandboxes fail, with an error
// that names it.
//
// Needs: ZTEE_BIN (the ztee CLI), root (the jail), the guest image, nginx,
// and the SDK in tests/serve/node_modules (`tools/dev setup`).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import net from 'node:net'
import http from 'node:http'
import { vmmsOf } from './harness.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const shippedConf = join(here, '..', '..', 'deploy', 'nginx', 'ztee-serve.conf')
const nginxBin = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find(p => existsSync(p))
const skip = !existsSync(join(here, 'node_modules', 'e2b', 'package.json'))
  ? 'SKIP: tests/serve/node_modules is missing: run `tools/dev setup` (npm ci in tests/serve)'
  : !nginxBin ? 'SKIP: nginx not found: apt-get install nginx (tools/dev setup does)' : false
if (skip) console.log(skip)

const NODES = ['node-a', 'node-b']
const COUNT = 10
let e2b, dir, key, proxy
const nodes = {}  // name -> { proc, port, log, stateDir, exited }
let nginx, nginxLog = ''

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

function startNode(name, port, peerPort) {
  const n = { port, log: '', stateDir: join(dir, name) }
  n.proc = spawn(process.env.ZTEE_BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--keys', join(dir, 'keys'),
    '--node', name, '--peer', `http://127.0.0.1:${peerPort}`, '--pool', '1', '--state-dir', n.stateDir],
  { stdio: ['ignore', 'pipe', 'pipe'] })
  n.exited = new Promise(resolve => n.proc.on('exit', (code, signal) => resolve(signal ?? code)))
  n.proc.stderr.on('data', d => { n.log += d })
  n.ready = new Promise((resolve, reject) => {
    let out = ''
    n.proc.stdout.on('data', d => {
      out += d
      if (/listening on http:\/\/[0-9.]+:\d+ \(.*node (\S+)\)/.test(out)) resolve()
    })
    n.exited.then(code => reject(new Error(`ztee serve --node ${name} exited with ${code}: ${n.log}`)))
  })
  nodes[name] = n
  return n
}

// The shipped proxy configuration with this test's nodes and listener in
// its three marked parts; nothing else of it is changed.
function proxyConfig(ngDir, listenPort) {
  let conf = readFileSync(shippedConf, 'utf8')
  const part = (what, lines) => {
    const re = new RegExp(`(# BEGIN ztee ${what}\\n)[^]*?(\\n\\s*# END ztee ${what})`)
    assert.match(conf, re, `deploy/nginx/ztee-serve.conf has no "# BEGIN ztee ${what}" ... "# END ztee ${what}" part`)
    conf = conf.replace(re, (_, b, e) => b + lines.join('\n') + e)
  }
  part('nodes', NODES.map(n => `    ${n} 127.0.0.1:${nodes[n].port};`))
  part('any', NODES.map(n => `    server 127.0.0.1:${nodes[n].port} max_fails=1 fail_timeout=10s;`))
  part('listen', [`    listen 127.0.0.1:${listenPort};`])
  writeFileSync(join(ngDir, 'ztee-serve.conf'), conf)
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map(t => `  ${t}_temp_path ${join(ngDir, t)};`).join('\n')
  writeFileSync(join(ngDir, 'nginx.conf'), `worker_processes 1;
pid ${join(ngDir, 'nginx.pid')};
error_log ${join(ngDir, 'error.log')} notice;
daemon off;
events { worker_connections 512; }
http {
  access_log ${join(ngDir, 'access.log')};
${temp}
  include ${join(ngDir, 'ztee-serve.conf')};
}
`)
}

async function eventually(fn, ms = 10_000) {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn().catch(() => false)
    if (v || Date.now() > end) return v
    await new Promise(r => setTimeout(r, 100))
  }
}

// One HTTP request; Host may be set (fetch cannot).
function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, res => {
      let data = ''
      res.setEncoding('utf8')
      res.on('data', d => { data += d })
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: data }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

// Running QEMU processes whose command line mentions `needle` (a libztee
// sandbox id is their -name), with their parent pid: the node's process.
function vmms(needle) {
  return vmmsOf(null).filter(v => v.argv.includes(needle))
}

// Every VMM seen as a child of a node (pool sandboxes included), so that the
// end can check that none of them outlived its node.
const seenVmms = new Map()
function noteVmms() {
  const pids = new Set(NODES.map(n => nodes[n]?.proc?.pid).filter(Boolean))
  for (const v of vmms('sb-')) if (pids.has(v.ppid)) seenVmms.set(v.pid, v.argv)
}
function stillRunning(pid, argv) {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ') === argv } catch { return false }
}

const nodeOf = id => id.match(/^sb-[0-9a-f]+-(node-[ab])$/)?.[1]
const localId = id => id.replace(/-node-[ab]$/, '')

before(async () => {
  if (skip) return
  assert.ok(process.env.ZTEE_BIN, 'ZTEE_BIN must name the ztee CLI')
  dir = mkdtempSync(join(tmpdir(), 'ztee-serve-cluster-'))
  key = execFileSync(process.env.ZTEE_BIN, ['serve', 'keygen', '--keys', join(dir, 'keys')],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  const [pa, pb, pn] = [await freePort(), await freePort(), await freePort()]
  startNode('node-a', pa, pb)
  startNode('node-b', pb, pa)
  await Promise.all(NODES.map(n => nodes[n].ready))

  const ngDir = join(dir, 'nginx')
  mkdirSync(ngDir)
  proxyConfig(ngDir, pn)
  nginx = spawn(nginxBin, ['-p', ngDir, '-c', join(ngDir, 'nginx.conf'), '-e', join(ngDir, 'error.log')],
    { stdio: ['ignore', 'pipe', 'pipe'] })
  nginx.stderr.on('data', d => { nginxLog += d })
  nginx.exited = new Promise(resolve => nginx.on('exit', (code, signal) => resolve(signal ?? code)))
  proxy = `http://127.0.0.1:${pn}`
  assert.ok(await eventually(async () => (await request(`${proxy}/health`)).status === 200),
    `nginx did not come up on ${proxy}: ${nginxLog}`)

  process.env.E2B_API_URL = proxy
  process.env.E2B_SANDBOX_URL = proxy
  process.env.E2B_API_KEY = key
  e2b = await import('e2b')
})

after(async () => {
  if (skip || !dir) return
  const problems = []
  try {
    noteVmms()
    for (const n of NODES.map(x => nodes[x]).filter(Boolean)) {
      if (n.proc.exitCode === null && n.proc.signalCode === null) {
        n.proc.kill('SIGTERM')
        const stuck = setTimeout(() => n.proc.kill('SIGKILL'), 60_000)
        const code = await n.exited
        clearTimeout(stuck)
        if (code !== 0) problems.push(`a node did not stop cleanly on SIGTERM (${code}): ${n.log}`)
      }
    }
    // The node killed with SIGKILL left its jails behind (its VMMs died
    // with it): what `ztee gc` is for.
    for (const n of NODES.map(x => nodes[x]).filter(Boolean)) {
      try {
        execFileSync(process.env.ZTEE_BIN, ['gc', '--state-dir', n.stateDir], { stdio: 'pipe' })
      } catch (e) {
        problems.push(`ztee gc --state-dir ${n.stateDir} failed: ${e.stderr}`)
      }
    }
    if (nginx && nginx.exitCode === null && nginx.signalCode === null) {
      nginx.kill('SIGQUIT')  // graceful stop
      const stuck = setTimeout(() => nginx.kill('SIGKILL'), 10_000)
      await nginx.exited
      clearTimeout(stuck)
    }
    // No VMM of theirs outlived them: none seen as a node's child, none of
    // a sandbox this test created.
    const left = [...seenVmms].filter(([pid, argv]) => stillRunning(pid, argv)).map(([, argv]) => argv)
    left.push(...vmms('sb-').filter(v => created.some(id => v.argv.includes(localId(id)))).map(v => v.argv))
    if (left.length) problems.push(`VMMs left running: ${[...new Set(left)].join('\n')}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  assert.deepEqual(problems, [])
})

let boxes = []  // the SDK's Sandbox objects, created through the proxy
const created = []  // every sandbox id this test made

test(`${COUNT} creates through the proxy spread over both nodes`, { skip }, async () => {
  boxes = await Promise.all(Array.from({ length: COUNT }, (_, i) =>
    e2b.Sandbox.create({ timeoutMs: 300_000, metadata: { suite: 'cluster', i: String(i) } })))
  created.push(...boxes.map(b => b.sandboxId))
  noteVmms()
  const per = { 'node-a': 0, 'node-b': 0 }
  for (const b of boxes) {
    const node = nodeOf(b.sandboxId)
    assert.ok(node, `sandbox id ${b.sandboxId} does not name a node`)
    per[node] += 1
    // The node its id names really runs it: its VMM is that node's child.
    assert.deepEqual(vmms(localId(b.sandboxId)).map(v => v.ppid), [nodes[node].proc.pid],
      `the VMM of ${b.sandboxId} is not a child of ${node}`)
  }
  console.log(`sandboxes per node: ${JSON.stringify(per)}`)
  assert.ok(per['node-a'] > 0 && per['node-b'] > 0, `all on one node: ${JSON.stringify(per)}`)
})

test('every call reaches the node that runs the sandbox', { skip }, async () => {
  await Promise.all(boxes.map(async (b, i) => {
    const r = await b.commands.run(`echo box-${i} && cat /etc/hostname >/dev/null`)
    assert.equal(r.stdout, `box-${i}\n`)
    await b.files.write(`/tmp/cluster-${i}.txt`, `payload ${i} ${b.sandboxId}`)
    assert.equal(await b.files.read(`/tmp/cluster-${i}.txt`), `payload ${i} ${b.sandboxId}`)
    const info = await b.getInfo()
    assert.equal(info.sandboxId, b.sandboxId)
    assert.equal(info.metadata.i, String(i))
    await b.setTimeout(200_000)
    const later = await e2b.Sandbox.getInfo(b.sandboxId)
    assert.ok(Math.abs(later.endAt.getTime() - (Date.now() + 200_000)) < 30_000, `endAt ${later.endAt.toISOString()}`)
    assert.equal(await b.isRunning(), true)
  }))
  // Sandbox.connect by id alone, then envd by host name ("<port>-<id>.<domain>").
  const one = boxes[0]
  const conn = await e2b.Sandbox.connect(one.sandboxId)
  assert.equal((await conn.commands.run('cat /tmp/cluster-0.txt')).stdout, `payload 0 ${one.sandboxId}`)
  const token = JSON.parse((await request(`${proxy}/sandboxes/${one.sandboxId}`, { headers: { 'X-API-Key': key } })).body)
    .envdAccessToken
  const byHost = await request(`${proxy}/files?path=/tmp/cluster-0.txt`,
    { headers: { Host: `49983-${one.sandboxId}.e2b.test`, 'X-Access-Token': token } })
  assert.equal(byHost.status, 200, byHost.body)
  assert.equal(byHost.body, `payload 0 ${one.sandboxId}`)
})

test('a node asked for another node\'s sandbox answers 404 naming that node', { skip }, async () => {
  const onA = boxes.find(b => nodeOf(b.sandboxId) === 'node-a')
  const b = nodes['node-b']
  let r = await request(`http://127.0.0.1:${b.port}/sandboxes/${onA.sandboxId}`, { headers: { 'X-API-Key': key } })
  assert.equal(r.status, 404)
  assert.match(JSON.parse(r.body).message, /runs on node node-a, not on this node \(node-b\)/)
  r = await request(`http://127.0.0.1:${b.port}/files?path=/etc/hostname`, { headers: { 'E2b-Sandbox-Id': onA.sandboxId } })
  assert.equal(r.status, 404)
  assert.match(JSON.parse(r.body).message, /runs on node node-a/)
  // A node the proxy does not know: nginx's own 404 says so.
  r = await request(`${proxy}/sandboxes/sb-0123456789ab-node-z`, { headers: { 'X-API-Key': key } })
  assert.equal(r.status, 404)
  assert.match(JSON.parse(r.body).message, /node node-z, which this proxy does not know/)
})

async function listed(opts = {}) {
  const ids = []
  const pager = e2b.Sandbox.list({ query: { metadata: { suite: 'cluster' } }, ...opts })
  while (pager.hasNext) ids.push(...(await pager.nextItems()).map(s => s.sandboxId))
  return ids
}

test('Sandbox.list through the proxy shows both nodes\' sandboxes, in pages too', { skip }, async () => {
  const all = boxes.map(b => b.sandboxId).sort()
  // Twice: creates and lists go to any node, and each node asks the other.
  assert.deepEqual((await listed()).sort(), all)
  assert.deepEqual((await listed()).sort(), all)
  const paged = await listed({ limit: 3 })
  assert.equal(paged.length, all.length, `pages repeated or lost sandboxes: ${paged}`)
  assert.deepEqual([...paged].sort(), all)
  // Killed through the proxy: gone from the list, whichever node ran it.
  const victims = NODES.map(n => boxes.find(b => nodeOf(b.sandboxId) === n))
  await Promise.all(victims.map(v => v.kill()))
  boxes = boxes.filter(b => !victims.includes(b))
  for (const v of victims) {
    assert.equal(await v.isRunning(), false)
    assert.deepEqual(vmms(localId(v.sandboxId)), [], `killed sandbox ${v.sandboxId} left its VMM`)
  }
  assert.deepEqual((await listed()).sort(), boxes.map(b => b.sandboxId).sort())
})

test('a node that dies fails only its own sandboxes, with an error naming it', { skip }, async () => {
  const dead = nodes['node-b']
  noteVmms()
  dead.proc.kill('SIGKILL')
  await dead.exited
  const onA = boxes.filter(b => nodeOf(b.sandboxId) === 'node-a')
  const onB = boxes.filter(b => nodeOf(b.sandboxId) === 'node-b')
  assert.ok(onA.length && onB.length)
  for (const b of onB) {
    // The SDK words a failed command start itself (the proxy's 502 becomes
    // Connect's "unavailable"): SandboxNotFoundError, as for any dead sandbox.
    await assert.rejects(b.commands.run('echo x'), e => e instanceof e2b.SandboxNotFoundError)
    await assert.rejects(b.getInfo(), e => /502: ztee serve node node-b is unreachable/.test(e.message))
    await assert.rejects(b.files.read('/etc/hostname'), e => /node node-b is unreachable/.test(e.message))
    assert.equal(await b.isRunning(), false)
  }
  for (const [i, b] of onA.entries()) {
    assert.equal((await b.commands.run(`echo alive-${i}`)).stdout, `alive-${i}\n`)
    assert.equal((await b.getInfo()).sandboxId, b.sandboxId)
  }
  // Lists go to the live node; it says which peer did not answer.
  assert.deepEqual((await listed()).sort(), onA.map(b => b.sandboxId).sort())
  const raw = await request(`${proxy}/sandboxes`, { headers: { 'X-API-Key': key } })
  assert.equal(raw.status, 200)
  assert.match(raw.headers['x-ztee-unreachable-peers'] ?? '', new RegExp(`127\\.0\\.0\\.1:${dead.port} \\(`))
  // New sandboxes still start, on the live node.
  const fresh = await e2b.Sandbox.create({ metadata: { suite: 'cluster-late' } })
  created.push(fresh.sandboxId)
  assert.equal(nodeOf(fresh.sandboxId), 'node-a')
  assert.equal((await fresh.commands.run('echo fresh')).stdout, 'fresh\n')
  await fresh.kill()
  for (const b of onA) await b.kill()
  assert.deepEqual(await listed(), [])
})
