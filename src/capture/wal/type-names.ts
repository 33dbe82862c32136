/**
 * Column type names for WAL capture. pgoutput describes a relation's columns
 * by type OID and typmod only; the envelope carries the name as
 * format_type prints it (`character varying(20)`), so a replica can cast and
 * compare without the source's catalog. Names are looked up once per
 * (oid, typmod) on capture's catalog connection, as RELATION messages arrive.
 */
import type pg from 'pg';
import type { Pgoutput } from 'pg-logical-replication';

/** A type's name as format_type prints it, from its OID ($1) and typmod ($2). */
const COLUMN_TYPE = `
SELECT format_type($1::oid, $2::int) AS type_name`;

export class TypeNames {
  private readonly names = new Map<string, string>();

  constructor(private readonly catalog: pg.ClientBase) {}

  /** Learn the types of a RELATION message's columns (before its changes are assembled). */
  async learn(rel: Pgoutput.MessageRelation): Promise<void> {
    for (const col of rel.columns) {
      const k = `${col.typeOid}:${col.typeMod}`;
      if (this.names.has(k)) continue;
      const r = await this.catalog.query<{ type_name: string }>(COLUMN_TYPE, [col.typeOid, col.typeMod]);
      this.names.set(k, r.rows[0].type_name);
    }
  }

  name(oid: number, mod: number): string {
    return this.names.get(`${oid}:${mod}`) ?? `oid:${oid}`;
  }
}
