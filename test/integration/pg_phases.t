#!/bin/bash
# The job worker reports each job's phase in tenant_backup.jobs.phase (and so in
# job_log and status): a backup held by a lock shows "dump" while it waits, in
# pg_stat_activity too; every phase change of a backup, an in-place restore, a
# restore into a target and a drill is recorded (by a test trigger) in order; a
# finished job keeps its last phase, so a failed one shows where it failed.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

tb_scratch_storage

pg_start "$D/pg" "$(free_port)" "$TB_CONF
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5
tenant_backup.retry_delays = '1 hour'"
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE acme_db" >/dev/null ||
	pg_bail "$D/pg/server.log" "could not set up the cluster"
PGDATABASE=acme_db psql_q "CREATE TABLE orders (id int PRIMARY KEY)" \
	"INSERT INTO orders SELECT generate_series(1, 1000)" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('acme')" "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme_db')" \
	"ALTER TABLE tenant_backup.jobs ALTER COLUMN max_attempts SET DEFAULT 1" >/dev/null

# Every phase a job goes through, in order: a trigger of the test's own on the catalog.
psql_q "CREATE TABLE public.phase_log (seq serial, job_id bigint, phase text)" \
	"CREATE FUNCTION public.phase_logged() RETURNS trigger LANGUAGE plpgsql AS \$\$
	 BEGIN INSERT INTO public.phase_log (job_id, phase) VALUES (NEW.id, NEW.phase); RETURN NEW; END \$\$" \
	"CREATE TRIGGER phase_logged AFTER UPDATE OF phase ON tenant_backup.jobs FOR EACH ROW
	 WHEN (NEW.phase IS DISTINCT FROM OLD.phase) EXECUTE FUNCTION public.phase_logged()" >/dev/null
phases() { psql_q "SELECT string_agg(phase, ' ' ORDER BY seq) FROM public.phase_log WHERE job_id = $1"; }
job_end() { # JOB: waits for its end, prints state
	wait_for 120 0.5 x psql_q "SELECT CASE WHEN state IN ('succeeded', 'failed') THEN 'x' END FROM tenant_backup.jobs WHERE id = $1" >/dev/null
	psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $1"
}

# ------------------------------------------------------------ a running backup shows its phase

mkfifo "$D/holder.in"
PGDATABASE=acme_db "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 <"$D/holder.in" >"$D/holder.out" 2>&1 &
holder=$!
exec {holder_fd}>"$D/holder.in"
on_exit "kill $holder 2>/dev/null"
echo "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT 'locked';" >&"$holder_fd"
wait_for 50 0.1 locked grep -o locked "$D/holder.out" >/dev/null

job=$(psql_q "SELECT tenant_backup.tenant_backup('acme')")
got=$(wait_for 60 0.5 "running dump" psql_q "SELECT state || ' ' || coalesce(phase, '') FROM tenant_backup.job_log WHERE job_id = $job")
is "$got" "running dump" "while pg_dump waits for the lock, job_log shows the backup running in phase dump"
is "$(psql_q "SELECT running_phase FROM tenant_backup.status WHERE tenant = 'acme'")" dump \
	"status shows the running job's phase"
is "$(psql_q "SELECT count(*) FROM pg_stat_activity WHERE query = 'tenant_backup: backup of tenant \"acme\" (postgres): dump'")" 1 \
	"pg_stat_activity shows the job worker's phase"
echo "COMMIT; SELECT 'released';" >&"$holder_fd"
is "$(job_end "$job")" succeeded "once the lock is released the backup succeeds"
is "$(phases "$job")" "connect dump commit" "a backup goes through connect, dump, commit"
is "$(psql_q "SELECT phase FROM tenant_backup.job_log WHERE job_id = $job")" commit "a finished backup keeps its last phase"

# ------------------------------------------------------------ a failed job keeps the phase it failed in

echo "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT 'locked again';" >&"$holder_fd"
wait_for 50 0.1 "locked again" grep -o "locked again" "$D/holder.out" >/dev/null
psql_q "ALTER SYSTEM SET tenant_backup.lock_timeout = '1s'" "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
job=$(psql_q "SELECT tenant_backup.tenant_backup('acme')")
is "$(job_end "$job")" failed "a backup that waits longer than lock_timeout fails"
is "$(psql_q "SELECT phase FROM tenant_backup.job_log WHERE job_id = $job")" dump "and shows it failed in phase dump"
echo "COMMIT;" >&"$holder_fd"
psql_q "ALTER SYSTEM RESET tenant_backup.lock_timeout" "SELECT pg_reload_conf()" >/dev/null

# ------------------------------------------------------------ restores and drills

before=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.jobs")
psql_q "SELECT tenant_backup.tenant_restore('acme')" >/dev/null
job=$(psql_q "SELECT max(id) FROM tenant_backup.jobs WHERE kind = 'restore' AND id > $before")
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" succeeded "an in-place restore succeeds"
is "$(phases "$job")" "authenticate connect load index swap" \
	"it goes through authenticate, connect, load, index (pg_restore's post-data), swap"

before=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.jobs")
psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_copy')" >/dev/null
job=$(psql_q "SELECT max(id) FROM tenant_backup.jobs WHERE kind = 'restore' AND id > $before")
is "$(phases "$job")" "authenticate connect load index" "a restore into a target has no swap: it ends at index"

before=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.jobs")
is "$(psql_q "SELECT tenant_backup.tenant_restore_drill('acme')->>'ok'")" true "a drill succeeds"
job=$(psql_q "SELECT max(id) FROM tenant_backup.jobs WHERE kind = 'drill' AND id > $before")
is "$(phases "$job")" "authenticate connect load index compare cleanup" \
	"it goes through authenticate, connect, load, index, compare, cleanup"

before=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.jobs")
psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_copy', wait => false)" >/dev/null
job=$(psql_q "SELECT max(id) FROM tenant_backup.jobs WHERE kind = 'restore' AND id > $before")
is "$(job_end "$job")" failed "a restore into a database that exists fails"
is "$(psql_q "SELECT phase FROM tenant_backup.job_log WHERE job_id = $job")" connect \
	"in phase connect, where it found the database there"

done_testing
