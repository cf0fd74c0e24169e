// CPU time of the calling thread (Linux: /proc/thread-self/stat; elsewhere undefined), so benchmarks can
// tell each worker's own work from time spent waiting for a core on a busy machine.
import { readFileSync } from 'node:fs';

const TICK_MS = 10; // USER_HZ is 100 on Linux

export function threadCpuMs(): number | undefined {
  try {
    const s = readFileSync('/proc/thread-self/stat', 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on
    return (Number(f[11]) + Number(f[12])) * TICK_MS; // utime, stime (fields 14, 15)
  } catch {
    return undefined;
  }
}
