#!/bin/bash
# WAL archiving of a dedicated PostgreSQL tenant to S3 (Swift s3api, SigV4 checked)
# through a storage outage: with the S3 server stopped, archive_library reports
# failure, PostgreSQL keeps the segments and tenant_backup.status shows the lag; once
# the server is back, archiving catches up, and a recovery through the whole range
# proves that no segment is missing.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/pitr.sh"
. "$(dirname "$0")/../lib/s3.sh"
PORT=$(free_port)
S3_PORT=$(free_port)

scratch_dir
s3_start "$D" $S3_PORT
STORAGE="s3://$TB_S3_BUCKET/pitr"
pitr_cluster_start $PORT "$STORAGE"

switch_wal() {
	PGDATABASE=app psql_q "INSERT INTO orders (id) SELECT coalesce(max(id), 0) + 1 FROM orders" >/dev/null
	psql_q "SELECT pg_walfile_name(pg_switch_wal())"
}

PGDATABASE=app psql_q "CREATE TABLE orders (id int PRIMARY KEY)" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
ok $? "a base backup to S3"
PGDATABASE=app psql_q "INSERT INTO orders SELECT g FROM generate_series(1000, 1099) g" >/dev/null
seg=$(switch_wal)
wait_for 200 0.1 t psql_q "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver" >/dev/null
ok $? "WAL is archived to S3"

# --- the S3 server goes away
sh "$(dirname "$0")/../lib/s3server.sh" stop "$D/s3"
PGDATABASE=app psql_q "INSERT INTO orders SELECT g FROM generate_series(2000, 2099) g" >/dev/null
stuck=$(switch_wal)
switch_wal >/dev/null
wait_for 300 0.1 t psql_q "SELECT failed_count > 0 AND last_failed_wal >= '$stuck' FROM pg_stat_archiver" >/dev/null
ok $? "archive_library reports failure while S3 is down"
[ -f "$D/pg/data/pg_wal/$stuck" ] && [ -f "$D/pg/data/pg_wal/archive_status/$stuck.ready" ]
ok $? "and PostgreSQL keeps the segment, still to be archived"
like "$(psql_q "SELECT wal_pending >= 2, wal_oldest_pending IS NOT NULL, wal_last_failure FROM tenant_backup.status WHERE tenant = 'acme'")" \
	"^t\|t\|$stuck at " "tenant_backup.status shows the segments waiting, since when, and the failure"
grep -q "could not archive WAL file \"$stuck\" of tenant \"acme\"" "$D/pg/server.log"
ok $? "the server log says which file could not be archived"

# --- it comes back
sh "$(dirname "$0")/../lib/s3server.sh" start "$D/s3" $S3_PORT >/dev/null
last=$(switch_wal)
wait_for 900 0.1 t psql_q "SELECT last_archived_wal >= '$last' FROM pg_stat_archiver" >/dev/null
ok $? "archiving catches up once S3 is back"
is "$(psql_q "SELECT wal_pending FROM tenant_backup.status WHERE tenant = 'acme'")" 0 "and nothing waits any more"
restore_pitr "$D/restore/r" --to-latest 2>"$D/r.err"
ok $? "restore-pitr --to-latest from S3"
R_PORT=$(free_port)
start_copy "$D/restore/r" $R_PORT
ok $? "the recovered copy starts and recovers to the end of the archive"
is "$(copy_q $R_PORT "SELECT count(*) FILTER (WHERE id BETWEEN 1000 AND 1099),
	count(*) FILTER (WHERE id BETWEEN 2000 AND 2099), max(id) FROM orders")" \
	"100|100|$(PGDATABASE=app psql_q "SELECT max(id) FROM orders")" \
	"every row is there, those written during the outage too: no segment is missing"

done_testing
