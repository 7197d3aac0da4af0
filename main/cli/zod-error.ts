// A zod failure as one readable EINVAL line (the rest as details), for input the CLI validates itself.
import type { ZodError } from 'zod';
import { ErrorCode, VmdeskError } from '../api/errors.js';

export function zodToError(err: ZodError, what = 'invalid input'): VmdeskError {
  const lines = err.issues.map((i) => `${i.path.length ? i.path.join('.') + ': ' : ''}${i.message}`);
  return new VmdeskError(ErrorCode.invalid, `${what}: ${lines[0] ?? 'invalid'}`, lines.slice(1));
}
