// Workflow types registered with Temporal. Names are a compatibility contract.
export { captureWorkflow } from './capture';
export { replicaWorkflow } from './replica';
export { snapshotWorkflow } from './snapshot';
export { subscriberWorkflow } from './subscriber';
