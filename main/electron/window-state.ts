// Remembers the main window's size and position in <home>/window-state.json between runs.
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

export const WindowState = z.object({
  x: z.number().int().optional(),
  y: z.number().int().optional(),
  width: z.number().int().min(400).max(20000),
  height: z.number().int().min(300).max(20000),
  maximized: z.boolean().default(false),
});
export type WindowState = z.infer<typeof WindowState>;

export const DEFAULT_WINDOW_STATE: WindowState = { width: 1180, height: 760, maximized: false };

export function windowStateFile(home: string): string {
  return path.join(home, 'window-state.json');
}

/** Reads synchronously because the window is created right after; a missing or corrupt file gives the defaults. */
export function loadWindowState(file: string): WindowState {
  try {
    const r = WindowState.safeParse(JSON.parse(readFileSync(file, 'utf8')));
    return r.success ? r.data : { ...DEFAULT_WINDOW_STATE };
  } catch {
    return { ...DEFAULT_WINDOW_STATE };
  }
}

/** Keeps a saved position only if it is still on a connected display (monitors come and go). */
export function fitToDisplays(state: WindowState, displays: { x: number; y: number; width: number; height: number }[]): WindowState {
  if (state.x === undefined || state.y === undefined) return state;
  const visible = displays.some((d) => state.x! + 50 >= d.x && state.y! >= d.y && state.x! + 50 <= d.x + d.width && state.y! + 30 <= d.y + d.height);
  return visible ? state : { width: state.width, height: state.height, maximized: state.maximized };
}

export async function saveWindowState(file: string, state: WindowState): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(state, null, 2));
  await fs.rename(tmp, file);
}
