// Type declarations of the ztee package (index.js / index.mjs).
/// <reference types="node" />

export interface RuntimeOptions {
  /** Default: $ZTEE_STATE_DIR or /run/ztee. */
  stateDir?: string;
  /** Default: $ZTEE_IMAGE_DIR or the default image. */
  imageDir?: string;
  /** "auto" or "qemu". */
  backend?: string;
  qemuBinary?: string;
  /** "auto" (default: KVM only on hardware KVM), "kvm" or "tcg". */
  accel?: string;
  /** Default true: every VMM jailed (needs root). false: development only, no network. */
  jail?: boolean;
  /** PEM public keys (paths or PEM text, ECDSA P-256): when given, images and
   * templates not signed by one of them (or with any digest changed) are
   * refused with an ImageError before any VMM starts. */
  trustedKeys?: string[];
  /** Refuse images without a passing `ztee image gate` verdict. */
  requireVulnGate?: boolean;
}

export class Runtime {
  /** Starts a runtime on the calling thread. */
  constructor(opts?: RuntimeOptions);
  /** Starts a runtime off the JS thread. */
  static create(opts?: RuntimeOptions): Promise<Runtime>;
  /** e.g. "qemu/tcg (...reason...)"; the first word is stable. */
  readonly backend: string;
  close(): void;
}

export interface NetworkOptions {
  /** Egress allowlist: "CIDR:PORT" or "CIDR:LO-HI", optional "/tcp" or "/udp"; IPv4. */
  allow?: string[];
  /** A resolver address the guest may query on port 53. */
  dns?: string;
}

export interface SandboxOptions extends NetworkOptions {
  runtime?: Runtime;
  imageDir?: string;
  vcpus?: number;
  memoryMib?: number;
  bootTimeoutMs?: number;
  /** Default per-command timeout (none by default). */
  timeoutMs?: number;
  /** Default per-command output cap in bytes (16 MiB). */
  outputCap?: number;
  /** Clone of a template made by snapshot() instead of a cold boot. */
  templateDir?: string;
  snapshottable?: boolean;
  /** Same as allow / dns. */
  network?: NetworkOptions;
  /** Default: off under software emulation, on with KVM. */
  guestAslr?: boolean;
  /** Host directories the guest sees read-only (workspaces); cold boot only.
   * SECURITY: everything in them becomes readable by the sandboxed code. */
  mounts?: Mount[];
  /** Destroying the sandbox appends one JSON line with its diff to this file. */
  diffLog?: string;
  /** Output DLP on every command's stdout/stderr and every readFile:
   * findings become "[REDACTED:<detector>]". */
  dlp?: boolean;
  /** Detectors whose findings withhold the output instead (the call
   * rejects). Implies dlp. */
  dlpBlock?: string[];
}

export interface Mount {
  /** Absolute path of an existing host directory. */
  hostDir: string;
  /** Absolute guest path, e.g. "/workspace"; not /, /proc, /sys, /dev, /run, /tmp. */
  guestPath: string;
}

/** One change in a guest's writable layer; every field is the guest's claim. */
export interface Change {
  readonly kind: 'created' | 'modified' | 'deleted';
  /** For a deletion: the type it had. */
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
  /** In a mount: relative to it; else absolute. */
  readonly path: string;
  /** The mount's guest path; '' for the guest's own filesystem. */
  readonly mount: string;
  readonly size: number;
  /** Permission bits with setuid/setgid/sticky (0o7777). */
  readonly mode: number;
  /** Regular files: 64 hex digits; else ''. */
  readonly sha256: string;
  /** Symlinks; else ''. */
  readonly linkTarget: string;
}

export interface ExportOptions {
  /** The mount's guest path; may be left out when the sandbox has one mount. */
  mount?: string;
  /** Relative paths (a directory selects everything below it); default: all changes. */
  paths?: string[];
  /** Asked per selected change before anything is written; default: approve all.
   * A change altered after approval is declined; a throw/rejection writes nothing. */
  approve?: (change: Change) => boolean | Promise<boolean>;
  /** Write created and modified entries into this existing directory instead. */
  destDir?: string;
}

