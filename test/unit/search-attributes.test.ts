import { describe, expect, it } from 'vitest';
import type { Client } from '@temporalio/client';
import { devServerSearchAttributeFlags, ensureSearchAttributes, manualCommands, registerSearchAttributes, SearchAttributesError } from '../../src/temporal/search-attributes';

/**
 * What pgferry says when a cluster refuses its search attributes. The real
 * registration runs against the dev server in test/e2e/search-attributes;
 * a permission error cannot be produced there (the dev server authorizes
 * everything), so the server's answers are given here.
 */
function grpcError(code: number, details: string) {
  return Object.assign(new Error(`${code} ${details}`), { code, details });
}

function fakeClient(ops: { list?: () => Promise<unknown>; add?: (req: unknown) => Promise<unknown> }): Client & { added: unknown[] } {
  const added: unknown[] = [];
  const client = {
    added,
    connection: {
      operatorService: {
        listSearchAttributes: ops.list ?? (async () => ({ customAttributes: {} })),
        addSearchAttributes: async (req: unknown) => {
          added.push(req);
          return ops.add ? ops.add(req) : {};
        },
      },
    },
  };
  return client as unknown as Client & { added: unknown[] };
}

const where = { address: 'temporal.example.com:7233', namespace: 'prod' };

describe('search attribute registration', () => {
  it('gives the dev server one flag per attribute', () => {
    expect(devServerSearchAttributeFlags()).toEqual([
      '--search-attribute', 'PgferryState=Keyword',
      '--search-attribute', 'PgferryLagSeconds=Double',
      '--search-attribute', 'PgferrySource=Keyword',
    ]);
    expect(manualCommands('prod')).toEqual([
      'temporal operator search-attribute create --namespace prod --name PgferryState --name PgferrySource --type Keyword',
      'temporal operator search-attribute create --namespace prod --name PgferryLagSeconds --type Double',
    ]);
  });

  it('adds only what is missing, and nothing when all are there', async () => {
    let registered: Record<string, number> = { PgferryState: 2 };
    const client = fakeClient({
      list: async () => ({ customAttributes: registered }),
      add: async (req) => {
        registered = { ...registered, ...(req as { searchAttributes: Record<string, number> }).searchAttributes };
        return {};
      },
    });
    expect(await registerSearchAttributes(client, where)).toEqual({ added: ['PgferryLagSeconds', 'PgferrySource'], present: ['PgferryState'] });
    expect(client.added).toEqual([{ namespace: 'prod', searchAttributes: { PgferryLagSeconds: 4, PgferrySource: 2 } }]);
    expect(await registerSearchAttributes(client, where)).toEqual({ added: [], present: ['PgferryState', 'PgferryLagSeconds', 'PgferrySource'] });
    expect(client.added).toHaveLength(1);
  });

  it('names the cluster, the namespace and the missing permission when refused', async () => {
    const client = fakeClient({ add: async () => Promise.reject(grpcError(7, 'Request unauthorized.')) });
    const err = await registerSearchAttributes(client, where).catch((e) => e);
    expect(err).toBeInstanceOf(SearchAttributesError);
    expect(err.message).toContain(
      "Temporal at temporal.example.com:7233, namespace 'prod': cannot register search attributes PgferryState, PgferryLagSeconds, PgferrySource: permission denied (Request unauthorized.); this needs permission to call OperatorService AddSearchAttributes on the namespace",
    );
    expect(err.message).toContain('pgferry temporal setup');
    expect(err.message).toContain('temporal operator search-attribute create --namespace prod --name PgferryLagSeconds --type Double');

    const up = await ensureSearchAttributes(client, where);
    expect(up.registered).toBe(false);
    expect(up.message).toMatch(/permission denied[\s\S]*Replication runs without them/);
  });

  it('refuses an attribute registered with another type', async () => {
    const client = fakeClient({ list: async () => ({ customAttributes: { PgferryState: 2, PgferrySource: 2, PgferryLagSeconds: 3 } }) });
    const err = await registerSearchAttributes(client, where).catch((e) => e);
    expect(err.message).toContain("namespace 'prod': PgferryLagSeconds is registered as Int, pgferry needs Double");
    expect(client.added).toEqual([]);
  });

  it('tries the attributes when it may not even list them', async () => {
    const client = fakeClient({ list: async () => Promise.reject(grpcError(7, 'Request unauthorized.')) });
    const up = await ensureSearchAttributes(client, where);
    expect(up.registered).toBe('unverified');
    expect(up.message).toContain("Temporal at temporal.example.com:7233, namespace 'prod': cannot check pgferry's search attributes (Request unauthorized.)");
  });
});
