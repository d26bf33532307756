#!/bin/bash
# Idle job workers (tenant_backup.worker_idle_time): a job worker with no backup left
# waits for the next one. A wait => true call hands it its request, which it queues and
# claims in one transaction: no request worker and no job worker starts for it, and
# each backup is still its own tenant's. A job queued with wait => false wakes it.
# max_workers still holds with workers idle; a restore, which only the launcher starts,
# makes the idle workers give their places up; a worker terminated while it holds a
# handed request leaves the call to a request worker, and the call succeeds; so does a
# worker that would wait for a lock a session holds; a worker exits after worker_idle_time.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

tb_scratch_storage

# naptime 10 s: what starts at once here is not the launcher's round. DEBUG1 logs each
# background worker the postmaster starts.
pg_start_tb "$D/pg" "$(free_port)" "tenant_backup.max_workers = 2
tenant_backup.naptime = 10000
tenant_backup.worker_idle_time = '60s'
log_min_messages = debug1"

for i in 1 2 3 4; do
	psql_q "CREATE DATABASE p$i" "SELECT tenant_backup.tenant_create('p$i')" \
		"SELECT tenant_backup.tenant_add_database('p$i', 'postgres', 'p$i')" >/dev/null
	PGDATABASE=p$i psql_q "CREATE TABLE t AS SELECT g FROM generate_series(1, $i * 1000) g" >/dev/null
