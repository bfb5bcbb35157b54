'use strict';
// An E2B-compatible Sandbox over libztee, in-process (no server, no network).
// Code written for E2B's JS/TS SDK runs unchanged apart from its import:
//
//   import { Sandbox } from 'ztee/e2b';       // or: require('ztee/e2b')
//   const sbx = await Sandbox.create();        // boots a microVM
//   const r = await sbx.commands.run('echo hi');   // {stdout: 'hi\n', stderr: '', exitCode: 0}
//   await sbx.files.write('/home/user/a.txt', 'x');
//   await sbx.files.read('/home/user/a.txt');  // 'x'
//   await sbx.kill();
//
// Semantics (the same as the Python shim ztee.e2b):
//
// - A sandbox lives in this process. Sandbox.connect(id), Sandbox.list() and
//   Sandbox.kill(id) see the sandboxes this process created that still run.
//   A timer kills a sandbox when its timeoutMs passes (default 300 000;
//   setTimeout() restarts it from now; the timer does not keep the process
//   alive). Calls on a sandbox whose timeout passed reject with TimeoutError;
//   on one that was killed, with SandboxClosedError (a SandboxError).
// - Accounts: at create the sandbox gets the unprivileged account "user"
//   (uid and gid 1000, home /home/user) unless its image has one. Commands
//   and file writes run as "user" by default, like E2B; user: 'root' runs as
//   root; any other name runs as that account if the guest's /etc/passwd has
//   it, else InvalidArgumentError. A command's default cwd is its account's
//   home ("/" where it has none).
// - Files: write, makeDir, rename and remove run as the account (as a
//   command in the guest: permissions apply, and what they create belongs to
//   the account); read, list, exists and getInfo read as root through
//   libztee's file calls. Relative paths and "~" start at the account's home.
//   EntryInfo.owner, group and symlinkTarget are undefined (libztee's file
//   info lacks them); a symlink is listed with type 'symlink'.
// - Commands run as `/bin/bash -c CMD` with the sandbox's envs, then the
//   command's. pid: a number this shim assigns, from 1 upwards per sandbox
//   (not the guest's pid); commands.list() and commands.kill(pid) see the
//   commands this shim started that still run. timeoutMs (default 60 000;
//   0: none) kills the command, and run() / wait() then reject with
//   TimeoutError. A non-zero exit rejects with CommandExitError (stdout,
//   stderr, exitCode, error); a killed command's wait() rejects with it,
//   exitCode -1 and error "signal: killed".
// - Output callbacks (onStdout, onStderr) get strings on the JS thread, in
//   order, as the output arrives; one returning a promise is awaited before
//   the next call. A callback that throws (or whose promise rejects) kills
//   its command, and run() / wait() reject with that error. Results hold the
//   whole output either way.
// - Stdin: a command's stdin is empty (/dev/null) unless it was started with
//   stdin: true; then commands.sendStdin(pid, data) (or the handle's
//   sendStdin(data)) passes a string (as UTF-8) or a Uint8Array to it in call
//   order, and closeStdin(pid) (or the handle's closeStdin()) ends it (EOF);
//   closing again does nothing. sendStdin resolves once the bytes are queued
//   (it waits while 1 MiB already waits on the host for the sandbox). To a
//   command that has ended (or a pid no command has) both reject with
//   NotFoundError; to one started without stdin: true, or sendStdin after
//   closeStdin, with InvalidArgumentError saying so. kill() works the same
//   with stdin open.
// - Calls E2B has and libztee cannot serve (pty, watchDir, getHost / ports,
//   pause, metrics, signed URLs, snapshots, internet access) reject (or, for
//   sync calls, throw) NotSupportedError naming the call.
//
// SECURITY: everything a sandbox returns (output, file bytes, names) was
// produced by code that may be hostile.

const fs = require('node:fs');
const posix = require('node:path').posix;
const ztee = require('./index.js');

const DEFAULT_TEMPLATE = 'base';
const DEFAULT_USER = 'user';
const DEFAULT_SANDBOX_TIMEOUT_MS = 300000;
const DEFAULT_COMMAND_TIMEOUT_MS = 60000;
const FILE_CMD_TIMEOUT_MS = 120000;
const USER_UID = 1000;
const READ_CHUNK = 64 << 10;
const MAX_TIMER_MS = 0x7fffffff;  // setTimeout's limit; longer timeouts re-arm

// ---- errors ------------------------------------------------------------------------

// Every error this module makes carries the brand, so `instanceof SandboxError`
// holds for all of them while each also keeps the binding's class (a
// TimeoutError here is a ztee TimeoutError, hence a ZteeError).
const BRAND = Symbol.for('ztee.e2b.error');

function brand(err) {
  Object.defineProperty(err, BRAND, { value: true });
}

/** Base of the errors this module throws (as in E2B); also a ZteeError. */
class SandboxError extends ztee.ZteeError {
  constructor(message, status = -3, errno = 0) {
    super(message, status, errno);
    brand(this);
  }

  static [Symbol.hasInstance](v) {
    if (this === SandboxError) return v !== null && typeof v === 'object' && v[BRAND] === true;
    return Function.prototype[Symbol.hasInstance].call(this, v);
  }
}

/** A command's or the sandbox's timeout passed (a ztee TimeoutError). */
class TimeoutError extends ztee.TimeoutError {
  constructor(message, errno = 0) {
    super(message, errno);
    brand(this);
  }
}

/** Something that does not exist (a ztee NotFoundError). */
class NotFoundError extends ztee.NotFoundError {
  constructor(message, errno = 0) {
    super(message, errno);
    brand(this);
  }
}

/** A file or directory in the sandbox that does not exist. */
class FileNotFoundError extends NotFoundError {}

/** A sandbox this process does not run (never created here, killed, or timed out). */
class SandboxNotFoundError extends NotFoundError {}

/** Bad input; the message says what to pass instead (a ztee InvalidArgumentError). */
class InvalidArgumentError extends ztee.InvalidArgumentError {
  constructor(message, errno = 0) {
    super(message, errno);
    brand(this);
  }
}

/** The guest's disk is full (ENOSPC; a ztee GuestError). */
class NotEnoughSpaceError extends ztee.GuestError {
  constructor(message, errno = 28) {
    super(message, errno);
    brand(this);
  }
}

