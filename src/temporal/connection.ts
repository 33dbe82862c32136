import { Client, Connection } from '@temporalio/client';
import { UnavailableError, describeCause } from '../errors';

/** Where Temporal is: TEMPORAL_ADDRESS, or the dev server `pgferry up` starts on the default port. */
export const DEFAULT_TEMPORAL_ADDRESS = '127.0.0.1:7233';

export function temporalAddress(): string {
  return process.env.TEMPORAL_ADDRESS || DEFAULT_TEMPORAL_ADDRESS;
}

export function temporalNamespace(): string {
  return process.env.TEMPORAL_NAMESPACE || 'default';
}

const DEFAULT_HINT = 'is pgferry up running? (or set TEMPORAL_ADDRESS to your Temporal server)';

export async function connectClient(address = temporalAddress(), namespace = temporalNamespace(), hint = DEFAULT_HINT): Promise<Client> {
  try {
    const connection = await Connection.connect({ address, connectTimeout: 5000 });
    return new Client({ connection, namespace });
  } catch (err) {
    throw new UnavailableError(
      `Temporal at ${address}: cannot connect (${describeCause(err)}); ${hint}`,
      { cause: err },
    );
  }
}
