#!/bin/bash
# Redis tenants on one shared server through the extension and tenant-backup-agent-redis:
# three by database number, three by key prefix (one prefix holding * ? [ ] so that an
# unescaped SCAN pattern would take another tenant's keys). A backup holds only its
# tenant's keys; restore in place brings back every key, type, value and TTL (and
# removes the tenant's keys written since), other tenants untouched; a key whose TTL ran
# out while stored stays gone; restore to a target; a tampered object fails with live
# untouched; backups record the keys they hold, and a restore drill stages, counts and
# removes them (a corrupted backup fails it, nothing left behind); backups under a rotated
# key and under the tenant's own key command (BYOK) restore; overlapping keyspaces are
# refused; the password is nowhere to be seen.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/redis.sh"
# The agent built with AddressSanitizer/UBSan when there is one (make test builds it).
agent_use tenant-backup-agent-redis
PG_PORT=$(free_port)
R=$(free_port)
GLOB='a*?[x]:'

scratch_dir
agent_bed_setup $PG_PORT redis
redis_start "$D/redis" $R

add_tenant() { # TENANT DB [PREFIX]
	local options="'{}'"
	[ -n "${3:-}" ] && options="jsonb_build_object('key_prefix', \$p\$$3\$p\$)"
	psql_q "SELECT tenant_backup.tenant_create('$1')" \
		"SELECT tenant_backup.tenant_add_database('$1', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/$2', $options)" \
		>/dev/null
}
for t in 1:dbone 2:dbtwo 3:dbthree; do
	rtool fill $R "${t%%:*}" "" "${t#*:}"
	add_tenant "${t#*:}" "${t%%:*}"
done
rtool fill $R 0 "acme:" acme
rtool fill $R 0 "acme2:" acme2
rtool fill $R 0 "$GLOB" glob
rtool cmd $R 0 SET "acme2:x:leak" "acme2 leak" >/dev/null
add_tenant acme 0 "acme:"
add_tenant acme2 0 "acme2:"
add_tenant glob 0 "$GLOB"

backup() { # TENANT: queues and runs one backup with --once; prints the object key
	psql_q "SELECT tenant_backup.tenant_backup('$1', 'redis')" >/dev/null
	agent_once "once-$1" || return 1
	psql_q "SELECT object_key FROM tenant_backup.tenant_backups('$1') WHERE status = 'complete' ORDER BY id DESC LIMIT 1"
}
restore() { # TENANT [TARGET [BACKUP_ID]]: a restore through the SQL API, run by one --once agent
	local target=NULL
	[ -n "${2:-}" ] && target="'$2'"
	psql_q "SELECT tenant_backup.tenant_restore('$1', 'redis', backup_id => ${3:-NULL}, target => $target, wait => false)" >/dev/null
	agent_once "restore-$1"
	psql_q "SELECT state || coalesce(': ' || error, '') FROM tenant_backup.jobs WHERE kind = 'restore' ORDER BY id DESC LIMIT 1"
}
staged_left() { # the keys any restore or drill staged in database 0 and left behind
	rtool snapshot $R 0 "" | grep -c "$(printf 'tenant-backup:restore:' | od -An -tx1 | tr -d ' \n')"
}

"$AGENT_BIN" --help | grep -q redis_password
ok $? "--help names the Redis settings"

# --- backups hold only their tenant's keys
for t in acme glob dbone; do
	rtool snapshot $R "$([ $t = dbone ] && echo 1 || echo 0)" "$([ $t = acme ] && echo acme: || ([ $t = glob ] && echo "$GLOB"))" \
		>"$D/$t.before"
done
rtool cmd $R 0 SET "acme:short" "gone soon" PX 1500 >/dev/null
acme_obj=$(backup acme)
like "$acme_obj" '^acme/redis/.*\.tbk$' "acme's backup is complete, under acme/redis/"
"$TB" cat "$acme_obj" >"$D/acme.plain"
ok $? "tenant-backup cat decrypts it"
is "$(head -c 8 "$D/acme.plain")" TBREDIS1 "it is in the documented logical format"
grep -q "acme canary" "$D/acme.plain"
ok $? "it holds acme's canary"
grep -qaE "acme2 canary|acme2 leak|glob canary|dbone canary" "$D/acme.plain"
ok $((! $?)) "and no other tenant's keys (acme2: begins with acme but is not acme:)"
glob_obj=$(backup glob)
"$TB" cat "$glob_obj" >"$D/glob.plain"
grep -q "glob canary" "$D/glob.plain"
ok $? "the backup of the tenant whose prefix is '$GLOB' holds its canary"
grep -qaE "acme2 leak|acme canary|acme2 canary" "$D/glob.plain"
ok $((! $?)) "and nothing its prefix would match unescaped (acme2:x:leak)"
dbone_obj=$(backup dbone)
"$TB" cat "$dbone_obj" | grep -qa "dbone canary"
ok $? "the backup of a database-number tenant holds its canary"
"$TB" cat "$dbone_obj" | grep -qaE "dbtwo canary|acme canary"
ok $((! $?)) "and nothing of another database"
like "$(grep succeeded "$D/once-acme.log")" 'backup of tenant "acme" \(redis, .*\) succeeded: .*\.tbk; 12 keys$' \
	"the agent logs the job's success with the number of keys"
