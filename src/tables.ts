/**
 * The tables pgferry replicates, as every part names them: capture reports
 * them, apply, snapshot and verify take them. A neutral module, so none of
 * those depends on capture to say what a table is.
 */
export interface TableRef {
  schema: string;
  table: string;
  /** The columns the source sends, in order (absent in workflow inputs recorded before columns were checked); a publication's column list leaves the others out. */
  columns?: ColumnRef[];
  /**
   * The publication's row filter (PostgreSQL 15+), as the catalog prints it:
   * a boolean SQL expression over the table's columns, from the source's own
   * publication. Only rows it accepts are sent, so snapshots copy and verify
   * compares only those. Absent: every row.
   */
  rowFilter?: string;
}

export interface ColumnRef {
  name: string;
  /** As format_type prints it, e.g. `character varying(20)`. */
  type: string;
}
