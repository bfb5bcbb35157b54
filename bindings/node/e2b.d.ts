// Type declarations of ztee/e2b (e2b.js / e2b.mjs): an E2B-style Sandbox over
// libztee, in-process. See the module comment in e2b.js for the semantics.
/// <reference types="node" />

import {
  Runtime, ZteeError, TimeoutError as ZteeTimeoutError, NotFoundError as ZteeNotFoundError,
  InvalidArgumentError as ZteeInvalidArgumentError, GuestError, ClosedError, UnsupportedError,
} from './index';

// ---- errors ---------------------------------------------------------------------

/** Base of the errors ztee/e2b throws (`instanceof SandboxError` holds for
 * every one of them, CommandExitError included); also a ZteeError. */
export class SandboxError extends ZteeError {
  constructor(message: string, status?: number, errno?: number);
}
/** A command's or the sandbox's timeout passed; also the binding's TimeoutError. */
export class TimeoutError extends ZteeTimeoutError {
  constructor(message: string, errno?: number);
}
/** Also the binding's NotFoundError. */
export class NotFoundError extends ZteeNotFoundError {
  constructor(message: string, errno?: number);
}
export class FileNotFoundError extends NotFoundError {}
export class SandboxNotFoundError extends NotFoundError {}
/** Also the binding's InvalidArgumentError. */
export class InvalidArgumentError extends ZteeInvalidArgumentError {
  constructor(message: string, errno?: number);
}
/** ENOSPC in the guest; also the binding's GuestError. */
export class NotEnoughSpaceError extends GuestError {
  constructor(message: string, errno?: number);
}
/** Calls on a killed sandbox; also the binding's ClosedError. */
export class SandboxClosedError extends ClosedError {
  constructor(message: string, errno?: number);
}
/** An E2B call libztee cannot serve; also the binding's UnsupportedError. */
export class NotSupportedError extends UnsupportedError {
  constructor(message: string, errno?: number);
}
/** A non-zero exit (or a killed command). `instanceof SandboxError` holds,
 * but it is not a ZteeError: an exit code is not a libztee failure. */
export class CommandExitError extends Error implements CommandResult {
  constructor(result: CommandResult);
  readonly exitCode: number;
  readonly error?: string;
  readonly stdout: string;
  readonly stderr: string;
}
/** Never thrown (no API key); kept for imports. */
export class AuthenticationError extends Error {
  constructor(message: string);
}
/** Never thrown; kept for imports. */
export class RateLimitError extends SandboxError {}
/** Never thrown (a bad template is an InvalidArgumentError); kept for imports. */
export class TemplateError extends SandboxError {}

// ---- plain data -----------------------------------------------------------------

export declare const FileType: {
  readonly FILE: 'file';
  readonly DIR: 'dir';
  readonly SYMLINK: 'symlink';
};
export type FileType = 'file' | 'dir' | 'symlink';

export interface WriteInfo {
  name: string;
  type?: FileType;
  path: string;
}

export interface EntryInfo extends WriteInfo {
  size: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  /** e.g. "-rw-r--r--". */
  permissions: string;
  /** Always undefined: libztee's file info has no owner. */
  owner?: string;
  /** Always undefined: libztee's file info has no group. */
  group?: string;
  /** undefined where libztee's answer carries no time. */
  modifiedTime?: Date;
  /** Always undefined: libztee's file info has no link target. */
  symlinkTarget?: string;
}

export type WriteData = string | ArrayBuffer | ArrayBufferView | Blob | ReadableStream | AsyncIterable<Uint8Array | string>;

export interface WriteEntry {
  path: string;
  data: WriteData;
}

export interface CommandResult {
  exitCode: number;
  error?: string;
  stdout: string;
  stderr: string;
}

export interface ProcessInfo {
  /** The shim's pid (1, 2, ... per sandbox), not the guest's. */
  pid: number;
  tag?: string;
  /** "/bin/bash". */
  cmd: string;
  /** ["-c", command]. */
  args: string[];
  envs: Record<string, string>;
  cwd?: string;
}