/** The sandbox was killed (a ztee ClosedError). */
class SandboxClosedError extends ztee.ClosedError {
  constructor(message, errno = 0) {
    super(message, errno);
    brand(this);
  }
}

/** An E2B call libztee cannot serve; the message names it (a ztee UnsupportedError). */
class NotSupportedError extends ztee.UnsupportedError {
  constructor(message, errno = 0) {
    super(message, errno);
    brand(this);
  }
}

/** A command exited non-zero or was killed; carries the CommandResult fields.
 * A SandboxError for instanceof, but not a ZteeError: an exit code is not a
 * libztee failure. */
class CommandExitError extends Error {
  constructor(result) {
    const tail = String(result.stderr ?? '').trim().slice(-2000);
    super(`command exited with code ${result.exitCode}` +
          `${result.error ? ` (${result.error})` : ''}${tail ? `: ${tail}` : ''}`);
    this.name = 'CommandExitError';
    brand(this);
    this.stdout = result.stdout;
    this.stderr = result.stderr;
    this.exitCode = result.exitCode;
    this.error = result.error;
  }
}

/** Kept for imports; never thrown (libztee needs no API key). */
class AuthenticationError extends Error {
  constructor(message) {
    super(message);
    this.name = 'AuthenticationError';
  }
}

/** Kept for imports; never thrown. */
class RateLimitError extends SandboxError {}

/** Kept for imports; a bad template throws InvalidArgumentError. */
class TemplateError extends SandboxError {}

function unsupported(call, why) {
  return new NotSupportedError(`${call} is not supported by ztee/e2b (libztee sandboxes run ` +
                               `in-process)${why ? `: ${why}` : ''}`);
}

// A binding error as the error an E2B caller expects.
function translate(e, what, NotFound = NotFoundError) {
  if (e instanceof SandboxError || !(e instanceof ztee.ZteeError)) return e;
  const raw = e.message;
  const msg = what && !raw.includes(what) ? `${what}: ${raw}` : raw;
  if (e instanceof ztee.NotFoundError) return new NotFound(msg, e.errno);
  if (e instanceof ztee.TimeoutError) return new TimeoutError(msg, e.errno);
  if (e instanceof ztee.InvalidArgumentError) return new InvalidArgumentError(msg, e.errno);
  if (e instanceof ztee.ClosedError) return new SandboxClosedError(msg, e.errno);
  if (e.errno === 28) return new NotEnoughSpaceError(msg);
  // ENOTDIR, EISDIR: the caller named the wrong kind of path.
  if (e.errno === 20 || e.errno === 21) return new InvalidArgumentError(msg, e.errno);
  return new SandboxError(msg, e.status, e.errno);
}

// ---- helpers ---------------------------------------------------------------------------

function optsObject(opts, what) {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object' || Array.isArray(opts)) {
    throw new InvalidArgumentError(`${what}: options must be an object`);
  }
  return opts;
}

function strMap(what, m) {
  if (m === undefined || m === null) return {};
  if (typeof m !== 'object' || Array.isArray(m)) {
    throw new InvalidArgumentError(`${what} must be an object of string values`);
  }
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== 'string') {
      throw new InvalidArgumentError(`${what} must map strings to strings; ${k} is ${typeof v}`);
    }
  }
  return { ...m };
}

// Milliseconds, or undefined for "no limit" (0 where allowZero).
function checkMs(what, v, allowZero) {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new InvalidArgumentError(`${what} must be a number of milliseconds, not ${String(v)}`);
  }
  if (v === 0 && allowZero) return undefined;
  if (v <= 0) {
    throw new InvalidArgumentError(`${what} must be positive${allowZero ? ' (or 0: no limit)' : ''}, got ${v}`);
  }
  return Math.max(1, Math.ceil(v));
}

function rejectUnknown(what, o, known) {
  const bad = Object.keys(o).filter((k) => !known.has(k) && o[k] !== undefined);
  if (bad.length) throw new InvalidArgumentError(`${what}: unknown option(s) ${bad.join(', ')}`);
}

async function asBuffer(data) {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (Buffer.isBuffer(data)) return data;
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return Buffer.from(data);
  if (typeof Blob !== 'undefined' && data instanceof Blob) return Buffer.from(await data.arrayBuffer());
  if (data && typeof data.getReader === 'function') {  // a web ReadableStream
    const parts = [];
    const reader = data.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value));
    }
    return Buffer.concat(parts);
  }
  if (data && typeof data[Symbol.asyncIterator] === 'function') {  // a Node Readable
    const parts = [];
    for await (const c of data) parts.push(typeof c === 'string' ? Buffer.from(c, 'utf8') : Buffer.from(c));
    return Buffer.concat(parts);
  }
  throw new InvalidArgumentError('file data must be a string, an ArrayBuffer, a typed array, ' +
                                 `a Blob or a ReadableStream, not ${data === null ? 'null' : typeof data}`);
}

const KIND_CHAR = { file: '-', dir: 'd', symlink: 'l' };

function permissions(type, mode) {
  const bits = 'rwxrwxrwx';
  let s = KIND_CHAR[type] ?? '?';
  for (let i = 0; i < 9; i++) s += mode & (0o400 >> i) ? bits[i] : '-';
  const chars = s.split('');
  if (mode & 0o4000) chars[3] = chars[3] === 'x' ? 's' : 'S';
  if (mode & 0o2000) chars[6] = chars[6] === 'x' ? 's' : 'S';
  if (mode & 0o1000) chars[9] = chars[9] === 'x' ? 't' : 'T';
  return chars.join('');
}

const FileType = Object.freeze({ FILE: 'file', DIR: 'dir', SYMLINK: 'symlink' });
const TYPES = new Set(['file', 'dir', 'symlink']);

function entry(name, path, fi) {
  return {
    name,
    type: TYPES.has(fi.type) ? fi.type : undefined,
    path,
    size: fi.size,
    mode: fi.mode & 0o7777,
    permissions: permissions(fi.type, fi.mode),
    owner: undefined,          // not provided by libztee
    group: undefined,          // not provided by libztee
    modifiedTime: fi.mtimeNs ? new Date(Number(fi.mtimeNs / 1000000n)) : undefined,
    symlinkTarget: undefined,  // not provided by libztee
  };
}

function resolvePath(path, home) {
  let p = path;
  if (p === '~' || p.startsWith('~/')) p = home + p.slice(1);
  else if (!p.startsWith('/')) p = posix.join(home, p);
  return p === '/' ? '/' : posix.normalize(p).replace(/(.)\/$/, '$1');
}

