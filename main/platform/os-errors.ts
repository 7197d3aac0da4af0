// OS errors (ENOSPC, EROFS, EISDIR…) as VmdeskErrors with a documented code and a sentence a user can act
// on, instead of exit 1 with Node's raw message.
import { ErrorCode, VmdeskError, isVmdeskError } from '../api/errors.js';

/** The path an OS error names, shown in the message. */
function where(e: NodeJS.ErrnoException & { dest?: string }): string {
  return e.path ? ` (${e.path}${e.dest ? ` -> ${e.dest}` : ''})` : '';
}

/**
 * Maps an error thrown by fs/net/child_process to a VmdeskError; VmdeskErrors pass through unchanged and
 * anything unknown becomes EINTERNAL. `context` says what was being done ("cannot write vm.json").
 */
export function fromOsError(e: unknown, context?: string): VmdeskError {
  if (isVmdeskError(e)) return e;
  const err = (e ?? {}) as NodeJS.ErrnoException;
  const at = where(err);
  const say = (code: VmdeskError['code'], text: string) => new VmdeskError(code, context ? `${context}: ${text}${at}` : `${text}${at}`);
  switch (err.code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return say(ErrorCode.noSpace, 'no space left on the device; free some space and try again');
    case 'EROFS':
      return say(ErrorCode.permission, 'the file system is read-only');
    case 'EACCES':
    case 'EPERM':
      return say(ErrorCode.permission, 'permission denied');
    case 'EISDIR':
      return say(ErrorCode.invalid, 'is a directory, not a file');
    case 'ENOTDIR':
      return say(ErrorCode.invalid, 'a part of the path is not a directory');
    case 'ENOENT':
      return say(ErrorCode.notFound, 'no such file or directory');
    case 'EEXIST':
      return say(ErrorCode.exists, 'already exists');
    case 'ENAMETOOLONG':
      return say(ErrorCode.invalid, 'the path is too long');
    case 'ELOOP':
      return say(ErrorCode.invalid, 'too many symbolic links (or a symbolic link where none is allowed)');
    case 'EMFILE':
    case 'ENFILE':
      return say(ErrorCode.host, 'too many open files on this host');
    case 'EIO':
      return say(ErrorCode.host, 'input/output error (the disk may be failing)');
    case 'EBUSY':
    case 'ETXTBSY':
      return say(ErrorCode.busy, 'the file is in use');
    case 'EXDEV':
      return say(ErrorCode.invalid, 'cannot move a file across file systems');
    default: {
      const msg = err.message || String(e);
      return new VmdeskError(ErrorCode.internal, context ? `${context}: ${msg}` : msg);
    }
  }
}
