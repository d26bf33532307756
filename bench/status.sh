#!/bin/bash
# The status view at scale: SELECT * FROM tenant_backup.status with 1,000 and 10,000
# tenants, each with ~30 backups and ~30 jobs of history per database, before (the
# 0.1.0 view without the 0.2.0 indexes) and after. Usage: bench/status.sh [TENANTS...]
# (default 1000 10000). Prints one line per size; the target is < 100 ms at 10,000.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../test/lib/tap.sh"
. "$HERE/../test/lib/pg.sh"
. "$HERE/lib.sh"
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1000 10000)
RUNS=5
BEFORE_LIMIT=120s
# Stopped early (a timeout), the cluster still goes: the EXIT trap runs.
trap 'exit 1' INT TERM

scratch_dir
[ -e "$("$PG_BIN/pg_config" --pkglibdir)/tenant_backup.so" ] || {
	echo "bench/status.sh: the extension is not installed (make install)" >&2
	exit 1
}
mkdir -p "$D/store"
chown postgres "$D/store"
"${TB_BIN:-$HERE/../build/bin}/tenant-backup" keygen --out "$D/master.key" >/dev/null 2>&1 && chown postgres "$D/master.key"
# No schedule, no retention pass and no job run while the history is loaded and measured.
pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.first_backup_delay = '1000 days'
tenant_backup.retention_interval = '1000 days'
tenant_backup.naptime = 60000"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$D/pg/server.log" "CREATE EXTENSION failed"

# The 0.1.0 definition of the view, to measure "before" on the same data.
psql_q "CREATE VIEW public.status_0_1_0 AS
SELECT t.name AS tenant, s.engine, s.id AS source_id, s.locator, last_ok.finished AS last_success,
	   now() - last_ok.finished AS age, t.next_due, last_err.error AS last_error, running.id AS running_job,
	   running.kind AS running_kind, running.bytes_done AS running_bytes,
	   CASE WHEN running.lease_owner LIKE 'agent:%' THEN split_part(running.lease_owner, ':', 2)
			WHEN running.lease_owner IS NOT NULL THEN 'background worker' END AS running_on,
	   wal.pending AS wal_pending, wal.oldest_pending AS wal_oldest_pending, wal.last_archived AS wal_last_archived,
	   wal.last_failure AS wal_last_failure, wal.gap AS wal_gap
FROM tenant_backup.tenants t
JOIN tenant_backup.sources s ON s.tenant = t.name
LEFT JOIN LATERAL (SELECT b.finished FROM tenant_backup.backups b WHERE b.source_id = s.id AND b.status = 'complete'
				   ORDER BY b.finished DESC LIMIT 1) last_ok ON true
LEFT JOIN LATERAL (SELECT j.error FROM tenant_backup.jobs j WHERE j.source_id = s.id AND j.state = 'failed'
				   AND j.finished > coalesce(last_ok.finished, '-infinity') ORDER BY j.finished DESC LIMIT 1) last_err ON true
LEFT JOIN LATERAL (SELECT j.id, j.kind, j.bytes_done, j.lease_owner FROM tenant_backup.jobs j
				   WHERE j.source_id = s.id AND j.state = 'running' ORDER BY j.id LIMIT 1) running ON true
LEFT JOIN tenant_backup._wal_archive_lag() wal ON wal.tenant = t.name AND s.engine = 'postgres'" >/dev/null ||
	pg_bail "$D/pg/server.log" "could not create the 0.1.0 view"