const SIGNAMES = { 1: 'hangup', 2: 'interrupt', 3: 'quit', 6: 'aborted', 9: 'killed', 13: 'broken pipe', 15: 'terminated' };

// ---- the process-wide registry ------------------------------------------------------------

const registry = new Map();

function lookup(sandboxId) {
  const sbx = registry.get(sandboxId);
  if (!sbx) {
    throw new SandboxNotFoundError(`sandbox ${JSON.stringify(String(sandboxId))} not found: it was not ` +
                                   'created by this process, or it was killed or its timeout passed');
  }
  return sbx;
}

// ---- commands -------------------------------------------------------------------------

// One command this shim started: its output log, its end, its kill switch.
class Proc {
  constructor(pid, cmd, envs, cwd, user, timeoutMs, wantsStdin) {
    Object.assign(this, { pid, cmd, envs, cwd, user, timeoutMs, wantsStdin });
    this.stdin = null;           // the binding's Process when started with stdin: true
    this.stdinClosed = false;
    this.controller = new AbortController();
    this.killReason = new Error('killed through ztee/e2b');
    this.events = [];            // [kind, text]
    this.out = { stdout: '', stderr: '' };
    this.listeners = new Set();  // called on each event and at the end
    this.done = false;
    this.result = null;          // the binding's ExecResult
    this.failure = null;
    this.callbackError = null;   // a throwing output callback's error
    this.lost = false;           // its sandbox died under it
    this.ended = new Promise((resolve) => { this._resolveEnded = resolve; });
  }

  push(kind, text) {
    this.events.push([kind, text]);
    this.out[kind] += text;
    for (const l of this.listeners) l();
  }

  finish(result, failure) {
    this.result = result;
    this.failure = failure;
    this.done = true;
    this._resolveEnded();
    for (const l of this.listeners) l();
  }

  kill() {
    if (!this.controller.signal.aborted) this.controller.abort(this.killReason);
  }

  // The CommandResult, or throws as E2B does (non-zero exit, timeout).
  outcome() {
    if (this.callbackError) throw this.callbackError;
    if (this.failure) throw this.failure;
    const r = this.result;
    const { stdout, stderr } = this.out;
    if (r.timedOut) {
      throw new TimeoutError(`command timed out: its timeout of ${this.timeoutMs} ms passed and it ` +
                             'was killed (pass timeoutMs to commands.run, 0 for none)');
    }
    if (r.exitCode === 0) return { stdout, stderr, exitCode: 0, error: undefined };
    const error = r.signal ? `signal: ${SIGNAMES[r.signal] ?? r.signal}` : `exit status ${r.exitCode}`;
    throw new CommandExitError({ stdout, stderr, exitCode: r.exitCode, error });
  }
}

// Calls onStdout / onStderr with a command's output from its first chunk on,
// one call at a time (a returned promise is awaited). A throwing callback
// kills the command. `done` resolves once every call ran.
class Delivery {
  constructor(proc, onStdout, onStderr) {
    this.proc = proc;
    this.fns = { stdout: onStdout, stderr: onStderr };
    this.next = 0;
    this.running = false;
    this.stopped = false;
    this.done = new Promise((resolve) => { this._resolve = resolve; });
    this.listener = () => this.pump();
    proc.listeners.add(this.listener);
    this.pump();
  }

  stop() {
    this.stopped = true;
    this.proc.listeners.delete(this.listener);
    this._resolve();
  }

  async pump() {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      const p = this.proc;
      while (!this.stopped && this.next < p.events.length) {
        const [kind, text] = p.events[this.next++];
        const fn = this.fns[kind];
        if (typeof fn === 'function') await fn(text);
      }
      if (p.done && this.next >= p.events.length) this.stop();
    } catch (e) {
      this.proc.callbackError ??= e;
      this.proc.kill();
      this.stop();
    } finally {
      this.running = false;
    }
    if (!this.stopped && this.next < this.proc.events.length) this.pump();
  }
}

function checkCallbacks(o) {
  for (const k of ['onStdout', 'onStderr']) {
    if (o[k] !== undefined && o[k] !== null && typeof o[k] !== 'function') {
      throw new InvalidArgumentError(`${k} must be a function`);
    }
  }
}

/** A background command (commands.run(cmd, {background: true})). */
class CommandHandle {
  constructor(proc, commands, delivery) {
    this._proc = proc;
    this._commands = commands;
    this._delivery = delivery;
  }

  get pid() {
    return this._proc.pid;
  }

  /** The output so far. */
  get stdout() {
    return this._proc.out.stdout;
  }

  get stderr() {
    return this._proc.out.stderr;
  }

  /** undefined while it runs (or if it failed without one). */
  get exitCode() {
    const p = this._proc;
    return p.done && p.result ? p.result.exitCode : undefined;
  }

  get error() {
    if (!this._proc.done) return undefined;
    try {
      return this._proc.outcome().error;
    } catch (e) {
      return e instanceof CommandExitError ? e.error : e.message;
    }
  }

  /** Waits for the end: the CommandResult, or rejects with CommandExitError
   * (non-zero exit or killed) / TimeoutError. */
  async wait() {
    await this._proc.ended;
    if (this._delivery) await this._delivery.done;
    return this._proc.outcome();
  }

  /** Kills the command (SIGKILL to its process group); false if it had ended. */
  kill() {
    return this._commands.kill(this.pid);
  }

  /** Stops calling this handle's callbacks; the command keeps running. */
  async disconnect() {
    this._delivery?.stop();
  }

  /** commands.sendStdin(pid, data) for this command. */
  sendStdin(data, opts) {
    return this._commands.sendStdin(this.pid, data, opts);
  }

  /** commands.closeStdin(pid) for this command. */
  closeStdin(opts) {
    return this._commands.closeStdin(this.pid, opts);
  }
}

const RUN_OPTS = new Set(['background', 'cwd', 'user', 'envs', 'onStdout', 'onStderr', 'stdin',
                          'timeoutMs', 'requestTimeoutMs', 'signal']);

/** sbx.commands. */
class Commands {
  constructor(sbx) {
    this._sbx = sbx;
    this._procs = new Map();
    this._nextPid = 1;
  }

