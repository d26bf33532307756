#!/bin/bash
# MongoDB tenants through the extension and tenant-backup-agent-mongodb, against the
# server given by TB_TEST_MONGO_URI (a real mongod) or else the wire-protocol server of
# test/lib/fakemongo.py as a one-node replica set. Three tenants' databases with a
# document of every BSON type, unique compound, TTL, sparse and partial indexes, a
# capped collection, a validated one and a view. A backup is a mongodump archive of
# only its tenant; dropped collections come back byte for byte with every index and
# option; a restore to a target leaves live untouched; a tampered object fails before
# anything is dropped; a backup records its contents (documents per collection) as it
# dumps; a restore drill loads into staging, counts, drops the staging and never touches
# live, and fails cleanly on a corrupted object; backups before and after a key rotation
# and under a tenant's own key command (BYOK) restore; 100k documents go through in
# under 64 MB.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/mongo.sh"
# The agent built with AddressSanitizer/UBSan when there is one (make test builds it).
agent_use tenant-backup-agent-mongodb
PLAIN_AGENT=$(dirname "$TB")/tenant-backup-agent-mongodb

scratch_dir
agent_bed_setup "$(free_port)" mongodb
mongo_start "$D/mongo" "$(free_port)"
for t in acme globex initech; do
	mtool drop "$MONGO_URI_BASE" "$t" >/dev/null 2>&1
	mtool fill "$MONGO_URI_BASE" "$t" "$t"
	psql_q "SELECT tenant_backup.tenant_create('$t')" \
		"SELECT tenant_backup.tenant_add_database('$t', 'mongodb', '$MONGO_URI_BASE/$t')" >/dev/null
done
# An empty collection: a backup's contents list it with 0 documents.
mtool cmd "$MONGO_URI_BASE" acme '{"create": "empty"}' >/dev/null

backup() { # TENANT: one backup by a --once agent; prints the new object key
	psql_q "SELECT tenant_backup.tenant_backup('$1', 'mongodb')" >/dev/null
	agent_once "backup-$1" || return 1
	psql_q "SELECT object_key FROM tenant_backup.tenant_backups('$1') WHERE status = 'complete' ORDER BY id DESC LIMIT 1"
}
restore() { # TENANT [TARGET [BACKUP_ID]]: a restore through the SQL API; prints the job's state and error
	local target=NULL
	[ -n "${2:-}" ] && target="'$2'"
	psql_q "SELECT tenant_backup.tenant_restore('$1', 'mongodb', backup_id => ${3:-NULL}, target => $target, wait => false)" >/dev/null
	agent_once "restore-$1"
	psql_q "SELECT state || coalesce(': ' || error, '') FROM tenant_backup.jobs WHERE kind = 'restore' ORDER BY id DESC LIMIT 1"
}
staging_left() { # DB: collections a restore staged and left behind
	mtool cmd "$MONGO_URI_BASE" "$1" '{"listCollections": 1, "nameOnly": true}' | grep -c 'tb_restore_'
}

mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.before"
mtool snapshot "$MONGO_URI_BASE" globex >"$D/globex.before"
grep -q '"expireAfterSeconds"' "$D/acme.before" && grep -q '"capped"' "$D/acme.before" && grep -q '"viewOn"' "$D/acme.before"
ok $? "the server keeps the TTL index, the capped collection and the view (the fixture is what it claims)"

# --- backup: a mongodump archive of only acme
obj=$(backup acme)
[ -n "$obj" ] || diag "$(tail -5 "$D/backup-acme.log")"
like "$obj" '^acme/mongodb/.*\.tbk$' "acme's backup is complete, under acme/mongodb/"
like "$(grep succeeded "$D/backup-acme.log")" 'succeeded: .*; [0-9]+ collections, 1 views, [0-9]+ documents, one snapshot$' \
	"the agent reads the replica set at one snapshot and says what it backed up"
"$TB" cat "$obj" >"$D/acme.archive"
ok $? "tenant-backup cat decrypts it"
is "$(head -c 4 "$D/acme.archive" | od -An -tx1 | tr -d ' ')" 6de29981 "it begins with the mongodump archive magic number"
grep -qa "acme canary" "$D/acme.archive"
ok $? "it holds acme's canary"
grep -qaE "globex canary|initech canary" "$D/acme.archive"
ok $((! $?)) "and no other tenant's documents"
grep -qa '"expireAfterSeconds"' "$D/acme.archive" && grep -qa '"viewOn"' "$D/acme.archive"
ok $? "its metadata carries the TTL index and the view's definition"
expected=$(mtool counts "$MONGO_URI_BASE" acme)
contents=$(psql_q "SELECT contents FROM tenant_backup.backups WHERE object_key = '$obj'")
is "$(psql_q "SELECT '$contents'::jsonb = '$expected'::jsonb")" t \
	"the backup records its contents as dumped: every collection's documents, the empty one as 0, no view"
