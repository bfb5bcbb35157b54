'use strict';
// libztee for Node.js: run each tool call of an AI agent in its own microVM.
//
//   const { Sandbox } = require('ztee');   // or: import { Sandbox } from 'ztee'
//   await using sb = await Sandbox.create();
//   const r = await sb.run("python3 -c 'print(6*7)'");
//   r.stdout  // "42\n"
//
// Every call that can block runs on a native worker thread; streamed output
// reaches the callbacks on the JS thread, and a run settles only after all of
// its callbacks ran. SECURITY: everything a sandbox returns (output, file
// bytes, names) was produced by code that may be hostile.

const path = require('node:path');
const fs = require('node:fs');
const os = require('node:os');
const { StringDecoder } = require('node:string_decoder');

// Node 20 has it; older builds use the same registered symbol.
Symbol.asyncDispose ??= Symbol.for('nodejs.asyncDispose');

function loadAddon() {
  const candidates = [
    process.env.ZTEE_NODE_ADDON,
    path.join(__dirname, 'ztee.node'),                    // the CMake build's staged package
    path.join(__dirname, 'build', 'Release', 'ztee.node'), // npm install (node-gyp)
  ].filter(Boolean);
  for (const file of candidates) {
    if (fs.existsSync(file)) return require(file);
  }
  throw new Error(`ztee: the native addon is not built (looked for ${candidates.join(', ')}); ` +
                  'build libztee (cmake --build build) or reinstall the package (npm rebuild ztee)');
}
const native = loadAddon();

// ---- errors ---------------------------------------------------------------

/** A libztee failure: code is the status name ("ZTEE_E_TIMEOUT"), status its
 * number (-7), errno the OS errno (host or guest; 0 if none). */
class ZteeError extends Error {
  constructor(message, status = -3, errno = 0) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = native.statusName(status);
    this.errno = errno;
  }
}

const STATUSES = [
  [-1, 'InvalidArgumentError', 'bad argument or options'],
  [-2, 'NoMemoryError', 'out of memory'],
  [-3, 'InternalError', 'a bug in libztee'],
  [-4, 'NotFoundError', 'a file, command or directory does not exist'],
  [-5, 'ImageError', 'the guest image is missing, incomplete or tampered (fix: ztee image build)'],
  [-6, 'BackendUnavailableError', 'the VMM cannot run on this host'],
  [-7, 'TimeoutError', 'a boot or request deadline passed'],
  [-8, 'SandboxFailedError', 'the sandbox died or its guest misbehaved'],
  [-9, 'ClosedError', 'the sandbox (or pool) was destroyed or closed'],
  [-10, 'IoError', 'host I/O error'],
  [-11, 'ProtocolError', 'the guest sent a malformed frame'],
  [-12, 'GuestError', 'the guest reported an OS error (see errno)'],
  [-13, 'PermissionError', 'not permitted (host or guest)'],
  [-14, 'UnsupportedError', 'not implemented by this backend or build'],
  [-15, 'ConflictError', 'the host changed under the call (export: a host file edited since the sandbox started)'],
];
const errors = { ZteeError };
const byStatus = new Map();
for (const [status, name] of STATUSES) {
  // A named class per status, so stack traces and instanceof read well.
  const cls = { [name]: class extends ZteeError {
    constructor(message, errno = 0) { super(message, status, errno); }
  } }[name];
  errors[name] = cls;
  byStatus.set(status, cls);
}

function makeError(status, _name, errno, message) {
  const cls = byStatus.get(status);
  return cls ? new cls(message, errno) : new ZteeError(message, status, errno);
}
native.setErrorFactory(makeError);

// At exit, destroy every sandbox and pool still open (Node runs no env
// cleanup hook when the main thread exits; in a worker thread the addon's
// own hook does this).
process.on('exit', () => native.shutdown());

function invalid(message) {
  return new errors.InvalidArgumentError(message);
}

// ---- helpers ----------------------------------------------------------------

function optsObject(opts, what) {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object') throw invalid(`${what}: options must be an object`);
  return opts;
}

function checkMs(v, what) {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw invalid(`${what} must be a positive number of milliseconds, got ${String(v)}`);
  }
  return Math.max(1, Math.ceil(v));
}

function guestAslr(v) {
  if (v === undefined || v === null) return 0;
  if (v === true) return 1;
  if (v === false) return 2;
  throw invalid(`guestAslr must be true, false or undefined, not ${String(v)}`);
}

// Sandbox options as the addon reads them (shared by Sandbox and Pool).
function sandboxOptions(o) {
  if (o.allow !== undefined && !Array.isArray(o.allow)) {
    throw invalid('allow must be an array of "CIDR:PORT" strings');
  }
  const net = o.network ?? {};
  return {
    imageDir: o.imageDir,
    templateDir: o.templateDir,
    vcpus: o.vcpus,
    memoryMib: o.memoryMib,
    bootTimeoutMs: checkMs(o.bootTimeoutMs, 'bootTimeoutMs'),
    timeoutMs: checkMs(o.timeoutMs, 'timeoutMs'),
    outputCap: o.outputCap,
    snapshottable: !!o.snapshottable,
    allow: o.allow ?? net.allow,
    dns: o.dns ?? net.dns,
    guestAslr: guestAslr(o.guestAslr),
    mounts: o.mounts,
    diffLog: o.diffLog,
    dlp: !!o.dlp,
    dlpBlock: o.dlpBlock,
  };
}

// ---- runtime ------------------------------------------------------------------

/** Owns one event-loop thread that drives its sandboxes.
 * opts: stateDir, imageDir, backend, qemuBinary, accel ("auto" | "kvm" |
 * "tcg"), jail (default true; false runs VMMs unconfined: development only).
 * `new Runtime()` starts it on the calling thread (it starts a thread and
 * sweeps the state dir); `await Runtime.create()` does that off the JS thread. */
