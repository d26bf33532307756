#!/bin/bash
# One tenant's server or locks never hold the others back: a source that accepts TCP
# and never answers fails its backup within tenant_backup.connect_timeout, a worker
# waiting there shows what it waits for in pg_stat_activity and ends at once on
# pg_terminate_backend; a table held ACCESS EXCLUSIVE fails the dump within
# tenant_backup.lock_timeout naming the table, a job past tenant_backup.job_timeout
# fails saying so and leaves no pg_dump behind; meanwhile another tenant's backup completes.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

tb_scratch_storage
LISTEN_PORT=$(free_port)

pg_start_tb "$D/pg" "$(free_port)" "tenant_backup.max_workers = 2
tenant_backup.naptime = 200
tenant_backup.connect_timeout = 3
tenant_backup.lease_timeout = 5
tenant_backup.retry_delays = '1 hour'"

# A server that accepts every connection and never says a word.
/usr/bin/python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
held = []
while True:
    held.append(s.accept()[0])' "$LISTEN_PORT" &
listener=$!
on_exit "kill $listener 2>/dev/null"

# The outcome of job's first attempt: status|error of its backup row, once it ended.
attempt() { psql_q "SELECT status || '|' || coalesce(error, '') FROM tenant_backup.backups WHERE job_id = $1 AND id > $last AND status <> 'running' ORDER BY id LIMIT 1"; }
attempt_wait() { # JOB SECONDS: waits for the attempt's end, prints it
	local got="" last=${BACKUPS_BEFORE:-0}
	for _ in $(seq $(($2 * 10))); do
		got=$(attempt "$1")
		[ -n "$got" ] && break
		sleep 0.1
	done
	echo "$got"
}
backup_completes() { # TENANT: a backup of TENANT run now ends complete
	local job BACKUPS_BEFORE
	BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
	job=$(psql_q "SELECT tenant_backup.tenant_backup('$1')")
	attempt_wait "$job" 60 | cut -d'|' -f1
}

psql_q "CREATE DATABASE fine_db" "CREATE DATABASE lock_db" >/dev/null
PGDATABASE=fine_db psql_q "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g" >/dev/null
PGDATABASE=lock_db psql_q "CREATE TABLE ledger (id int)" "INSERT INTO ledger VALUES (1)" >/dev/null
for t in stuck hung fine locked; do psql_q "SELECT tenant_backup.tenant_create('$t')" >/dev/null; done
psql_q "SELECT tenant_backup.tenant_add_database('stuck', 'postgres', 'host=127.0.0.1 port=$LISTEN_PORT dbname=app user=postgres')" \
	"SELECT tenant_backup.tenant_add_database('hung', 'postgres', 'host=127.0.0.1 port=$LISTEN_PORT dbname=app user=postgres password=hunter2secret connect_timeout=300')" \
	"SELECT tenant_backup.tenant_add_database('fine', 'postgres', 'fine_db')" \
	"SELECT tenant_backup.tenant_add_database('locked', 'postgres', 'lock_db')" >/dev/null

# ------------------------------------------------------------ a server that never answers

start=$(date +%s)
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('stuck')")
got=$(attempt_wait "$job" 30)
elapsed=$(($(date +%s) - start))
like "$got" '^failed\|could not connect to the database of tenant "stuck": the server did not complete the connection within 3 s \(connect_timeout\)$' \
	"a backup of a server that never answers fails, saying it did not answer within tenant_backup.connect_timeout"
ok $([ "$elapsed" -le 12 ] && echo 0 || echo 1) "within the timeout (3 s), not forever (took ${elapsed} s)"

BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('hung')")
activity() { psql_q "SELECT pid || '|' || wait_event_type || '|' || query FROM pg_stat_activity WHERE query LIKE 'tenant_backup: connecting to %tenant \"hung\"'"; }
for _ in $(seq 100); do
	row=$(activity)
	[ -n "$row" ] && break
	sleep 0.1