grep -q '"empty": 0' <<<"$contents"
ok $? "an empty collection is listed with 0 documents ($contents)"
if command -v mongorestore >/dev/null; then
	mongorestore --uri "$MONGO_URI_BASE" --archive="$D/acme.archive" --nsFrom 'acme.*' --nsTo 'acme_mr.*' >/dev/null 2>&1
	ok $? "mongorestore --archive reads the decrypted backup"
fi

# --- drop acme's collections, restore in place: every document byte for byte, every index and option
mtool drop "$MONGO_URI_BASE" acme >/dev/null
mtool cmd "$MONGO_URI_BASE" globex '{"insert": "canary", "documents": [{"_id": 2, "v": "globex after backup"}]}' >/dev/null
mtool snapshot "$MONGO_URI_BASE" globex >"$D/globex.later"
is "$(restore acme)" succeeded "tenant_restore('acme', 'mongodb') after its collections were dropped"
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.after"
diff "$D/acme.before" "$D/acme.after" >"$D/acme.diff"
ok $? "acme is back: every collection's options, every index, every document byte for byte"
[ -s "$D/acme.diff" ] && diag "$(head -20 "$D/acme.diff")"
mtool snapshot "$MONGO_URI_BASE" globex >"$D/globex.after"
cmp -s "$D/globex.later" "$D/globex.after"
ok $? "globex is untouched, its later insert included"
is "$(staging_left acme)" 0 "no staging collection is left"
like "$(grep succeeded "$D/restore-acme.log")" 'succeeded: .*; [0-9]+ collections and views, [0-9]+ documents into "acme"$' \
	"the agent logs what it restored"

# --- in place over live data: replaced collection by collection
mtool cmd "$MONGO_URI_BASE" acme '{"insert": "canary", "documents": [{"_id": 3, "v": "acme after backup"}]}' >/dev/null
is "$(restore acme)" succeeded "a restore over live data succeeds"
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.over"
cmp -s "$D/acme.before" "$D/acme.over"
ok $? "and acme is exactly as backed up again"

# --- to a target
is "$(restore acme acme_copy)" succeeded "tenant_restore(..., target => 'acme_copy')"
mtool snapshot "$MONGO_URI_BASE" acme_copy >"$D/copy"
cmp -s "$D/acme.before" "$D/copy"
ok $? "acme_copy holds what acme held, byte for byte"
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.live"
cmp -s "$D/acme.before" "$D/acme.live"
ok $? "live acme is untouched by a restore to a target"
like "$(restore acme acme_copy)" '^failed: .*target database "acme_copy" already has collections' \
	"a target that has collections is refused"

# --- a tampered object fails before anything is dropped
mtool cmd "$MONGO_URI_BASE" acme '{"insert": "canary", "documents": [{"_id": 4, "v": "live only"}]}' >/dev/null
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.live"
object_get "$obj" "$D/obj.tbk"
cp "$D/obj.tbk" "$D/obj.orig"
flip_byte "$D/obj.tbk" $(($(stat -c %s "$D/obj.tbk") / 2))
object_put "$D/obj.tbk" "$obj"
like "$(restore acme)" '^failed: .*(authentic|corrupt|tamper)' "a restore of a tampered backup fails"
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.after-tamper"
cmp -s "$D/acme.live" "$D/acme.after-tamper"
ok $? "and acme's live collections are as they were, its newest document included"
is "$(staging_left acme)" 0 "the staging collections are dropped"
object_put "$D/obj.orig" "$obj"

# --- restore drill: the newest backup loaded into staging collections, counted, dropped; live untouched
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.live"
is "$(agent_drill acme)" ok "tenant_restore_drill('acme') succeeds"
is "$(psql_q "SELECT j.result->'contents' = b.contents AND b.contents IS NOT NULL AND j.result->>'sha256' = b.sha256
			  FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.id = j.backup_id
			  WHERE j.kind = 'drill' AND j.tenant = 'acme' ORDER BY j.id DESC LIMIT 1")" t \
	"what the drill counted in staging and the object's SHA-256 equal what the backup recorded"