done
started() { grep -c "starting background worker process \"tenant_backup $1" "$D/pg/server.log"; }
idle_count() { psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup job' AND state = 'idle'"; }
idle_workers() { psql_q "SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity
	WHERE backend_type = 'tenant_backup job' AND state = 'idle'"; }
job_workers() { psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup job'"; }
queue_idle() { psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE state IN ('queued', 'running')"; }
rows_of() { psql_q "SELECT b.contents->'tables'->>'public.t' FROM tenant_backup.backups b WHERE b.job_id = $1 AND b.status = 'complete'"; }

# ------------------------------------------------------------ wait => true through an idle worker
job=$(psql_q "SELECT max(j) FROM tenant_backup.tenant_backup('p1', wait => true) j")
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job") $(started request) $(started job)" "succeeded 1 1" \
	"the first call starts a request worker and a job worker"
wait_for 50 0.1 1 idle_count >/dev/null
worker=$(idle_workers)
like "$worker" '^[0-9]+$' "the job worker stays, idle"
for i in 1 2 1 2 1; do
	job=$(psql_q "SELECT max(j) FROM tenant_backup.tenant_backup('p$i', wait => true) j")
	got="$got $(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job"):$(rows_of "$job")"
	wait_for 50 0.1 "$worker" idle_workers >/dev/null
done
is "$got" " succeeded:1000 succeeded:2000 succeeded:1000 succeeded:2000 succeeded:1000" \
	"five more calls succeed, each backup with its own tenant's rows"
is "$(started request) $(started job) $(idle_workers)" "1 1 $worker" \
	"no request worker and no job worker started for them: the idle worker queued and ran each"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE started IS DISTINCT FROM created AND id > 1")" 0 \
	"each was claimed in the transaction that queued it"

# ------------------------------------------------------------ wait => false wakes it
job=$(psql_q "SELECT tenant_backup.tenant_backup('p3')")
wait_for 100 0.1 succeeded psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job" >/dev/null
ok "$(psql_q "SELECT CASE WHEN started - created < interval '3 s' THEN 0 ELSE 1 END FROM tenant_backup.jobs WHERE id = $job")" \
	"a job queued with wait => false starts at once (naptime is 10 s)"
is "$(started job) $(rows_of "$job")" "1 3000" "in the idle worker, with its own rows"

# ------------------------------------------------------------ max_workers holds
first=$(psql_q "SELECT max(id) FROM tenant_backup.jobs")
{
	echo "BEGIN;"
	for i in 1 2 3 4; do echo "SELECT tenant_backup.tenant_backup('p$i');"; done
	echo "COMMIT;"
} | "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 >/dev/null
most=0
for _ in $(seq 600); do
	n=$(job_workers)
	[ "$n" -gt "$most" ] && most=$n
	[ "$(queue_idle)" = 0 ] && break
	sleep 0.05
done
is "$(psql_q "SELECT string_agg(state, ',' ORDER BY id) FROM tenant_backup.jobs WHERE id > $first")" \
	"succeeded,succeeded,succeeded,succeeded" "four backups queued at once all succeed"
ok $((most > 2)) "never more than max_workers (2) job workers, idle ones included (at most $most)"

# ------------------------------------------------------------ a restore takes an idle worker's place
wait_for 50 0.1 2 job_workers >/dev/null
PGDATABASE=p1 psql_q "INSERT INTO t VALUES (-1)" >/dev/null
before=$(started job)
restore=$(psql_q "SELECT max(j) FROM tenant_backup.tenant_restore('p1', wait => true) j")
is "$(psql_q "SELECT kind, state FROM tenant_backup.jobs WHERE id = $restore")" "restore|succeeded" \
	"a restore with both max_workers places held by idle workers succeeds"
is "$(PGDATABASE=p1 psql_q "SELECT count(*), min(g) FROM t")" "1000|1" "p1 holds what its backup held"
is "$(grep -c "starting background worker process \"tenant_backup job $restore\"" "$D/pg/server.log") $(($(started job) - before))" \
	"1 1" "the launcher started a worker of its own for it"

# ------------------------------------------------------------ a worker terminated holding a request
wait_for 100 0.1 2 idle_count >/dev/null
workers=$(idle_workers)
like "$workers" '^[0-9]+' "workers are idle"
requests=$(started request)
kill -STOP $workers
"$PG_BIN/psql" -X -A -t -q -c "SELECT max(j) FROM tenant_backup.tenant_backup('p4', wait => true) j" \
	>"$D/call.out" 2>&1 &
call=$!
# The call waits on the stopped worker it handed the request to (wait event Extension).
wait_for 100 0.1 1 psql_q "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%tenant_backup(''p4'', wait => true)%'
	AND pid <> pg_backend_pid() AND wait_event_type = 'Extension'" >/dev/null
ok $? "the call waits for the idle worker it handed its request to"
is "$(started request)" "$requests" "no request worker was started for it so far"
kill -TERM $workers
kill -CONT $workers
wait "$call"
ok $? "once that worker was terminated the call still succeeds"
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $(cat "$D/call.out")") $(rows_of "$(cat "$D/call.out")")" \
	"succeeded 4000" "with p4's backup"
is "$(($(started request) - requests))" 1 "queued by a request worker started for it"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE request IS NOT NULL AND tenant = 'p4'")" 1 \
	"and queued once"

# ------------------------------------------------------------ a lock a session holds
# Any session may take the advisory lock _enqueue takes for a source: an idle worker
# (it counts in max_workers) waits 2 s for it at most, then hands the request back.
wait_for 100 0.1 1 idle_count >/dev/null
src=$(psql_q "SELECT id FROM tenant_backup.sources WHERE tenant = 'p3'")
exec {advfd}> >("$PG_BIN/psql" -X -q >/dev/null 2>&1)
echo "SELECT pg_advisory_lock(hashtext('tenant_backup._enqueue'), hashtext('$src')); SELECT pg_sleep(60) AS holds_enqueue;" >&"$advfd"
wait_for 50 0.1 1 psql_q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted" >/dev/null
requests=$(started request)
"$PG_BIN/psql" -X -A -t -q -c "SELECT max(j) FROM tenant_backup.tenant_backup('p3', wait => true) j" \
	>"$D/call3.out" 2>&1 &
call=$!
wait_for 100 0.1 $((requests + 1)) started request >/dev/null
ok $? "an idle worker that would wait for a lock a session holds hands the request back to a request worker"
is "$(wait_for 50 0.1 1 idle_count)" 1 "and is idle again"
job=$(psql_q "SELECT max(j) FROM tenant_backup.tenant_backup('p1', wait => true) j")
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" succeeded "another tenant's call runs meanwhile"
psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%holds_enqueue%' AND pid <> pg_backend_pid()" \
	>/dev/null
exec {advfd}>&-
wait "$call"
ok $? "once the lock is free the waiting call succeeds"
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $(cat "$D/call3.out")")" succeeded "with p3's backup"

# ------------------------------------------------------------ worker_idle_time
psql_q "ALTER SYSTEM SET tenant_backup.worker_idle_time = '1s'" "SELECT pg_reload_conf()" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('p2', wait => true)" >/dev/null
is "$(wait_for 100 0.1 0 job_workers)" 0 "after worker_idle_time (1 s) without a job no job worker is left"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE state <> 'succeeded'")" 0 "every job succeeded"
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" t "the audit chains verify"
done_testing