done
pid=${row%%|*}
like "$row" "^[0-9]+\|Extension\|tenant_backup: connecting to database \"app\" at 127.0.0.1:$LISTEN_PORT for the backup of tenant \"hung\"$" \
	"a worker waiting for that server says in pg_stat_activity where it connects, for whom, waiting on the latch"
unlike "$(psql_q "SELECT string_agg(query, ' ') FROM pg_stat_activity")" hunter2secret "and shows no password"
is "$(backup_completes fine)" complete "meanwhile another tenant's backup completes"
sleep 6
is "$(psql_q "SELECT state || ',' || attempts FROM tenant_backup.jobs WHERE id = $job"),$(activity | cut -d'|' -f1)" "running,1,$pid" \
	"past tenant_backup.lease_timeout (5 s) the waiting worker still holds its job's lease: no second attempt started beside it"
psql_q "SELECT pg_terminate_backend($pid)" >/dev/null
gone() { psql_q "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid"; }
is "$(wait_for 20 0.1 0 gone)" 0 "pg_terminate_backend ends the waiting worker at once"
# Its job would be re-leased when the lease runs out: cancelled, it holds no worker after.
psql_q "SELECT tenant_backup.tenant_cancel($job)" >/dev/null
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" failed "its job, cancelled, did not succeed"

# ------------------------------------------------------------ a table held ACCESS EXCLUSIVE

mkfifo "$D/holder.in"
PGDATABASE=lock_db "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 <"$D/holder.in" >"$D/holder.out" 2>&1 &
holder=$!
exec {holder_fd}>"$D/holder.in"
echo "BEGIN; LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE; SELECT 'locked';" >&"$holder_fd"
wait_for 50 0.1 locked grep -o locked "$D/holder.out" >/dev/null
on_exit "kill $holder 2>/dev/null"

psql_q "ALTER SYSTEM SET tenant_backup.lock_timeout = '2s'" "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
start=$(date +%s)
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('locked')")
is "$(backup_completes fine)" complete "while the lock is held, another tenant's backup completes"
got=$(attempt_wait "$job" 30)
elapsed=$(($(date +%s) - start))
like "$got" '^failed\|pg_dump child process exited with exit code 1: pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout \(Query was: LOCK TABLE public\.ledger IN ACCESS SHARE MODE\): waited longer than tenant_backup\.lock_timeout \(2s\) for a lock$' \
	"the held table's backup fails naming the table and tenant_backup.lock_timeout"
ok $([ "$elapsed" -le 15 ] && echo 0 || echo 1) "within the lock timeout, not forever (took ${elapsed} s)"
# Queued again for a retry an hour later (tenant_backup.retry_delays): a new request gets a new job.
psql_q "SELECT tenant_backup.tenant_cancel($job)" >/dev/null

psql_q "ALTER SYSTEM SET tenant_backup.lock_timeout = 0" "ALTER SYSTEM SET tenant_backup.job_timeout = '3s'" \
	"SELECT pg_reload_conf()" >/dev/null
sleep 0.5
start=$(date +%s)
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('locked')")
got=$(attempt_wait "$job" 30)
elapsed=$(($(date +%s) - start))
is "$got" "failed|job $job of tenant \"locked\" exceeded tenant_backup.job_timeout (3s)" \
	"with no lock timeout, the job fails at tenant_backup.job_timeout, saying so"
ok $([ "$elapsed" -le 15 ] && echo 0 || echo 1) "within the job's time limit (took ${elapsed} s)"
dumps() { PGDATABASE=lock_db psql_q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"; }
is "$(wait_for 30 0.1 0 dumps)" 0 "its pg_dump was ended, not left waiting for the lock"
is "$(find "$D/store/locked" -name '*.tbk' 2>/dev/null | wc -l)" 0 "nothing was stored for the held tenant"
psql_q "SELECT tenant_backup.tenant_cancel($job)" >/dev/null

echo "COMMIT;" >&"$holder_fd"
exec {holder_fd}>&-
wait "$holder"
psql_q "ALTER SYSTEM RESET tenant_backup.job_timeout" "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
is "$(backup_completes locked)" complete "once the lock is gone, its backup completes"

done_testing