export interface ExportResult {
  applied: Change[];
  /** Selected but not approved, or altered after approval. */
  declined: Change[];
}

export interface RunOptions<E extends 'utf8' | 'buffer' = 'utf8'> {
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  stdin?: string | Buffer;
  timeoutMs?: number;
  outputCap?: number;
  /** Chunks as they arrive (then not collected in the result). */
  onStdout?: (data: E extends 'buffer' ? Buffer : string) => void;
  onStderr?: (data: E extends 'buffer' ? Buffer : string) => void;
  /** Aborting kills the command; the promise rejects with signal.reason (err.result set). */
  signal?: AbortSignal;
  encoding?: E;
}

export class ExecResult<E extends 'utf8' | 'buffer' = 'utf8'> {
  /** -1 if ended by a signal. */
  readonly exitCode: number;
  readonly signal: number;
  readonly timedOut: boolean;
  readonly cancelled: boolean;
  readonly truncated: boolean;
  readonly durationMs: number;
  /** options.dlp: findings redacted in stdout and stderr. */
  readonly dlpFindings: number;
  /** options.dlp: injection rule hits. */
  readonly injectionAnomalies: number;
  readonly stdout: E extends 'buffer' ? Buffer : string;
  readonly stderr: E extends 'buffer' ? Buffer : string;
  readonly stdoutBuffer: Buffer;
  readonly stderrBuffer: Buffer;
  /** exitCode 0, not timed out, not cancelled. */
  readonly ok: boolean;
}

export interface OutputChunk<E extends 'utf8' | 'buffer' = 'utf8'> {
  stream: 'stdout' | 'stderr';
  data: E extends 'buffer' ? Buffer : string;
}

export interface OutputStream<E extends 'utf8' | 'buffer' = 'utf8'> extends AsyncIterable<OutputChunk<E>> {
  /** The run's result; leaving the loop early kills the command. */
  readonly result: Promise<ExecResult<E>>;
}

/** A signal name such as 'SIGUSR1' (os.constants.signals) or a number 1..64. */
export type SignalSpec = NodeJS.Signals | number;

/** A command started by sb.spawn() with its stdin open. */
export class Process<E extends 'utf8' | 'buffer' = 'utf8'> {
  private constructor();
  /** Bytes that may wait on the host for the sandbox (1 MiB); write() waits past it. */
  static readonly INPUT_MAX_BUFFERED: number;
  /** The command's result (rejects as run() does). */
  readonly result: Promise<ExecResult<E>>;
  /** true once result has settled. */
  readonly ended: boolean;
  /** Bytes written and not yet passed to the sandbox. */
  readonly buffered: number;
  /** Resolves once all of data is queued for stdin (waits while 1 MiB waits on the host);
   * in call order with end(). Rejects with ClosedError once the command has ended,
   * InvalidArgumentError after end(). */
  write(data: string | Buffer | ArrayBufferView | ArrayBuffer): Promise<void>;
  /** EOF on stdin after everything written before; idempotent. */
  end(): Promise<void>;
  /** Sends a signal (default 'SIGTERM') to the command's process group. Throws
   * InvalidArgumentError for a bad signal, ClosedError once the command has ended. */
  kill(sig?: SignalSpec): void;
}

export interface FileInfo {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeNs: bigint;
  mtime: Date;
  isFile: boolean;
  isDir: boolean;
}

export interface Files {
  read(path: string, opts?: { maxBytes?: number }): Promise<Buffer>;
  read(path: string, opts: { encoding: BufferEncoding; maxBytes?: number }): Promise<string>;
  write(path: string, data: string | Buffer | ArrayBufferView | ArrayBuffer, opts?: { mode?: number }): Promise<void>;
  list(path: string): Promise<FileInfo[]>;
  stat(path: string): Promise<FileInfo>;
  exists(path: string): Promise<boolean>;
  mkdir(path: string, opts?: { parents?: boolean; mode?: number }): Promise<void>;
  remove(path: string, opts?: { recursive?: boolean }): Promise<void>;
}

