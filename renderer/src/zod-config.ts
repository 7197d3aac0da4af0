// zod probes `new Function` for speed when a schema is built; the CSP forbids eval, so tell it not to try (and
// not log violations). Imported first by the only module that builds schemas (forms/vm-form.ts, via
// main/api/schema), so zod and the schemas load with the dialogs that validate, not with the VM list.
import { z } from 'zod';

z.config({ jitless: true });
