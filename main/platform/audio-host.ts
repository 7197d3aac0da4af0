// What the host offers for sound: a PipeWire socket, a PulseAudio socket (PulseAudio itself or PipeWire's
// pipewire-pulse), ALSA playback devices. Read from the environment the daemon runs in (the user's session).
import { accessSync, constants, readdirSync, statSync } from 'node:fs';
import path from 'node:path';

export interface HostAudio {
  /** PipeWire's native socket. */
  pipewire?: string;
  /** A PulseAudio protocol socket (pipewire-pulse or PulseAudio). */
  pulse?: string;
  /** An ALSA playback device the user may open. */
  alsa: boolean;
}

function isSocket(p: string): boolean {
  try {
    return statSync(p).isSocket();
  } catch {
    return false;
  }
}

export function detectHostAudio(env: NodeJS.ProcessEnv = process.env, snd = '/dev/snd'): HostAudio {
  const uid = typeof process.getuid === 'function' ? process.getuid() : undefined;
  const runtime = env.XDG_RUNTIME_DIR || (uid !== undefined ? `/run/user/${uid}` : undefined);
  const out: HostAudio = { alsa: false };
  if (runtime) {
    const pw = path.join(env.PIPEWIRE_RUNTIME_DIR || runtime, env.PIPEWIRE_REMOTE || 'pipewire-0');
    if (isSocket(pw)) out.pipewire = pw;
  }
  const pulseEnv = env.PULSE_SERVER?.startsWith('unix:') ? env.PULSE_SERVER.slice(5) : undefined;
  const pulse = pulseEnv ?? (runtime ? path.join(runtime, 'pulse', 'native') : undefined);
  if (pulse && isSocket(pulse)) out.pulse = pulse;
  try {
    out.alsa = readdirSync(snd).some((n) => {
      if (!/^pcmC\d+D\d+p$/.test(n)) return false;
      try {
        accessSync(path.join(snd, n), constants.R_OK | constants.W_OK);
        return true;
      } catch {
        return false;
      }
    });
  } catch {
    out.alsa = false;
  }
  return out;
}