export type SandboxState = 'running' | 'paused';

export interface SandboxInfo {
  sandboxId: string;
  templateId: string;
  name?: string;
  metadata: Record<string, string>;
  startedAt: Date;
  endAt: Date;
  state: SandboxState;
  cpuCount: number;
  memoryMB: number;
}

// ---- options ----------------------------------------------------------------------

/** Options of the binding's Sandbox.create that zteeOptions may carry. */
export interface ZteeSandboxOptions {
  runtime?: Runtime;
  imageDir?: string;
  templateDir?: string;
  vcpus?: number;
  memoryMib?: number;
  bootTimeoutMs?: number;
  outputCap?: number;
  /** SECURITY: every entry widens what sandboxed code can reach. */
  allow?: string[];
  dns?: string;
  network?: { allow?: string[]; dns?: string };
  guestAslr?: boolean;
}

/** Connection options E2B has; accepted and ignored (there is no server). */
export interface ConnectionOpts {
  apiKey?: string;
  accessToken?: string;
  validateApiKey?: boolean;
  domain?: string;
  apiUrl?: string;
  debug?: boolean;
  requestTimeoutMs?: number;
  retries?: number;
  logger?: unknown;
  headers?: Record<string, string>;
  apiHeaders?: Record<string, string>;
  proxy?: string;
  signal?: AbortSignal;
}

export interface SandboxOpts extends ConnectionOpts {
  /** Omitted or 'base': the default image; else the path of an image directory or snapshot template. */
  template?: string;
  metadata?: Record<string, string>;
  envs?: Record<string, string>;
  /** Until a timer kills the sandbox; default 300000. */
  timeoutMs?: number;
  /** Ignored. */
  secure?: boolean;
  /** true: NotSupportedError (use zteeOptions.allow). */
  allowInternetAccess?: boolean;
  /** Set: NotSupportedError. */
  network?: unknown;
  mcp?: unknown;
  lifecycle?: unknown;
  volumeMounts?: unknown;
  iam?: unknown;
  sandboxUrl?: string;
  autoPause?: boolean;
  zteeOptions?: ZteeSandboxOptions;
}

export interface SandboxConnectOpts extends ConnectionOpts {
  /** Restarts the sandbox's timer. */
  timeoutMs?: number;
}

export interface SandboxListOpts extends ConnectionOpts {
  query?: { metadata?: Record<string, string>; state?: SandboxState[]; template?: string };
  limit?: number;
  nextToken?: string;
}

export interface CommandRequestOpts {
  /** Ignored. */
  requestTimeoutMs?: number;
  /** Aborting kills the command; a foreground run rejects with signal.reason. */
  signal?: AbortSignal;
}

export interface CommandStartOpts extends CommandRequestOpts {
  background?: boolean;
  /** Default: the account's home. */
  cwd?: string;
  /** Default "user". */
  user?: string;
  /** Over the sandbox's envs. */
  envs?: Record<string, string>;
  onStdout?: (data: string) => void | Promise<void>;
  onStderr?: (data: string) => void | Promise<void>;
  /** true: stdin stays open for sendStdin until closeStdin; else it is empty. */
  stdin?: boolean;
  /** Default 60000; 0: none. */
  timeoutMs?: number;
}

export type CommandConnectOpts = Pick<CommandStartOpts, 'onStdout' | 'onStderr' | 'timeoutMs'> & CommandRequestOpts;

export interface FilesystemRequestOpts extends CommandRequestOpts {
  /** Default "user". */
  user?: string;
}
export interface FilesystemReadOpts extends FilesystemRequestOpts {
  /** Ignored. */
  gzip?: boolean;
  /** Ignored. */
  streamIdleTimeoutMs?: number;
}
export interface FilesystemWriteOpts extends FilesystemRequestOpts {
  /** Ignored. */
  gzip?: boolean;
  /** Ignored. */
  useOctetStream?: boolean;
}
export interface FilesystemListOpts extends FilesystemRequestOpts {
  depth?: number;
}

