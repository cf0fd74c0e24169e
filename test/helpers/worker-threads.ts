// Tracks the worker threads a test starts, for tests that check a pool or trainer ends all its workers.
// Use with vi.mock (the log is made in vi.hoisted, since vi.mock runs before the imports):
//   const threads = vi.hoisted(() => ({ started: 0, all: [] as WorkerHandle[], live: new Set<object>() }));
//   vi.mock('node:worker_threads', async (orig) => (await import('../helpers/worker-threads.js')).trackWorkers(await orig(), threads));
import type * as WorkerThreads from 'node:worker_threads';

export interface WorkerHandle {
  terminate(): Promise<number>;
}

export interface WorkerLog {
  /** Workers started so far. */
  started: number;
  /** Every worker started, in order. */
  all: WorkerHandle[];
  /** Those whose 'exit' has not arrived yet. */
  live: Set<object>;
}

/** node:worker_threads with a Worker that records itself in `log`. */
export function trackWorkers(m: typeof WorkerThreads, log: WorkerLog): typeof WorkerThreads {
  class Tracked extends m.Worker {
    constructor(...a: ConstructorParameters<typeof m.Worker>) {
      super(...a);
      log.started++;
      log.all.push(this);
      log.live.add(this);
      this.on('exit', () => log.live.delete(this));
    }
  }
  return { ...m, default: { ...m, Worker: Tracked }, Worker: Tracked } as typeof WorkerThreads;
}

/** Wait (up to 1 s) for the 'exit' events, which arrive on the event loop after terminate(). */
export async function settleWorkers(log: WorkerLog): Promise<void> {
  for (let i = 0; i < 50 && log.live.size; i++) await new Promise((r) => setTimeout(r, 20));
}
