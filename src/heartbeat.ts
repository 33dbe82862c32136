/**
 * One way for long work to heartbeat (apply batches, capture runs,
 * subscriber sessions): a beat every `everyMs` however the time is spent —
 * also while a statement waits on a server — so Temporal tells live work
 * from a dead worker and does not start a second attempt beside it; and
 * beats on demand (`beat()`, e.g. between messages), at most one per
 * `minGapMs`. The details, when given, are read at each beat (capture's
 * live position, which status and lag are computed from).
 */
export interface HeartbeatOptions<D> {
  everyMs: number;
  /** On-demand beats closer together than this are dropped (default: everyMs / 2). */
  minGapMs?: number;
  details?: () => D;
}

export class Heartbeat<D = undefined> {
  private last = Date.now();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly send: (details: D) => void,
    private readonly o: HeartbeatOptions<D>,
  ) {}

  start(): this {
    this.timer ??= setInterval(() => this.beat(true), this.o.everyMs);
    return this;
  }

  /** Beat now, unless one was sent within minGapMs (`force`: beat anyway, e.g. new details to show). */
  beat(force = false): void {
    if (!force && Date.now() - this.last < (this.o.minGapMs ?? this.o.everyMs / 2)) return;
    this.last = Date.now();
    this.send(this.o.details?.() as D);
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Run `work` with a started heartbeat, stopped however it ends. */
export async function withHeartbeat<T, D = undefined>(send: (details: D) => void, o: HeartbeatOptions<D>, work: (hb: Heartbeat<D>) => Promise<T>): Promise<T> {
  const hb = new Heartbeat(send, o).start();
  try {
    return await work(hb);
  } finally {
    hb.stop();
  }
}