// ---- classes -------------------------------------------------------------------------

export class CommandHandle {
  private constructor();
  readonly pid: number;
  /** The output so far. */
  readonly stdout: string;
  readonly stderr: string;
  /** undefined while it runs. */
  readonly exitCode?: number;
  readonly error?: string;
  wait(): Promise<CommandResult>;
  kill(): Promise<boolean>;
  disconnect(): Promise<void>;
  /** commands.sendStdin(pid, data) for this command. */
  sendStdin(data: string | Uint8Array, opts?: CommandRequestOpts): Promise<void>;
  /** commands.closeStdin(pid) for this command. */
  closeStdin(opts?: CommandRequestOpts): Promise<void>;
}

export interface Commands {
  run(cmd: string, opts?: CommandStartOpts & { background?: false }): Promise<CommandResult>;
  run(cmd: string, opts: CommandStartOpts & { background: true }): Promise<CommandHandle>;
  run(cmd: string, opts?: CommandStartOpts & { background?: boolean }): Promise<CommandHandle | CommandResult>;
  list(opts?: CommandRequestOpts): Promise<ProcessInfo[]>;
  kill(pid: number, opts?: CommandRequestOpts): Promise<boolean>;
  connect(pid: number, opts?: CommandConnectOpts): Promise<CommandHandle>;
  /** Data (a string as UTF-8) to the stdin of a command started with stdin: true; resolves once
   * queued (waits while 1 MiB waits on the host). NotFoundError once it has ended;
   * InvalidArgumentError without stdin: true or after closeStdin. */
  sendStdin(pid: number, data: string | Uint8Array, opts?: CommandRequestOpts): Promise<void>;
  /** EOF on the command's stdin after what was sent; again: nothing. NotFoundError once it
   * has ended; InvalidArgumentError without stdin: true. */
  closeStdin(pid: number, opts?: CommandRequestOpts): Promise<void>;
}

/** Every method: NotSupportedError. */
export interface Pty {
  create(opts?: unknown): Promise<CommandHandle>;
  connect(pid: number, opts?: unknown): Promise<CommandHandle>;
  sendInput(pid: number, data: Uint8Array, opts?: unknown): Promise<void>;
  resize(pid: number, size: { cols: number; rows: number }, opts?: unknown): Promise<void>;
  kill(pid: number, opts?: unknown): Promise<boolean>;
}

export interface Filesystem {
  read(path: string, opts?: FilesystemReadOpts & { format?: 'text' }): Promise<string>;
  read(path: string, opts: FilesystemReadOpts & { format: 'bytes' }): Promise<Uint8Array>;
  read(path: string, opts: FilesystemReadOpts & { format: 'blob' }): Promise<Blob>;
  read(path: string, opts: FilesystemReadOpts & { format: 'stream' }): Promise<ReadableStream<Uint8Array>>;
  write(path: string, data: WriteData, opts?: FilesystemWriteOpts): Promise<WriteInfo>;
  write(files: WriteEntry[], opts?: FilesystemWriteOpts): Promise<WriteInfo[]>;
  writeFiles(files: WriteEntry[], opts?: FilesystemWriteOpts): Promise<WriteInfo[]>;
  list(path: string, opts?: FilesystemListOpts): Promise<EntryInfo[]>;
  makeDir(path: string, opts?: FilesystemRequestOpts): Promise<boolean>;
  rename(oldPath: string, newPath: string, opts?: FilesystemRequestOpts): Promise<EntryInfo>;
  remove(path: string, opts?: FilesystemRequestOpts): Promise<void>;
  exists(path: string, opts?: FilesystemRequestOpts): Promise<boolean>;
  getInfo(path: string, opts?: FilesystemRequestOpts): Promise<EntryInfo>;
  /** NotSupportedError. */
  watchDir(path: string, onEvent: (event: unknown) => void | Promise<void>, opts?: unknown): Promise<never>;
}

