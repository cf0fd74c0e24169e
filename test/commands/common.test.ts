// The shared Ctrl-C handler: the first interrupt asks the stage to stop cleanly, the second quits at once.
import { describe, it, expect, vi } from 'vitest';
import { onInterrupt } from '../../src/commands/common.js';
import { quietly } from '../helpers/quiet.js';

describe('onInterrupt', () => {
  it('aborts on the first Ctrl-C and exits 130 on the second', async () => {
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const listeners = process.listenerCount('SIGINT');
    const it = onInterrupt('stopping');
    try {
      await quietly(async () => {
        expect(it.signal.aborted).toBe(false);
        process.emit('SIGINT');
        expect(it.signal.aborted).toBe(true);
        expect(exit).not.toHaveBeenCalled();
        process.emit('SIGINT');
        expect(exit).toHaveBeenCalledWith(130);
      });
    } finally {
      it.release();
      exit.mockRestore();
    }
    expect(process.listenerCount('SIGINT')).toBe(listeners);
  });
});
