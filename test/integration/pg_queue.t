#!/bin/bash
# The job queue under load and faults: 200 duplicate requests queue one job; with one
# worker a second tenant's job runs second, not behind the first tenant's queue; a
# failing source backs off (tenant_backup.retry_delays) and gives up saying so; a
# finish racing the launcher's reclaim does not deadlock; an idle transaction after
# one tenant's API call does not stall another tenant's (the audit chain is per tenant).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

tb_scratch_storage

pg_start_tb "$D/pg" "$(free_port)" "tenant_backup.max_workers = 1
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5
tenant_backup.retry_delays = '3 s, 6 s'"

job_state() { psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $1"; }
# A psql session NAME that runs SQL and then stays in its transaction until
# session_commit NAME (it reads from a FIFO held open on an fd of this shell).
session_begin() { # NAME SQL
	local fd
	mkfifo "$D/$1.in"
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 <"$D/$1.in" >"$D/$1.out" 2>&1 &
	eval "session_pid_$1=$!"
	exec {fd}>"$D/$1.in"
	eval "session_fd_$1=$fd"
	echo "BEGIN; $2; SELECT 'in transaction';" >&"$fd"
	wait_for 50 0.1 "in transaction" grep -o "in transaction" "$D/$1.out" >/dev/null
}
session_commit() { # NAME
	local fd pid
	eval "fd=\$session_fd_$1 pid=\$session_pid_$1"
	echo "COMMIT;" >&"$fd"
	exec {fd}>&-
	wait "$pid"
}
queue_idle() { psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE state IN ('queued', 'running')"; }

# ------------------------------------------------------------ 200 duplicate requests

for db in bigco_1 bigco_2 bigco_3 bigco_4 bigco_5 globex; do
	psql_q "CREATE DATABASE $db" "SELECT 1" >/dev/null
	PGDATABASE=$db psql_q "CREATE TABLE t AS SELECT g FROM generate_series(1, 20000) g" >/dev/null
done
psql_q "SELECT tenant_backup.tenant_create('bigco')" "SELECT tenant_backup.tenant_create('globex')" \
	"SELECT tenant_backup.tenant_add_database('globex', 'postgres', 'globex')" >/dev/null
for i in 1 2 3 4 5; do psql_q "SELECT tenant_backup.tenant_add_database('bigco', 'postgres', 'bigco_$i')" >/dev/null; done

# All in one transaction, so that no worker starts before every request is queued.
{
	echo "BEGIN;"
	for _ in $(seq 200); do echo "SELECT tenant_backup.tenant_backup('bigco');"; done
	echo "SELECT tenant_backup.tenant_backup('globex');"
	echo "COMMIT;"
} | "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 >"$D/requests.out"
ok $? "200 backup requests of bigco and one of globex in one transaction"
is "$(wc -l <"$D/requests.out")" 1001 "each request returned its jobs (200 x 5 databases + 1)"
is "$(sort -u "$D/requests.out" | wc -l)" 6 "every bigco request returned the same five jobs"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'bigco'")" 5 \
	"one job per database of bigco was queued, not 1000"

# ------------------------------------------------------------ round-robin between tenants

is "$(wait_for 300 0.2 0 queue_idle)" 0 "every queued job finished"
is "$(psql_q "SELECT string_agg(state, ',' ORDER BY id) FROM tenant_backup.jobs")" \
	"succeeded,succeeded,succeeded,succeeded,succeeded,succeeded" "and succeeded"
is "$(psql_q "SELECT string_agg(tenant, ',' ORDER BY started, id) FROM tenant_backup.jobs")" \
	"bigco,globex,bigco,bigco,bigco,bigco" "with one worker, globex's job ran second, not after bigco's five"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs a JOIN tenant_backup.jobs b ON a.source_id = b.source_id
			  AND a.id < b.id AND a.finished > b.started")" 0 "no database had two jobs running at once"

# ------------------------------------------------------------ retries back off, then give up

psql_q "CREATE DATABASE doomed" "SELECT tenant_backup.tenant_create('flaky')" \
	"SELECT tenant_backup.tenant_add_database('flaky', 'postgres', 'doomed')" "DROP DATABASE doomed" >/dev/null
job=$(psql_q "SELECT tenant_backup.tenant_backup('flaky')")
is "$(wait_for 100 0.1 queued,1 psql_q "SELECT state || ',' || attempts FROM tenant_backup.jobs WHERE id = $job")" \
	queued,1 "the first attempt of a backup of a dropped database fails and the job is queued again"
like "$(psql_q "SELECT round(extract(epoch FROM not_before - finished_at))
				FROM tenant_backup.jobs, LATERAL (SELECT max(at) AS finished_at FROM tenant_backup.audit
				WHERE action = 'backup failed' AND (detail->>'job')::bigint = $job) a WHERE id = $job")" '^3$' \
	"jobs.not_before shows the next attempt 3 s (the first retry delay) after the failure"
is "$(wait_for 200 0.1 failed job_state "$job")" failed "after three attempts the job failed"
like "$(psql_q "SELECT error FROM tenant_backup.jobs WHERE id = $job")" '^gave up after 3 attempts: .+' \
	"its error says it gave up after 3 attempts, and why"
like "$(psql_q "SELECT string_agg(floor(extract(epoch FROM at - lag))::text, ',' ORDER BY id)
			  FROM (SELECT id, at, lag(at) OVER (ORDER BY id) FROM tenant_backup.audit
					WHERE action = 'backup failed' AND (detail->>'job')::bigint = $job) a WHERE lag IS NOT NULL")" \
	'^[34],[67]$' "the attempts were 3 s and then 6 s apart (tenant_backup.retry_delays), not milliseconds"
is "$(psql_q "SELECT not_before IS NULL FROM tenant_backup.jobs WHERE id = $job")" t "a failed job has no next retry"

# ------------------------------------------------------------ a finish racing the reclaim

# An agent's job whose lease runs out while its successful finish waits for the backup
# row: the launcher's reclaim and the finish must take the rows in the same order
# (jobs, then backups), or one of them dies of a deadlock.
psql_q "SELECT tenant_backup.tenant_add_database('globex', 'mysql', 'mysql://app@db.example/globex')" \
	"SELECT tenant_backup.agent_hello('racer', '{mysql}')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('globex', 'mysql')" >/dev/null
IFS='|' read -r job lease < <(psql_q "SELECT job_id, lease FROM tenant_backup.agent_claim('racer', 'mysql', 5)")
backup=$(psql_q "SELECT id FROM tenant_backup.backups WHERE job_id = $job")
session_begin holder "SELECT 1 FROM tenant_backup.backups WHERE id = $backup FOR UPDATE"
result="{\"object\": \"globex/mysql/x.tbk\", \"sha256\": \"$(printf '0%.0s' $(seq 64))\", \"bytes_in\": 1, \"bytes_stored\": 1, \"key_id\": \"0000000000000000\"}"
psql_q "SELECT tenant_backup._job_finish($job, '$lease', NULL, '$result')" >"$D/finish.out" 2>&1 &
finisher=$!
# The lease (5 s) runs out while the finish waits; the launcher's reclaim runs every 0.2 s.
sleep 6.5
session_commit holder
wait "$finisher"
ok $? "the finish completes"
is "$(cat "$D/finish.out")" t "and held the lease"
is "$(psql_q "SELECT j.state || ',' || b.status FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.job_id = j.id
			  WHERE j.id = $job")" "succeeded,complete" "the job succeeded with its backup complete"
unlike "$(cat "$D/pg/server.log")" "deadlock detected" "no deadlock in the server log"
unlike "$(cat "$D/pg/server.log")" "launcher.*exited with exit code" "the launcher did not die"

# ------------------------------------------------------------ an idle transaction after an API call

# pg_cron or an application leaves its transaction open after bigco's call: only
# bigco's audited actions wait for it (its audit chain's head is locked), not globex's.
session_begin idle "SELECT tenant_backup.tenant_set_schedule('bigco', '2 days')"
start=$(date +%s%N)
PGOPTIONS="-c statement_timeout=1s" psql_q "SELECT tenant_backup.tenant_set_schedule('globex', '2 days') IS NOT NULL" \
	"SELECT count(*) FROM tenant_backup.tenant_backup('globex', 'postgres')" >"$D/globex.out" 2>&1
ok $? "globex's API calls complete while bigco's transaction is idle"
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
ok $((elapsed_ms >= 1000)) "within 1 s (${elapsed_ms} ms)"
like "$(PGOPTIONS="-c statement_timeout=1s" psql_q "SELECT tenant_backup.tenant_set_schedule('bigco', '3 days')" 2>&1)" \
	"statement timeout" "bigco's own next audited call waits for it (its chain is serialised)"
session_commit idle
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" t "the audit chains verify after all of this"

done_testing
