// Tracks the worker threads a test starts, for tests that check a pool or trainer ends all its workers.
// Use with vi.mock (the log is made in vi.hoisted, since vi.mock runs before the imports):
//   const threads = vi.hoisted(() => ({ started: 0, all: [] as WorkerHandle[], live: new Set<object>() }));
//   vi.mock('node:worker_threads', async (orig) => (await import('../helpers/worker-threads.js')).trackWorkers(await orig(), threads));
import { once } from 'node:events';
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

/**
 * Wait for the 'exit' event of every worker still running, for tests that check a host ends its threads by
 * itself (after a crash or an abort, whose clean-up runs in the background). A host that never ends one
 * leaves this waiting: the test fails on its timeout. After an awaited dispose() nothing needs waiting for.
 */
export async function settleWorkers(log: WorkerLog): Promise<void> {
  await Promise.all([...log.live].map((w) => once(w as WorkerThreads.Worker, 'exit')));
}
