// The clipboard bridge sends each text once each way and never echoes a text back to where it came from.
import { describe, expect, it } from 'vitest';
import { ClipboardBridge } from './clipboard-bridge';

function ends(initial = '') {
  const state = { host: initial, sent: [] as string[], deny: false };
  const bridge = new ClipboardBridge({
    readHost: async () => {
      if (state.deny) throw new Error('NotAllowedError');
      return state.host;
    },
    writeHost: async (t) => {
      if (state.deny) throw new Error('NotAllowedError');
      state.host = t;
    },
    sendGuest: (t) => state.sent.push(t),
  });
  return { state, bridge };
}

describe('clipboard bridge', () => {
  it('sends the host clipboard when it changed, once', async () => {
    const { state, bridge } = ends('hello');
    expect(await bridge.toGuest()).toBe('sent');
    expect(await bridge.toGuest()).toBe('unchanged');
    state.host = 'world';
    expect(await bridge.toGuest()).toBe('sent');
    expect(state.sent).toEqual(['hello', 'world']);
    expect(await bridge.toGuest({ force: true })).toBe('sent');
    expect(state.sent).toEqual(['hello', 'world', 'world']);
  });

  it('writes guest text to the host and does not send it back', async () => {
    const { state, bridge } = ends('old');
    expect(await bridge.fromGuest('from guest')).toBe(true);
    expect(state.host).toBe('from guest');
    expect(await bridge.toGuest()).toBe('unchanged');
    expect(state.sent).toEqual([]);
    // The guest announcing what it was just sent is not written again.
    state.host = 'typed on host';
    expect(await bridge.toGuest()).toBe('sent');
    state.host = 'changed meanwhile';
    expect(await bridge.fromGuest('typed on host')).toBe(true);
    expect(state.host).toBe('changed meanwhile');
  });

  it('sends a change once even when asked twice at the same time', async () => {
    const { state, bridge } = ends('once');
    expect(await Promise.all([bridge.toGuest(), bridge.toGuest()])).toEqual(['sent', 'unchanged']);
    expect(state.sent).toEqual(['once']);
  });

  it('reports a browser that refuses, and an empty clipboard', async () => {
    const { state, bridge } = ends('');
    expect(await bridge.toGuest()).toBe('empty');
    state.deny = true;
    expect(await bridge.toGuest()).toBe('denied');
    expect(await bridge.fromGuest('x')).toBe(false);
    expect(state.sent).toEqual([]);
  });
});
