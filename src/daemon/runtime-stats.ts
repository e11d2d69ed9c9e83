import { PerformanceObserver, constants } from 'node:perf_hooks';

/**
 * Garbage-collection counts since start. A datapath that allocates nothing per packet runs
 * millions of packets without a single scavenge; the perf script reads these from /status
 * to check exactly that under load.
 */
export class RuntimeStats {
  minorGc = 0;
  majorGc = 0;
  private readonly observer: PerformanceObserver;

  constructor() {
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind;
        if (kind === constants.NODE_PERFORMANCE_GC_MINOR) this.minorGc++;
        else this.majorGc++;
      }
    });
    this.observer.observe({ entryTypes: ['gc'] });
  }

  snapshot(): Record<string, number> {
    const m = process.memoryUsage();
    return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, minorGc: this.minorGc, majorGc: this.majorGc };
  }

  close(): void {
    this.observer.disconnect();
  }
}
