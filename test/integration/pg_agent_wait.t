#!/bin/bash
# wait => true on a job that only an agent can run: when no agent for the job's engine
# was seen within tenant_backup.agent_wait (counted from the agents' last heartbeat or
# the start of the wait, whichever is newer) the call fails naming the engine and how
# long none was seen, instead of waiting forever; the job stays queued. While it waits
# it keeps checking: heartbeats push the deadline on. 0 waits forever; PostgreSQL
# tenants, which the extension's own workers back up, are not concerned.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"

scratch_dir
agent_bed_setup "$(free_port)" agent-wait
# A MySQL source no agent will reach: nothing here runs one.
psql_q "SELECT tenant_backup.tenant_create('acme')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'mysql', 'mysql://tb:pw@127.0.0.1:1/acme_shop')" \
	"CREATE DATABASE pg_shop" "SELECT tenant_backup.tenant_create('pgco')" \
	"SELECT tenant_backup.tenant_add_database('pgco', 'postgres', 'pg_shop')" >/dev/null ||
	pg_bail "$D/pg/server.log" "could not set up the tenants"

is "$(psql_q "SHOW tenant_backup.agent_wait")" 10min "agent_wait is 10 minutes by default"

# Runs a wait => true backup of acme's MySQL database with the given agent_wait, at
# most 60 s; prints the seconds it took and psql's error message.
wait_backup() { # AGENT_WAIT
	local started=$SECONDS out
	out=$(PGOPTIONS="-c tenant_backup.agent_wait=$1 -c statement_timeout=60s" \
		psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql', wait => true)" 2>&1)
	printf '%s %s' "$((SECONDS - started))" "$(printf '%s' "$out" | sed -n 's/^.*ERROR:  //p' | head -1)"
}
queued() { psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'acme' AND state = 'queued'"; }

got=$(wait_backup 2s)
like "$got" '^[2-5] no agent for mysql has ever been seen \(waited [2-5] s\)$' \
	"no agent ever seen: wait => true fails after agent_wait (2 s) naming the engine"
is "$(queued)" 1 "its job stays queued for when an agent comes"
out=$(PGOPTIONS="-c tenant_backup.agent_wait=1" psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql', wait => true)" 2>&1)
like "$out" 'DETAIL:  Job [0-9]+ of tenant "acme" stays queued and runs once an agent for mysql connects' \
	"the detail names the job and the tenant"
like "$out" 'HINT:  Start tenant-backup-agent-mysql' "the hint says which agent to start"

# An agent for mysql last heard from an hour ago.
psql_q "INSERT INTO tenant_backup.agent_registry (name, engines, last_seen) VALUES ('old-mysql', '{mysql}', now() - interval '1 hour')"
got=$(wait_backup 2s)
like "$got" '^[2-5] no agent for mysql has been seen for 60 min$' \
	"an agent silent for an hour: the call still waits agent_wait for one, then fails saying for how long"

# Heartbeats every half second for 6 s: the wait goes on through them, then ends 2 s after the last.
(for _ in $(seq 12); do
	psql_q "UPDATE tenant_backup.agent_registry SET last_seen = now() WHERE name = 'old-mysql'"
	sleep 0.5
done) &
beating=$!
got=$(wait_backup 2s)
wait $beating
like "$got" '^([7-9]|1[0-2]) no agent for mysql has been seen for [2-5] s$' \
	"while an agent keeps being seen the call keeps waiting; it fails agent_wait after the last heartbeat"

got=$(PGOPTIONS="-c tenant_backup.agent_wait=0 -c statement_timeout=3s" \
	psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql', wait => true)" 2>&1)
like "$got" 'canceling statement due to statement timeout' "agent_wait = 0 waits for as long as it takes"

got=$(PGOPTIONS="-c tenant_backup.agent_wait=1" psql_q "SELECT count(*) FROM tenant_backup.tenant_backup('pgco', wait => true)" 2>&1)
is "$got" 1 "a PostgreSQL tenant's wait => true backup needs no agent and succeeds"

done_testing
