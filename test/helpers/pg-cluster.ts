/** Private PostgreSQL clusters: the same code `pgferry demo` uses. */
export { PgCluster, PG_BIN } from '../../src/demo/pg-cluster';