is "$(psql_q "SELECT b.object_key FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.id = j.backup_id
			  WHERE j.kind = 'drill' AND j.tenant = 'acme' ORDER BY j.id DESC LIMIT 1")" "$obj" "it drilled the newest backup"
like "$(grep succeeded "$D/drill-acme.log")" 'succeeded: .*; drill: 6 collections, [0-9]+ documents staged in "acme"$' \
	"the agent logs what it staged"
is "$(staging_left acme)" 0 "no staging collection is left"
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.after-drill"
cmp -s "$D/acme.live" "$D/acme.after-drill"
ok $? "live acme is exactly as it was"
is "$(psql_q "SELECT count(*) FROM tenant_backup.drills WHERE tenant = 'acme' AND ok")" 1 "the drill is recorded"

# --- a drill of a corrupted backup: a clear failure, its staging dropped. The first chunk
# compresses to almost nothing, so the flipped byte in the middle of the object is in a
# later one: the staging collections exist (and hold documents) when it fails.
mtool padded "$MONGO_URI_BASE" hooli a_pad 1500 1000 >/dev/null
mtool many "$MONGO_URI_BASE" hooli b_noise 3000 200 >/dev/null
psql_q "SELECT tenant_backup.tenant_create('hooli')" \
	"SELECT tenant_backup.tenant_add_database('hooli', 'mongodb', '$MONGO_URI_BASE/hooli')" >/dev/null
hobj=$(backup hooli)
like "$hobj" '^hooli/mongodb/' "hooli is backed up"
is "$(agent_drill hooli)" ok "and its drill succeeds"
mtool snapshot "$MONGO_URI_BASE" hooli >"$D/hooli.live"
object_get "$hobj" "$D/hooli.tbk"
flip_byte "$D/hooli.tbk" $(($(stat -c %s "$D/hooli.tbk") / 2))
object_put "$D/hooli.tbk" "$hobj"
like "$(agent_drill hooli)" '^failed: .*restore drill of database "hooli".*corrupt: chunk [1-9][0-9]* fails authentication' \
	"the drill of a corrupted backup fails, naming the chunk that fails authentication"
is "$(psql_q "SELECT count(*) FROM tenant_backup.drills WHERE tenant = 'hooli' AND NOT ok")" 1 "the failed drill is recorded"
is "$(staging_left hooli)" 0 "the staging collections are dropped"
mtool snapshot "$MONGO_URI_BASE" hooli >"$D/hooli.after"
cmp -s "$D/hooli.live" "$D/hooli.after"
ok $? "live hooli is exactly as it was"

# --- key rotation: new backups under a new tenant key, the older ones still restore
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.k1"
id1=$(backup_id "$(backup acme)")
key2=$(psql_q "SELECT tenant_backup.tenant_rotate_key('acme')")
mtool cmd "$MONGO_URI_BASE" acme '{"insert": "canary", "documents": [{"_id": 5, "v": "after rotation"}]}' >/dev/null
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.k2"
id2=$(backup_id "$(backup acme)")
is "$(psql_q "SELECT (SELECT key_id FROM tenant_backup.backups WHERE id = $id2) = '$key2'
			  AND (SELECT key_id FROM tenant_backup.backups WHERE id = $id1) <> '$key2'")" t \
	"the backup after tenant_rotate_key is under the new key, the one before under the old"
is "$(restore acme acme_k1 "$id1")" succeeded "the backup under the old key restores"
mtool snapshot "$MONGO_URI_BASE" acme_k1 >"$D/k1"
cmp -s "$D/acme.k1" "$D/k1"
ok $? "byte for byte as acme was then"
is "$(restore acme acme_k2 "$id2")" succeeded "the backup under the new key restores"
mtool snapshot "$MONGO_URI_BASE" acme_k2 >"$D/k2"
cmp -s "$D/acme.k2" "$D/k2"
ok $? "byte for byte as acme was then"

# --- BYOK: the tenant's keys wrapped by its own key command; a refusing KMS fails the backup
agent_kms_source acme
mtool snapshot "$MONGO_URI_BASE" acme >"$D/acme.byok"
bobj=$(backup acme)
like "$bobj" '^acme/mongodb/' "a backup under the command-wrapped key completes"
is "$(restore acme acme_byok "$(backup_id "$bobj")")" succeeded "and restores"
mtool snapshot "$MONGO_URI_BASE" acme_byok >"$D/byok"
cmp -s "$D/acme.byok" "$D/byok"
ok $? "byte for byte"
agent_kms_refusal acme

