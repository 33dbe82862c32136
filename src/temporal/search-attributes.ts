/**
 * pgferry's custom search attributes (defined in workflows/messages.ts) and
 * their registration on a namespace: by the dev server's `--search-attribute`
 * flags, by `pgferry temporal setup` (OperatorService.AddSearchAttributes), and
 * by `pgferry up` itself when it may.
 *
 * Temporal refuses to start a workflow with an attribute the namespace does
 * not know, and fails (then retries, forever) any workflow task that upserts
 * one. Replication matters more than the UI, so when the attributes cannot be
 * registered `pgferry up` says so and starts the workflows without them; they
 * then upsert nothing (workflows/visibility.ts). Once registered, the next
 * `pgferry up` tells running workflows to start showing them.
 */
import type { Client, WorkflowHandle, WorkflowStartOptions } from '@temporalio/client';
import type { SearchAttributePair, Workflow } from '@temporalio/common';
import { ConfigError, PgferryError, UnavailableError, describeCause } from '../errors';
import { streamName } from '../names';
import { enableSearchAttributesSignal, PGFERRY_LAG_SECONDS, PGFERRY_SEARCH_ATTRIBUTES, PGFERRY_SOURCE, PGFERRY_STATE } from '../../workflows/messages';

type AttributeType = (typeof PGFERRY_SEARCH_ATTRIBUTES)[number]['type'];

/** Names the `temporal` CLI uses, and temporal.api.enums.v1.IndexedValueType (wire values, stable). */
const TYPES: Record<AttributeType, { cli: string; indexed: number }> = {
  KEYWORD: { cli: 'Keyword', indexed: 2 },
  DOUBLE: { cli: 'Double', indexed: 4 },
};
const TYPE_NAMES: Record<number, string> = { 1: 'Text', 2: 'Keyword', 3: 'Int', 4: 'Double', 5: 'Bool', 6: 'Datetime', 7: 'KeywordList' };

/** `temporal server start-dev` flags registering the attributes on a new dev server database. */
export function devServerSearchAttributeFlags(): string[] {
  return PGFERRY_SEARCH_ATTRIBUTES.flatMap((k) => ['--search-attribute', `${k.name}=${TYPES[k.type].cli}`]);
}

/** The `temporal` CLI commands an administrator can run instead of pgferry temporal setup. */
export function manualCommands(namespace: string, names: readonly string[] = PGFERRY_SEARCH_ATTRIBUTES.map((k) => k.name)): string[] {
  const byType = new Map<string, string[]>();
  for (const k of PGFERRY_SEARCH_ATTRIBUTES) {
    if (!names.includes(k.name)) continue;
    byType.set(TYPES[k.type].cli, [...(byType.get(TYPES[k.type].cli) ?? []), k.name]);
  }
  return [...byType].map(([type, ns]) => `temporal operator search-attribute create --namespace ${namespace} ${ns.map((n) => `--name ${n}`).join(' ')} --type ${type}`);
}

// gRPC status codes
const ALREADY_EXISTS = 6;
const PERMISSION_DENIED = 7;
const UNAUTHENTICATED = 16;
const UNIMPLEMENTED = 12;
const NOT_FOUND = 5;
const UNAVAILABLE = 14;

function grpcCode(err: unknown): number | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  const code = typeof e?.code === 'number' ? e.code : e?.cause?.code;
  return typeof code === 'number' ? code : undefined;
}

function grpcDetails(err: unknown): string {
  const e = err as { details?: string; message?: string };
  return (e?.details || describeCause(err)).split('\n')[0];
}

/** The attributes could not be registered: the message names the cluster, the namespace and what is missing. */
export class SearchAttributesError extends PgferryError {
  constructor(
    message: string,
    readonly missing: string[],
    options?: { cause?: unknown; listDenied?: boolean },
  ) {
    super(message, options);
    this.listDenied = options?.listDenied ?? false;
  }
  /** Not even allowed to list the namespace's attributes: whether they are registered is unknown. */
  readonly listDenied: boolean;
}

export interface Registration {
  /** Registered by this call. */
  added: string[];
  /** Already registered with the right type. */
  present: string[];
}

/**
 * Register whatever of pgferry's attributes the namespace lacks; idempotent.
 * Throws SearchAttributesError (permission, conflicting type), ConfigError
 * (no such namespace) or UnavailableError.
 */
