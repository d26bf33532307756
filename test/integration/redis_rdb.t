#!/bin/bash
# A dedicated Redis tenant: its whole server backed up as an RDB snapshot over the
# replication protocol (diskless "$EOF:" transfer and the disk-based "$<length>" one),
# restored through the SQL API and with tenant-backup restore-rdb as dump.rdb, which a
# second redis-server loads with the same 100k keys, values and TTLs. dump.rdb is never
# overwritten, and goes only into redis_restore_dir (agent_attacks.t tries the ways out);
# credentials come from the agent's configuration file, for the server it lists. A backup records the
# snapshot's CRC-64; a restore drill checks the file with redis-check-rdb and compares it.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/redis.sh"
# The agent built with AddressSanitizer/UBSan when there is one (make test builds it).
agent_use tenant-backup-agent-redis
PG_PORT=$(free_port)
R=$(free_port)
R2=$(free_port)
R3=$(free_port)

scratch_dir
agent_bed_setup $PG_PORT redis-rdb
redis_start "$D/live" $R
rtool many $R 0 "k:" 99989
rtool fill $R 0 "app:" dedicated
rtool fill $R 4 "" db4
rtool snapshot $R 0 "" >"$D/db0.before"
rtool snapshot $R 4 "" >"$D/db4.before"
is "$(rtool cmd $R 0 DBSIZE)" 100000 "the dedicated server holds 100k keys in database 0"

# The agent's credentials from its configuration file (0600), not the locator, for the
# server it lists; restores go into redis_restore_dir (restore.conf) and nowhere else.
printf 'redis_user = tbagent\nredis_password = %s\nredis_fallback_credentials_hosts = 127.0.0.1:%s\n' \
	"$REDIS_PASSWORD" "$R" >"$D/agent.conf"
printf 'redis_restore_dir = %s\n' "$D/restores" | cat "$D/agent.conf" - >"$D/restore.conf"
mkdir -p "$D/restores/restored"
chown -R postgres "$D/agent.conf" "$D/restore.conf" "$D/restores"
chmod 600 "$D/agent.conf" "$D/restore.conf"
psql_q "SELECT tenant_backup.tenant_create('dedi', tier => 'dedicated')" \
	"SELECT tenant_backup.tenant_add_database('dedi', 'redis', 'redis://127.0.0.1:$R')" >/dev/null

backup() { # queues and runs one backup of dedi; prints the new object key
	psql_q "SELECT tenant_backup.tenant_backup('dedi', 'redis')" >/dev/null
	agent_once rdb --config "$D/agent.conf" || return 1
	psql_q "SELECT object_key FROM tenant_backup.tenant_backups('dedi') WHERE status = 'complete' ORDER BY id DESC LIMIT 1"
}

obj=$(backup)
like "$obj" '^dedi/redis/.*\.tbk$' "the RDB backup is complete, under dedi/redis/"
grep -q 'Starting BGSAVE for SYNC with target: replicas sockets' "$D/live/redis.log"
ok $? "the server streamed it (diskless, \$EOF: form), as to redis-cli --rdb"
[ ! -e "$D/live/dump.rdb" ]
ok $? "and wrote no dump.rdb of its own"
"$TB" cat "$obj" >"$D/snap.rdb"
is "$(head -c 5 "$D/snap.rdb")" REDIS "it decrypts to an RDB snapshot"
"$TB" verify "$obj" >/dev/null 2>&1
ok $? "tenant-backup verify checks it"

# --- restore through the SQL API into a directory, then a second server on it
job=$(psql_q "SELECT tenant_backup.tenant_restore('dedi', 'redis', target => '$D/restores/restored', wait => false)")
agent_once rdb-restore --config "$D/restore.conf"
is "$(psql_q "SELECT state || coalesce(': ' || error, '') FROM tenant_backup.jobs WHERE id = $job")" succeeded \
	"tenant_restore('dedi', 'redis', target => DIR) succeeds"
cmp -s "$D/snap.rdb" "$D/restores/restored/dump.rdb"
ok $? "DIR/dump.rdb is the snapshot, byte for byte"
redis_start "$D/restores/restored" $R2
is "$(rtool cmd $R2 0 DBSIZE)" 100000 "a redis-server started with --dir DIR serves the 100k keys"
rtool snapshot $R2 0 "" >"$D/db0.after"
out=$(rtool compare "$D/db0.before" "$D/db0.after")
ok $? "every key of database 0 with its type, value and TTL"
[ -n "$out" ] && diag "$(echo "$out" | head -5)"
rtool snapshot $R2 4 "" >"$D/db4.after"
rtool compare "$D/db4.before" "$D/db4.after" >/dev/null
ok $? "and of database 4"

job=$(psql_q "SELECT tenant_backup.tenant_restore('dedi', 'redis', target => 'restored', wait => false)")
agent_once rdb-restore --config "$D/restore.conf"
like "$(psql_q "SELECT error FROM tenant_backup.jobs WHERE id = $job")" "restored/dump.rdb already exists" \
	"a second restore into the same directory refuses to overwrite its dump.rdb"
job=$(psql_q "SELECT tenant_backup.tenant_restore('dedi', 'redis', wait => false)")
agent_once rdb-restore --config "$D/agent.conf"
like "$(psql_q "SELECT error FROM tenant_backup.jobs WHERE id = $job")" "into the agent's redis_restore_dir \\(an absolute path\\): set it" \
	"without redis_restore_dir the restore says what to set"

