/**
 * What pgferry's workflows show in the Temporal UI: search attributes
 * (PgferryState, PgferrySource, PgferryLagSeconds) and the memo.
 *
 * Temporal fails (and keeps retrying) a workflow task that upserts an
 * attribute the namespace does not know, so a workflow upserts them only once
 * it knows they are registered: it was started with PgferrySource set (the
 * start would have been refused otherwise), or it received
 * `enableSearchAttributes`, which `pgferry up` sends only after checking. A
 * workflow that has neither runs exactly as before, with nothing to show.
 * Workflows started by older code therefore replay unchanged: no patch needed.
 */
import { upsertMemo, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import { PGFERRY_LAG_SECONDS, PGFERRY_SOURCE, PGFERRY_STATE } from './messages';

export function searchAttributesEnabled(): boolean {
  return workflowInfo().typedSearchAttributes.get(PGFERRY_SOURCE) !== undefined;
}

/**
 * Upsert the attributes that differ from what the workflow shows now (one
 * history event, or none when nothing changed). `lag` undefined: leave it.
 * Returns whether the lag was among what was upserted.
 */
export function show(source: string, state: string, lag?: number, force = false): boolean {
  if (!force && !searchAttributesEnabled()) return false;
  const shown = workflowInfo().typedSearchAttributes;
  const pairs: SearchAttributeUpdatePair[] = [];
  if (shown.get(PGFERRY_SOURCE) !== source) pairs.push({ key: PGFERRY_SOURCE, value: source });
  if (shown.get(PGFERRY_STATE) !== state) pairs.push({ key: PGFERRY_STATE, value: state });
  const lagChanged = lag !== undefined && shown.get(PGFERRY_LAG_SECONDS) !== lag;
  if (lagChanged) pairs.push({ key: PGFERRY_LAG_SECONDS, value: lag });
  if (pairs.length) upsertSearchAttributes(pairs);
  return lagChanged;
}

export function shownState(): string | undefined {
  return workflowInfo().typedSearchAttributes.get(PGFERRY_STATE);
}

export function shownLag(): number | undefined {
  return workflowInfo().typedSearchAttributes.get(PGFERRY_LAG_SECONDS);
}

/** Set the memo's description if the workflow has none (workflows started before there was one). */
export function describeIfUndescribed(description: string | undefined): void {
  if (description && workflowInfo().memo?.description === undefined) upsertMemo({ description });
}

/** Options for continue-as-new that keep the memo and search attributes (when the workflow has them). */
export function keepVisibility(): { memo?: Record<string, unknown>; typedSearchAttributes?: ReturnType<typeof workflowInfo>['typedSearchAttributes'] } {
  const info = workflowInfo();
  return {
    ...(info.memo ? { memo: info.memo } : {}),
    ...(searchAttributesEnabled() ? { typedSearchAttributes: info.typedSearchAttributes } : {}),
  };
}