export async function registerSearchAttributes(client: Client, where: { address: string; namespace: string }): Promise<Registration> {
  const { namespace } = where;
  const at = `Temporal at ${where.address}, namespace '${namespace}'`;
  const op = client.connection.operatorService;
  const fail = (err: unknown, doing: string, missing: string[]): never => {
    const code = grpcCode(err);
    const details = grpcDetails(err);
    const todo = `ask an administrator of that Temporal cluster to run pgferry temporal setup, or to run:\n  ${manualCommands(namespace, missing).join('\n  ')}\n(Temporal Cloud: add them in the Cloud UI or with tcld namespace search-attributes add)`;
    if (code === PERMISSION_DENIED || code === UNAUTHENTICATED || code === UNIMPLEMENTED) {
      throw new SearchAttributesError(
        `${at}: cannot ${doing} search attributes ${missing.join(', ')}: ${code === UNIMPLEMENTED ? 'not supported by this server' : 'permission denied'} (${details}); this needs permission to call OperatorService ${doing === 'list' ? 'ListSearchAttributes' : 'AddSearchAttributes'} on the namespace (a namespace admin); ${todo}`,
        missing,
        { cause: err, listDenied: doing === 'list' },
      );
    }
    if (code === NOT_FOUND) throw new ConfigError(`${at}: no such namespace (${details}); create it, or set temporal.namespace / TEMPORAL_NAMESPACE`, { cause: err });
    if (code === UNAVAILABLE) throw new UnavailableError(`${at}: cannot ${doing} search attributes (${details})`, { cause: err });
    throw new SearchAttributesError(`${at}: cannot ${doing} search attributes ${missing.join(', ')} (${details}); ${todo}`, missing, { cause: err });
  };

  const all = PGFERRY_SEARCH_ATTRIBUTES.map((k) => k.name);
  const registered = async (): Promise<Record<string, number>> => {
    try {
      const r = await op.listSearchAttributes({ namespace });
      return Object.fromEntries(Object.entries(r.customAttributes ?? {}).map(([k, v]) => [k, Number(v)]));
    } catch (err) {
      return fail(err, 'list', all);
    }
  };
  const now = await registered();
  const present: string[] = [];
  const missing: typeof PGFERRY_SEARCH_ATTRIBUTES[number][] = [];
  const conflicts: string[] = [];
  for (const k of PGFERRY_SEARCH_ATTRIBUTES) {
    const has = now[k.name];
    if (has === undefined) missing.push(k);
    else if (has === TYPES[k.type].indexed) present.push(k.name);
    else conflicts.push(`${k.name} is registered as ${TYPE_NAMES[has] ?? has}, pgferry needs ${TYPES[k.type].cli}`);
  }
  if (conflicts.length) {
    throw new SearchAttributesError(
      `${at}: ${conflicts.join('; ')}; remove that attribute (temporal operator search-attribute remove --namespace ${namespace} --name …) and run pgferry temporal setup again`,
      conflicts.map((c) => c.split(' ')[0]),
    );
  }
  if (!missing.length) return { added: [], present };

  const names = missing.map((k) => k.name);
  try {
    await op.addSearchAttributes({ namespace, searchAttributes: Object.fromEntries(missing.map((k) => [k.name, TYPES[k.type].indexed])) });
  } catch (err) {
    if (grpcCode(err) !== ALREADY_EXISTS) fail(err, 'register', names); // ALREADY_EXISTS: registered meanwhile by someone else
  }
  // Some visibility stores register asynchronously: wait (briefly) until the namespace lists them.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const after = await registered();
    if (names.every((n) => after[n] !== undefined)) break;
    if (Date.now() > deadline) {
      throw new SearchAttributesError(`${at}: registered search attributes ${names.join(', ')} but the namespace does not list them yet; run pgferry temporal setup again in a minute`, names);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  return { added: names, present };
}

/**
 * Whether every pgferry attribute is registered with its type (read only;
 * anything that stops the check counts as no: a workflow upserting an
 * unknown attribute would be stuck, one without them only shows less).
 */
export async function searchAttributesRegistered(client: () => Client, namespace: string): Promise<boolean> {
  try {
    const r = await client().connection.operatorService.listSearchAttributes({ namespace });
    const now = r.customAttributes ?? {};
    return PGFERRY_SEARCH_ATTRIBUTES.every((k) => Number(now[k.name]) === TYPES[k.type].indexed);
  } catch {
    return false;
  }
}

/**
 * For `pgferry up`: register the attributes when they are missing and it may.
 * Returns whether workflows may carry them, and what to tell the operator.
 */
export async function ensureSearchAttributes(client: Client, where: { address: string; namespace: string }): Promise<{ registered: Registered; message: string | null }> {
  try {
    const r = await registerSearchAttributes(client, where);
    return { registered: true, message: r.added.length ? `Temporal: registered search attributes ${r.added.join(', ')} on namespace '${where.namespace}'` : null };
  } catch (err) {
    if (!(err instanceof SearchAttributesError)) throw err;
    if (err.listDenied) {
      // An administrator may have registered them (Temporal Cloud: tcld): try, and start without them if refused.
      return { registered: 'unverified', message: `Temporal at ${where.address}, namespace '${where.namespace}': cannot check pgferry's search attributes (${grpcDetails(err.cause)}); starting workflows with them, or without them if the namespace does not know them (then run pgferry temporal setup)` };
    }
    return {
      registered: false,
      message: `${err.message}\nReplication runs without them; only the Temporal UI's filtering by PgferryState / PgferryLagSeconds / PgferrySource is missing. Once they are registered, run pgferry up again.`,
    };
  }
}

/** Memo descriptions: what each workflow is, as shown in the Temporal UI. */
export function replicaDescription(replica: string, source: string): string {
  return `pgferry replica '${replica}' of source '${source}': applies ${streamName(source)} to the replica database '${replica}'. Pause/resume with the signals pause / resume (resume also retries a failed replica); query status.`;
}

export function captureDescription(source: string): string {
  return `pgferry capture of source '${source}': publishes the source's committed transactions to the RabbitMQ stream ${streamName(source)}. Signal resume retries a failed capture; query status.`;
}

/** true: registered, workflows carry them; false: not, workflows run without; 'unverified': try, fall back to without. */
export type Registered = boolean | 'unverified';

export interface Visibility {
  /** Whether the attributes are registered on the namespace (workflows may carry them). */
  registered: Registered;
  description: string;
  attributes: SearchAttributePair[];
}

export function replicaVisibility(registered: Registered, replica: string, source: string): Visibility {
  return {
    registered,
    description: replicaDescription(replica, source),
    attributes: [
      { key: PGFERRY_STATE, value: 'starting' },
      { key: PGFERRY_SOURCE, value: source },
    ],
  };
}

export function captureVisibility(registered: Registered, source: string): Visibility {
  return {
    registered,
    description: captureDescription(source),
    attributes: [
      { key: PGFERRY_STATE, value: 'running' },
      { key: PGFERRY_SOURCE, value: source },
    ],
  };
}

/**
 * Start (or re-attach to) a workflow with its memo and, when registered, its
 * search attributes. A running workflow started without them (before they were
 * registered, or by an older pgferry) is told to show them from now on.
 */
export async function startVisible<T extends Workflow>(client: Client, workflow: string | T, options: WorkflowStartOptions<T>, v: Visibility): Promise<WorkflowHandle<T>> {
  const memo = { ...(options.memo ?? {}), description: v.description };
  let handle: WorkflowHandle<T>;
  if (!v.registered) return client.workflow.start(workflow, { ...options, memo });
  try {
    handle = await client.workflow.start(workflow, { ...options, memo, typedSearchAttributes: v.attributes });
  } catch (err) {
    // Refused: not registered after all ('unverified'), or just registered on a cluster whose frontends
    // cache the list for a while. Start without them; in the second case the signal below makes the
    // workflow show them (its upserts are retried until the cluster knows them).
    if (!/search attribute/i.test(`${(err as Error)?.message} ${grpcDetails((err as { cause?: unknown })?.cause ?? err)}`)) throw err;
    handle = await client.workflow.start(workflow, { ...options, memo });
    if (v.registered === 'unverified') return handle;
  }
  if (v.registered === 'unverified') return handle; // never tell a workflow to upsert attributes that may be unknown
  const desc = await handle.describe();
  if (desc.typedSearchAttributes.get(PGFERRY_SOURCE) === undefined) {
    await handle.signal(enableSearchAttributesSignal, { description: v.description });
  }
  return handle;
}

export { PGFERRY_LAG_SECONDS, PGFERRY_SOURCE, PGFERRY_STATE };