is "$(psql_q "SELECT contents FROM tenant_backup.backups WHERE object_key = '$acme_obj'")" '{"keys": 12}' \
	"the backup records the keys it holds (acme's 11 and acme:short)"
is "$(psql_q "SELECT contents->>'keys' FROM tenant_backup.backups WHERE object_key = '$dbone_obj'")" \
	"$(wc -l <"$D/dbone.before")" "a database tenant's backup records as many keys as the fixture has"

# --- restore in place: acme loses its keys, gains one, others change meanwhile
for k in canary hash list set zset stream ttl:hour ttl:hash counter big; do
	rtool cmd $R 0 DEL "acme:$k" >/dev/null
done
rtool cmd $R 0 SET "acme:written-later" "after backup" >/dev/null
rtool cmd $R 0 SET "acme2:canary" "acme2 after backup" >/dev/null
rtool cmd $R 0 SET "acme2:new" "acme2 new key" >/dev/null
rtool cmd $R 2 SET "canary" "dbtwo after backup" >/dev/null
sleep 1.6 # acme:short's TTL runs out while it is stored
is "$(restore acme)" succeeded "tenant_restore('acme', 'redis') in place succeeds"
rtool snapshot $R 0 "acme:" >"$D/acme.after"
out=$(rtool compare "$D/acme.before" "$D/acme.after")
ok $? "every acme key is back with its type, value and TTL within a second"
[ -n "$out" ] && diag "$out"
like "$(grep succeeded "$D/restore-acme.log")" 'succeeded: .*; 11 keys restored, 1 expired while stored, 1 not in the backup removed$' \
	"the agent logs what the restore did"
is "$(rtool cmd $R 0 EXISTS acme:written-later)" 0 "a key of acme written after the backup is gone"
is "$(rtool cmd $R 0 EXISTS acme:short)" 0 "a key whose TTL ran out while stored is not resurrected"
is "$(rtool cmd $R 0 GET acme2:canary),$(rtool cmd $R 0 GET acme2:new)" "acme2 after backup,acme2 new key" \
	"acme2's keys written after acme's backup are untouched"
is "$(rtool cmd $R 2 GET canary)" "dbtwo after backup" "another database's later change is untouched"
is "$(rtool cmd $R 0 GET "acme2:x:leak")" "acme2 leak" "so is acme2:x:leak"
is "$(rtool snapshot $R 0 "acme:tenant-backup:restore:" | wc -l)" 0 "no staged key is left behind"
ttl=$(rtool cmd $R 0 PTTL acme:ttl:hour)
[ "$ttl" -gt 3590000 ] && [ "$ttl" -le 3600000 ]
ok $? "a restored TTL is what was left of it ($ttl ms)"

# --- a database-number tenant, its whole database flushed
rtool cmd $R 1 FLUSHDB >/dev/null
is "$(restore dbone)" succeeded "tenant_restore('dbone', 'redis') after FLUSHDB succeeds"
rtool snapshot $R 1 "" >"$D/dbone.after"
out=$(rtool compare "$D/dbone.before" "$D/dbone.after")
ok $? "database 1 is back key for key"
[ -n "$out" ] && diag "$out"

# --- restore to a target: another prefix, another database number
is "$(restore acme "acme-copy:")" succeeded "acme restored to prefix acme-copy:"
rtool snapshot $R 0 "acme-copy:" >"$D/acme.copy"
out=$(rtool compare "$D/acme.before" "$D/acme.copy")
ok $? "the copy holds acme's keys, the prefix rewritten"
[ -n "$out" ] && diag "$out"
is "$(restore acme "acme-copy:")" "failed: restore of 127.0.0.1:$R/0 prefix \"acme:\" for tenant \"acme\": target prefix acme-copy: already holds keys; restore into an empty one" \
	"a target that holds keys is refused"
