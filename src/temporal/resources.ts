/**
 * Connections a worker process keeps between activities: one pool per
 * replica, one RabbitMQ connection (re-opened after it drops). Closed when
 * the worker shuts down, so the process can exit.
 */
import type pg from 'pg';
import type { ChannelModel } from 'amqplib';
import { Config, replicaUrl } from '../config';
import { SharedRabbit } from '../changelog/rabbit';
import { createPool, REPLICA_SESSION_OPTIONS } from '../pg';

export class WorkerResources {
  private readonly pools = new Map<string, pg.Pool>();
  private readonly shared: SharedRabbit;

  constructor(private readonly config: Config) {
    this.shared = new SharedRabbit(config.rabbitmqUrl);
  }

  pool(replica: string): pg.Pool {
    let p = this.pools.get(replica);
    if (!p) {
      p = createPool(replicaUrl(this.config, replica), 4, REPLICA_SESSION_OPTIONS);
      this.pools.set(replica, p);
    }
    return p;
  }

  rabbit(): Promise<ChannelModel> {
    return this.shared.get();
  }

  async close(): Promise<void> {
    await this.shared.close();
    await Promise.all([...this.pools.values()].map((p) => p.end().catch(() => undefined)));
    this.pools.clear();
  }
}
