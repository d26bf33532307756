#!/bin/bash
# Key-by-key Redis tenants come back exactly (issue 16, items 13-14), through the
# extension and tenant-backup-agent-redis on a real Redis 7: absolute expiry times
# (PEXPIRETIME) are equal to the millisecond after a restore to a target and in place,
# however long the backup sat in storage; user keys named like a restore's staging keys
# (<prefix>tenant-backup:restore:*) are data: backed up, counted, restored; the staging
# names of a restore are its job's own and leave nothing behind.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/redis.sh"
agent_use tenant-backup-agent-redis
R=$(free_port)

scratch_dir
agent_bed_setup "$(free_port)" redis
redis_start "$D/redis" "$R"

add_tenant() { # TENANT DB [PREFIX]
	local options="'{}'"
	[ -n "${3:-}" ] && options="jsonb_build_object('key_prefix', \$p\$$3\$p\$)"
	psql_q "SELECT tenant_backup.tenant_create('$1')" \
		"SELECT tenant_backup.tenant_add_database('$1', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/$2', $options)" \
		>/dev/null
}
run() { # KIND TENANT [TARGET]: one job through the SQL API, run by one --once agent; prints state[: error]
	local target=NULL
	[ -n "${3:-}" ] && target="'$3'"
	if [ "$1" = backup ]; then
		psql_q "SELECT tenant_backup.tenant_backup('$2', 'redis')" >/dev/null
	else
		psql_q "SELECT tenant_backup.tenant_restore('$2', 'redis', target => $target, wait => false)" >/dev/null
	fi
	agent_once "$1-$2-$RANDOM"
	psql_q "SELECT state || coalesce(': ' || error, '') FROM tenant_backup.jobs ORDER BY id DESC LIMIT 1"
}
# KEY <tab> PEXPIRETIME of every key of DB beginning with PREFIX, the prefix taken off, sorted.
expiries() { # DB PREFIX
	local key
	rtool cmd "$R" "$1" KEYS '*' | tr ' ' '\n' | grep -v '^$' | while IFS= read -r key; do
		[[ $key == "$2"* ]] || continue
		printf '%s\t%s\n' "${key#"$2"}" "$(rtool cmd "$R" "$1" PEXPIRETIME "$key")"
	done | LC_ALL=C sort
}
value() { rtool cmd "$R" "$1" GET "$2"; } # DB KEY

# Keys that expire at odd milliseconds, one without expiry, and user keys that look
# like staging keys: with a job number, with a job number and a token, and bare.
now_ms=$(($(date +%s%3N)))
fill() { # DB PREFIX
	local db=$1 p=$2 i
	for i in 1 2 3 4 5; do
		rtool cmd "$R" "$db" SET "${p}session:$i" "value $i" >/dev/null
		rtool cmd "$R" "$db" PEXPIREAT "${p}session:$i" $((now_ms + 3600000 + i * 7919)) >/dev/null
	done
	rtool cmd "$R" "$db" SET "${p}forever" "never expires" >/dev/null
	rtool cmd "$R" "$db" SET "${p}tenant-backup:restore:1:notes" "user data 1" >/dev/null
	rtool cmd "$R" "$db" SET "${p}tenant-backup:restore:2:0123456789abcdef0123456789abcdef:x" "user data 2" >/dev/null
	rtool cmd "$R" "$db" SET "${p}tenant-backup:restore:" "user data 3" >/dev/null
	rtool cmd "$R" "$db" PEXPIREAT "${p}tenant-backup:restore:" $((now_ms + 7200001)) >/dev/null
}
fill 0 "acme:"
fill 1 ""
add_tenant acme 0 "acme:"
add_tenant whole 1
acme_before=$(expiries 0 "acme:")
whole_before=$(expiries 1 "")
is "$(echo "$acme_before" | wc -l)|$(echo "$acme_before" | grep -c $'\t-1$')" "9|3" \
	"acme has 9 keys, 6 of them expiring at odd milliseconds"

is "$(run backup acme)" succeeded "acme backs up"
is "$(psql_q "SELECT contents FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")" '{"keys": 9}' \
	"the backup holds every key of acme, the three named tenant-backup:restore:* too"
is "$(run backup whole)" succeeded "whole (database 1) backs up"
is "$(psql_q "SELECT contents FROM tenant_backup.backups WHERE tenant = 'whole' AND status = 'complete'")" '{"keys": 9}' \
	"the backup holds every key of database 1"
sleep 1.5 # time in storage that a relative TTL would lose

# --- to a target
is "$(run restore acme "copy:")" succeeded "acme restores to prefix copy:"
is "$(expiries 0 "copy:")" "$acme_before" "every key is there, each expiring at the very millisecond it did (PEXPIRETIME)"
is "$(value 0 "copy:tenant-backup:restore:1:notes")|$(value 0 "copy:tenant-backup:restore:2:0123456789abcdef0123456789abcdef:x")" \
	"user data 1|user data 2" "the user keys named like staging keys hold their values"

# --- in place, after changes
rtool cmd "$R" 0 DEL "acme:tenant-backup:restore:1:notes" "acme:tenant-backup:restore:" >/dev/null
rtool cmd "$R" 0 PEXPIRE "acme:session:1" 5000 >/dev/null
rtool cmd "$R" 0 PERSIST "acme:session:2" >/dev/null
rtool cmd "$R" 0 SET "acme:tenant-backup:restore:9:later" "written after the backup" >/dev/null
is "$(run restore acme)" succeeded "acme restores in place"
is "$(expiries 0 "acme:")" "$acme_before" \
	"acme holds exactly its backed-up keys with their expiry to the millisecond (a later user key named like staging is gone)"
is "$(value 0 "acme:tenant-backup:restore:1:notes")" "user data 1" "a deleted user key named like a staging key is back"
is "$(run restore whole)" succeeded "whole restores in place"
is "$(expiries 1 "")" "$whole_before" "database 1 holds exactly its keys, expiring at the same milliseconds"

# --- nothing staged is left
is "$(rtool cmd "$R" 0 KEYS '*tenant-backup:restore:*:*:*' | tr ' ' '\n' | grep -v '^$' | LC_ALL=C sort | tr '\n' ' ')" \
	"acme:tenant-backup:restore:2:0123456789abcdef0123456789abcdef:x copy:tenant-backup:restore:2:0123456789abcdef0123456789abcdef:x " \
	"no staged key is left in database 0: only the user's own look-alikes with a made-up token"
is "$(agent_drill acme)" ok "a drill of acme is ok (it counts 9 keys)"

done_testing
