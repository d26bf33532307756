#!/bin/bash
# A crash of tenant-backup-agent-mysql (kill -9) at every step of an in-place restore
# (issue 16, item 12): before the load, mid-load, between taking the definitions off and
# the RENAME TABLE, between the RENAME TABLE and making the definitions again, and after.
# Each time the database is left working with the old or the restored data, or the next
# agent to touch it (a restore or a backup of the database) finishes the journaled
# swap (tenant_backup_agent.swap_journal on the tenant's server, MACed with the master
# key); a journal entry forged without the master key is refused.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/mariadb.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/mysql_tenants.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)
agent_use tenant-backup-agent-mysql

scratch_dir
mysql_tenants_setup "$(free_port)" "$(free_port)"
# acme gets a table without a trigger: a session's lock on it holds the RENAME.
my_db acme "CREATE TABLE ledger (id INT PRIMARY KEY, amount INT)" "INSERT INTO ledger VALUES (1, 10)"
# Sessions that hold a lock for a while record their connection id here, to be killed by it.
my_q "CREATE DATABASE holders" "CREATE TABLE holders.session (name VARCHAR(20), id BIGINT)"
hold() { # NAME SQL: runs SQL in the background in a session registered as NAME
	my_client acme -e "INSERT INTO holders.session VALUES ('$1', CONNECTION_ID()); $2" >/dev/null 2>&1 &
}
release() { # NAME: kills the sessions registered as NAME
	local id
	for id in $(my_q "SELECT id FROM holders.session WHERE name = '$1'"); do my_q "KILL $id" >/dev/null 2>&1; done
	my_q "DELETE FROM holders.session WHERE name = '$1'"
}
my_client acme <"$HERE/fixtures/mariadb_schema.sql"
ok $? "acme holds the canary tables and the realistic schema"
psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql')" >/dev/null
agent_once first
is "$(psql_q "SELECT status FROM tenant_backup.tenant_backups('acme')")" complete "acme is backed up"
my_db acme "UPDATE canary SET v = 'acme live'"

