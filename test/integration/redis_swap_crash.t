#!/bin/bash
# A crash of tenant-backup-agent-redis (kill -9) at every step of an in-place restore of
# a key-by-key tenant (issue 16, item 4): mid-load (RESTORE of the staged keys), once
# the swap's journal is written, while the live keys the backup does not hold are
# removed, once the renames are journaled, mid-rename, and after the journal went.
# Before the journal the tenant's keys are all old; after it the next job of any agent
# in the keyspace (here a backup) finishes the swap: all new, types, values and expiry,
# and that backup holds them. Nothing is ever lost, nothing staged is left, and the
# neighbouring keys of the database are never touched.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/redis.sh"
agent_use tenant-backup-agent-redis
R=$(free_port)
KEYS=40000

scratch_dir
agent_bed_setup "$(free_port)" redis
redis_start "$D/redis" "$R"
psql_q "SELECT tenant_backup.tenant_create('acme')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/0', '{\"key_prefix\": \"acme:\"}')" \
	>/dev/null

rtool many "$R" 0 "other:" 500 >/dev/null
rtool many "$R" 0 "acme:" "$KEYS" >/dev/null
rtool fill "$R" 0 "acme:" backup >/dev/null
rtool snapshot "$R" 0 "acme:" >"$D/backup.snap"
rtool snapshot "$R" 0 "other:" >"$D/other.snap"
psql_q "SELECT tenant_backup.tenant_backup('acme', 'redis')" >/dev/null
agent_once first
is "$(psql_q "SELECT status || ' ' || contents FROM tenant_backup.backups WHERE tenant = 'acme'")" \
	"complete {\"keys\": $((KEYS + 11))}" "acme is backed up: $((KEYS + 11)) keys of every type"
# Every restore restores this backup (the rescuing backups are newer).
backup=$(psql_q "SELECT id FROM tenant_backup.backups WHERE tenant = 'acme'")

# The live keys differ from the backup's: values changed, keys added, keys gone.
make_live() {
	rtool cmd "$R" 0 EVAL "for _, k in ipairs(redis.call('KEYS', 'acme:*')) do redis.call('UNLINK', k) end" 0 >/dev/null
	rtool many "$R" 0 "acme:" "$KEYS" 20 >/dev/null
	rtool fill "$R" 0 "acme:" live >/dev/null
	rtool many "$R" 0 "acme:x" 3000 >/dev/null
	rtool cmd "$R" 0 DEL "acme:k7" "acme:counter" >/dev/null
	rtool snapshot "$R" 0 "acme:" >"$D/live.snap"
}
# Which data acme holds now, its staged keys left out: old, new, or mixed (differences in $D/diff).
STAGED_HEX=$(printf 'tenant-backup:restore:' | od -An -tx1 | tr -d ' \n')
holds() {
	rtool snapshot "$R" 0 "acme:" | grep -v "^$STAGED_HEX" >"$D/now.snap"
	if rtool compare "$D/now.snap" "$D/live.snap" >/dev/null; then
		echo old
	elif rtool compare "$D/now.snap" "$D/backup.snap" >"$D/diff"; then
		echo new
	else
		echo mixed
	fi
}
staged() { rtool cmd "$R" 0 EVAL "return #redis.call('KEYS', 'acme:tenant-backup:restore:*')" 0; }

# Runs an in-place restore with a victim agent and kills it -9 as soon as Redis
# executes a command matching PATTERN (seen through MONITOR); the job's id in JOB.
crash_restore() { # NAME PATTERN
	local monitor
	make_live
	redis-cli -p "$R" --user default --pass "$REDIS_ADMIN_PASSWORD" --no-auth-warning MONITOR >"$D/monitor-$1" 2>&1 &
	monitor=$!
	sleep 0.2
	agent_start "victim-$1" --lease-seconds 5
	JOB=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'redis', backup_id => $backup, wait => false)")
	# Up to a minute: on a loaded machine the agent may take that long to get there.
	for _ in $(seq 6000); do
		grep -qE "$2" "$D/monitor-$1" && break
		sleep 0.01
	done
	kill -STOP "$AGENT_PID" 2>/dev/null
	{ kill -KILL "$AGENT_PID" && wait "$AGENT_PID"; } 2>/dev/null
	{ kill "$monitor" && wait "$monitor"; } 2>/dev/null
	grep -qE "$2" "$D/monitor-$1"
	ok $? "$1: the agent was killed once Redis ran a command matching $2"
}
# The dead restore is not retried; the next job in acme's keyspace (a backup, by another
# agent) finishes what it left; then acme must hold the backup's keys, nothing staged.
rescued() { # NAME EXPECTED
	wait_for 300 0.1 failed psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $JOB" >/dev/null
	psql_q "SELECT tenant_backup.tenant_backup('acme', 'redis')" >/dev/null
	agent_once "rescuer-$1"
	is "$(psql_q "SELECT state FROM tenant_backup.jobs ORDER BY id DESC LIMIT 1")" succeeded "$1: the next backup succeeds"
	is "$(holds)|$(staged)" "$2|0" "$1: then acme holds the $2 data, every key, type, value and expiry; nothing staged is left"
	[ "$2" = new ] && is "$(psql_q "SELECT contents FROM tenant_backup.backups ORDER BY id DESC LIMIT 1")" \
		"{\"keys\": $((KEYS + 11))}" "$1: and that backup holds the restored keys"
	rtool snapshot "$R" 0 "other:" >"$D/other.now"
	cmp -s "$D/other.now" "$D/other.snap"
	ok $? "$1: the database's other keys are untouched"
}

# --- mid-load: nothing live changed, the staged keys go with the next job
crash_restore midload '"RESTORE" "acme:tenant-backup:restore:'
is "$(holds)" old "midload: acme holds its live data"
ok "$([ "$(staged)" -gt 0 ]; echo $?)" "midload: staged keys were left ($(staged))"
rescued midload old

# --- the swap's journal written, before anything live changed
crash_restore journal '"SET" "acme:tenant-backup:restore:[0-9]+:[0-9a-f]+:j" "remove"'
like "$(holds)" '^(old|mixed)$' "journal: acme holds its live data, or the first removals"
rescued journal new

# --- while the keys the backup does not hold are removed
crash_restore removing '"UNLINK" "acme:xk'
like "$(holds)" '^(old|mixed)$' "removing: some of the extra keys are gone"
rescued removing new

# --- the renames journaled
crash_restore renames-journaled '"SET" "acme:tenant-backup:restore:[0-9]+:[0-9a-f]+:j" "move"'
rescued renames-journaled new

# --- mid-rename: part old, part new until the next job
crash_restore renaming '"RENAME" "acme:tenant-backup:restore:'
like "$(holds)" '^(mixed|new)$' "renaming: acme is partly restored"
rescued renaming new

# --- the journal removed: the swap is over
crash_restore done '"DEL" "acme:tenant-backup:restore:[0-9]+:[0-9a-f]+:j"'
is "$(holds)|$(staged)" "new|0" "done: acme holds the restored data, nothing staged"
rescued done new

like "$(cat "$D"/rescuer-renaming.log)" "finishing the swap of Redis restore job [0-9]+ \(move step\)" \
	"the rescuing agent's log says whose swap it finished"
done_testing
