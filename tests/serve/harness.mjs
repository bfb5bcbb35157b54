// What the `ztee serve` test files share: keys, a server started and
// stopped, the VMMs it runs, waiting for a condition.
//
// Needs: ZTEE_BIN (the ztee CLI).
import { spawn, execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'

// Makes a key with `ztee serve keygen` into keysFile; returns the key.
export function keygen(keysFile, extra = []) {
  return execFileSync(process.env.ZTEE_BIN, ['serve', 'keygen', '--keys', keysFile, ...extra],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
}

// Starts `ztee serve --listen 127.0.0.1:0 ...args`; resolves to { proc, base }
// once it listens (base: its URL). Its stderr goes to onLog.
export async function startServe(args, onLog = () => {}) {
  let log = ''
  const proc = spawn(process.env.ZTEE_BIN, ['serve', '--listen', '127.0.0.1:0', ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] })
  proc.stderr.on('data', d => { log += d; onLog(String(d)) })
  const base = await new Promise((resolve, reject) => {
    let out = ''
    proc.stdout.on('data', d => {
      out += d
      const m = out.match(/listening on (http:\/\/[0-9.]+:\d+)/)
      if (m) resolve(m[1])
    })
    proc.on('exit', code => reject(new Error(`ztee serve exited with ${code}: ${log}`)))
  })
  return { proc, base }
}

// SIGTERM, then SIGKILL if it is still there after 60 s; resolves to its
// exit code (or the signal's name). A server that already ended: how it ended.
export async function stopServe(proc) {
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.signalCode ?? proc.exitCode
  const exited = new Promise(resolve => proc.on('exit', (code, signal) => resolve(signal ?? code)))
  proc.kill('SIGTERM')
  const stuck = setTimeout(() => proc.kill('SIGKILL'), 60_000)
  const code = await exited
  clearTimeout(stuck)
  return code
}

// Running QEMU processes ({ pid, ppid, argv }) whose parent is `ppid` (any parent: null).
export function vmmsOf(ppid) {
  const found = []
  for (const pid of readdirSync('/proc').filter(p => /^\d+$/.test(p))) {
    let argv, stat
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    } catch { continue }
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
    if (argv[0].includes('qemu-system') && (ppid === null || parent === ppid))
      found.push({ pid: Number(pid), ppid: parent, argv: argv.join(' ') })
  }
  return found
}

// Which of `vmms` (from vmmsOf) still run.
export function stillRunning(vmms) {
  const now = vmmsOf(null)
  return vmms.filter(v => now.some(w => w.pid === v.pid && w.argv === v.argv))
}

// Polls fn until it returns something truthy or ms pass; returns its last value.
export async function eventually(fn, ms = 10_000, step = 100) {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v || Date.now() > end) return v
    await new Promise(r => setTimeout(r, step))
  }
}