  /** Runs cmd with /bin/bash -c. Foreground: the CommandResult, or rejects
   * with CommandExitError / TimeoutError. background: a CommandHandle at once.
   * opts: background, cwd, user, envs, onStdout, onStderr, timeoutMs (default
   * 60000, 0: none), signal (aborting kills the command), stdin (true: open
   * for sendStdin until closeStdin; else empty). */
  async run(cmd, opts) {
    const o = optsObject(opts, 'commands.run');
    rejectUnknown('commands.run', o, RUN_OPTS);
    if (typeof cmd !== 'string' || !cmd) {
      throw new InvalidArgumentError(`cmd must be a non-empty string, not ${JSON.stringify(cmd)}`);
    }
    if (o.stdin !== undefined && o.stdin !== null && typeof o.stdin !== 'boolean') {
      throw new InvalidArgumentError('commands.run: stdin must be true or false (send the data with ' +
                                     'commands.sendStdin)');
    }
    checkCallbacks(o);
    const signal = o.signal;
    if (signal !== undefined && signal !== null && !(signal instanceof AbortSignal)) {
      throw new InvalidArgumentError('signal must be an AbortSignal');
    }
    const timeoutMs = checkMs('timeoutMs', o.timeoutMs === undefined ? DEFAULT_COMMAND_TIMEOUT_MS : o.timeoutMs, true);
    const sbx = this._sbx;
    const [account, home] = await sbx._account(o.user);
    const envs = { ...sbx._envs, ...strMap('envs', o.envs) };
    const cwd = o.cwd !== undefined && o.cwd !== null
      ? sbx._resolve(String(o.cwd), home) : await sbx._workdir(account, home);
    sbx._alive();
    signal?.throwIfAborted();
    const proc = new Proc(this._nextPid++, cmd, envs, cwd, account, timeoutMs, o.stdin === true);
    this._procs.set(proc.pid, proc);
    this._exec(proc);
    if (signal) {
      const onAbort = () => proc.kill();
      signal.addEventListener('abort', onAbort, { once: true });
      proc.ended.then(() => signal.removeEventListener('abort', onAbort));
    }
    const delivery = o.onStdout || o.onStderr ? new Delivery(proc, o.onStdout, o.onStderr) : null;
    const handle = new CommandHandle(proc, this, delivery);
    if (o.background) return handle;
    try {
      return await handle.wait();
    } catch (e) {
      if (signal?.aborted && !proc.callbackError) throw signal.reason;
      throw e;
    }
  }

  async _exec(proc) {
    const sbx = this._sbx;
    let result = null;
    let failure = null;
    const argv = ['/bin/bash', '-c', proc.cmd];
    const opts = {
      env: proc.envs, cwd: proc.cwd, user: proc.user, timeoutMs: proc.timeoutMs,
      signal: proc.controller.signal,
      onStdout: (s) => proc.push('stdout', s),
      onStderr: (s) => proc.push('stderr', s),
    };
    try {
      if (proc.wantsStdin) {
        proc.stdin = sbx._box.spawn(argv, opts);  // set before run() returns: no await before it
        result = await proc.stdin.result;
      } else {
        result = await sbx._box.exec(argv, opts);
      }
    } catch (e) {
      if (e === proc.killReason && e.result) result = e.result;
      else failure = sbx._deadError() ?? translate(e, `command ${proc.pid}`);
    }
    if (proc.lost) {
      result = null;
      failure = sbx._deadError();
    }
    this._procs.delete(proc.pid);
    proc.finish(result, failure);
  }

  /** The commands this shim started in this sandbox that still run. */
  async list() {
    return [...this._procs.values()].map((p) => ({
      pid: p.pid, tag: undefined, cmd: '/bin/bash', args: ['-c', p.cmd], envs: { ...p.envs }, cwd: p.cwd,
    }));
  }

  /** Kills a running command (SIGKILL to its process group) and waits until
   * it is gone; false if no command with that pid runs. */
  async kill(pid) {
    const proc = this._procs.get(pid);
    if (!proc || proc.done) return false;
    proc.kill();
    await proc.ended;
    return true;
  }

  /** A handle to a running command this shim started; callbacks get its
   * output from the start. */
  async connect(pid, opts) {
    const o = optsObject(opts, 'commands.connect');
    checkCallbacks(o);
    const proc = this._procs.get(pid);
    if (!proc) {
      throw new NotFoundError(`no running command with pid ${pid} in sandbox ${this._sbx.sandboxId} ` +
                              "(pids are this shim's, from 1 up)");
    }
    const delivery = o.onStdout || o.onStderr ? new Delivery(proc, o.onStdout, o.onStderr) : null;
    return new CommandHandle(proc, this, delivery);
  }

  // The running command `pid`, started with stdin: true.
  _stdinOf(pid, call) {
    this._sbx._alive();
    const proc = this._procs.get(pid);
    if (!proc || proc.done) {
      throw new NotFoundError(`${call}: no running command with pid ${pid} in sandbox ` +
                              `${this._sbx.sandboxId} (it has ended, or never ran)`);
    }
    if (!proc.stdin) {
      throw new InvalidArgumentError(`${call}: command ${pid} was started without stdin: start it ` +
                                     'with commands.run(cmd, {stdin: true}) to send it input');
    }
    return proc;
  }

  /** Passes data (a string as UTF-8, or a Uint8Array) to the stdin of
   * command `pid`, started with stdin: true; resolves once it is queued
   * (waiting while 1 MiB already waits on the host). Rejects with
   * NotFoundError once the command has ended, InvalidArgumentError without
   * stdin: true or after closeStdin. */
  async sendStdin(pid, data) {
    if (typeof data !== 'string' && !(data instanceof Uint8Array)) {
      throw new InvalidArgumentError('commands.sendStdin: data must be a string or a Uint8Array, not ' +
                                     `${data === null ? 'null' : typeof data}`);
    }
    const proc = this._stdinOf(pid, 'commands.sendStdin');
    const closed = () => new InvalidArgumentError(`commands.sendStdin: the stdin of command ${pid} was ` +
                                                  'closed (closeStdin)');
    if (proc.stdinClosed) throw closed();
    try {
      await proc.stdin.write(data);
    } catch (e) {
      if (e instanceof ztee.ClosedError) {
        throw this._sbx._deadError() ?? new NotFoundError(`commands.sendStdin: command ${pid} has ended`);
      }
      if (e instanceof ztee.InvalidArgumentError) throw closed();  // closeStdin ran meanwhile
      throw this._sbx._deadError() ?? translate(e, `commands.sendStdin(${pid})`);
    }
  }

