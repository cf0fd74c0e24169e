// Summary statistics the benchmark groups share.

/** The middle value of xs (of the two middle ones, the upper). */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}