like "$(restore acme "acme:copy:")" 'failed: .*target prefix "acme:copy:" overlaps the tenant.s own prefix "acme:"' \
	"a target prefix inside the tenant's own is refused"
is "$(restore dbone 9)" succeeded "dbone restored to database 9"
rtool snapshot $R 9 "" >"$D/dbone.copy"
rtool compare "$D/dbone.before" "$D/dbone.copy" >/dev/null
ok $? "database 9 holds dbone's keys"
like "$(restore dbone "not-a-number")" "^failed: .*must be a database number" "a database tenant's target must be a number"

# --- a tampered object fails before anything live changes
object_get "$acme_obj" "$D/acme.tbk"
cp "$D/acme.tbk" "$D/acme.tbk.orig"
flip_byte "$D/acme.tbk" $(($(stat -c %s "$D/acme.tbk") - 40))
object_put "$D/acme.tbk" "$acme_obj"
rtool cmd $R 0 SET "acme:canary" "live value" >/dev/null
rtool snapshot $R 0 "acme:" >"$D/acme.live"
like "$(restore acme)" "^failed: .*(authentic|corrupt|tamper)" "a restore of a tampered backup fails"
rtool snapshot $R 0 "acme:" >"$D/acme.live2"
rtool compare "$D/acme.live" "$D/acme.live2" >/dev/null
ok $? "and acme's live keys are as they were"
is "$(rtool cmd $R 0 GET acme:canary)" "live value" "(its changed canary still there)"
is "$(rtool snapshot $R 0 "acme:tenant-backup:restore:" | wc -l)" 0 "no staged key is left behind"
object_put "$D/acme.tbk.orig" "$acme_obj"

# --- restore drill: the newest backup staged as a restore stages it, counted, removed; live
# untouched. acme:short's TTL ran out while stored: the drill reads 12 keys and stages 11.
rtool snapshot $R 0 "acme:" >"$D/acme.live"
is "$(agent_drill acme)" ok "tenant_restore_drill('acme') succeeds"
is "$(psql_q "SELECT j.result->'contents' = b.contents AND b.contents IS NOT NULL AND j.result->>'sha256' = b.sha256
			  AND b.object_key = '$acme_obj'
			  FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.id = j.backup_id
			  WHERE j.kind = 'drill' AND j.tenant = 'acme' ORDER BY j.id DESC LIMIT 1")" t \
	"it drilled the newest backup: its keys and the object's SHA-256 equal what the backup recorded"
like "$(grep succeeded "$D/drill-acme.log")" \
	'succeeded: .*; drill: 12 keys read, 11 loaded into the staging, 1 expired while stored; 11 found there and removed$' \
	"the agent logs what it read, staged and removed"
is "$(staged_left)" 0 "no staged key is left behind"
rtool snapshot $R 0 "acme:" >"$D/acme.after-drill"
rtool compare "$D/acme.live" "$D/acme.after-drill" >/dev/null
ok $? "live acme is as it was"
is "$(psql_q "SELECT count(*) FROM tenant_backup.drills WHERE tenant = 'acme' AND ok")" 1 "the drill is recorded"

# --- a drill of a corrupted backup: 3 MB of values nothing compresses, so that the flipped
# byte in the middle is in a later chunk than the first, whose keys are staged when it fails.
rtool many $R 0 "acme:m:" 1000 3000 noise
rtool snapshot $R 0 "acme:" >"$D/acme.k1"
obj1=$(backup acme)
is "$(psql_q "SELECT contents->>'keys' FROM tenant_backup.backups WHERE object_key = '$obj1'")" "$(wc -l <"$D/acme.k1")" \
	"a backup of 1000 more keys records them all"
object_get "$obj1" "$D/obj1.tbk"
cp "$D/obj1.tbk" "$D/obj1.tbk.orig"
flip_byte "$D/obj1.tbk" $(($(stat -c %s "$D/obj1.tbk") / 2))
object_put "$D/obj1.tbk" "$obj1"
like "$(agent_drill acme)" '^failed: drill of 127.0.0.1:[0-9]+/0 prefix "acme:" for tenant "acme": .*corrupt: chunk [1-9][0-9]* fails authentication' \
	"the drill of a corrupted backup fails, naming the chunk that fails authentication"
is "$(psql_q "SELECT count(*) FROM tenant_backup.drills WHERE tenant = 'acme' AND NOT ok")" 1 "the failed drill is recorded"
is "$(staged_left)" 0 "the keys it staged are removed"
rtool snapshot $R 0 "acme:" >"$D/acme.after-drill"
rtool compare "$D/acme.k1" "$D/acme.after-drill" >/dev/null
ok $? "live acme is as it was"
object_put "$D/obj1.tbk.orig" "$obj1"