  /** Ends the stdin of command `pid` (EOF) after what was sent before.
   * Rejects with NotFoundError once it has ended, InvalidArgumentError
   * without stdin: true. Closing again does nothing. */
  async closeStdin(pid) {
    const proc = this._stdinOf(pid, 'commands.closeStdin');
    proc.stdinClosed = true;
    await proc.stdin.end();
  }

  _killAll() {
    for (const p of this._procs.values()) {
      p.lost = true;
      p.kill();
    }
  }
}

/** sbx.pty: libztee runs commands without a terminal. */
class Pty {
  async create() { throw unsupported('pty.create', 'libztee runs commands without a terminal'); }
  async connect() { throw unsupported('pty.connect', 'libztee runs commands without a terminal'); }
  async sendInput() { throw unsupported('pty.sendInput', 'libztee runs commands without a terminal'); }
  async resize() { throw unsupported('pty.resize', 'libztee runs commands without a terminal'); }
  async kill() { throw unsupported('pty.kill', 'libztee runs commands without a terminal'); }
}

// ---- files ---------------------------------------------------------------------------

const FILE_OPTS = new Set(['user', 'requestTimeoutMs', 'signal']);
const READ_OPTS = new Set([...FILE_OPTS, 'format', 'gzip', 'streamIdleTimeoutMs']);
const WRITE_OPTS = new Set([...FILE_OPTS, 'gzip', 'useOctetStream']);
const LIST_OPTS = new Set([...FILE_OPTS, 'depth']);

/** sbx.files. */
class Filesystem {
  constructor(sbx) {
    this._sbx = sbx;
  }

  async _path(path, opts, known, what) {
    const o = optsObject(opts, what);
    rejectUnknown(what, o, known);
    const [account, home] = await this._sbx._account(o.user);
    if (typeof path !== 'string' || !path) {
      throw new InvalidArgumentError(`${what}: path must be a non-empty string, not ${JSON.stringify(path)}`);
    }
    return [account, this._sbx._resolve(path, home), o];
  }

  _box() {
    this._sbx._alive();
    return this._sbx._box;
  }

  // The file info, or null where nothing exists.
  async _stat(path) {
    try {
      return await this._box().files.stat(path);
    } catch (e) {
      if (e instanceof ztee.NotFoundError && !(e instanceof SandboxError)) return null;
      throw this._sbx._deadError() ?? translate(e, path, FileNotFoundError);
    }
  }

  // Runs argv as `account` in the guest; a failure rejects with its stderr.
  async _as(account, argv, what, stdin) {
    let r;
    try {
      r = await this._box().exec(argv, { user: account, stdin, cwd: '/', timeoutMs: FILE_CMD_TIMEOUT_MS });
    } catch (e) {
      throw this._sbx._deadError() ?? translate(e, what, FileNotFoundError);
    }
    if (r.timedOut) throw new TimeoutError(`${what}: took longer than ${FILE_CMD_TIMEOUT_MS / 1000} s`);
    if (r.exitCode !== 0) {
      const err = r.stderr.trim().slice(-1000);
      const low = err.toLowerCase();
      if (low.includes('no space left')) throw new NotEnoughSpaceError(`${what}: ${err}`);
      if (low.includes('permission denied') || low.includes('operation not permitted')) {
        throw new SandboxError(`${what}: ${err} (as user ${JSON.stringify(account)}; pass ` +
                               "{user: 'root'} to act as root)", -13, 13);
      }
      if (low.includes('no such file')) throw new FileNotFoundError(`${what}: ${err}`, 2);
      if (low.includes('not a directory') || low.includes('is a directory') || low.includes('exists')) {
        throw new InvalidArgumentError(`${what}: ${err}`);
      }
      throw new SandboxError(`${what}: ${err || `exit status ${r.exitCode}`}`, -12);
    }
  }

  /** The file's content: a string (format 'text', the default; invalid UTF-8
   * replaced), a Uint8Array ('bytes'), a Blob ('blob') or a ReadableStream of
   * Uint8Array chunks ('stream'). Reads as root. */
  async read(path, opts) {
    const format = opts?.format ?? 'text';
    if (!['text', 'bytes', 'blob', 'stream'].includes(format)) {
      throw new InvalidArgumentError(`format must be 'text', 'bytes', 'blob' or 'stream', not ${JSON.stringify(format)}`);
    }
    const [, p] = await this._path(path, opts, READ_OPTS, 'files.read');
    let data;
    try {
      data = await this._box().files.read(p);
    } catch (e) {
      throw this._sbx._deadError() ?? translate(e, `read ${p}`, FileNotFoundError);
    }
    if (format === 'text') return data.toString('utf8');
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (format === 'bytes') return bytes;
    if (format === 'blob') return new Blob([bytes]);
    let off = 0;
    return new ReadableStream({
      type: 'bytes',
      pull(controller) {
        if (off >= bytes.length) {
          controller.close();
          return;
        }
        controller.enqueue(bytes.slice(off, off + READ_CHUNK));
        off += READ_CHUNK;
      },
    });
  }

  /** Creates or replaces a file (and its missing parent directories) as the
   * account: write(path, data, opts) -> WriteInfo; write([{path, data}, ...],
   * opts) -> WriteInfo[]. data: a string, ArrayBuffer, typed array, Blob or
   * ReadableStream. */
  async write(path, data, opts) {
    if (Array.isArray(path)) {
      if (data !== undefined && (typeof data !== 'object' || data === null || Array.isArray(data))) {
        throw new InvalidArgumentError('files.write(entries, opts): each entry carries its own data; ' +
                                       'the second argument is the options');
      }
      return this.writeFiles(path, data);
    }
    if (data === undefined || data === null) {
      throw new InvalidArgumentError('files.write(path, data): data is missing');
    }
    const [account, p] = await this._path(path, opts, WRITE_OPTS, 'files.write');
    const blob = await asBuffer(data);
    if (account === 'root') {
      try {
        const parent = posix.dirname(p);
        if (parent !== '/' && (await this._stat(parent)) === null) {
          await this._box().files.mkdir(parent, { parents: true });
        }
        await this._box().files.write(p, blob);
      } catch (e) {
        throw this._sbx._deadError() ?? translate(e, `write ${p}`, FileNotFoundError);
      }
    } else {
      await this._as(account, ['/bin/sh', '-c', 'd=$(dirname -- "$1") && mkdir -p -- "$d" && cat > "$1"', 'sh', p],
                     `write ${p}`, blob);
    }
    return { name: posix.basename(p), type: 'file', path: p };
  }