# The live database works: the canary row, its view, procedure and trigger; prints the row.
works() {
	local v t
	v=$(my_db acme "SELECT v FROM canary WHERE id = 1") &&
		[ "$(my_db acme "SELECT COUNT(*) FROM canary_view")" = 1 ] &&
		[ "$(my_db acme "CALL canary_count(@n)" "SELECT @n")" = 1 ] &&
		[ "$(my_db acme "SELECT COUNT(*) FROM orders")" = 2990 ] &&
		[ "$(my_db acme "SELECT COUNT(*) FROM \`Umsätze_pro_Kunde\`")" = 1200 ] &&
		t=$(my_db acme "SELECT touched FROM canary WHERE id = 1") &&
		[ "$(my_db acme "UPDATE canary SET v = v WHERE id = 1" "SELECT touched FROM canary WHERE id = 1")" = $((t + 1)) ] &&
		echo "$v"
}
is "$(works)" "acme live" "acme works before any restore"

# Runs a restore with a victim agent, kills it -9 once WAIT_CMD succeeds (with HOLD, a
# session statement run in the background first); the job's id in JOB.
crash_restore() { # NAME WAIT_CMD [HOLD_SQL]
	local name=$1 wait_cmd=$2 hold=${3:-} holder=""
	if [ -n "$hold" ]; then
		hold "$name" "$hold"
		holder=$!
		sleep 0.5
	fi
	agent_start "victim-$name" --lease-seconds 5
	JOB=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', wait => false)")
	for _ in $(seq 400); do
		eval "$wait_cmd" && break
		sleep 0.05
	done
	{ kill -KILL "$AGENT_PID" && wait "$AGENT_PID"; } 2>/dev/null
	if [ -n "$holder" ]; then
		release "$name"
		wait "$holder" 2>/dev/null
	fi
}
# A restore is not retried after its worker died: the next job on acme (here a new
# restore, run by another agent) finishes what the dead one left; prints its state.
rescue() { # DEAD_JOB
	local next
	# Its lease runs out first (5 s), and the launcher marks it failed.
	wait_for 300 0.1 failed psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $1" >/dev/null
	next=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', wait => false)")
	agent_once "rescuer-$1" >/dev/null 2>&1
	psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $next"
}
# The conditions crash_restore waits for.
agent_waiting() { # STATEMENT-PREFIX: an agent statement waits for a lock
	[ "$(my_q "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'tbagent'
		AND STATE LIKE 'Waiting for%' AND INFO LIKE '$1%'")" -gt 0 ]
}
fresh_tables() { # N: the fresh database has at least N tables
	[ "$(my_q "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE 'acme\\_tb\\_new\\_%'")" -ge "$1" ]
}
last_job_succeeded() { [ "$(psql_q "SELECT state FROM tenant_backup.jobs ORDER BY id DESC LIMIT 1")" = succeeded ]; }
journal_rows() { my_q "SELECT COUNT(*) FROM tenant_backup_agent.swap_journal" 2>/dev/null || echo 0; }
leftovers() { my_q "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'acme\\_tb\\_new\\_%'"; }

# --- before the load: the agent waits for the global read lock before its journal entry
crash_restore before "agent_waiting 'CREATE DATABASE IF NOT EXISTS tenant_backup_agent'" \
	"FLUSH TABLES WITH READ LOCK; DO SLEEP(120)"
job=$JOB
is "$(works)" "acme live" "killed before the load: acme works with its live data"
is "$(rescue "$job")" succeeded "the next restore, by another agent, succeeds"
is "$(works)" "acme canary" "acme works with the restored data"
my_db acme "UPDATE canary SET v = 'acme live'"

# --- mid-load: killed once the fresh database has some of the tables
crash_restore midload "fresh_tables 3"
job=$JOB
is "$(works)|$(leftovers)|$(journal_rows)" "acme live|1|1" \
	"killed mid-load: acme works with its live data; the half-loaded database and its journal entry are left"
is "$(rescue "$job")" succeeded "the next restore drops the half-loaded database and restores"
is "$(works)|$(leftovers)|$(journal_rows)" "acme canary|0|0" "acme works with the restored data; nothing is left"
my_db acme "UPDATE canary SET v = 'acme live'"

# --- between taking the definitions off and the RENAME TABLE (a session holds ledger)
crash_restore rename "agent_waiting 'RENAME TABLE'" "START TRANSACTION; SELECT * FROM ledger; DO SLEEP(120)"
job=$JOB
is "$(my_q "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'acme'")|$(journal_rows)" "0|1" \
	"killed before the RENAME: acme's triggers were already off, the swap is journaled"
psql_q "UPDATE tenant_backup.jobs SET state = 'failed', lease_owner = NULL, lease_expires = NULL WHERE id = $job" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql')" >/dev/null
agent_once backup-after-crash
ok $? "a backup of acme, by another agent, runs"
is "$(works)|$(journal_rows)|$(leftovers)" "acme canary|0|0" "it first finished the swap: acme works with the restored data"
like "$(cat "$D/backup-after-crash.log")" "job $job on database \"acme\" was interrupted; its swap was finished" \
	"its log says so"
is "$(my_canaries "acme_tb_old_$job")" "acme live" "the previous contents are in acme_tb_old_$job"
is "$(my_q "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'acme_tb_old_$job'")" 3 \
	"with their three triggers"
my_db acme "UPDATE canary SET v = 'acme live'"

# --- after the RENAME TABLE, before the definitions (a session runs acme's procedure hold)
# A session holding ledger stops the RENAME; a second one, queued behind the RENAME for
# canary, gets canary right after it and holds it: the agent stops at its first CREATE
# TRIGGER on the restored canary.
hold ledger "START TRANSACTION; SELECT * FROM ledger; DO SLEEP(120)"
holder=$!
sleep 0.5
agent_start victim-definitions --lease-seconds 5
job=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', wait => false)")
for _ in $(seq 400); do agent_waiting 'RENAME TABLE' && break; sleep 0.05; done
hold canary "START TRANSACTION; SELECT COUNT(*) FROM canary; DO SLEEP(120)"
second=$!
for _ in $(seq 400); do
	[ "$(my_q "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT COUNT(*) FROM canary%'
		AND STATE LIKE 'Waiting for%'")" -gt 0 ] && break
	sleep 0.05
done
release ledger
for _ in $(seq 400); do agent_waiting 'CREATE' && break; sleep 0.05; done
{ kill -KILL "$AGENT_PID" && wait "$AGENT_PID"; } 2>/dev/null
release canary
wait "$holder" "$second" 2>/dev/null
is "$(my_db acme "SELECT v FROM canary")|$(my_q "SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'acme'")|$(journal_rows)" \
	"acme canary|0|1" "killed after the RENAME: acme has the restored tables but no views yet, the swap is journaled"
[ "$(my_q "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'acme'")" -lt 3 ]
ok $? "and not all of its three triggers"
is "$(rescue "$job")" succeeded "the next restore, by another agent, first finishes the swap"
is "$(works)|$(journal_rows)|$(leftovers)" "acme canary|0|0" "acme works with the restored data"
like "$(cat "$D/rescuer-$job.log")" "job $job on database \"acme\" was interrupted; its swap was finished" \
	"its log says it finished the interrupted swap"
my_db acme "UPDATE canary SET v = 'acme live'"

# --- after the swap
crash_restore after last_job_succeeded
job=$JOB
is "$(works)|$(journal_rows)|$(leftovers)" "acme canary|0|0" "killed after the swap: acme works with the restored data"

# --- a journal entry forged without the master key is refused, and nothing is dropped
my_q "INSERT INTO tenant_backup_agent.swap_journal VALUES (999999, 'acme',
	'{\"job\": 999999, \"phase\": \"loading\", \"live\": \"acme\", \"fresh\": \"globex\"}', REPEAT('0', 64))"
psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql')" >/dev/null
agent_once forged
is "$(psql_q "SELECT state FROM tenant_backup.jobs ORDER BY id DESC LIMIT 1")" failed "a backup with a forged journal entry fails"
like "$(psql_q "SELECT error FROM tenant_backup.jobs ORDER BY id DESC LIMIT 1")" 'not this product.s \(its MAC does not check\)' \
	"saying the entry's MAC does not check"
is "$(my_canaries globex)" "globex canary" "the database the forged entry named is untouched"

done_testing
