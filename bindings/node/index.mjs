// ESM entry: the same objects as the CommonJS one (index.js).
import ztee from './index.js';

export const {
  Runtime, Sandbox, Pool, ExecResult, Process, version, hasFeature, defaultRuntime,
  Policy, AuditLog, verifyAuditLog, Gate, Approval, CallResult,
  ZteeError, InvalidArgumentError, NoMemoryError, InternalError, NotFoundError, ImageError,
  BackendUnavailableError, TimeoutError, SandboxFailedError, ClosedError, IoError, ProtocolError,
  GuestError, PermissionError, UnsupportedError, ConflictError,
} = ztee;
export default ztee;