  async writeFiles(files, opts) {
    if (!Array.isArray(files)) throw new InvalidArgumentError('files.writeFiles takes an array of {path, data}');
    const out = [];
    for (const f of files) {
      if (f === null || typeof f !== 'object' || !('path' in f) || !('data' in f)) {
        throw new InvalidArgumentError(`each file must be a {path, data} object, not ${JSON.stringify(f)}`);
      }
      out.push(await this.write(f.path, f.data, opts));
    }
    return out;
  }

  /** Entries of a directory (sorted by name); depth > 1 also lists its
   * subdirectories to that depth (symlinks are not followed). */
  async list(path, opts) {
    const [, p, o] = await this._path(path, opts, LIST_OPTS, 'files.list');
    const depth = o.depth ?? 1;
    if (!Number.isInteger(depth) || depth < 1) {
      throw new InvalidArgumentError(`depth must be an integer >= 1, not ${String(depth)}`);
    }
    const fi = await this._stat(p);
    if (fi === null) throw new FileNotFoundError(`list ${p}: no such directory`);
    if (fi.type !== 'dir') throw new InvalidArgumentError(`list ${p}: not a directory`);
    const out = [];
    let level = [p];
    for (let i = 0; i < depth && level.length; i++) {
      const next = [];
      for (const d of level) {
        let items;
        try {
          items = await this._box().files.list(d);
        } catch (e) {
          throw this._sbx._deadError() ?? translate(e, `list ${d}`, FileNotFoundError);
        }
        items.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
        for (const it of items) {
          const full = posix.join(d, it.name);
          out.push(entry(it.name, full, it));
          if (it.type === 'dir') next.push(full);
        }
      }
      level = next;
    }
    return out;
  }

  async exists(path, opts) {
    const [, p] = await this._path(path, opts, FILE_OPTS, 'files.exists');
    return (await this._stat(p)) !== null;
  }

  async getInfo(path, opts) {
    const [, p] = await this._path(path, opts, FILE_OPTS, 'files.getInfo');
    const fi = await this._stat(p);
    if (fi === null) throw new FileNotFoundError(`getInfo ${p}: no such file or directory`);
    return entry(posix.basename(p) || '/', p, fi);
  }

  /** Removes a file or a directory tree, as the account. */
  async remove(path, opts) {
    const [account, p] = await this._path(path, opts, FILE_OPTS, 'files.remove');
    if ((await this._stat(p)) === null) throw new FileNotFoundError(`remove ${p}: no such file or directory`);
    await this._as(account, ['rm', '-rf', '--', p], `remove ${p}`);
  }

  /** Creates a directory and its missing parents as the account; false if it
   * existed already. */
  async makeDir(path, opts) {
    const [account, p] = await this._path(path, opts, FILE_OPTS, 'files.makeDir');
    const fi = await this._stat(p);
    if (fi !== null) {
      if (fi.type === 'dir') return false;
      throw new InvalidArgumentError(`makeDir ${p}: exists and is not a directory`);
    }
    await this._as(account, ['mkdir', '-p', '--', p], `makeDir ${p}`);
    return true;
  }

  /** Moves oldPath to newPath (replacing a file there) as the account. */
  async rename(oldPath, newPath, opts) {
    const [account, from] = await this._path(oldPath, opts, FILE_OPTS, 'files.rename');
    const [, to] = await this._path(newPath, opts, FILE_OPTS, 'files.rename');
    if ((await this._stat(from)) === null) throw new FileNotFoundError(`rename ${from}: no such file or directory`);
    await this._as(account, ['mv', '-T', '--', from, to], `rename ${from} to ${to}`);
    return this.getInfo(to, { user: 'root' });
  }

  async watchDir() {
    throw unsupported('files.watchDir', 'libztee has no file-change events');
  }
}

// ---- the sandbox ------------------------------------------------------------------------

const PROVISION =
  `grep -q '^user:' /etc/passwd || { echo 'user:*:${USER_UID}:${USER_UID}::/home/user:/bin/bash' >> /etc/passwd` +
  ` && { grep -q '^user:' /etc/group || echo 'user:*:${USER_UID}:' >> /etc/group; }; } && ` +
  'h=$(awk -F: \'$1=="user"{print $6}\' /etc/passwd) && mkdir -p "$h" && chown user: "$h"';

function resolveTemplate(template) {
  if (template === undefined || template === null || template === DEFAULT_TEMPLATE) return {};
  if (typeof template !== 'string') {
    throw new InvalidArgumentError(`template must be a string, not ${typeof template}`);
  }
  if (template.startsWith('/') || template.startsWith('.')) {
    if (fs.existsSync(posix.join(template, 'manifest.json'))) return { imageDir: template };
    if (fs.existsSync(posix.join(template, 'template.json'))) return { templateDir: template };
    throw new InvalidArgumentError(
      `template ${JSON.stringify(template)} is neither a libztee image directory (with manifest.json, ` +
      'made by `ztee image build`) nor a snapshot template (with template.json)');
  }
  throw new InvalidArgumentError(
    `template ${JSON.stringify(template)}: ztee/e2b has no E2B template registry; pass nothing or ` +
    "'base' for the default image, or the path of a libztee image directory " +
    '(`ztee image build --out DIR`) or of a snapshot template');
}

// Options of E2B's that mean nothing here (no server, no API key).
const IGNORED = ['apiKey', 'accessToken', 'validateApiKey', 'domain', 'apiUrl', 'debug', 'requestTimeoutMs',
                 'retries', 'logger', 'headers', 'apiHeaders', 'proxy', 'secure', 'signal'];
const CREATE_OPTS = new Set([...IGNORED, 'template', 'timeoutMs', 'envs', 'metadata', 'allowInternetAccess',
                             'network', 'mcp', 'lifecycle', 'volumeMounts', 'iam', 'sandboxUrl', 'autoPause',
                             'zteeOptions']);
