import { TestWorkflowEnvironment } from '@temporalio/testing';
import { findTemporalBinary } from '../../src/temporal/dev-server';

/**
 * @temporalio/testing's local environment, run with the `temporal` CLI that
 * setup installed (the SDK would otherwise download one, which this project
 * does not rely on).
 */
export async function createTestEnv(): Promise<TestWorkflowEnvironment> {
  const path = findTemporalBinary();
  if (!path) throw new Error('no temporal CLI found: run npm run setup');
  return TestWorkflowEnvironment.createLocal({ server: { executable: { type: 'existing-path', path }, ip: '127.0.0.1' } });
}