export class Sandbox implements AsyncDisposable {
  private constructor();
  static create(opts?: SandboxOptions): Promise<Sandbox>;
  readonly id: string;
  readonly alive: boolean;
  readonly runtime: Runtime;
  readonly files: Files;
  run(cmd: string, opts?: RunOptions<'utf8'>): Promise<ExecResult<'utf8'>>;
  run(cmd: string, opts: RunOptions<'buffer'>): Promise<ExecResult<'buffer'>>;
  exec(argv: string[], opts?: RunOptions<'utf8'>): Promise<ExecResult<'utf8'>>;
  exec(argv: string[], opts: RunOptions<'buffer'>): Promise<ExecResult<'buffer'>>;
  stream(cmd: string | string[], opts?: Omit<RunOptions<'utf8'>, 'onStdout' | 'onStderr'>): OutputStream<'utf8'>;
  stream(cmd: string | string[], opts: Omit<RunOptions<'buffer'>, 'onStdout' | 'onStderr'>): OutputStream<'buffer'>;
  /** Starts cmd (a shell string or an argv) with its stdin open; returns at once. */
  spawn(cmd: string | string[], opts?: Omit<RunOptions<'utf8'>, 'stdin'>): Process<'utf8'>;
  spawn(cmd: string | string[], opts: Omit<RunOptions<'buffer'>, 'stdin'>): Process<'buffer'>;
  ping(): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  snapshot(dir: string): Promise<void>;
  destroy(): Promise<void>;
  /** mount: a guest path, '/' for the guest's own filesystem, undefined for both. */
  diff(mount?: string): Promise<Change[]>;
  /** Rejects with ConflictError (host edited since the start) or PermissionError; nothing applied then. */
  exportChanges(opts?: ExportOptions): Promise<ExportResult>;
  patch(opts?: { mount?: string; paths?: string[]; encoding?: 'utf8' }): Promise<string>;
  patch(opts: { mount?: string; paths?: string[]; encoding: 'buffer' }): Promise<Buffer>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface PoolOptions extends SandboxOptions {
  minReady?: number;
  maxTotal?: number;
  coldBoot?: boolean;
  leaseTimeoutMs?: number;
  refillConcurrency?: number;
  warmUp?: string;
}

export interface PoolStats {
  ready: number;
  starting: number;
  leased: number;
  consecutiveFailures: number;
  backingOff: boolean;
  created: number;
  failed: number;
  leases: number;
  leaseTimeouts: number;
  /** Leases that waited < 10 us, < 100 us, < 1 ms, < 10 ms, < 100 ms, < 1 s, < 10 s, >= 10 s. */
  leaseWaitHist: number[];
  lastError: string;
}

export class Pool implements AsyncDisposable {
  private constructor();
  static create(opts?: PoolOptions): Promise<Pool>;
  readonly runtime: Runtime;
  lease(opts?: { timeoutMs?: number }): Promise<Sandbox>;
  stats(): PoolStats;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

// ---- control plane ----

/** One request of an agent to run a tool. Env values and file contents
 * 'secret://NAME' are resolved on the host by the gate. */
export interface ToolCall {
  /** The tool's name, e.g. "python" (required). */
  tool: string;
  /** A shell command (/bin/sh -c), or */
  command?: string;
  /** an argv: exactly one of the two (classify needs neither). */
  argv?: string[];
  env?: Record<string, string>;
  /** Guest path -> content, written before the command runs. */
  files?: Record<string, string | Buffer | Uint8Array>;
  cwd?: string;
  user?: string;
  stdin?: string | Buffer | Uint8Array;
  /** Guest paths the call says it writes. */
  writes?: string[];
  /** Hosts/CIDRs it asks to reach (each must be in its tier's "network" list). */
  network?: string[];
  /** Free-form, e.g. "pii". */
  labels?: string[];
  /** Recorded with every audit record; default "call-<random>". */
  traceId?: string;
}

export type Action = 'run' | 'audit' | 'approve' | 'deny';

export interface Decision {
  /** 0..5 (L0..L5); 5 when no rule matched. */
  tier: number;
  action: Action;
  /** Index of the matching rule; -1: none (denied: fail closed). */
  ruleIndex: number;
  rule: string;
  reason: string;
}

export class Policy {
  private constructor();
  /** Throws InvalidArgumentError "policy: line N: reason". */
  static parse(json: string | Buffer): Policy;
  /** Synchronous; "PATH: line N: reason"; NotFoundError for a missing file. */
  static load(path: string): Policy;
  static default(): Policy;
  static readonly defaultJson: string;
  classify(call: ToolCall): Decision;
  close(): void;
}

export interface AuditLogOptions {
  path: string;
  /** Default 'fsync'. */
  durability?: 'fsync' | 'batch' | 'none';
  /** 'batch' interval; default 100. */
  batchMs?: number;
  hmacKey?: string | Buffer | Uint8Array;
  rotateBytes?: number;
}

export class AuditLog implements AsyncDisposable {
  private constructor();
  static open(opts: AuditLogOptions | string): Promise<AuditLog>;
  readonly path: string;
  /** Resolves to the record's seq. fields: an object, or the inner part of a JSON object. */
  append(event: string, traceId?: string, fields?: Record<string, unknown> | string): Promise<number>;
  flush(): Promise<void>;
  close(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface AuditReport {
  ok: boolean;
  records: number;
  /** The first problem ("" when ok). */
  problem: string;
}

/** files oldest first (PATH.1, PATH.2, ..., PATH). */
export function verifyAuditLog(files: string | string[], key?: string | Buffer | Uint8Array): Promise<AuditReport>;

export interface ApprovalDescription {
  tool: string;
  text: string;
  env_keys: string[];
  cwd: string;
  user: string;
  writes: string[];
  network: string[];
  labels: string[];
  /** e.g. "L4". */
  tier: string;
  rule: string;
  trace: string;
}

export class Approval {
  private constructor();
  readonly token: string;
  readonly description: ApprovalDescription;
  readonly descriptionJson: string;
  /** Time left to answer when asked. */
  readonly deadlineMs: number;
  /** Date.now() by which an answer must come. */
  readonly deadline: number;
  /** NotFoundError when already answered or expired. */
  approve(who?: string): void;
  deny(reason?: string, who?: string): void;
}

export type SecretValue = string | Buffer | Uint8Array | undefined | null;

export interface GateOptions {
  runtime?: Runtime;
  /** Default: Policy.default(). */
  policy?: Policy;
  audit?: AuditLog;
  /** Answer at once or later; a throw or a rejected promise denies; none: approve tiers are denied. */
  approver?: (approval: Approval) => void | Promise<unknown>;
  /** undefined: not known here (secretsDir and secretsEnvPrefix are asked next). */
  secrets?: ((name: string) => SecretValue | Promise<SecretValue>) | Record<string, string>;
  /** How long a call waits for the secrets function; default 30000 (then TimeoutError). */
  secretTimeoutMs?: number;
  /** Scan stdout/stderr with the default DLP detectors and injection rules. */
  dlp?: boolean;
  /** Detector names (e.g. 'card') whose findings withhold the call's output. */
  dlpBlock?: string[];
  /** A file per secret: DIR/NAME. */
  secretsDir?: string;
  /** The host variable PREFIX+NAME, e.g. "ZTEE_SECRET_". */
  secretsEnvPrefix?: string;
  /** Calls without network lease from it. */
  pool?: Pool;
  /** Options of the sandboxes the pool does not serve. */
  sandbox?: Omit<SandboxOptions, 'runtime' | 'templateDir'>;
}

export interface GateCall<E extends 'utf8' | 'buffer' = 'utf8'> extends ToolCall {
  /** Chunks as they arrive, scrubbed of secret values (then not collected). */
  onStdout?: (data: E extends 'buffer' ? Buffer : string) => void;
  onStderr?: (data: E extends 'buffer' ? Buffer : string) => void;
  /** Aborting ends the call (approval wait, secret lookup or command); rejects with signal.reason. */
  signal?: AbortSignal;
  encoding?: E;
}

export class CallResult<E extends 'utf8' | 'buffer' = 'utf8'> {
  private constructor();
  /** false: denied (see denial). */
  readonly ran: boolean;
  readonly decision: Decision;
  readonly denial: string;
  readonly approvedBy: string;
  readonly sandboxId: string;
  /** DLP withheld the output (dlpBlock); denial says why. */
  readonly blocked: boolean;
  readonly dlpFindings: number;
  readonly injectionAnomalies: number;
  /** Scrubbed of secret values; null when it did not run. */
  readonly result: ExecResult<E> | null;
}

export class Gate implements AsyncDisposable {
  private constructor();
  static create(runtime: Runtime, opts?: GateOptions): Promise<Gate>;
  static create(opts?: GateOptions): Promise<Gate>;
  readonly runtime: Runtime;
  call(call: GateCall<'utf8'>): Promise<CallResult<'utf8'>>;
  call(call: GateCall<'buffer'>): Promise<CallResult<'buffer'>>;
  approve(token: string, who?: string): void;
  deny(token: string, reason?: string, who?: string): void;
  /** No new calls; calls in flight finish, then the gate is freed. */
  close(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

export function version(): string;
export function hasFeature(name: string): boolean;
export function defaultRuntime(): Promise<Runtime>;

export class ZteeError extends Error {
  constructor(message: string, status?: number, errno?: number);
  /** The status name, e.g. "ZTEE_E_TIMEOUT". */
  readonly code: string;
  /** The status number, e.g. -7. */
  readonly status: number;
  /** OS errno (host or guest); 0 if none. */
  readonly errno: number;
}
declare class StatusError extends ZteeError {
  constructor(message: string, errno?: number);
}
export class InvalidArgumentError extends StatusError {}
export class NoMemoryError extends StatusError {}
export class InternalError extends StatusError {}
export class NotFoundError extends StatusError {}
export class ImageError extends StatusError {}
export class BackendUnavailableError extends StatusError {}
export class TimeoutError extends StatusError {}
export class SandboxFailedError extends StatusError {}
export class ClosedError extends StatusError {}
export class IoError extends StatusError {}
export class ProtocolError extends StatusError {}
export class GuestError extends StatusError {}
export class PermissionError extends StatusError {}
export class UnsupportedError extends StatusError {}
/** The host changed under the call: exportChanges found host files edited since the sandbox started. */
export class ConflictError extends StatusError {}

declare const ztee: {
  Runtime: typeof Runtime;
  Sandbox: typeof Sandbox;
  Pool: typeof Pool;
  ExecResult: typeof ExecResult;
  Policy: typeof Policy;
  AuditLog: typeof AuditLog;
  verifyAuditLog: typeof verifyAuditLog;
  Gate: typeof Gate;
  Approval: typeof Approval;
  CallResult: typeof CallResult;
  version: typeof version;
  hasFeature: typeof hasFeature;
  defaultRuntime: typeof defaultRuntime;
  ZteeError: typeof ZteeError;
  InvalidArgumentError: typeof InvalidArgumentError;
  NotFoundError: typeof NotFoundError;
  TimeoutError: typeof TimeoutError;
  ClosedError: typeof ClosedError;
  ConflictError: typeof ConflictError;
};
export default ztee;