# --- key rotation: new backups under a new tenant key, the older ones still restore
id1=$(backup_id "$obj1")
key2=$(psql_q "SELECT tenant_backup.tenant_rotate_key('acme')")
rtool cmd $R 0 SET "acme:canary" "after rotation" >/dev/null
rtool snapshot $R 0 "acme:" >"$D/acme.k2"
id2=$(backup_id "$(backup acme)")
is "$(psql_q "SELECT (SELECT key_id FROM tenant_backup.backups WHERE id = $id2) = '$key2'
			  AND (SELECT key_id FROM tenant_backup.backups WHERE id = $id1) <> '$key2'")" t \
	"the backup after tenant_rotate_key is under the new key, the one before under the old"
is "$(restore acme "acme-k1:" "$id1")" succeeded "the backup under the old key restores"
rtool snapshot $R 0 "acme-k1:" >"$D/k1"
rtool compare "$D/acme.k1" "$D/k1" >/dev/null
ok $? "key for key as acme was then"
is "$(restore acme "acme-k2:" "$id2")" succeeded "the backup under the new key restores"
rtool snapshot $R 0 "acme-k2:" >"$D/k2"
rtool compare "$D/acme.k2" "$D/k2" >/dev/null
ok $? "key for key as acme was then, its canary changed"

# --- BYOK: the tenant's keys wrapped by its own key command; a refusing KMS fails the backup
agent_kms_source acme
rtool cmd $R 0 SET "acme:canary" "under byok" >/dev/null
rtool snapshot $R 0 "acme:" >"$D/acme.byok"
bobj=$(backup acme)
like "$bobj" '^acme/redis/' "a backup under the command-wrapped key completes"
is "$(restore acme "acme-byok:" "$(backup_id "$bobj")")" succeeded "and restores"
rtool snapshot $R 0 "acme-byok:" >"$D/byok"
rtool compare "$D/acme.byok" "$D/byok" >/dev/null
ok $? "key for key"
agent_kms_refusal acme

# --- keyspaces that overlap are refused
psql_q "SELECT tenant_backup.tenant_create('nested')" >/dev/null
err=$(psql_q "SELECT tenant_backup.tenant_add_database('nested', 'redis', 'redis://127.0.0.1:$R/0', '{\"key_prefix\": \"acme\"}')" 2>&1)
like "$err" 'the Redis keys of tenant "nested" would overlap those of tenant "acme2?"' "a prefix that begins other tenants' prefixes (acme: and acme2:) is refused"
err=$(psql_q "SELECT tenant_backup.tenant_add_database('nested', 'redis', 'redis://127.0.0.1:$R/1', '{\"key_prefix\": \"n:\"}')" 2>&1)
like "$err" 'would overlap those of tenant "dbone"' "a prefix inside a database a tenant owns whole is refused"
psql_q "SELECT tenant_backup.tenant_add_database('nested', 'redis', 'redis://127.0.0.1:$R/0', '{\"key_prefix\": \"acmf:\"}')" >/dev/null
ok $? "a prefix beside the others is accepted"

# --- secrets
is "$(psql_q "SELECT count(*) FROM tenant_backup.sources WHERE locator LIKE '%r3d%' OR options::text LIKE '%r3d%'")" 0 \
	"the catalog keeps no password in clear"
grep -rqF -e "$REDIS_PASSWORD" -e "$REDIS_PASSWORD_URI" "$D"/*.log "$D/redis/redis.log" "$D/pg/server.log" 2>/dev/null
ok $((! $?)) "no log holds the password"

# --- a wrong password is a clear failure
psql_q "SELECT tenant_backup.tenant_create('wrongpw')" \
	"SELECT tenant_backup.tenant_add_database('wrongpw', 'redis', 'redis://tbagent:nope@127.0.0.1:$R/5')" >/dev/null
backup wrongpw >/dev/null
like "$(psql_q "SELECT error FROM tenant_backup.jobs WHERE tenant = 'wrongpw' ORDER BY id DESC LIMIT 1")" \
	'Redis at 127.0.0.1:[0-9]+: AUTH: WRONGPASS' "a wrong password fails the backup with the server's answer"
is "$(psql_q "SELECT string_agg(DISTINCT status, ',') FROM tenant_backup.tenant_backups('wrongpw')")" failed \
	"and its backups are failed, none complete"

done_testing
