SELECT replica, source, lsn::text AS lsn, stream_offset FROM pgferry.progress WHERE replica = $1
