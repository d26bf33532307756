#!/bin/bash
# The fixed cost of a job, cut at its causes: a queued job wakes the launcher at commit
# (not its naptime, 10 s here, later); a job worker that finished a backup runs the
# next queued one itself (one background worker start for a queue, not one per job),
# each job still with its own bytes, contents and audit row, and exits once the queue
# has been empty for worker_idle_time; a wait => true call is woken by its job's end
# (not its 1 s fallback poll). pg_job_pool.t tests the idle workers.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

tb_scratch_storage

pg_start_tb "$D/pg" "$(free_port)" "tenant_backup.max_workers = 1
tenant_backup.naptime = 10000
tenant_backup.worker_idle_time = '2s'
log_line_prefix = 'pid=%p '"

for i in 1 2 3 4; do
	psql_q "CREATE DATABASE r$i" "SELECT tenant_backup.tenant_create('r$i')" \
		"SELECT tenant_backup.tenant_add_database('r$i', 'postgres', 'r$i')" >/dev/null
	PGDATABASE=r$i psql_q "CREATE TABLE t AS SELECT g FROM generate_series(1, $i * 1000) g" >/dev/null
done
job_workers() { psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup job'"; }
queue_idle() { psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE state IN ('queued', 'running')"; }

# ------------------------------------------------------------ a queued job wakes the launcher

# A finished job worker's exit makes the launcher look at the queue once; its next
# round is then naptime (10 s) away, unless the queued job wakes it.
psql_q "SELECT tenant_backup.tenant_backup('r1', wait => true)" >/dev/null
wait_for 50 0.1 0 job_workers >/dev/null
job=$(psql_q "SELECT tenant_backup.tenant_backup('r2')")
wait_for 100 0.1 succeeded psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job" >/dev/null
ok "$(psql_q "SELECT CASE WHEN started - created < interval '3 s' THEN 0 ELSE 1 END FROM tenant_backup.jobs WHERE id = $job")" \
	"a job queued with wait => false starts at once, not at the launcher's next round 10 s later ($(psql_q "SELECT started - created FROM tenant_backup.jobs WHERE id = $job"))"

# ------------------------------------------------------------ one worker runs the queue

wait_for 50 0.1 0 job_workers >/dev/null
first=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.jobs")
{
	echo "BEGIN;"
	for i in 1 2 3 4; do echo "SELECT tenant_backup.tenant_backup('r$i');"; done
	echo "COMMIT;"
} | "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 >/dev/null
ok $? "four tenants' backups queued in one transaction"
is "$(wait_for 300 0.1 0 queue_idle)" 0 "they all ran"
is "$(psql_q "SELECT string_agg(state, ',' ORDER BY id) FROM tenant_backup.jobs WHERE id > $first")" \
	"succeeded,succeeded,succeeded,succeeded" "and succeeded"
pids=$(grep -E 'tenant_backup: backup [0-9]+ of tenant "r[1-4]" \(postgres\) stored as' "$D/pg/server.log" | tail -n 4 |
	sed -E 's/^pid=([0-9]+) .*/\1/' | sort -u | wc -l)
is "$pids" 1 "one job worker process ran all four, one after the other (max_workers 1)"
is "$(psql_q "SELECT string_agg(b.contents->'tables'->>'public.t', ',' ORDER BY j.tenant) FROM tenant_backup.jobs j
			  JOIN tenant_backup.backups b ON b.job_id = j.id WHERE j.id > $first")" "1000,2000,3000,4000" \
	"each backup counted its own tenant's rows"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.job_id = j.id
			  WHERE j.id > $first AND b.status = 'complete' AND b.bytes_in > 0 AND j.bytes_done = b.bytes_in
			  AND b.object_key LIKE j.tenant || '/postgres/%'")" 4 \
	"each job reported its own bytes, and its backup is complete under its own tenant's prefix"
is "$(psql_q "SELECT count(DISTINCT b.bytes_in) FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.job_id = j.id
			  WHERE j.id > $first")" 4 "four different sizes: no job reported another's"
is "$(psql_q "SELECT string_agg(a.tenant, ',' ORDER BY a.tenant) FROM tenant_backup.audit a
			  WHERE a.action = 'backup succeeded' AND (a.detail->>'job')::bigint > $first")" "r1,r2,r3,r4" \
	"each job has its own 'backup succeeded' audit row"
is "$(wait_for 50 0.1 0 job_workers)" 0 "the worker exits once the queue has been empty for worker_idle_time (2 s)"
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" t "the audit chains verify"

# ------------------------------------------------------------ wait => true is woken by the job's end

# The fallback poll is 1 s: five calls each back within 0.5 s of their job's end show the wake.
{
	for _ in 1 2 3 4 5; do
		echo "SELECT max(j) AS job FROM tenant_backup.tenant_backup('r1', wait => true) j \\gset"
		echo "SELECT round(extract(epoch FROM clock_timestamp() - finished) * 1000) || ' ' || (waiter_pid = pg_backend_pid())
			  FROM tenant_backup.jobs WHERE id = :job;"
	done
} | "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 >"$D/waits.out" 2>&1
ok $? "five backups with wait => true"
diag "ms from each job's end to its caller's next statement: $(cut -d' ' -f1 "$D/waits.out" | paste -sd' ')"
is "$(cut -d' ' -f2 "$D/waits.out" | sort -u)" true "each job names its waiting backend (jobs.waiter_pid)"
is "$(awk '$1 >= 500' "$D/waits.out" | wc -l)" 0 "each call returned within 0.5 s of its job's end"

done_testing
