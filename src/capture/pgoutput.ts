import { PgoutputPlugin, Pgoutput } from 'pg-logical-replication';

/**
 * pgoutput decoding that keeps every value in PostgreSQL's text form.
 *
 * pg-logical-replication parses column values with node-postgres' global type
 * parsers (timestamps become JS Dates, losing microseconds; jsonb becomes an
 * object, losing key order and formatting). Each RELATION message fixes the
 * parser of its columns for every later tuple, so we replace them with the
 * identity right after parsing that message, before any tuple is parsed.
 */
const keepText = (raw: unknown) => raw;

export class TextPgoutputPlugin extends PgoutputPlugin {
  override parse(buffer: Buffer): Pgoutput.Message {
    const msg = super.parse(buffer) as Pgoutput.Message;
    if (msg.tag === 'relation') for (const col of msg.columns) col.parser = keepText;
    return msg;
  }
}