/** Sandbox.list()'s answer: one page; also awaitable as the array. */
export class SandboxPaginator implements PromiseLike<SandboxInfo[]> {
  private constructor();
  readonly hasNext: boolean;
  readonly nextToken: string | undefined;
  nextItems(): Promise<SandboxInfo[]>;
  then<A = SandboxInfo[], B = never>(
    onfulfilled?: ((value: SandboxInfo[]) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null): PromiseLike<A | B>;
}

export class Sandbox implements AsyncDisposable {
  /** Throws: use `await Sandbox.create()` or `Sandbox.connect(id)`. */
  constructor(opts?: never);
  static create<S extends typeof Sandbox>(this: S, opts?: SandboxOpts): Promise<InstanceType<S>>;
  static create<S extends typeof Sandbox>(this: S, template: string, opts?: SandboxOpts): Promise<InstanceType<S>>;
  static connect<S extends typeof Sandbox>(this: S, sandboxId: string, opts?: SandboxConnectOpts): Promise<InstanceType<S>>;
  static list(opts?: SandboxListOpts): SandboxPaginator;
  static kill(sandboxId: string, opts?: ConnectionOpts): Promise<boolean>;
  static setTimeout(sandboxId: string, timeoutMs: number, opts?: ConnectionOpts): Promise<void>;
  static getInfo(sandboxId: string, opts?: ConnectionOpts): Promise<SandboxInfo>;
  static getFullInfo(sandboxId: string, opts?: ConnectionOpts): Promise<SandboxInfo>;

  readonly sandboxId: string;
  /** Always undefined: there is no domain. */
  readonly sandboxDomain: string | undefined;
  readonly commands: Commands;
  readonly files: Filesystem;
  readonly pty: Pty;

  connect(opts?: SandboxConnectOpts): Promise<this>;
  /** false if it was not running. */
  kill(opts?: CommandRequestOpts): Promise<boolean>;
  /** The sandbox is killed timeoutMs from now. */
  setTimeout(timeoutMs: number, opts?: CommandRequestOpts): Promise<void>;
  isRunning(opts?: CommandRequestOpts): Promise<boolean>;
  getInfo(opts?: CommandRequestOpts): Promise<SandboxInfo>;
  [Symbol.asyncDispose](): Promise<void>;

  /** NotSupportedError (thrown). */
  getHost(port: number): string;
  /** NotSupportedError (thrown). */
  getMcpUrl(): string;
  /** The rest: rejected with NotSupportedError. */
  getMcpToken(): Promise<never>;
  getMetrics(opts?: unknown): Promise<never>;
  uploadUrl(path?: string, opts?: unknown): Promise<never>;
  downloadUrl(path: string, opts?: unknown): Promise<never>;
  pause(opts?: unknown): Promise<never>;
  betaPause(opts?: unknown): Promise<never>;
  createSnapshot(opts?: unknown): Promise<never>;
  fork(opts?: unknown): Promise<never>;
  updateNetwork(network: unknown, opts?: unknown): Promise<never>;
  static getMetrics(sandboxId: string, opts?: unknown): Promise<never>;
  static pause(sandboxId: string, opts?: unknown): Promise<never>;
  static betaPause(sandboxId: string, opts?: unknown): Promise<never>;
  static resume(sandboxId: string, opts?: unknown): Promise<never>;
  static createSnapshot(sandboxId: string, opts?: unknown): Promise<never>;
  static fork(sandboxId: string, opts?: unknown): Promise<never>;
  static updateNetwork(sandboxId: string, network: unknown, opts?: unknown): Promise<never>;
  static listSnapshots(opts?: unknown): never;
  static deleteSnapshot(snapshotId: string, opts?: unknown): Promise<never>;
}

export default Sandbox;
