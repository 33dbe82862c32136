/**
 * The tables pgferry replicates, as every part names them: capture reports
 * them, apply, snapshot and verify take them. A neutral module, so none of
 * those depends on capture to say what a table is.
 */
export interface TableRef {
  schema: string;
  table: string;
  /** The columns the source sends, in order (absent in workflow inputs recorded before columns were checked). */
  columns?: ColumnRef[];
}

export interface ColumnRef {
  name: string;
  /** As format_type prints it, e.g. `character varying(20)`. */
  type: string;
}
