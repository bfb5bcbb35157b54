// `ztee serve`'s own APIs: POST /v1/exec (one-shot sandboxes) and GET
// /metrics (Prometheus text), on real sandboxes. One server (pool 2) for the
// whole file, plus a short-lived one for --metrics-auth.
//
// Needs: ZTEE_BIN (the ztee CLI), root (the jail), the guest image.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import http from 'node:http'
import { keygen, startServe, stopServe, vmmsOf, stillRunning, eventually } from './harness.mjs'

let server, base, key, key2, dir, serverLog = ''

before(async () => {
  assert.ok(process.env.ZTEE_BIN, 'ZTEE_BIN must name the ztee CLI')
  dir = mkdtempSync(join(tmpdir(), 'ztee-serve-api-test-'))
  key = keygen(join(dir, 'keys'), ['--name', 'main'])
  key2 = keygen(join(dir, 'keys'), ['--name', 'one', '--max-sandboxes', '1'])
  ;({ proc: server, base } = await startServe(['--keys', join(dir, 'keys'), '--pool', '2', '--state-dir',
    join(dir, 'state')], d => { serverLog += d }))
})

after(async () => {
  if (!server) return
  const children = vmmsOf(server.pid)  // its ready pool, at least
  const code = await stopServe(server)
  try {
    assert.equal(code, 0, `ztee serve did not stop cleanly on SIGTERM: ${serverLog}`)
    assert.ok(children.length >= 2, `the server ran ${children.length} VMMs before SIGTERM, not its pool of 2`)
    assert.deepEqual(stillRunning(children), [])
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

// VMMs of sandbox `id` (an E2B id "sb-<hex>-<node>" or the libztee id "sb-<hex>").
function vmms(id) {
  const local = id.match(/^sb-[0-9a-f]+/)[0]
  return vmmsOf(null).filter(v => v.argv.split(' ').includes(local))
}

async function exec(body, k = key) {
  const r = await fetch(`${base}/v1/exec`, {
    method: 'POST', headers: { 'X-API-Key': k, 'Content-Type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { status: r.status, headers: r.headers, json: await r.json() }
}

// A strict reader of the Prometheus text format (0.0.4): every line is a
// HELP, a TYPE or a sample; every sample belongs to a family declared by a
// TYPE line before it; label values are quoted; values are numbers;
// histogram buckets are cumulative and end in +Inf = _count.
function parseMetrics(text) {
  assert.ok(text.endsWith('\n'), 'the exposition must end with a newline')
  const types = new Map(), samples = []
  const name = '[a-zA-Z_:][a-zA-Z0-9_:]*'
  const sampleRe = new RegExp(`^(${name})(?:\\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*",?)*)\\})? (\\S+)$`)
  for (const line of text.slice(0, -1).split('\n')) {
    let m
    if ((m = line.match(new RegExp(`^# HELP (${name}) \\S.*$`)))) continue
    if ((m = line.match(new RegExp(`^# TYPE (${name}) (counter|gauge|histogram|summary|untyped)$`)))) {
      assert.ok(!types.has(m[1]), `TYPE of ${m[1]} given twice`)
      types.set(m[1], m[2])
      continue
    }
    m = line.match(sampleRe)
    assert.ok(m, `not a Prometheus text line: ${JSON.stringify(line)}`)
    const labels = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2]
    const value = m[3] === '+Inf' ? Infinity : Number(m[3])
    assert.ok(!Number.isNaN(value), `not a number: ${line}`)
    const family = types.has(m[1]) ? m[1] : m[1].replace(/_(bucket|sum|count)$/, '')
    assert.ok(types.has(family), `sample ${m[1]} before (or without) its TYPE line`)
    if (family !== m[1]) assert.equal(types.get(family), 'histogram', `${m[1]}: only histograms have _bucket/_sum/_count`)
    if (types.get(family) === 'counter') assert.ok(value >= 0 && Number.isInteger(value), `counter ${line}`)
    samples.push({ name: m[1], labels, value })
  }
  // Histograms: per label set, buckets ascending and cumulative; +Inf = count.
  for (const [fam, type] of types) {
    if (type !== 'histogram') continue
    const groups = new Map()
    for (const s of samples.filter(s => s.name.startsWith(fam + '_'))) {
      const { le, ...rest } = s.labels
      const k = JSON.stringify(rest)
      if (!groups.has(k)) groups.set(k, { buckets: [] })
      const g = groups.get(k)
      if (s.name === fam + '_bucket') g.buckets.push([le === '+Inf' ? Infinity : Number(le), s.value])
      else g[s.name.slice(fam.length + 1)] = s.value
    }
    for (const [k, g] of groups) {
      for (let i = 1; i < g.buckets.length; ++i) {
        assert.ok(g.buckets[i][0] > g.buckets[i - 1][0], `${fam}${k}: le not ascending`)
        assert.ok(g.buckets[i][1] >= g.buckets[i - 1][1], `${fam}${k}: buckets not cumulative`)
      }
      assert.equal(g.buckets.at(-1)[0], Infinity, `${fam}${k}: no +Inf bucket`)
      assert.equal(g.buckets.at(-1)[1], g.count, `${fam}${k}: +Inf bucket != _count`)
      assert.ok(g.sum >= 0)
    }
  }
  return { types, samples }
}

async function metrics(headers = {}) {
  const r = await fetch(`${base}/metrics`, { headers })
  assert.equal(r.status, 200)
  assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/)
  return parseMetrics(await r.text())
}

// The value of one sample (0 when absent, as Prometheus treats a counter not yet seen).
function value(m, name, labels = {}) {
  const s = m.samples.find(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
  return s ? s.value : 0
}

test('/v1/exec: cmd with env, cwd, user, stdin; the sandbox is gone when the answer comes', async () => {
  const r = await exec({ cmd: 'echo "$A $B"; pwd; id -un; cat; echo err >&2; exit 3', env: { A: 'a', B: 'b c' }, cwd: '/tmp', stdin: 'in\n' })
  assert.equal(r.status, 200, JSON.stringify(r.json))
  const j = r.json
  assert.match(j.sandbox_id, /^sb-[0-9a-f]+/)
  assert.equal(j.template, 'base')
  assert.equal(j.exit_code, 3)
  assert.equal(j.signal, 0)
  assert.equal(j.timed_out, false)
  assert.equal(j.truncated, false)
  assert.equal(j.stdout, 'a b c\n/tmp\nuser\nin\n')
  assert.equal(j.stderr, 'err\n')
  assert.equal(j.stdout_base64, undefined)
  assert.ok(j.duration_ms >= j.exec_ms && j.exec_ms > 0, JSON.stringify(j))
  assert.deepEqual(vmms(j.sandbox_id), [], 'the sandbox still runs after the answer')
  // Defaults: the account `user` in its home; root when asked.
  const d = await exec({ cmd: 'pwd; id -un' })
  assert.equal(d.json.stdout, '/home/user\nuser\n')
  assert.equal((await exec({ cmd: 'pwd; id -un', user: 'root' })).json.stdout, '/root\nroot\n')
})

test('/v1/exec: argv, bytes that are not UTF-8, output cap, timeout, stdin_base64', async () => {
  let r = await exec({ argv: ['printf', 'a\\377b'] })
  assert.equal(r.status, 200)
  assert.equal(r.json.stdout, 'a\ufffdb')
  assert.deepEqual(Buffer.from(r.json.stdout_base64, 'base64'), Buffer.from([0x61, 0xff, 0x62]))
  r = await exec({ argv: ['head', '-c', '100000', '/dev/zero'], max_output_bytes: 1000 })
  assert.equal(r.json.truncated, true)
  assert.ok(r.json.stdout.length <= 1000, `kept ${r.json.stdout.length} bytes`)
  const t0 = Date.now()
  r = await exec({ cmd: 'echo before; sleep 30', timeout_ms: 1000 })
  assert.equal(r.status, 200)
  assert.equal(r.json.timed_out, true)
  assert.equal(r.json.stdout, 'before\n')
  assert.ok(Date.now() - t0 < 15_000)
  r = await exec({ argv: ['od', '-An', '-tx1'], stdin_base64: Buffer.from([0, 1, 254]).toString('base64') })
  assert.equal(r.json.stdout.trim(), '00 01 fe')
})

test('/v1/exec: bad input is 400 naming the field; 401, 404, 405', async () => {
  const bad = async (body, re) => {
    const r = await exec(body)
    assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.status}`)
    assert.equal(r.json.code, 400)
    assert.match(r.json.message, re)
  }
  await bad('{"cmd": ', /malformed JSON/)
  await bad('[1]', /must be a JSON object/)
  await bad({}, /cmd .* or argv .* is required/)
  await bad({ cmd: 'true', argv: ['true'] }, /cmd or argv, not both/)
  await bad({ cmd: '' }, /^cmd must be/)
  await bad({ argv: [] }, /^argv must be/)
  await bad({ argv: ['echo', 3] }, /^argv must be/)
  await bad({ cmd: 'true', env: { A: 1 } }, /^env\.A must be a string/)
  await bad({ cmd: 'true', env: { 'A=B': 'x' } }, /^env: "A=B" is not a usable variable/)
  await bad({ cmd: 'true', cwd: 'tmp' }, /^cwd must be an absolute path/)
  await bad({ cmd: 'true', user: 'a b' }, /^user must be/)
  await bad({ cmd: 'true', timeout_ms: 0 }, /^timeout_ms must be an integer/)
  await bad({ cmd: 'true', timeout_ms: '5' }, /^timeout_ms must be an integer/)
  await bad({ cmd: 'true', max_output_bytes: 1e12 }, /^max_output_bytes must be/)
  await bad({ cmd: 'true', stdin: 'a', stdin_base64: 'YQ==' }, /stdin or stdin_base64, not both/)
  await bad({ cmd: 'true', stdin_base64: '!!' }, /^stdin_base64 is not valid base64/)
  await bad({ cmd: 'true', timeout: 5 }, /^unknown field "timeout"/)
  let r = await exec({ cmd: 'true', template: 'nope' })
  assert.equal(r.status, 404)
  assert.match(r.json.message, /template 'nope' not found: this server has base/)
  r = await exec({ cmd: 'true' }, 'e2b_' + '0'.repeat(40))
  assert.equal(r.status, 401)
  const nokey = await fetch(`${base}/v1/exec`, { method: 'POST', body: '{"cmd":"true"}' })
  assert.equal(nokey.status, 401)
  assert.match((await nokey.json()).message, /X-API-Key/)
  const get = await fetch(`${base}/v1/exec`, { headers: { 'X-API-Key': key } })
  assert.equal(get.status, 405)
  assert.equal(get.headers.get('allow'), 'POST')
})

test('/v1/exec: a key\'s concurrent limit is 429 + Retry-After; the slot is free again when the answer comes', async () => {
  const first = exec({ cmd: 'sleep 2; echo done' }, key2)
  // Wait until the first call holds its sandbox.
  assert.ok(await eventually(async () => value(await metrics(), 'ztee_serve_sandboxes_live', { api: 'exec' }) === 1))
  const second = await exec({ cmd: 'true' }, key2)
  assert.equal(second.status, 429)
  assert.equal(second.headers.get('retry-after'), '5')
  assert.match(second.json.message, /limit/)
  // An E2B create of the same key counts against the same limit.
  const create = await fetch(`${base}/sandboxes`, { method: 'POST', headers: { 'X-API-Key': key2 }, body: '{}' })
  assert.equal(create.status, 429)
  assert.equal((await first).json.stdout, 'done\n')
  const third = await exec({ cmd: 'echo again' }, key2)
  assert.equal(third.status, 200)
  assert.equal(third.json.stdout, 'again\n')
})

test('/v1/exec: a client that disconnects: the command is killed and the sandbox destroyed', async () => {
  const before = await metrics()
  const gone0 = value(before, 'ztee_serve_execs_total', { outcome: 'client_gone' })
  const req = http.request(`${base}/v1/exec`, { method: 'POST', headers: { 'X-API-Key': key } })
  req.on('error', () => {})
  req.end(JSON.stringify({ cmd: 'sleep 600' }))
  assert.ok(await eventually(async () => value(await metrics(), 'ztee_serve_sandboxes_live', { api: 'exec' }) === 1))
  const ids = () => [...serverLog.matchAll(/exec \d+: the client disconnected; killing its command in sandbox (sb-\S+)/g)].map(m => m[1])
  const known = ids().length
  req.destroy()
  assert.ok(await eventually(() => ids().length > known), `no disconnect logged: ${serverLog}`)
  const id = ids().at(-1)
  assert.ok(await eventually(async () => {
    const m = await metrics()
    return value(m, 'ztee_serve_execs_total', { outcome: 'client_gone' }) === gone0 + 1 &&
      value(m, 'ztee_serve_sandboxes_live', { api: 'exec' }) === 0
  }), 'the call did not end as client_gone')
  assert.match(serverLog, new RegExp(`sandbox ${id} destroyed after its client left`))
  assert.deepEqual(vmms(id), [], 'the sandbox of a disconnected client still runs')
})

test('/metrics: the format parses and the numbers move', async () => {
  const m0 = await metrics()
  for (const [n, t] of [['ztee_serve_requests_total', 'counter'], ['ztee_serve_request_duration_seconds', 'histogram'],
    ['ztee_serve_sandboxes_live', 'gauge'], ['ztee_serve_execs_total', 'counter'], ['ztee_serve_exec_duration_seconds', 'histogram'],
    ['ztee_serve_sandboxes_started_total', 'counter'], ['ztee_serve_pool_ready', 'gauge'], ['ztee_serve_pool_target', 'gauge']])
    assert.equal(m0.types.get(n), t, n)
  assert.equal(value(m0, 'ztee_serve_pool_target', { template: 'base' }), 2)
  const N = 3
  const ok0 = value(m0, 'ztee_serve_execs_total', { outcome: 'exit_zero' })
  const fail0 = value(m0, 'ztee_serve_execs_total', { outcome: 'exit_nonzero' })
  const req0 = value(m0, 'ztee_serve_requests_total', { route: 'exec', code: '200' })
  const bad0 = value(m0, 'ztee_serve_requests_total', { route: 'exec', code: '400' })
  const hist0 = value(m0, 'ztee_serve_request_duration_seconds_count', { route: 'exec' })
  const pool0 = value(m0, 'ztee_serve_sandboxes_started_total', { source: 'pool' })
  const leases0 = value(m0, 'ztee_serve_pool_leases_total', { template: 'base' })
  const destroyed0 = value(m0, 'ztee_serve_sandboxes_destroyed_total')
  const health0 = value(m0, 'ztee_serve_requests_total', { route: 'health', code: '200' })
  for (let i = 0; i < N; ++i) assert.equal((await exec({ cmd: 'true' })).status, 200)
  assert.equal((await exec({ cmd: 'exit 1' })).json.exit_code, 1)
  assert.equal((await exec({ nope: 1 })).status, 400)
  assert.equal((await fetch(`${base}/healthz`)).status, 200)
  const m1 = await metrics()
  assert.equal(value(m1, 'ztee_serve_execs_total', { outcome: 'exit_zero' }), ok0 + N)
  assert.equal(value(m1, 'ztee_serve_execs_total', { outcome: 'exit_nonzero' }), fail0 + 1)
  assert.equal(value(m1, 'ztee_serve_requests_total', { route: 'exec', code: '200' }), req0 + N + 1)
  assert.equal(value(m1, 'ztee_serve_requests_total', { route: 'exec', code: '400' }), bad0 + 1)
  assert.equal(value(m1, 'ztee_serve_request_duration_seconds_count', { route: 'exec' }), hist0 + N + 2)
  assert.equal(value(m1, 'ztee_serve_sandboxes_started_total', { source: 'pool' }), pool0 + N + 1)
  assert.equal(value(m1, 'ztee_serve_pool_leases_total', { template: 'base' }), leases0 + N + 1)
  assert.equal(value(m1, 'ztee_serve_sandboxes_destroyed_total'), destroyed0 + N + 1)
  assert.equal(value(m1, 'ztee_serve_requests_total', { route: 'health', code: '200' }), health0 + 1)
  // The E2B API: a live sandbox shows, then goes.
  const c = await fetch(`${base}/sandboxes`, { method: 'POST', headers: { 'X-API-Key': key }, body: '{"timeout":60}' })
  assert.equal(c.status, 201)
  const sid = (await c.json()).sandboxID
  assert.equal(value(await metrics(), 'ztee_serve_sandboxes_live', { api: 'e2b' }), 1)
  assert.equal((await fetch(`${base}/sandboxes/${sid}`, { method: 'DELETE', headers: { 'X-API-Key': key } })).status, 204)
  const m2 = await metrics()
  assert.equal(value(m2, 'ztee_serve_sandboxes_live', { api: 'e2b' }), 0)
  assert.equal(value(m2, 'ztee_serve_requests_total', { route: 'control', code: '201' }) >= 1, true)
  assert.equal(value(m2, 'ztee_serve_requests_total', { route: 'metrics', code: '200' }) >= 3, true)
  // The pool refills to its target.
  assert.ok(await eventually(async () => value(await metrics(), 'ztee_serve_pool_ready', { template: 'base' }) === 2, 60_000))
})

test('/metrics with --metrics-auth needs a key; open otherwise', async () => {
  let log = ''
  const s = await startServe(['--keys', join(dir, 'keys'), '--metrics-auth', '--state-dir', join(dir, 'state2')],
    d => { log += d })
  try {
    const url = s.base
    const open = await fetch(`${url}/metrics`)
    assert.equal(open.status, 401)
    const ok = await fetch(`${url}/metrics`, { headers: { 'X-API-Key': key } })
    assert.equal(ok.status, 200)
    const parsed = parseMetrics(await ok.text())
    assert.equal(parsed.types.has('ztee_serve_pool_ready'), false, 'no pool: no pool metrics')
    assert.equal((await fetch(`${url}/healthz`)).status, 200)
  } finally {
    assert.equal(await stopServe(s.proc), 0, log)
  }
  assert.equal((await fetch(`${base}/metrics`)).status, 200)
})