class Runtime {
  constructor(opts, _native) {
    this._native = _native ?? new native.Runtime(optsObject(opts, 'Runtime'));
  }

  static async create(opts) {
    return new Runtime(undefined, await native.Runtime.createAsync(optsObject(opts, 'Runtime.create')));
  }

  /** e.g. "qemu/tcg (/dev/kvm is kvm_pvm, ...)": the first word is stable. */
  get backend() {
    return this._native.backend;
  }

  /** Drops this reference; sandboxes still open keep the runtime running. */
  close() {
    this._native.close();
  }
}

let defaultRuntime;
/** The module's shared Runtime, created on first use (off the JS thread). */
function getDefaultRuntime() {
  defaultRuntime ??= Runtime.create().catch((e) => {
    defaultRuntime = undefined;
    throw e;
  });
  return defaultRuntime;
}

// ---- exec results and streaming ----------------------------------------------

class ExecResult {
  constructor(r, encoding) {
    this.exitCode = r.exitCode;        // -1 if ended by a signal
    this.signal = r.signal;            // 0 if none
    this.timedOut = r.timedOut;
    this.cancelled = r.cancelled;      // killed through cancellation (signal 9)
    this.truncated = r.truncated;      // output beyond the cap was dropped
    this.durationMs = r.durationMs;
    this.dlpFindings = r.dlpFindings ?? 0;               // options.dlp: findings redacted
    this.injectionAnomalies = r.injectionAnomalies ?? 0; // options.dlp: injection rule hits
    this.stdoutBuffer = r.stdout;
    this.stderrBuffer = r.stderr;
    this.stdout = encoding === 'buffer' ? r.stdout : r.stdout.toString('utf8');
    this.stderr = encoding === 'buffer' ? r.stderr : r.stderr.toString('utf8');
  }

  get ok() {
    return this.exitCode === 0 && !this.timedOut && !this.cancelled;
  }
}

function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  const e = new Error('The operation was aborted');
  e.name = 'AbortError';
  return e;
}

// The output side of a run or a gate call, from its options: validates
// encoding, onStdout, onStderr and signal (throwing its reason if already
// aborted), and returns the native output hook (undefined without
// callbacks), the decoders' flush, and per stream the chunks of a stream
// that was streamed without a callback of its own (exec streams both once
// either has one; they belong in the result).
function outputHooks(o) {
  const { onStdout, onStderr, signal } = o;
  const encoding = o.encoding ?? 'utf8';
  if (encoding !== 'utf8' && encoding !== 'buffer') throw invalid(`encoding must be 'utf8' or 'buffer'`);
  for (const [k, f] of [['onStdout', onStdout], ['onStderr', onStderr]]) {
    if (f !== undefined && f !== null && typeof f !== 'function') throw invalid(`${k} must be a function`);
  }
  if (signal !== undefined && signal !== null && !(signal instanceof AbortSignal)) {
    throw invalid('signal must be an AbortSignal');
  }
  if (signal?.aborted) throw abortReason(signal);
  const collected = [null, [], []];
  let output;
  let flush = () => {};
  if (onStdout || onStderr) {
    const decoders = encoding === 'buffer' ? null : [null, new StringDecoder('utf8'), new StringDecoder('utf8')];
    const fns = [null, onStdout, onStderr];
    output = (stream, chunk) => {
      const fn = fns[stream];
      if (!fn) {
        collected[stream].push(Buffer.from(chunk));
        return;
      }
      const data = decoders ? decoders[stream].write(chunk) : chunk;
      if (data.length) fn(data);
    };
    flush = () => {
      if (!decoders) return;
      for (const s of [1, 2]) {
        const rest = decoders[s].end();
        if (rest && fns[s]) fns[s](rest);
      }
    };
  }
  return { onStdout, onStderr, signal, encoding, output, flush, collected };
}

// Runs one exec: callbacks get strings (UTF-8, never split inside a
// character) or, with encoding 'buffer', Buffers. A callback that throws
// kills the command and the promise rejects with its error. Aborting
// `signal` kills the command; the promise then rejects with the signal's
// reason, carrying the result as err.result.
// own: a spawn()'s {input, cancel} (native), passed to the exec.
async function execute(sb, spec, opts, own) {
  const o = optsObject(opts, 'run');
  const { onStdout, onStderr, signal, encoding, output: onOutput, flush, collected } = outputHooks(o);
  const env = o.env;
  if (env !== undefined && env !== null && (typeof env !== 'object' || Array.isArray(env))) {
    throw invalid('env must be an object of strings');
  }
  const nativeOpts = {
    ...spec,
    env,
    cwd: o.cwd,
    user: o.user,
    stdin: o.stdin,
    timeoutMs: checkMs(o.timeoutMs, 'timeoutMs'),
    outputCap: o.outputCap,
  };
  const cancel = own?.cancel ?? (signal || onOutput ? new native.Cancel() : undefined);
  const abort = () => cancel.trigger();
  signal?.addEventListener('abort', abort, { once: true });
  let raw;
  try {
    raw = await sb._native.exec(nativeOpts, onOutput, cancel, own?.input);
  } finally {
    signal?.removeEventListener('abort', abort);
  }
  flush();
  if (onOutput) {
    if (!onStdout) raw.stdout = Buffer.concat([raw.stdout, ...collected[1]]);
    if (!onStderr) raw.stderr = Buffer.concat([raw.stderr, ...collected[2]]);
  }
  const result = new ExecResult(raw, encoding);
  if (signal?.aborted && result.cancelled) {
    const e = abortReason(signal);
    try {
      e.result = result;
    } catch {
      // a frozen reason: no result attached
    }
    throw e;
  }
  return result;
}