# --- the CLI, with nothing but storage and the master key
"$TB" restore-rdb "$obj" --dir "$D/cli" 2>"$D/cli.err"
ok $? "tenant-backup restore-rdb writes the snapshot"
cmp -s "$D/snap.rdb" "$D/cli/dump.rdb"
ok $? "as DIR/dump.rdb, byte for byte"
"$TB" restore-rdb "$obj" --dir "$D/cli" 2>"$D/cli.err"
ok $((! $?)) "and refuses to overwrite it"
like "$(cat "$D/cli.err")" "already exists" "saying so"

# --- the disk-based transfer ($<length>) as well
rtool cmd $R 0 CONFIG SET repl-diskless-sync no >/dev/null
rtool cmd $R 0 SET "k:after" "second backup" >/dev/null
obj2=$(backup)
[ -n "$obj2" ] && [ "$obj2" != "$obj" ]
ok $? "a backup over a disk-based transfer completes too"
grep -q 'Starting BGSAVE for SYNC with target: disk' "$D/live/redis.log"
ok $? "(the server sent it from disk, the \$<length> form)"
"$TB" restore-rdb "$obj2" --dir "$D/disk" 2>/dev/null
redis_start "$D/disk" $R3
is "$(rtool cmd $R3 0 GET k:after),$(rtool cmd $R3 0 DBSIZE)" "second backup,100001" "and holds the later key"

# --- restore drill: the newest snapshot written into a scratch directory (under TMPDIR: no
# redis_restore_dir is set), checked by redis-check-rdb, its checksum compared with the one
# recorded at dump time, the directory removed. Then with a redis-check-rdb that is given
# the snapshot with its checksum changed: the drill fails with what the tool found.
drill() { # [PATH_HEAD]: tenant_restore_drill with an agent running; prints "ok" or "failed: <error>"
	local out
	PATH="${1:-}$PATH" TMPDIR="$D/drilltmp" agent_start drill --poll-seconds 1 --config "$D/agent.conf"
	out=$(psql_q "SELECT tenant_backup.tenant_restore_drill('dedi')")
	agent_stop "$AGENT_PID"
	psql_q "SELECT CASE WHEN (r->>'ok')::boolean THEN 'ok' ELSE 'failed: ' || coalesce(r->'checks'->0->>'error', '?') END
			FROM (SELECT \$j\$$out\$j\$::jsonb r) s"
}
mkdir -p "$D/drilltmp"
chown postgres "$D/drilltmp"
crc=$("$TB" cat "$obj2" | tail -c 8 | od -An -tx1 | tr -d ' \n')
is "$(psql_q "SELECT contents FROM tenant_backup.backups WHERE object_key = '$obj2'")" "{\"rdb_crc64\": \"$crc\"}" \
	"the backup records the CRC-64 its snapshot ends with"
is "$(drill)" ok "tenant_restore_drill('dedi') succeeds"
is "$(psql_q "SELECT j.result->'contents' = b.contents AND j.result->>'sha256' = b.sha256 AND b.object_key = '$obj2'
			  FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.id = j.backup_id
			  WHERE j.kind = 'drill' ORDER BY j.id DESC LIMIT 1")" t \
	"it drilled the newest backup: the restored file's checksum and the object's SHA-256 equal what was recorded"
like "$(grep succeeded "$D/drill.log")" 'succeeded: .*; drill: dump.rdb of [0-9]+ bytes checked by redis-check-rdb$' \
	"the agent logs the check"
is "$(ls -A "$D/drilltmp")" "" "its scratch directory is removed"
mkdir -p "$D/fakebin"
cat >"$D/fakebin/redis-check-rdb" <<EOF
#!/bin/sh
# The real redis-check-rdb, given the snapshot with one bit of its checksum flipped.
perl -e 'open(my \$f, "+<", \$ARGV[0]) or die; seek(\$f, -1, 2); read(\$f, my \$b, 1);
	seek(\$f, -1, 2); print \$f chr(ord(\$b) ^ 1)' "\$1"
exec $(command -v redis-check-rdb) "\$@"
EOF
chmod 755 "$D/fakebin/redis-check-rdb"
like "$(drill "$D/fakebin:")" '^failed: drill of the RDB snapshot dedi/redis/.* for tenant "dedi": redis-check-rdb finds the snapshot broken: \[offset [0-9]+\] RDB CRC error' \
	"a snapshot redis-check-rdb finds broken fails the drill with what it found"
is "$(ls -A "$D/drilltmp")" "" "and its scratch directory is removed too"

# --- a tampered snapshot is never written out
object_get "$obj" "$D/obj.tbk"
flip_byte "$D/obj.tbk" 200000
object_put "$D/obj.tbk" "$obj"
"$TB" restore-rdb "$obj" --dir "$D/tampered" 2>"$D/tampered.err"
ok $((! $?)) "restore-rdb of a tampered object fails"
[ ! -e "$D/tampered/dump.rdb" ] && [ -z "$(ls -A "$D/tampered" 2>/dev/null)" ]
ok $? "and leaves no dump.rdb, not even a partial one"

grep -rqF "$REDIS_PASSWORD" "$D"/*.log "$D/live/redis.log" "$D/pg/server.log"
ok $((! $?)) "no log holds the password"

done_testing
