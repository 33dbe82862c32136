import type pg from 'pg';
import type { ChannelModel } from 'amqplib';
import { Config, replicaUrl } from '../config';
import { connectRabbit } from '../log/rabbit';
import { createPool } from '../pg';

/**
 * Connections a worker process keeps between activities: one pool per
 * replica, one RabbitMQ connection (re-opened after it drops). Closed when
 * the worker shuts down, so the process can exit.
 */
export class WorkerResources {
  private readonly pools = new Map<string, pg.Pool>();
  private rabbitConn: Promise<ChannelModel> | null = null;

  constructor(private readonly config: Config) {}

  pool(replica: string): pg.Pool {
    let p = this.pools.get(replica);
    if (!p) {
      p = createPool(replicaUrl(this.config, replica));
      this.pools.set(replica, p);
    }
    return p;
  }

  rabbit(): Promise<ChannelModel> {
    if (!this.rabbitConn) {
      const opening = connectRabbit(this.config.rabbitmqUrl);
      this.rabbitConn = opening;
      const forget = () => {
        if (this.rabbitConn === opening) this.rabbitConn = null;
      };
      opening.then((conn) => conn.on('close', forget), forget);
    }
    return this.rabbitConn;
  }

  async close(): Promise<void> {
    const rabbit = this.rabbitConn;
    this.rabbitConn = null;
    await rabbit?.then((c) => c.close()).catch(() => undefined);
    await Promise.all([...this.pools.values()].map((p) => p.end().catch(() => undefined)));
    this.pools.clear();
  }
}
