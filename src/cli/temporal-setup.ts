/**
 * `pgferry temporal setup`: prepare a user's own Temporal namespace: register
 * pgferry's search attributes (PgferryState, PgferryLagSeconds,
 * PgferrySource) so the Web UI can filter workflows by them. Idempotent. The
 * dev server `pgferry up` starts registers them itself.
 */
import type { Command } from 'commander';
import { loadConfig } from '../config';
import { connectClient, temporalAddress } from '../temporal/connection';
import { registerSearchAttributes } from '../temporal/search-attributes';
import { action, say } from './command';
import { printJson } from './output';

export function addTemporalCommands(program: Command): void {
  const temporal = program.command('temporal').description("prepare the Temporal namespace pgferry uses (temporal.address / TEMPORAL_ADDRESS, temporal.namespace / TEMPORAL_NAMESPACE)");
  temporal
    .command('setup')
    .description("register pgferry's search attributes PgferryState, PgferryLagSeconds and PgferrySource on the namespace, so the Temporal Web UI can filter replicas by state, lag and source; safe to run again")
    .option('--json', 'machine-readable output')
    .action(
      action(async (opts: { json?: boolean }) => {
        // The config file comes through PGFERRY_CONFIG (the program's --config sets it).
        const config = loadConfig({});
        const address = temporalAddress(config.temporal);
        const namespace = config.temporal.namespace;
        const client = await connectClient(config.temporal, { hint: 'check temporal.address / TEMPORAL_ADDRESS' });
        try {
          const r = await registerSearchAttributes(client, { address, namespace });
          if (opts.json) printJson({ ok: true, address, namespace, ...r });
          else {
            if (r.added.length) say(`Temporal at ${address}, namespace '${namespace}': registered search attributes ${r.added.join(', ')}`);
            if (r.present.length) say(`Temporal at ${address}, namespace '${namespace}': already registered: ${r.present.join(', ')}`);
            say(`ready: in the Web UI's workflow list, filter with e.g. PgferryState="failed"; pgferry up (re)starts workflows with these attributes`);
          }
        } finally {
          await client.connection.close().catch(() => undefined);
        }
      }),
    );
}
