#!/bin/bash
# The MySQL agent reports its jobs' phases through agent_phase: a backup whose dump is
# slow shows "dump" in job_log and status while it runs; every phase change of a
# backup, an in-place restore and a drill is recorded (by a test trigger) in order,
# and a finished job keeps its last phase.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/mariadb.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/mysql_tenants.sh"

scratch_dir
mysql_tenants_setup "$(free_port)" "$(free_port)"

psql_q "CREATE TABLE public.phase_log (seq serial, job_id bigint, phase text)" \
	"CREATE FUNCTION public.phase_logged() RETURNS trigger LANGUAGE plpgsql AS \$\$
	 BEGIN INSERT INTO public.phase_log (job_id, phase) VALUES (NEW.id, NEW.phase); RETURN NEW; END \$\$" \
	"CREATE TRIGGER phase_logged AFTER UPDATE OF phase ON tenant_backup.jobs FOR EACH ROW
	 WHEN (NEW.phase IS DISTINCT FROM OLD.phase) EXECUTE FUNCTION public.phase_logged()" >/dev/null
phases() { psql_q "SELECT string_agg(phase, ' ' ORDER BY seq) FROM public.phase_log WHERE job_id = $1"; }
job_state() { psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $1"; }

# ------------------------------------------------------------ a running backup

SLOW_DUMP_SECONDS=6 agent_start phaser --poll-seconds 1
job=$(psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql')")
got=$(wait_for 60 0.25 "running dump" psql_q "SELECT state || ' ' || coalesce(phase, '') FROM tenant_backup.job_log WHERE job_id = $job")
is "$got" "running dump" "while its dump runs, job_log shows the agent's backup in phase dump"
is "$(psql_q "SELECT running_phase || ' ' || running_on FROM tenant_backup.status WHERE tenant = 'acme'")" "dump phaser" \
	"status shows the phase and the agent"
is "$(wait_for 60 0.5 succeeded job_state "$job")" succeeded "the backup succeeds"
is "$(phases "$job")" "connect dump commit" "a backup goes through connect, dump, commit"
is "$(psql_q "SELECT phase FROM tenant_backup.job_log WHERE job_id = $job")" commit "and keeps its last phase"
agent_stop "$AGENT_PID"

# ------------------------------------------------------------ restore and drill

agent_start phaser2 --poll-seconds 1
before=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.jobs")
psql_q "SELECT tenant_backup.tenant_restore('acme')" >/dev/null
job=$(psql_q "SELECT max(id) FROM tenant_backup.jobs WHERE kind = 'restore' AND id > $before")
is "$(job_state "$job")" succeeded "an in-place restore succeeds"
is "$(phases "$job")" "connect load swap" "it goes through connect, load, swap"

before=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.jobs")
is "$(psql_q "SELECT tenant_backup.tenant_restore_drill('acme')->>'ok'")" true "a drill succeeds"
job=$(psql_q "SELECT max(id) FROM tenant_backup.jobs WHERE kind = 'drill' AND id > $before")
is "$(phases "$job")" "connect load compare cleanup" "it goes through connect, load, compare, cleanup"
agent_stop "$AGENT_PID"
unlike "$(cat "$D/phaser.log" "$D/phaser2.log")" "reporting phase" "the agents logged no failed phase report"

done_testing