// An async iterator over a command's output: `for await (const {stream,
// data} of sb.stream(cmd))`; `.result` is the run's promise. Leaving the loop
// early kills the command.
class OutputStream {
  constructor(sb, spec, opts) {
    const o = { ...optsObject(opts, 'stream') };
    this._queue = [];
    this._wake = null;
    this._done = false;
    this._error = null;
    const controller = new AbortController();
    this._controller = controller;
    if (o.signal) {
      if (o.signal.aborted) controller.abort(o.signal.reason);
      else o.signal.addEventListener('abort', () => controller.abort(o.signal.reason), { once: true });
    }
    const push = (stream) => (data) => {
      this._queue.push({ stream, data });
      this._notify();
    };
    this.result = execute(sb, spec, {
      ...o,
      signal: controller.signal,
      onStdout: push('stdout'),
      onStderr: push('stderr'),
    });
    this.result.then(
      () => { this._done = true; this._notify(); },
      (e) => { this._done = true; this._error = e; this._notify(); });
  }

  _notify() {
    const w = this._wake;
    this._wake = null;
    if (w) w();
  }

  async *[Symbol.asyncIterator]() {
    try {
      for (;;) {
        if (this._queue.length) {
          yield this._queue.shift();
          continue;
        }
        if (this._done) {
          if (this._error && !this._stopped) throw this._error;
          return;
        }
        await new Promise((resolve) => { this._wake = resolve; });
      }
    } finally {
      if (!this._done) {
        // The consumer left early: kill the command, wait until it is gone.
        this._stopped = true;
        this._controller.abort();
        await this.result.catch(() => {});
      }
    }
  }
}

// A signal as the guest's number (1..64): a number, or a name such as
// 'SIGUSR1' (libztee runs on Linux hosts, whose numbering the guest shares).
function signalNumber(sig) {
  if (typeof sig === 'string') {
    const n = os.constants.signals[sig];
    if (n === undefined) throw invalid(`unknown signal name '${sig}': give a name such as 'SIGTERM' or a number 1..64`);
    return n;
  }
  if (!Number.isInteger(sig) || sig < 1 || sig > 64) {
    throw invalid(`signal ${String(sig)} is out of range: give 1..64 or a name such as 'SIGTERM'`);
  }
  return sig;
}

function toBuffer(data, what) {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (Buffer.isBuffer(data)) return data;
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  throw invalid(`${what}: data must be a string, a Buffer, a typed array or an ArrayBuffer`);
}

const INPUT_CHUNK = 256 * 1024;  // bytes per native write: several fit under the bound
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A command started by sb.spawn(): its stdin stays open for write() until
// end(); kill() sends it signals; `result` is its ExecResult promise.
class Process {
  constructor(sb, spec, opts) {
    const o = optsObject(opts, 'spawn');
    this._input = new native.Input();
    this._cancel = new native.Cancel();
    this._ended = false;
    this._tail = Promise.resolve();  // write() and end() run in call order
    if (o.stdin !== undefined && o.stdin !== null) {
      this.result = Promise.reject(invalid('spawn(): write stdin with process.write(), not opts.stdin'));
    } else {
      this.result = execute(sb, spec, o, { input: this._input, cancel: this._cancel });
    }
    this.result.then(() => { this._ended = true; }, () => { this._ended = true; });
  }

  /** true once the command has ended (result settled). */
  get ended() {
    return this._ended;
  }

  /** Bytes written and not yet passed to the sandbox (at most INPUT_MAX_BUFFERED). */
  get buffered() {
    return this._input.buffered;
  }

  /** Queues data (string as UTF-8, Buffer, typed array) for the command's
   * stdin; resolves once all of it is queued, waiting while
   * Process.INPUT_MAX_BUFFERED bytes (1 MiB) already wait on the host.
   * Writes and end() apply in call order. Rejects with ClosedError once the
   * command has ended and InvalidArgumentError after end(). */
  write(data) {
    let buf;
    try {
      buf = toBuffer(data, 'write');
    } catch (e) {
      return Promise.reject(e);
    }
    const p = this._tail.then(() => this._write(buf));
    this._tail = p.catch(() => {});
    return p;
  }

  async _write(buf) {
    let off = 0;
    let pause = 1;
    while (off < buf.length) {
      if (this._ended) throw new errors.ClosedError('write: the command has ended; its stdin is gone');
      const n = Math.min(INPUT_CHUNK, buf.length - off);
      if (this._input.write(buf.subarray(off, off + n))) {
        off += n;
        pause = 1;
        continue;
      }
      await sleep(pause);  // the bound is reached: wait for the sandbox to take some
      pause = Math.min(pause * 2, 20);
    }
  }

  /** Ends the command's stdin (EOF) after everything written before;
   * resolves then. Idempotent; a no-op once the command has ended. */
  end() {
    const p = this._tail.then(() => this._input.close());
    this._tail = p.catch(() => {});
    return p;
  }

  /** Sends a signal (default 'SIGTERM'; a name or a number 1..64) to the
   * command's whole process group. A command the signal ends resolves with
   * result.signal set (cancelled false). Throws InvalidArgumentError for a
   * bad signal and ClosedError once the command has ended. A signal sent
   * before the command runs in the guest follows its start. */
  kill(sig = 'SIGTERM') {
    const n = signalNumber(sig);
    if (this._ended) throw new errors.ClosedError(`kill(${String(sig)}): the command has ended`);
    this._cancel.signal(n);
  }
}
Process.INPUT_MAX_BUFFERED = native.INPUT_MAX_BUFFERED;

// ---- files -------------------------------------------------------------------