const ZTEE_OPTS = new Set(['runtime', 'imageDir', 'templateDir', 'vcpus', 'memoryMib', 'bootTimeoutMs',
                           'outputCap', 'allow', 'dns', 'network', 'guestAslr']);

/** An E2B-style sandbox: a libztee microVM in this process.
 *
 * `await Sandbox.create(template?, opts?)` boots one. template: omitted or
 * 'base' (the default image), or the path of a libztee image directory or
 * snapshot template (also opts.template). opts: timeoutMs (until a timer
 * kills it; default 300000), envs (of every command), metadata, zteeOptions
 * (options of the binding's Sandbox.create: vcpus, memoryMib, allow, dns,
 * runtime, ...). apiKey, domain, debug, requestTimeoutMs and the other
 * connection options are accepted and ignored (there is no server). */
class Sandbox {
  constructor() {
    throw new TypeError('use await Sandbox.create(template?, opts?) or Sandbox.connect(sandboxId)');
  }

  static async create(template, opts) {
    if (template !== null && typeof template === 'object' && opts === undefined) {
      opts = template;
      template = undefined;
    }
    const o = optsObject(opts, 'Sandbox.create');
    rejectUnknown('Sandbox.create', o, CREATE_OPTS);
    if (template === undefined) template = o.template;
    else if (o.template !== undefined && o.template !== template) {
      throw new InvalidArgumentError('Sandbox.create: template given twice (argument and opts.template)');
    }
    if (o.allowInternetAccess) {
      throw unsupported('Sandbox.create({allowInternetAccess: true})', 'a libztee sandbox has no network unless ' +
                        "zteeOptions: {allow: [...], dns: ...} names what it may reach");
    }
    for (const k of ['network', 'mcp', 'lifecycle', 'volumeMounts', 'iam', 'sandboxUrl', 'autoPause']) {
      if (o[k] !== undefined && o[k] !== null && o[k] !== false) {
        throw unsupported(`Sandbox.create({${k}})`, k === 'network' ? 'use zteeOptions: {allow: [...]}' : '');
      }
    }
    const timeoutMs = checkMs('timeoutMs', o.timeoutMs ?? DEFAULT_SANDBOX_TIMEOUT_MS, false);
    const envs = strMap('envs', o.envs);
    const metadata = strMap('metadata', o.metadata);
    const where = resolveTemplate(template);
    const zo = optsObject(o.zteeOptions, 'zteeOptions');
    rejectUnknown('zteeOptions', zo, ZTEE_OPTS);
    const clash = Object.keys(where).filter((k) => zo[k] !== undefined);
    if (clash.length) {
      throw new InvalidArgumentError(`zteeOptions ${clash.join(', ')} clash with template ${JSON.stringify(template)}`);
    }
    let box;
    try {
      box = await ztee.Sandbox.create({ ...zo, ...where });
    } catch (e) {
      throw translate(e, 'create sandbox');
    }
    try {
      const r = await box.run(PROVISION, { timeoutMs: 60000 });
      if (r.exitCode !== 0) {
        throw new SandboxError(`create sandbox: adding the account "user" failed: ${r.stderr.trim().slice(-500)}`);
      }
    } catch (e) {
      await box.destroy().catch(() => {});
      throw translate(e, 'create sandbox');
    }
    // `this`: Sandbox or a subclass of it (E2B code may extend Sandbox).
    const sbx = Object.create((typeof this === 'function' ? this : Sandbox).prototype);
    sbx._init(box, template ?? DEFAULT_TEMPLATE, envs, metadata, zo);
    sbx._arm(timeoutMs);
    return sbx;
  }

  _init(box, template, envs, metadata, zo) {
    this._box = box;
    this._template = template;
    this._envs = envs;
    this._metadata = metadata;
    this._cpuCount = zo.vcpus || 1;
    this._memoryMB = zo.memoryMib || 256;
    this._dead = null;
    this._timedOut = false;
    this._timer = null;
    this._destroyed = null;
    this._accounts = null;
    this._homes = new Map();
    this.sandboxId = box.id;
    this.sandboxDomain = undefined;
    this._startedAt = new Date();
    this.commands = new Commands(this);
    this.files = new Filesystem(this);
    this.pty = new Pty();
    registry.set(this.sandboxId, this);
  }

  /** The running sandbox with this id (created by this process); timeoutMs
   * restarts its timer. SandboxNotFoundError otherwise. */
  static async connect(sandboxId, opts) {
    const sbx = lookup(sandboxId);
    return sbx.connect(opts);
  }

  async connect(opts) {
    const o = optsObject(opts, 'connect');
    this._alive();
    if (o.timeoutMs !== undefined) await this.setTimeout(o.timeoutMs);
    return this;
  }

  /** The running sandboxes this process created (filtered by
   * opts.query.metadata and .state), as a paginator with one page; also
   * awaitable as the array itself. */
  static list(opts) {
    const o = optsObject(opts, 'Sandbox.list');
    const q = optsObject(o.query, 'query');
    const want = strMap('query.metadata', q.metadata);
    let infos = [...registry.values()].map((s) => s._info());
    infos = infos.filter((i) => Object.entries(want).every(([k, v]) => i.metadata[k] === v));
    if (q.state !== undefined && !q.state.includes('running')) infos = [];
    if (q.template !== undefined) infos = infos.filter((i) => i.templateId === q.template);
    if (o.limit) infos = infos.slice(0, o.limit);
    return new SandboxPaginator(infos);
  }

  // -- lifetime --

  _arm(ms) {
    if (this._timer) clearTimeout(this._timer);
    const end = Date.now() + ms;
    this._endAt = new Date(end);
    const tick = () => {
      const left = end - Date.now();
      if (left > 0) {
        this._timer = setTimeout(tick, Math.min(left, MAX_TIMER_MS));
        this._timer.unref();
      } else {
        this._die('its timeout passed', true);
      }
    };
    this._timer = setTimeout(tick, Math.min(ms, MAX_TIMER_MS));
    this._timer.unref();
  }

  // Marks the sandbox dead and destroys it; false if it was dead already.
  _die(why, timedOut = false) {
    if (this._dead !== null) return false;
    this._dead = why;
    this._timedOut = timedOut;
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    registry.delete(this.sandboxId);
    this.commands._killAll();
    this._destroyed = this._box.destroy().catch(() => {});
    return true;
  }

