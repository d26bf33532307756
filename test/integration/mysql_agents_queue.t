#!/bin/bash
# Many agents on one queue, and agents that fail: two agents share 20 jobs, each done
# exactly once; kill -9 of an agent mid-dump (its lease expires, another agent does
# the job); an agent stopped past its lease cannot report over the newer attempt;
# SIGTERM gives the job back; the control plane restarts while an agent idles and while
# it works. Storage never keeps a completed object the catalog does not know.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/mariadb.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/mysql_tenants.sh"
TB_BIN=$(dirname "$TB")

scratch_dir
mysql_tenants_setup "$(free_port)" "$(free_port)"

runner() { psql_q "SELECT coalesce(split_part(lease_owner, ':', 2), state) FROM tenant_backup.jobs WHERE id = $1"; }
job_state() { psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $1"; }
backups_of() { psql_q "SELECT string_agg(status, ',' ORDER BY status) FROM tenant_backup.backups WHERE job_id = $1"; }
# The dump wrapper of a slow agent writes its PID before sleeping: stop it when done.
kill_slow_dump() { [ -f "$D/dump/wrapper.pid" ] && kill -KILL "$(cat "$D/dump/wrapper.pid")" 2>/dev/null; rm -f "$D/dump/wrapper.pid"; }
sed -i 's|^sleep |[ -n "${SLOW_DUMP_SECONDS:-}" ] \&\& echo $$ >"'"$D"'/dump/wrapper.pid"; exec sleep |' "$D/dump-wrapper"
on_exit kill_slow_dump

# --- two agents, one queue of 20 jobs: one per database (the queue keeps one queued backup
# of a database, whatever the requests), so 17 more tenants with a database each
for i in $(seq 4 20); do
	my_q "CREATE DATABASE q$i" "CREATE TABLE q$i.t (id INT)"
	psql_q "SELECT tenant_backup.tenant_create('q$i')" \
		"SELECT tenant_backup.tenant_add_database('q$i', 'mysql', 'mysql://tbagent:$MY_PASSWORD_URI@127.0.0.1:$MARIADB_PORT/q$i')" \
		>/dev/null
done
for t in acme globex initech q{4..20}; do
	psql_q "SELECT tenant_backup.tenant_backup('$t', 'mysql')" >/dev/null
done
agent_once q1 & p1=$!
agent_once q2 & p2=$!
wait $p1 && wait $p2
ok $? "two agents with --once drain the queue and exit 0"
is "$(psql_q "SELECT count(*) FILTER (WHERE state = 'succeeded'), sum(attempts) FROM tenant_backup.jobs")" "20|20" \
	"all 20 jobs succeeded, each in one attempt"
is "$(psql_q "SELECT count(*), count(DISTINCT job_id), count(*) FILTER (WHERE status = 'complete') FROM tenant_backup.backups")" \
	"20|20|20" "20 backups, one per job, all complete: none done twice"
is "$(psql_q "SELECT sum(jobs_done), bool_and(jobs_done > 0) FROM tenant_backup.agents WHERE name IN ('q1', 'q2')")" "20|t" \
	"both agents took jobs, 20 in all"

# --- kill -9 of an agent mid-dump
SLOW_DUMP_SECONDS=60 agent_start victim --lease-seconds 5
victim=$AGENT_PID
job=$(psql_q "SELECT tenant_backup.tenant_backup('initech', 'mysql')")
is "$(wait_for 100 0.1 victim runner "$job")" victim "the victim agent claims the job"
wait_for 100 0.1 1 bash -c "[ -f '$D/dump/wrapper.pid' ] && echo 1" >/dev/null
{ kill -KILL "$victim" && wait "$victim"; } 2>/dev/null
kill_slow_dump
agent_start rescuer --lease-seconds 5 --poll-seconds 1
rescuer=$AGENT_PID
is "$(wait_for 300 0.1 succeeded job_state "$job")" succeeded "after the lease expired another agent completed the job"
is "$(psql_q "SELECT attempts FROM tenant_backup.jobs WHERE id = $job")" 2 "in a second attempt"
is "$(backups_of "$job")" "complete,failed" "the catalog shows one complete backup and one failed attempt"

# --- an agent stopped past its lease cannot report over the newer attempt
SLOW_DUMP_SECONDS=3 agent_start sleepy --lease-seconds 5
sleepy=$AGENT_PID
kill -STOP "$rescuer"
job=$(psql_q "SELECT tenant_backup.tenant_backup('globex', 'mysql')")
is "$(wait_for 100 0.1 sleepy runner "$job")" sleepy "the sleepy agent claims the job"
kill -STOP "$sleepy"
kill -CONT "$rescuer"
is "$(wait_for 300 0.1 succeeded job_state "$job")" succeeded "its lease expired and the rescuer did the job"
kill -CONT "$sleepy"
wait_for 300 0.1 1 grep -c "lease was lost" "$D/sleepy.log" >/dev/null
ok $? "the sleepy agent, resumed, learns its lease was lost and stops"
is "$(backups_of "$job")" "complete,failed" "one complete backup (the rescuer's), the lost attempt failed"
is "$(psql_q "SELECT jobs_done FROM tenant_backup.agents WHERE name = 'sleepy'")" 0 "nothing was reported for the late attempt"
agent_stop "$sleepy"
kill_slow_dump

# --- SIGTERM gives a running job back
kill -STOP "$rescuer"
SLOW_DUMP_SECONDS=60 agent_start leaver --lease-seconds 30
leaver=$AGENT_PID
job=$(psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql')")
is "$(wait_for 100 0.1 leaver runner "$job")" leaver "the leaving agent claims the job"
wait_for 100 0.1 1 bash -c "[ -f '$D/dump/wrapper.pid' ] && echo 1" >/dev/null
start=$SECONDS
kill -TERM "$leaver"
wait "$leaver" 2>/dev/null
ok $? "on SIGTERM the agent exits 0"
[ $((SECONDS - start)) -le 5 ]
ok $? "promptly, without finishing the dump"
is "$(psql_q "SELECT state, attempts FROM tenant_backup.jobs WHERE id = $job")" "queued|0" \
	"the job is queued again and the attempt does not count"
like "$(grep 'stopped by a signal' "$D/leaver.log")" 'given back to the queue' "the log says the job was given back"
kill_slow_dump
kill -CONT "$rescuer"
is "$(wait_for 100 0.1 succeeded job_state "$job")" succeeded "another agent then does it"

# --- the control plane restarts while the agent idles, and while it works
pg_restart "$D/pg"
job=$(timeout 60 "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -c "SELECT tenant_backup.tenant_backup('initech', 'mysql', wait => true)")
ok $? "after a restart of the control plane the idle agent reconnects and does new work"
is "$(job_state "$job")" succeeded "the job succeeded"
like "$(grep -c 'connected to the control plane again' "$D/rescuer.log")" '^[1-9]' "the agent logged the reconnection"

agent_stop "$rescuer"
SLOW_DUMP_SECONDS=4 agent_start busy --lease-seconds 30 --poll-seconds 1
busy=$AGENT_PID
job=$(psql_q "SELECT tenant_backup.tenant_backup('globex', 'mysql')")
is "$(wait_for 100 0.1 busy runner "$job")" busy "the busy agent claims the job"
pg_restart "$D/pg"
is "$(wait_for 300 0.1 succeeded job_state "$job")" succeeded "the job finishes after the control plane came back mid-job"
obj=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE job_id = $job AND status = 'complete'")
"$TB" verify "$obj" >/dev/null 2>&1
ok $? "its object is in storage and verifies"
agent_stop "$busy"

# --- no orphans
(cd "$D/store" && find . -name '*.tbk' ! -name '.*' | sed 's|^\./||' | sort) >"$D/stored"
psql_q "SELECT object_key FROM tenant_backup.backups WHERE status = 'complete' ORDER BY 1" | sort >"$D/cataloged"
diff "$D/stored" "$D/cataloged" >&2
ok $? "storage holds exactly the objects of complete backups, none orphaned"

done_testing