function fileInfo(fi) {
  return {
    name: fi.name,
    type: fi.type,                 // "file" | "dir" | "symlink" | "other"
    size: fi.size,
    mode: fi.mode,                 // permission bits
    mtimeNs: fi.mtimeNs,           // BigInt
    mtime: new Date(Number(fi.mtimeNs / 1000000n)),
    isFile: fi.type === 'file',
    isDir: fi.type === 'dir',
  };
}

class Files {
  constructor(sb) {
    this._sb = sb;
  }

  /** The whole file as a Buffer, or a string with {encoding: 'utf8'}.
   * maxBytes (default 64 MiB): larger files fail with InvalidArgumentError. */
  async read(path, opts) {
    const o = optsObject(opts, 'files.read');
    const buf = await this._sb._native.readFile(path, o.maxBytes ?? 0);
    return o.encoding ? buf.toString(o.encoding) : buf;
  }

  /** Creates or replaces a file (a string is written as UTF-8). mode default 0o644. */
  async write(path, data, opts) {
    const o = optsObject(opts, 'files.write');
    let buf;
    if (typeof data === 'string') buf = Buffer.from(data, 'utf8');
    else if (Buffer.isBuffer(data)) buf = data;
    else if (ArrayBuffer.isView(data)) buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    else if (data instanceof ArrayBuffer) buf = Buffer.from(data);
    else throw invalid('data must be a string, a Buffer, a typed array or an ArrayBuffer');
    await this._sb._native.writeFile(path, buf, o.mode ?? 0);
  }

  async list(path) {
    return (await this._sb._native.listDir(path)).map(fileInfo);
  }

  async stat(path) {
    return fileInfo(await this._sb._native.stat(path));
  }

  /** Whether path exists (a NotFoundError from stat is false). */
  async exists(path) {
    try {
      await this._sb._native.stat(path);
      return true;
    } catch (e) {
      if (e instanceof errors.NotFoundError) return false;
      throw e;
    }
  }

  /** parents: also create missing parents (an existing directory is then fine). */
  async mkdir(path, opts) {
    const o = optsObject(opts, 'files.mkdir');
    await this._sb._native.mkdir(path, !!o.parents, o.mode ?? 0);
  }

  /** Removes a file or an empty directory; recursive removes a tree. */
  async remove(path, opts) {
    const o = optsObject(opts, 'files.remove');
    await this._sb._native.remove(path, !!o.recursive);
  }
}

// ---- workspaces -------------------------------------------------------------------

// What identifies a change to the native export (not enumerable: a change
// prints and compares as plain data).
const changeKey = Symbol('ztee.changeKey');

/** One change in a guest's writable layer (sb.diff(), sb.exportChanges()):
 * kind ('created' | 'modified' | 'deleted'), type ('file' | 'dir' |
 * 'symlink' | 'other'; for a deletion the type it had), path (in a mount:
 * relative to it; else absolute; bytes that are not UTF-8 read as U+FFFD),
 * mount (its guest path; '' for the guest's own filesystem), size, mode
 * (07777 bits), sha256 (files) and linkTarget (symlinks). Every field is the
 * guest's claim: hostile input. */
function change(c) {
  const out = {
    kind: c.kind, type: c.type, path: c.path, mount: c.mount, size: c.size, mode: c.mode,
    sha256: c.sha256, linkTarget: c.linkTarget,
  };
  Object.defineProperty(out, changeKey, { value: c.key });
  return Object.freeze(out);
}

function exportResult(r) {
  return { applied: r.applied.map(change), declined: r.declined.map(change) };
}

function optionalString(v, what) {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(`${what} must be a string`);
  return v;
}

function pathList(v) {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((p) => typeof p !== 'string')) throw invalid('paths must be an array of strings');
  return v;
}

// ---- sandbox ------------------------------------------------------------------

/** A booted microVM. Create with `await Sandbox.create(opts)`; end with
 * `await sb.destroy()` or `await using`. One collected without destroy() is
 * destroyed off the JS thread, and any left at exit are destroyed then. */
class Sandbox {
  constructor(nativeSb, runtime) {
    if (!(nativeSb instanceof native.Sandbox)) {
      throw new TypeError('use await Sandbox.create(opts) (or pool.lease())');
    }
    this._native = nativeSb;
    this.runtime = runtime;  // kept alive while the sandbox is
    this.files = new Files(this);
  }

  /** opts: runtime, imageDir, vcpus, memoryMib, bootTimeoutMs, timeoutMs (the
   * default per-command timeout), outputCap, templateDir, snapshottable,
   * allow (["CIDR:PORT[/tcp|/udp]", ...]) and dns, or network: {allow, dns};
   * guestAslr; mounts and diffLog (workspaces).
   * mounts: [{hostDir, guestPath}], host directories the guest sees
   * read-only (at most 16), each copied into a read-only disk image at
   * creation; the guest's writes stay in its memory and reach the host only
   * through exportChanges(). Needs a cold boot (not with templateDir,
   * snapshottable or a pool). A relative hostDir or a bad guestPath rejects
   * with InvalidArgumentError, a missing hostDir with NotFoundError.
   * dlp: scan every command's stdout/stderr (streamed and collected) and
   * every readFile with the output DLP scanner (findings become
   * "[REDACTED:<detector>]"; result.dlpFindings counts them); dlpBlock:
   * detector names whose findings withhold the output instead (the call
   * rejects with PermissionError). Implies dlp.
   * diffLog: a file to which destroying the sandbox appends one JSON line
   * with its diff.
   * SECURITY: every allow entry widens what sandboxed code can reach; by
   * default the sandbox has no network. Everything in a mounted directory
   * becomes readable by the sandboxed code. */
  static async create(opts) {
    const o = optsObject(opts, 'Sandbox.create');
    const rt = o.runtime ?? await getDefaultRuntime();
    if (!(rt instanceof Runtime)) throw invalid('runtime must be a Runtime');
    const nsb = await native.Sandbox.create(rt._native, sandboxOptions(o));
    return new Sandbox(nsb, rt);
  }

