// Flows per second, from the event socket's messages: new flows counted over a sliding window.

export class RateMeter {
  private samples: [number, number][] = [];

  constructor(private readonly windowMs = 5000) {}

  add(count: number, now: number): void {
    if (count > 0) this.samples.push([now, count]);
    this.prune(now);
  }

  /** Flows a second over the window (or since the first sample, when it is younger). */
  rate(now: number): number {
    this.prune(now);
    const total = this.samples.reduce((sum, [, count]) => sum + count, 0);
    return total / (this.windowMs / 1000);
  }

  private prune(now: number): void {
    while (this.samples.length && this.samples[0][0] <= now - this.windowMs) this.samples.shift();
  }
}
