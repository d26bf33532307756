#!/bin/bash
# A key-by-key Redis tenant restored in place, to a target and in a drill compares equal
# to Redis's own dump and restore (issue 16, "Done when"): the server's RDB taken with
# redis-cli --rdb and loaded into a second redis-server is the reference; every key of
# the tenant (strings, hashes, lists, sets, sorted sets, streams, binary names and
# values, big and incompressible values, TTLs) has the same type, value and expiry
# after our restore as there.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/redis.sh"
agent_use tenant-backup-agent-redis
R=$(free_port)
OWN=$(free_port)

scratch_dir
agent_bed_setup "$(free_port)" redis
redis_start "$D/redis" "$R"
psql_q "SELECT tenant_backup.tenant_create('acme')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/0', '{\"key_prefix\": \"acme:\"}')" \
	>/dev/null
rtool fill "$R" 0 "acme:" fixture >/dev/null
rtool many "$R" 0 "acme:noise:" 2000 3000 noise >/dev/null
rtool many "$R" 0 "acme:" 20000 >/dev/null
rtool cmd "$R" 0 PEXPIRE "acme:k17" 7200123 >/dev/null
rtool many "$R" 0 "other:" 100 >/dev/null

run() { # KIND [TARGET]: one acme job through the SQL API and a --once agent; prints state[: error]
	local target=NULL
	[ -n "${2:-}" ] && target="'$2'"
	if [ "$1" = backup ]; then
		psql_q "SELECT tenant_backup.tenant_backup('acme', 'redis')" >/dev/null
	else
		psql_q "SELECT tenant_backup.tenant_restore('acme', 'redis', target => $target, wait => false)" >/dev/null
	fi
	agent_once "$1-$RANDOM"
	psql_q "SELECT state || coalesce(': ' || error, '') FROM tenant_backup.jobs ORDER BY id DESC LIMIT 1"
}
is "$(run backup)" succeeded "acme backs up"

# Redis's own dump and restore of the same moment: the RDB, loaded by another server.
mkdir -p "$D/own"
redis-cli -p "$R" --user default --pass "$REDIS_ADMIN_PASSWORD" --no-auth-warning --rdb "$D/own/dump.rdb" >/dev/null 2>&1
ok $? "redis-cli --rdb dumps the server"
redis_start "$D/own" "$OWN"
rtool snapshot "$OWN" 0 "acme:" >"$D/own.snap"
is "$(wc -l <"$D/own.snap")" 22011 "the server loading that RDB has acme's 22011 keys"
compare() { # SNAPSHOT: prints "equal", or the first differences
	rtool compare "$1" "$D/own.snap" >"$D/diff" && echo equal || head -5 "$D/diff"
}

# --- to a target
is "$(run restore "copy:")" succeeded "acme restores to prefix copy:"
rtool snapshot "$R" 0 "copy:" >"$D/copy.snap"
is "$(compare "$D/copy.snap")" equal "the target equals Redis's own dump and restore: types, values, expiry"

# --- in place, after the tenant's keys changed and some were lost
rtool cmd "$R" 0 EVAL "for i = 0, 4999 do redis.call('UNLINK', 'acme:k' .. i) end" 0 >/dev/null
rtool fill "$R" 0 "acme:" changed >/dev/null 2>&1 # (its stream entries exist already)
rtool cmd "$R" 0 SET "acme:later" "written after the backup" >/dev/null
is "$(run restore)" succeeded "acme restores in place"
rtool snapshot "$R" 0 "acme:" >"$D/acme.snap"
is "$(compare "$D/acme.snap")" equal "in place, acme equals Redis's own dump and restore"
is "$(rtool cmd "$R" 0 EVAL "return #redis.call('KEYS', 'other:*')" 0)" 100 "the database's other keys are there"

# --- a drill
is "$(agent_drill acme)" ok "a drill of acme is ok"
rtool snapshot "$R" 0 "acme:" >"$D/after-drill.snap"
is "$(compare "$D/after-drill.snap")" equal "and leaves acme as it was, nothing staged"

done_testing