  get id() {
    return this._native.id;
  }

  /** false once destroyed. */
  get alive() {
    return this._native.alive;
  }

  /** Runs a shell command line (/bin/sh -c cmd). opts: env, cwd, user, stdin
   * (string or Buffer), timeoutMs, outputCap, onStdout, onStderr, signal,
   * encoding ('utf8' | 'buffer'). A non-zero exit is not an error. */
  run(cmd, opts) {
    if (typeof cmd !== 'string') return Promise.reject(invalid('run() takes a shell command string; use exec() for argv'));
    return execute(this, { shell: cmd }, opts);
  }

  /** Runs argv (argv[0] looked up in the guest's PATH); a missing command
   * rejects with NotFoundError. Options as run(). */
  exec(argv, opts) {
    if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string')) {
      return Promise.reject(invalid('exec() takes a non-empty array of strings; use run() for a shell string'));
    }
    return execute(this, { argv }, opts);
  }

  /** Starts a command with its stdin open and returns a Process at once:
   * `await p.write(data)` while it runs, `await p.end()` for EOF,
   * `p.kill('SIGUSR1')` for a signal, `await p.result` for the ExecResult.
   * cmd: a shell string or an argv array. Options as run() but stdin. */
  spawn(cmd, opts) {
    const spec = Array.isArray(cmd) ? { argv: cmd } : { shell: cmd };
    return new Process(this, spec, opts);
  }

  /** Output as an async iterator of {stream: 'stdout' | 'stderr', data};
   * `.result` is the ExecResult promise. cmd: a shell string or an argv array. */
  stream(cmd, opts) {
    const spec = Array.isArray(cmd) ? { argv: cmd } : { shell: cmd };
    return new OutputStream(this, spec, opts);
  }

  ping() {
    return this._native.ping();
  }

  /** Stops the guest's vCPUs; calls that reach the guest wait for resume(). */
  pause() {
    return this._native.pause();
  }

  resume() {
    return this._native.resume();
  }

  /** Turns this sandbox into a template in dir (absolute, must not exist).
   * Needs snapshottable: true. The sandbox is consumed.
   * SECURITY: the template holds the guest's memory; keep dir private. */
  snapshot(dir) {
    return this._native.snapshot(dir);
  }

  /** Stops the VM and removes what it left on the host. A second call
   * rejects with ClosedError. */
  destroy() {
    return this._native.destroy();
  }

  /** What changed in the guest's writable layers since it booted, sorted by
   * mount and path: mount (a guest path) for that mount only, '/' for the
   * guest's own filesystem only, undefined for both. An unknown mount
   * rejects with NotFoundError. SECURITY: the list is the guest's claim;
   * exportChanges() checks every entry again. */
  async diff(mount) {
    return (await this._native.diff(optionalString(mount, 'mount'))).map(change);
  }

  /** Applies the approved part of a mount's diff to its host directory;
   * resolves to {applied, declined} (lists of changes).
   * opts: mount (the guest path; may be left out when there is one mount),
   * paths (relative paths, a directory selects everything below it, each
   * naming a change; default: all), approve(change) -> boolean or a Promise
   * of one (default: approve all), destDir (write the created and modified
   * entries into this existing directory instead; deletions are not
   * applied there).
   *
   * approve runs here, on the JS thread, before anything is written: the
   * selection is read first (one more diff of the guest), approve is asked
   * for each change, then the library takes the diff again for the export
   * and writes only the changes identical to an approved one (same content
   * hash, mode, type, target). A change the guest alters after it was
   * approved, or one that appears meanwhile, is declined, never written. If
   * approve throws or rejects, the export rejects with that and nothing is
   * written.
   *
   * Every check runs before the first write, and a failing one applies
   * nothing: ConflictError names host paths edited since the sandbox
   * started; PermissionError a path with "..", a symlink on the way or
   * leaving the directory, a device or fifo, setuid/setgid bits, a
   * hard-linked host file, or content that no longer matches its sha256.
   * Each file is written to a temporary, synced and renamed into place.
   * SECURITY: the one way data written in a sandbox reaches the host:
   * approve only what was reviewed (see patch()). */
  async exportChanges(opts) {
    const o = optsObject(opts, 'exportChanges');
    if (o.approve !== undefined && typeof o.approve !== 'function') {
      throw invalid('approve must be a function(change) -> boolean');
    }
    const spec = {
      mount: optionalString(o.mount, 'mount'),
      paths: pathList(o.paths),
      destDir: optionalString(o.destDir, 'destDir'),
    };
    if (!o.approve) return exportResult(await this._native.exportChanges(spec, undefined));
    // The selection: every change declined, nothing written.
    const review = exportResult(await this._native.exportChanges(spec, []));
    const keys = [];
    for (const c of review.declined) {
      if (await o.approve(c)) keys.push(c[changeKey]);
    }
    if (keys.length === 0) return review;
    return exportResult(await this._native.exportChanges(spec, keys));
  }

  /** A unified diff (diff -u) of a mount's text changes against its host
   * directory, for review (binary files are named, not shown). opts: mount,
   * paths (as exportChanges), encoding ('utf8', the default, or 'buffer'). */
  async patch(opts) {
    const o = optsObject(opts, 'patch');
    const buf = await this._native.patch(optionalString(o.mount, 'mount'), pathList(o.paths));
    return o.encoding === 'buffer' ? buf : buf.toString('utf8');
  }

  async [Symbol.asyncDispose]() {
    if (this._native.alive) await this._native.destroy();
  }
}

