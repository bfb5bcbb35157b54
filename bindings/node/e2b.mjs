// ESM entry of ztee/e2b: the same objects as the CommonJS one (e2b.js).
import e2b from './e2b.js';

export const {
  Sandbox, SandboxPaginator, CommandHandle, FileType,
  SandboxError, TimeoutError, NotFoundError, FileNotFoundError, SandboxNotFoundError, InvalidArgumentError,
  NotEnoughSpaceError, SandboxClosedError, NotSupportedError, CommandExitError, AuthenticationError,
  RateLimitError, TemplateError,
} = e2b;
export default Sandbox;