# Adds tenants FROM..TO: a postgres database each (and a redis one for every fifth), 30
# backups per database a day apart (every tenth failed), a job per backup, a restore and
# a drill for every tenth database, a running agent job for every 50th, a queued one for
# every 20th.
load() { # FROM TO
	psql_q "INSERT INTO tenant_backup.tenants (name, next_due, created)
		SELECT format('t%s', g), now() + interval '1 day', now() - interval '60 days' FROM generate_series($1, $2) g" \
		"INSERT INTO tenant_backup.sources (tenant, engine, locator, created)
		SELECT format('t%s', g), 'postgres', format('db%s', g), now() - interval '60 days' FROM generate_series($1, $2) g
		UNION ALL SELECT format('t%s', g), 'redis', format('redis://cache/%s', g % 16), now() - interval '60 days'
		FROM generate_series($1, $2) g WHERE g % 5 = 0" \
		"UPDATE tenant_backup.tenants SET next_due = now() + interval '1 day' WHERE next_due < now() + interval '1 day'" \
		"INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, state, attempts, error, created, started, finished,
										 bytes_done, queued_by)
		SELECT 'backup', s.tenant, s.id, s.engine, CASE WHEN d % 10 = 3 THEN 'failed' ELSE 'succeeded' END, 1,
			   CASE WHEN d % 10 = 3 THEN 'pg_dump exited with status 1' END, now() - make_interval(days => d),
			   now() - make_interval(days => d), now() - make_interval(days => d) + interval '3 minutes',
			   1000000, 'schedule'
		FROM tenant_backup.sources s, generate_series(1, 30) d
		WHERE s.tenant IN (SELECT format('t%s', g) FROM generate_series($1, $2) g)" \
		"INSERT INTO tenant_backup.backups (tenant, engine, source_id, job_id, status, started, finished, bytes_in,
											bytes_stored, sha256, object_key, key_id, error)
		SELECT j.tenant, j.engine, j.source_id, j.id, CASE WHEN j.state = 'failed' THEN 'failed' ELSE 'complete' END,
			   j.started, j.finished, 1000000, 200000, repeat('0', 64),
			   format('%s/%s/%s-%s.tbk', j.tenant, j.engine, to_char(j.started, 'YYYY-MM-DD\"T\"HH24MISS\"Z\"'), j.id),
			   '0000000000000000', j.error
		FROM tenant_backup.jobs j WHERE j.tenant IN (SELECT format('t%s', g) FROM generate_series($1, $2) g)" \
		"INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, state, attempts, max_attempts, error, created,
										 started, finished, queued_by, backup_id)
		SELECT k, s.tenant, s.id, s.engine, CASE WHEN k = 'drill' AND s.id % 20 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 1,
			   CASE WHEN k = 'drill' AND s.id % 20 = 0 THEN 'drill: rows differ' END, now() - interval '2 days',
			   now() - interval '2 days', now() - interval '2 days' + interval '5 minutes', 'ops', NULL
		FROM tenant_backup.sources s, unnest(ARRAY['restore', 'drill']) k
		WHERE s.id % 10 = 0 AND s.tenant IN (SELECT format('t%s', g) FROM generate_series($1, $2) g)" \
		"INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, state, attempts, created, started, lease_owner,
										 lease_expires, bytes_done, queued_by)
		SELECT 'backup', s.tenant, s.id, 'redis', 'running', 1, now() - interval '1 minute', now() - interval '1 minute',
			   'agent:bench:' || gen_random_uuid(), now() + interval '1 day', 400000, 'schedule'
		FROM tenant_backup.sources s
		WHERE s.engine = 'redis' AND s.id % 50 < 5 AND s.tenant IN (SELECT format('t%s', g) FROM generate_series($1, $2) g)" \
		"INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, queued_by)
		SELECT 'backup', s.tenant, s.id, 'redis', 'schedule' FROM tenant_backup.sources s
		WHERE s.engine = 'redis' AND s.id % 20 < 4 AND s.tenant IN (SELECT format('t%s', g) FROM generate_series($1, $2) g)" \
		"ANALYZE" >/dev/null || pg_bail "$D/pg/server.log" "could not load tenants $1..$2"
}

# The median execution time (ms) of RUNS runs of SELECT * FROM VIEW, as EXPLAIN ANALYZE
# reports it, with SQL (say, dropping indexes) first in the same rolled-back transaction.
median_ms() { # RUNS VIEW [SQL]
	local i runs=$1 times=()
	shift
	for ((i = 0; i < runs; i++)); do
		times+=("$(psql_q "BEGIN" "${2:-SELECT 1}" "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) SELECT * FROM $1" "ROLLBACK" |
			sed -n 's/.*"Execution Time": \([0-9.]*\).*/\1/p')")
	done
	printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((runs + 1) / 2))p"
}

NEW_INDEXES="DROP INDEX tenant_backup.backups_source_complete, tenant_backup.jobs_active,
	tenant_backup.jobs_restore_drill_finished"
loaded=0
echo "# status view: EXPLAIN ANALYZE SELECT * execution time in ms (after: median of $RUNS runs; before: one run)"
for n in "${SIZES[@]}"; do
	now
	load $((loaded + 1)) "$n"
	load_s=$(elapsed "$NOW")
	loaded=$n
	rows=$(psql_q "SELECT count(*) FROM tenant_backup.status")
	jobs=$(psql_q "SELECT count(*) FROM tenant_backup.jobs")
	backups=$(psql_q "SELECT count(*) FROM tenant_backup.backups")
	# The 0.1.0 view grows as n squared (a scan of backups and two of jobs per database):
	# one run, stopped after BEFORE_LIMIT.
	before=$(median_ms 1 public.status_0_1_0 "SET LOCAL statement_timeout = '$BEFORE_LIMIT'; $NEW_INDEXES")
	[ -n "$before" ] || before="> $BEFORE_LIMIT (cancelled)"
	after=$(median_ms $RUNS tenant_backup.status)
	now
	psql_q "SELECT * FROM tenant_backup.status" >/dev/null
	client_s=$(elapsed "$NOW")
	printf 'tenants %s: %s rows, %s jobs, %s backups (loaded in %ss) | before %s ms | after %s ms | after, psql end to end %s s\n' \
		"$n" "$rows" "$jobs" "$backups" "$load_s" "$before" "$after" "$client_s"
done
psql_q "EXPLAIN (ANALYZE, TIMING OFF) SELECT * FROM tenant_backup.status" | sed 's/^/#   /'