// ---- pool ----------------------------------------------------------------------

/** A warm pool of READY sandboxes, refilled in the background (by default as
 * clones of a snapshot the pool makes, so a refill is a restore, not a boot).
 * opts: runtime, minReady (default 2), maxTotal (8), coldBoot, templateDir,
 * leaseTimeoutMs (30000), refillConcurrency, warmUp (a shell command each new
 * sandbox runs once before it is READY), and the Sandbox.create options. A
 * leased sandbox is the caller's alone and never recycled. */
class Pool {
  constructor(nativePool, runtime) {
    if (!(nativePool instanceof native.Pool)) throw new TypeError('use await Pool.create(opts)');
    this._native = nativePool;
    this.runtime = runtime;
  }

  static async create(opts) {
    const o = optsObject(opts, 'Pool.create');
    const minReady = o.minReady ?? 2;
    const maxTotal = o.maxTotal ?? Math.max(8, minReady);
    if (!Number.isInteger(minReady) || minReady < 1) throw invalid(`minReady must be at least 1, got ${minReady}`);
    if (!Number.isInteger(maxTotal) || maxTotal < minReady) {
      throw invalid(`maxTotal (${maxTotal}) must be an integer at least minReady (${minReady})`);
    }
    const rt = o.runtime ?? await getDefaultRuntime();
    if (!(rt instanceof Runtime)) throw invalid('runtime must be a Runtime');
    const np = await native.Pool.create(rt._native, {
      ...sandboxOptions({ ...o, templateDir: undefined }),
      templateDir: o.templateDir,
      coldBoot: !!o.coldBoot,
      minReady,
      maxTotal,
      refillConcurrency: o.refillConcurrency,
      leaseTimeoutMs: checkMs(o.leaseTimeoutMs, 'leaseTimeoutMs'),
      warmUp: o.warmUp,
    });
    return new Pool(np, rt);
  }

  /** A READY sandbox, waiting up to timeoutMs (default: the pool's
   * leaseTimeoutMs); TimeoutError when none came, ClosedError after close(). */
  async lease(opts) {
    const o = optsObject(opts, 'lease');
    const nsb = await this._native.lease({ timeoutMs: checkMs(o.timeoutMs, 'timeoutMs') });
    return new Sandbox(nsb, this.runtime);
  }

  /** Counters: ready, starting, leased, created, failed, leases,
   * leaseTimeouts, consecutiveFailures, backingOff, lastError, leaseWaitHist. */
  stats() {
    return this._native.stats();
  }

  /** Destroys the ready sandboxes and stops refilling; leased ones stay with
   * their holders. Idempotent. */
  close() {
    return this._native.close();
  }

  async [Symbol.asyncDispose]() {
    await this.close();
  }
}

// ---- control plane: policy, audit log, gate -----------------------------------

// A tool call as the addon reads it (it checks the values).
function toolCallSpec(call, what) {
  if (call === null || typeof call !== 'object' || Array.isArray(call)) {
    throw invalid(`${what}: the tool call must be an object ({tool, command | argv, ...})`);
  }
  const { tool, command, argv, env, files, cwd, user, stdin, writes, network, labels, traceId } = call;
  if (env !== undefined && env !== null && (typeof env !== 'object' || Array.isArray(env))) {
    throw invalid('env must be an object of strings');
  }
  return { tool, command, argv, env, files, cwd, user, stdin, writes, network, labels, traceId };
}

/** A parsed, immutable policy: it sorts tool calls into tiers L0..L5 whose
 * action is run, audit, approve or deny (a call no rule matches is denied). */
class Policy {
  constructor(nativePolicy) {
    if (!(nativePolicy instanceof native.Policy)) {
      throw new TypeError('use Policy.parse(json), Policy.load(path) or Policy.default()');
    }
    this._native = nativePolicy;
  }

  /** Parses a JSON policy (string or Buffer); errors say "policy: line N: reason". */
  static parse(json) {
    return new Policy(native.Policy.parse(json));
  }

  /** Reads and parses a policy file (synchronously: policies are small);
   * errors say "PATH: line N: reason"; a missing file is a NotFoundError. */
  static load(path) {
    return new Policy(native.Policy.load(path));
  }

  /** The policy libztee ships (see Policy.defaultJson). */
  static default() {
    return new Policy(native.Policy.default());
  }

  /** The JSON text of the shipped policy: a starting point for your own. */
  static get defaultJson() {
    return native.Policy.defaultJson();
  }

  /** The decision for a tool call, without running it: {tier (0..5), action
   * ('run' | 'audit' | 'approve' | 'deny'), ruleIndex (-1: no rule matched),
   * rule, reason}. */
  classify(call) {
    return this._native.classify(toolCallSpec(call, 'classify'));
  }

  /** Drops this handle; gates made with it keep their own reference. */
  close() {
    this._native.close();
  }
}

const DURABILITY = { fsync: 0, batch: 1, none: 2 };

function keyBytes(key, what) {
  if (key === undefined || key === null) return undefined;
  if (typeof key === 'string') return Buffer.from(key, 'utf8');
  if (key instanceof Uint8Array) return key;
  throw invalid(`${what} must be a string or a Buffer`);
}

/** An append-only, hash-chained JSON Lines file (created 0600). */
class AuditLog {
  constructor(nativeLog, path) {
    if (!(nativeLog instanceof native.AuditLog)) throw new TypeError('use await AuditLog.open(opts)');
    this._native = nativeLog;
    this.path = path;
  }