  _deadError() {
    if (this._dead === null) return null;
    if (this._timedOut) {
      return new TimeoutError(`sandbox ${this.sandboxId} was killed when its timeout passed (create it with a ` +
                              'longer timeoutMs, or call setTimeout() before it passes)');
    }
    return new SandboxClosedError(`sandbox ${this.sandboxId} is not running: ${this._dead}`);
  }

  _alive() {
    const e = this._deadError();
    if (e) throw e;
  }

  /** Kills this sandbox; false if it was not running. */
  async kill() {
    const killed = this._die('it was killed');
    await this._destroyed;
    return killed;
  }

  static async kill(sandboxId) {
    const sbx = registry.get(sandboxId);
    return sbx ? sbx.kill() : false;
  }

  /** The sandbox is killed timeoutMs from now. */
  async setTimeout(timeoutMs) {
    const ms = checkMs('timeoutMs', timeoutMs, false);
    if (ms === undefined) throw new InvalidArgumentError('setTimeout(timeoutMs): timeoutMs is missing');
    this._alive();
    this._arm(ms);
  }

  static async setTimeout(sandboxId, timeoutMs) {
    return lookup(sandboxId).setTimeout(timeoutMs);
  }

  _info() {
    return {
      sandboxId: this.sandboxId,
      templateId: this._template,
      name: this._template,
      metadata: { ...this._metadata },
      startedAt: this._startedAt,
      endAt: this._endAt,
      state: 'running',
      cpuCount: this._cpuCount,
      memoryMB: this._memoryMB,
    };
  }

  async getInfo() {
    this._alive();
    return this._info();
  }

  static async getInfo(sandboxId) {
    return lookup(sandboxId).getInfo();
  }

  static async getFullInfo(sandboxId) {
    return lookup(sandboxId).getInfo();
  }

  async isRunning() {
    if (this._dead !== null) return false;
    try {
      await this._box.ping();
      return true;
    } catch {
      return false;
    }
  }

  async [Symbol.asyncDispose]() {
    await this.kill();
  }

  // -- accounts and paths --

  // [account name, home] for a user option; throws for an unknown one.
  async _account(user) {
    const name = user === undefined || user === null ? DEFAULT_USER : user;
    if (typeof name !== 'string' || !name) {
      throw new InvalidArgumentError(`user must be an account name, not ${JSON.stringify(user)}`);
    }
    if (this._accounts === null || !this._accounts.has(name)) {
      this._alive();
      let text;
      try {
        text = (await this._box.files.read('/etc/passwd', { maxBytes: 1 << 20 })).toString('utf8');
      } catch (e) {
        throw this._deadError() ?? translate(e, 'read /etc/passwd');
      }
      const accounts = new Map();
      for (const line of text.split('\n')) {
        const f = line.split(':');
        if (f.length >= 6) accounts.set(f[0], f[5] || '/');
      }
      this._accounts = accounts;
    }
    if (!this._accounts.has(name)) {
      throw new InvalidArgumentError(
        `user ${JSON.stringify(name)} does not exist in sandbox ${this.sandboxId}; use "user" (the default) ` +
        'or "root", or create the account first (as root)');
    }
    return [name, this._accounts.get(name)];
  }

  // A command's default cwd: the account's home, or "/" where it has none.
  async _workdir(account, home) {
    if (!this._homes.has(account)) {
      this._alive();
      try {
        const fi = await this._box.files.stat(home);
        this._homes.set(account, fi.type === 'dir' ? home : '/');
      } catch (e) {
        if (!(e instanceof ztee.NotFoundError)) throw this._deadError() ?? translate(e, `stat ${home}`);
        this._homes.set(account, '/');
      }
    }
    return this._homes.get(account);
  }

  _resolve(path, home) {
    return resolvePath(path, home);
  }

  // -- calls libztee cannot serve --

  getHost() {
    throw unsupported('getHost', 'sandboxes expose no ports; use commands and files');
  }

  getMcpUrl() {
    throw unsupported('getMcpUrl');
  }

  async getMcpToken() { throw unsupported('getMcpToken'); }
  async getMetrics() { throw unsupported('getMetrics'); }
  async uploadUrl() { throw unsupported('uploadUrl', 'use files.write'); }
  async downloadUrl() { throw unsupported('downloadUrl', 'use files.read'); }
  async pause() { throw unsupported('pause'); }
  async betaPause() { throw unsupported('betaPause'); }
  async createSnapshot() { throw unsupported('createSnapshot'); }
  async fork() { throw unsupported('fork'); }
  async updateNetwork() { throw unsupported('updateNetwork', 'pass zteeOptions: {allow: [...]} at create'); }

  static async getMetrics() { throw unsupported('Sandbox.getMetrics'); }
  static async pause() { throw unsupported('Sandbox.pause'); }
  static async betaPause() { throw unsupported('Sandbox.betaPause'); }
  static async resume() { throw unsupported('Sandbox.resume'); }
  static async createSnapshot() { throw unsupported('Sandbox.createSnapshot'); }
  static async fork() { throw unsupported('Sandbox.fork'); }
  static async updateNetwork() { throw unsupported('Sandbox.updateNetwork'); }
  static listSnapshots() { throw unsupported('Sandbox.listSnapshots'); }
  static async deleteSnapshot() { throw unsupported('Sandbox.deleteSnapshot'); }
}

/** Sandbox.list()'s answer: one page (hasNext, nextToken, nextItems()), also
 * awaitable as the array (E2B v1's form). */
class SandboxPaginator {
  constructor(items) {
    this._items = items;
    this._served = false;
  }

  get hasNext() {
    return !this._served;
  }

  get nextToken() {
    return undefined;
  }

  async nextItems() {
    if (this._served) throw new SandboxError('Sandbox.list: no more items (check hasNext first)');
    this._served = true;
    return [...this._items];
  }

  then(resolve, reject) {
    return Promise.resolve([...this._items]).then(resolve, reject);
  }
}

module.exports = {
  Sandbox,
  SandboxPaginator,
  CommandHandle,
  FileType,
  SandboxError,
  TimeoutError,
  NotFoundError,
  FileNotFoundError,
  SandboxNotFoundError,
  InvalidArgumentError,
  NotEnoughSpaceError,
  SandboxClosedError,
  NotSupportedError,
  CommandExitError,
  AuthenticationError,
  RateLimitError,
  TemplateError,
  default: Sandbox,
};