# --- 100k documents in bounded memory (the plain build: ASan's own memory would blur it)
mtool many "$MONGO_URI_BASE" initech bulk 100000 200 >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('initech', 'mongodb')" >/dev/null
/usr/bin/time -f '%M' -o "$D/rss.backup" "${AGENT_AS_SERVER_USER[@]}" "$PLAIN_AGENT" --name big --once >>"$D/big.log" 2>&1
ok $? "a backup of 100k documents succeeds"
[ "$(cat "$D/rss.backup")" -lt 65536 ]
ok $? "with peak agent RSS under 64 MB ($(cat "$D/rss.backup") kB)"
mtool snapshot "$MONGO_URI_BASE" initech >"$D/initech.before"
mtool drop "$MONGO_URI_BASE" initech >/dev/null
psql_q "SELECT tenant_backup.tenant_restore('initech', 'mongodb', wait => false)" >/dev/null
/usr/bin/time -f '%M' -o "$D/rss.restore" "${AGENT_AS_SERVER_USER[@]}" "$PLAIN_AGENT" --name big --once >>"$D/big.log" 2>&1
ok $? "its restore succeeds"
[ "$(cat "$D/rss.restore")" -lt 65536 ]
ok $? "with peak agent RSS under 64 MB ($(cat "$D/rss.restore") kB)"
mtool snapshot "$MONGO_URI_BASE" initech >"$D/initech.after"
cmp -s "$D/initech.before" "$D/initech.after"
ok $? "and all 100k documents are back byte for byte"

# --- a standalone server: no snapshot, and the job says so
if [ -z "${TB_TEST_MONGO_URI:-}" ]; then
	base=$MONGO_URI_BASE
	mongo_start "$D/solo" "$(free_port)" ""
	mtool fill "$MONGO_URI_BASE" solo solo
	psql_q "SELECT tenant_backup.tenant_create('solo')" \
		"SELECT tenant_backup.tenant_add_database('solo', 'mongodb', '$MONGO_URI_BASE/solo')" >/dev/null
	like "$(backup solo)" '^solo/mongodb/' "a standalone server is backed up"
	like "$(grep succeeded "$D/backup-solo.log")" 'documents \(standalone: no snapshot\)$' \
		"without a snapshot, and its log line says so"
	MONGO_URI_BASE=$base
fi

# --- what the agent cannot back up yet is a clear failure, never a partial backup
mtool cmd "$MONGO_URI_BASE" tsdb '{"create": "weather", "timeseries": {"timeField": "ts"}}' >/dev/null
psql_q "SELECT tenant_backup.tenant_create('tsdb')" \
	"SELECT tenant_backup.tenant_add_database('tsdb', 'mongodb', '$MONGO_URI_BASE/tsdb')" >/dev/null
backup tsdb >/dev/null
like "$(psql_q "SELECT error FROM tenant_backup.jobs WHERE tenant = 'tsdb' ORDER BY id DESC LIMIT 1")" \
	'"weather" is a timeseries collection, which this agent cannot back up yet' "a time-series collection is refused by name"
is "$(psql_q "SELECT count(*) FILTER (WHERE status = 'complete') FROM tenant_backup.tenant_backups('tsdb')")" 0 \
	"and no backup of it is complete"

# --- credentials: sealed in the catalog, never in a log or an error
psql_q "SELECT tenant_backup.tenant_create('secretive')" \
	"SELECT tenant_backup.tenant_add_database('secretive', 'mongodb', 'mongodb://tb:Pw-s3cr3t-42@127.0.0.1:1/secretive?serverSelectionTimeoutMS=500')" >/dev/null
backup secretive >/dev/null
is "$(psql_q "SELECT count(*) FROM tenant_backup.sources WHERE locator LIKE '%Pw-s3cr3t%'")" 0 "the catalog keeps no password in clear"
like "$(psql_q "SELECT error FROM tenant_backup.jobs WHERE tenant = 'secretive' ORDER BY id DESC LIMIT 1")" \
	'MongoDB|127.0.0.1:1' "an unreachable server fails the backup with where it was"
grep -rqF 'Pw-s3cr3t-42' "$D"/*.log "$D/pg/server.log"
ok $((! $?)) "the password is in no log"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE error LIKE '%Pw-s3cr3t%'")" 0 "nor in any job's error"

done_testing