  /** opts: path (or a path string), durability ('fsync' (default): every
   * record on disk before append resolves; 'batch': synced at most every
   * batchMs (100); 'none': left to the kernel), hmacKey (string or Buffer:
   * every record also carries an HMAC-SHA256), rotateBytes (past this size
   * the file becomes PATH.N and a new one continues the chain). */
  static async open(opts) {
    const o = typeof opts === 'string' ? { path: opts } : optsObject(opts, 'AuditLog.open');
    if (typeof o.path !== 'string' || o.path === '') throw invalid('AuditLog.open needs path (a string)');
    const durability = o.durability ?? 'fsync';
    if (!Object.hasOwn(DURABILITY, durability)) {
      throw invalid(`durability must be 'fsync', 'batch' or 'none', not ${String(durability)}`);
    }
    const n = await native.AuditLog.open({
      path: o.path,
      durability: DURABILITY[durability],
      batchMs: o.batchMs,
      hmacKey: keyBytes(o.hmacKey, 'hmacKey'),
      rotateBytes: o.rotateBytes,
    });
    return new AuditLog(n, o.path);
  }

  /** Appends a record of the caller's own event; fields: an object (its JSON
   * must not use the record's keys seq, ts, trace, event, prev, hmac) or the
   * inner part of a JSON object ('"user":"alice","n":3'). Resolves to the
   * record's seq. */
  append(event, traceId, fields) {
    let inner = fields;
    if (fields !== undefined && fields !== null && typeof fields === 'object') {
      inner = JSON.stringify(fields).slice(1, -1);
    } else if (fields !== undefined && fields !== null && typeof fields !== 'string') {
      return Promise.reject(invalid('fields must be an object or a string (the inner part of a JSON object)'));
    }
    if (typeof event !== 'string' || event === '') return Promise.reject(invalid('event must be a non-empty string'));
    return this._native.append(event, traceId ?? '', inner ?? '');
  }

  /** Makes every record appended so far durable (fdatasync). */
  flush() {
    return this._native.flush();
  }

  /** Drops this handle (gates using the log keep it open); idempotent. */
  close() {
    this._native.close();
  }

  async [Symbol.asyncDispose]() {
    this.close();
  }
}

/** Verifies one chain across files given oldest first (a rotated log:
 * PATH.1, PATH.2, ..., PATH); with the HMAC key every record's HMAC too.
 * Resolves to {ok, records, problem}; a log that fails is ok: false, not an
 * error. A removed tail cannot be seen from the files alone. */
async function verifyAuditLog(files, key) {
  const list = typeof files === 'string' ? [files] : files;
  if (!Array.isArray(list) || list.length === 0 || list.some((f) => typeof f !== 'string')) {
    throw invalid('verifyAuditLog takes a path or a non-empty array of paths (oldest first)');
  }
  return native.verifyAuditLog(list, keyBytes(key, 'key'));
}

/** A pending question to the approver. Answer with approve(who) or
 * deny(reason, who), at once or later, before deadlineMs passes (no answer
 * denies). description is the call (tool, text, env_keys, cwd, user, writes,
 * network, labels, tier, rule, trace; never secret values), descriptionJson
 * the same as JSON text. */
class Approval {
  constructor(gate, token, descriptionJson, deadlineMs) {
    this.token = token;
    this.descriptionJson = descriptionJson;
    this.description = JSON.parse(descriptionJson);
    this.deadlineMs = deadlineMs;
    this.deadline = Date.now() + deadlineMs;
    Object.defineProperty(this, '_gate', { value: gate });
  }

  /** NotFoundError when already answered or expired. */
  approve(who) {
    this._gate.approve(this.token, who);
  }

  deny(reason, who) {
    this._gate.deny(this.token, reason, who);
  }
}

/** What a gate call did: ran (false: denied, see denial), decision, approvedBy,
 * sandboxId, result (an ExecResult scrubbed of secret values; null when it
 * did not run). */
class CallResult {
  constructor(raw, encoding) {
    this.ran = raw.ran;
    this.decision = raw.decision;
    this.denial = raw.denial;
    this.approvedBy = raw.approvedBy;
    this.sandboxId = raw.sandboxId;
    this.result = raw.exec ? new ExecResult(raw.exec, encoding) : null;
    this.blocked = raw.blocked;                       // DLP withheld the output (dlpBlock); denial says why
    this.dlpFindings = raw.dlpFindings;               // DLP findings in stdout and stderr
    this.injectionAnomalies = raw.injectionAnomalies; // injection rule hits
  }
}

function errorText(e) {
  if (e instanceof Error) return e.message;
  try {
    return String(e);
  } catch {
    return 'an error that cannot be shown';
  }
}

/** Runs tool calls under a policy: classify -> approval -> secrets -> a fresh
 * (or pooled) sandbox destroyed afterwards -> output scrubbed of secrets,
 * every step recorded in the audit log. */
class Gate {
  constructor(nativeGate, runtime, o) {
    if (!(nativeGate instanceof native.Gate)) throw new TypeError('use await Gate.create(runtime, opts)');
    this._native = nativeGate;
    this.runtime = runtime;
    // Kept alive while the gate is (the addon also keeps them open).
    this.policy = o.policy;
    this.audit = o.audit;
    this.pool = o.pool;
    this._approver = o.approver;
    this._secrets = o.secrets;
  }

  /** Gate.create([runtime], opts). opts: policy (a Policy; default
   * Policy.default()), audit (an AuditLog), approver ((approval) => void |
   * Promise; none: approve tiers are denied), secrets ((name) => string |
   * Buffer | undefined | Promise of one, or an object name -> value),
   * secretsDir, secretsEnvPrefix (e.g. 'ZTEE_SECRET_'), secretTimeoutMs
   * (30000), pool (calls without network lease from it), sandbox
   * (Sandbox.create options for the calls the pool does not serve), dlp
   * (true: scan output with the default DLP detectors and injection rules),
   * dlpBlock (detector names, e.g. ['card'], whose findings withhold the
   * output). */
  static async create(runtime, opts) {
    if (opts === undefined && !(runtime instanceof Runtime)) {
      opts = runtime;
      runtime = undefined;
    }
    const o = optsObject(opts, 'Gate.create');
    const rt = runtime ?? o.runtime ?? await getDefaultRuntime();
    if (!(rt instanceof Runtime)) throw invalid('runtime must be a Runtime');
    for (const [k, cls] of [['policy', Policy], ['audit', AuditLog], ['pool', Pool]]) {
      if (o[k] !== undefined && o[k] !== null && !(o[k] instanceof cls)) throw invalid(`${k} must be a ${cls.name}`);
    }
    if (o.approver !== undefined && o.approver !== null && typeof o.approver !== 'function') {
      throw invalid('approver must be a function (approval) => void | Promise');
    }
    let secrets = o.secrets ?? undefined;
    if (secrets !== undefined && typeof secrets !== 'function') {
      if (typeof secrets !== 'object') throw invalid('secrets must be a function (name) => value or an object name -> value');
      const table = secrets;
      secrets = (name) => (Object.hasOwn(table, name) ? table[name] : undefined);
    }
    const n = native.Gate.create(rt._native, {
      policy: o.policy?._native,
      audit: o.audit?._native,
      pool: o.pool?._native,
      sandbox: o.sandbox ? sandboxOptions(optsObject(o.sandbox, 'sandbox')) : undefined,
      secretsDir: o.secretsDir,
      secretsEnvPrefix: o.secretsEnvPrefix,
      approver: !!o.approver,
      secrets: !!secrets,
      secretTimeoutMs: checkMs(o.secretTimeoutMs, 'secretTimeoutMs'),
      dlp: !!o.dlp,
      dlpBlock: o.dlpBlock,
    });
    return new Gate(n, rt, { ...o, secrets });
  }

  // The approver hook (JS thread): a throw or a rejected promise denies.
  _ask(token, descriptionJson, deadlineMs) {
    const denyFor = (what, e) => {
      try {
        this._native.deny(token, `the approver ${what}: ${errorText(e)}`, 'gate');
      } catch {
        // already answered or expired
      }
    };
    let r;
    try {
      r = this._approver(new Approval(this, token, descriptionJson, deadlineMs));
    } catch (e) {
      denyFor('threw', e);
      return;
    }
    if (r && typeof r.then === 'function') r.then(undefined, (e) => denyFor('rejected', e));
  }

  // The secret hook (JS thread): answers done(err, value) now or later.
  _resolve(name, done) {
    const fail = (e) => done(e === undefined || e === null ? new Error('rejected without a reason') : e);
    let v;
    try {
      v = this._secrets(name);
    } catch (e) {
      fail(e);
      return;
    }
    if (v && typeof v.then === 'function') v.then((x) => done(null, x), fail);
    else done(null, v);
  }

  /** Runs one tool call: {tool, command | argv, env (values may be
   * 'secret://NAME'), files (guest path -> string | Buffer, or
   * 'secret://NAME'), cwd, user, stdin, writes, network, labels, traceId,
   * onStdout, onStderr, signal, encoding}. A denied call resolves with
   * ran: false. Aborting signal ends the call wherever it is (approval,
   * secret lookup, command) and rejects with signal.reason (err.result set
   * when there is one). */
  async call(call) {
    const spec = toolCallSpec(call, 'call');
    // The gate streams only the streams with a callback: nothing lands in `collected`.
    const { onStdout, onStderr, signal, encoding, output, flush } = outputHooks(call);
    const hooks = {
      output,
      stdout: !!onStdout,
      stderr: !!onStderr,
      approver: this._approver ? (t, d, ms) => this._ask(t, d, ms) : undefined,
      secret: this._secrets ? (name, done) => this._resolve(name, done) : undefined,
    };
    const cancel = new native.Cancel();
    const abort = () => this._native.abort(cancel, `the call was aborted: ${errorText(abortReason(signal))}`);
    signal?.addEventListener('abort', abort, { once: true });
    let raw;
    try {
      raw = await this._native.call(spec, hooks, cancel);
    } catch (e) {
      if (signal?.aborted) throw abortReason(signal);
      throw e;
    } finally {
      signal?.removeEventListener('abort', abort);
    }
    flush();
    const res = new CallResult(raw, encoding);
    if (signal?.aborted && (!res.ran || res.result?.cancelled)) {
      const e = abortReason(signal);
      try {
        e.result = res;
      } catch {
        // a frozen reason: no result attached
      }
      throw e;
    }
    return res;
  }

  /** Answers a pending approval with yes (who is recorded); NotFoundError
   * when the token is unknown, answered or expired. */
  approve(token, who) {
    this._native.approve(token, who);
  }

  /** Answers a pending approval with no (reason and who are recorded). */
  deny(token, reason, who) {
    this._native.deny(token, reason, who);
  }

  /** No new calls (they reject with ClosedError); calls in flight finish,
   * then the gate is freed. Idempotent. */
  close() {
    this._native.close();
  }

  async [Symbol.asyncDispose]() {
    this.close();
  }
}

function version() {
  return native.version();
}

function hasFeature(name) {
  return native.hasFeature(name);
}

module.exports = {
  Runtime,
  Sandbox,
  Pool,
  ExecResult,
  Process,
  Policy,
  AuditLog,
  verifyAuditLog,
  Gate,
  Approval,
  CallResult,
  version,
  hasFeature,
  defaultRuntime: getDefaultRuntime,
  ...errors,
};
