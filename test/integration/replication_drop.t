#!/bin/bash
# Retention, legal holds and tenant_drop cover the replica (issue #19), with two real
# storages: a file:// primary and a Swift S3 replica. Expiry deletes the replica copy
# too; a legal hold keeps both; a drop deletes both (key documents first) and its
# certificate names both; a drop while the replica is stopped is pending (the primary
# done, the tenant's name not reusable), and once the replica is back the launcher
# finishes it and appends the completed certificate; the janitor removes an object in
# the replica that no catalog row names, and nothing else.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/s3.sh"

scratch_dir
S3_PORT=$(free_port)
s3_start "$D" "$S3_PORT"
mkdir -p "$D/store"
chown postgres "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null || { echo "Bail out! tenant-backup keygen failed ($TB)"; exit 1; }
chown postgres "$D/master.key"
# No retries: a stopped replica fails at once.
REPLICA="s3://$TB_S3_BUCKET/replica?retries=0"

pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.replica_storage = '$REPLICA'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5
tenant_backup.janitor_interval = '1s'
tenant_backup.janitor_grace = '1 day'"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$D/pg/server.log" "CREATE EXTENSION failed"

intents_idle() { psql_q "SELECT count(*) FROM tenant_backup.storage_intents WHERE state = 'pending'"; }
# Backup objects (.tbk, not WAL) of a tenant in each storage and in the catalog, sorted.
primary_objects() { (cd "$D/store" && find "$1" -name '*.tbk' 2>/dev/null | sort | paste -sd' '); }
replica_keys() { # TENANT: every key under replica/TENANT/, without the replica/ prefix
	aws_s3 s3api list-objects-v2 --bucket "$TB_S3_BUCKET" --prefix "replica/$1/" --query 'Contents[].Key' \
		--output text | tr '\t' '\n' | grep -v '^None$' | sed 's|^replica/||' | sort
}
replica_objects() { replica_keys "$1" | grep '\.tbk$' | paste -sd' '; }
catalog_objects() {
	psql_q "SELECT coalesce(string_agg(object_key, ' ' ORDER BY object_key COLLATE \"C\"), '') FROM tenant_backup.backups
		WHERE tenant = '$1' AND object_key IS NOT NULL"
}
# The replication engine (replicate.c) copies every complete backup, its manifest and
# the tenant's key documents.
not_replicated() {
	psql_q "SELECT count(*) FROM tenant_backup.backups WHERE status = 'complete' AND replica_state IS DISTINCT FROM 'replicated'"
}
for t in acme globex; do
	psql_q "CREATE DATABASE $t" >/dev/null
	PGDATABASE=$t psql_q "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 500) g" >/dev/null
	psql_q "SELECT tenant_backup.tenant_create('$t')" "SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" \
		>/dev/null
	for _ in 1 2 3; do psql_q "SELECT tenant_backup.tenant_backup('$t', wait => true)" >/dev/null; done
	psql_q "SELECT tenant_backup.tenant_set_retention('$t', keep_last => 1, keep_daily => 0, keep_weekly => 0, keep_monthly => 0)" \
		>/dev/null
done
wait_for 50 0.2 0 intents_idle >/dev/null
wait_for 300 0.2 0 not_replicated >/dev/null
ok $? "the replication engine copied both tenants' backups to the replica"
is "$(psql_q "SELECT DISTINCT replica_url FROM tenant_backup.backups")" "$REPLICA" "to the replica URL"
is "$(replica_objects acme)" "$(primary_objects acme)" "the replica holds the same keys as the primary"
is "$(echo "$(catalog_objects acme)" | wc -w)" 3 "three backups of acme"

# ------------------------------------------------------------ expiry
expired=$(psql_q "SELECT count(*) FROM tenant_backup.tenant_expire('acme', dry_run => false)")
is "$expired" 2 "retention expires two of acme's backups"
is "$(psql_q "SELECT count(*) FILTER (WHERE storage IS NULL) || ' ' || count(*) FILTER (WHERE storage = '$REPLICA')
	FROM tenant_backup.storage_intents WHERE tenant = 'acme' AND action = 'delete backup'")" "2 2" \
	"each deletion is an intent in the primary and one in the replica"
wait_for 50 0.2 0 intents_idle >/dev/null
is "$(primary_objects acme)" "$(catalog_objects acme)" "after the launcher's pass the primary holds what the catalog names"
is "$(replica_objects acme)" "$(catalog_objects acme)" "and so does the replica: the expired copies are gone there too"
is "$(replica_keys acme | grep -c '/postgres/.*\.json$')" 1 "with their manifests"
is "$(psql_q "SELECT sum(deleted_objects) FROM tenant_backup.storage_intents WHERE tenant = 'acme' AND storage = '$REPLICA'")" 2 \
	"the replica intents record what they deleted"

# ------------------------------------------------------------ a legal hold
psql_q "SELECT tenant_backup.tenant_hold('globex', 'case 2026-19')" >/dev/null
before_primary=$(primary_objects globex)
before_replica=$(replica_objects globex)
psql_q "SELECT tenant_backup._retention_run()" >/dev/null
out=$(psql_q "SELECT count(*) FROM tenant_backup.tenant_expire('globex', dry_run => false)" 2>&1)
like "$out" 'on legal hold' "expiry of a held tenant is refused"
wait_for 50 0.2 0 intents_idle >/dev/null
is "$(echo "$before_replica" | wc -w) $(primary_objects globex)" "3 $before_primary" \
	"a held tenant keeps its three backups in the primary after the retention pass"
is "$(replica_objects globex)" "$before_replica" "and in the replica"
is "$(psql_q "SELECT count(*) FROM tenant_backup.storage_intents WHERE tenant = 'globex' AND action = 'delete backup'")" 0 \
	"no deletion was even queued"

# ------------------------------------------------------------ the janitor looks at the replica
# Only now a grace of a second: earlier, the expired backups' objects (no catalog row
# once expired) could be taken by the janitor before their deletion intents ran.
psql_q "ALTER SYSTEM SET tenant_backup.janitor_grace = '1s'" "SELECT pg_reload_conf()" >/dev/null
kept=$(catalog_objects acme)
orphan="acme/postgres/2026-01-01T000000Z-902"
aws_s3 s3 cp --quiet "$D/store/$kept" "s3://$TB_S3_BUCKET/replica/$orphan.tbk"
aws_s3 s3 cp --quiet "$D/store/${kept%.tbk}.json" "s3://$TB_S3_BUCKET/replica/$orphan.json"
wait_for 100 0.2 1 psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'unreferenced object removed'
	AND detail->>'storage' = '$REPLICA'" >/dev/null
ok $? "after janitor_grace the janitor removes an object in the replica that no catalog row names"
is "$(replica_keys acme | grep -c "^$orphan")" 0 "with its manifest"
is "$(replica_objects acme)" "$kept" "and leaves the replica copy the catalog names"
is "$(psql_q "SELECT detail->>'object' FROM tenant_backup.audit WHERE action = 'unreferenced object removed'")" "$orphan.tbk" \
	"one audit row, naming the object (the primary had nothing to remove)"

# An object a pending deletion intent names is the intent's, however old: its deletion
# is recorded there. The intent waits while the tenant's replication lock is held.
exec {lockfd}> >("$PG_BIN/psql" -X -q >/dev/null 2>&1)
echo "SELECT pg_advisory_lock(hashtext('tenant_backup replication'), hashtext('acme')); SELECT pg_sleep(60) AS holds_the_lock;" >&"$lockfd"
wait_for 50 0.1 1 psql_q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted" >/dev/null
doomed="acme/postgres/2026-01-01T000000Z-903"
aws_s3 s3 cp --quiet "$D/store/$kept" "s3://$TB_S3_BUCKET/replica/$doomed.tbk"
aws_s3 s3 cp --quiet "$D/store/${kept%.tbk}.json" "s3://$TB_S3_BUCKET/replica/$doomed.json"
psql_q "INSERT INTO tenant_backup.storage_intents (tenant, action, object, created_by, storage)
	VALUES ('acme', 'delete backup', '$doomed.tbk', 'test', '$REPLICA')" >/dev/null
rounds=$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'unreferenced object removed'")
orphan2="acme/postgres/2026-01-01T000000Z-904"
aws_s3 s3 cp --quiet "$D/store/$kept" "s3://$TB_S3_BUCKET/replica/$orphan2.tbk"
wait_for 100 0.2 $((rounds + 1)) psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'unreferenced object removed'" \
	>/dev/null
ok $? "the janitor removes a new orphan in the replica while a deletion intent there waits"
is "$(replica_keys acme | grep -c "^$doomed")" 2 "but not the object and manifest the pending intent names"
psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%holds_the_lock%' AND pid <> pg_backend_pid()" >/dev/null
exec {lockfd}>&-
wait_for 50 0.2 0 intents_idle >/dev/null
is "$(psql_q "SELECT deleted_objects FROM tenant_backup.storage_intents WHERE object = '$doomed.tbk'") $(replica_keys acme | grep -c "^$doomed")" \
	"1 0" "once the lock is free the intent deletes it and records the deletion"

# ------------------------------------------------------------ a dedicated tenant's WAL in the replica
# Its oldest complete base backup starts in segment 3 of timeline 1: the replica's WAL
# before that goes (as in the primary after a base backup), later and newer-timeline WAL stays.
psql_q "SELECT tenant_backup.tenant_create('ded', tier => 'dedicated')" \
	"INSERT INTO tenant_backup.backups (tenant, engine, status, finished, object_key, sha256, start_lsn, timeline)
	 VALUES ('ded', 'postgres', 'complete', now(), 'ded/postgres/base-1.tbk', repeat('0', 64), '0/3000028', 1),
			('ded', 'postgres', 'complete', now(), 'ded/postgres/base-2.tbk', repeat('0', 64), '0/5000028', 1)" >/dev/null
for seg in 00000001/000000010000000000000001 00000001/000000010000000000000002 00000001/000000010000000000000003 \
	00000001/000000010000000000000004 00000002/000000020000000000000001; do
	for ext in tbk json; do echo wal | aws_s3 s3 cp --quiet - "s3://$TB_S3_BUCKET/replica/ded/postgres/wal/$seg.$ext"; done
done
# (The janitor may see the uploads in more than one pass.)
wal_audit() { psql_q "SELECT sum((detail->>'removed_objects')::int) || ' ' || string_agg(DISTINCT detail->>'kept_from', ',') || ' '
	|| string_agg(DISTINCT detail->>'storage', ',') FROM tenant_backup.audit WHERE tenant = 'ded' AND action = 'archived WAL removed'"; }
wait_for 100 0.2 "4 000000010000000000000003 $REPLICA" wal_audit >/dev/null
ok $? "the janitor removes a dedicated tenant's WAL in the replica that no base backup needs"
is "$(replica_keys ded | grep '/wal/' | paste -sd' ')" \
	"$(printf 'ded/postgres/wal/%s ' 00000001/000000010000000000000003.json 00000001/000000010000000000000003.tbk \
		00000001/000000010000000000000004.json 00000001/000000010000000000000004.tbk 00000002/000000020000000000000001.json \
		00000002/000000020000000000000001.tbk | sed 's/ $//')" "and keeps what the oldest base backup needs, and newer timelines"
is "$(wal_audit)" "4 000000010000000000000003 $REPLICA" "with audit rows naming the replica, what was kept and how many went"

# ------------------------------------------------------------ drop with both storages up
primary_count=$(find "$D/store/acme" -type f | wc -l)
replica_count=$(replica_keys acme | wc -l)
log_mark=$(wc -l <"$D/s3/run/proxy.log")
# A replication worker copying now holds its tenant's lock (replicate.c): it could put a
# key document back after the drop deleted it, so the drop waits for it.
"$PG_BIN/psql" -X -q -c "SELECT pg_advisory_lock(hashtext('tenant_backup replication'), hashtext('acme'))" \
	-c "SELECT pg_sleep(2)" >/dev/null 2>&1 &
locker=$!
wait_for 50 0.1 1 psql_q "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)'" >/dev/null
started=$(date +%s%N)
cert=$(psql_q "SELECT tenant_backup.tenant_drop('acme', confirm => 'acme')" 2>"$D/drop.err")
ok $? "tenant_drop('acme') with both storages up"
waited=$((($(date +%s%N) - started) / 1000000))
wait "$locker"
like "$(cat "$D/drop.err")" 'waiting for the replication worker of tenant "acme" to finish its copy' \
	"it says it waits for the tenant's replication worker"
ok $((waited < 1000)) "and waits until the worker let go (${waited} ms)"
is "$(tail -n +$((log_mark + 1)) "$D/s3/run/proxy.log" | grep 'DELETE' | grep -o 'replica/acme/[a-z]*/' | uniq | paste -sd' ')" \
	"replica/acme/keys/ replica/acme/postgres/" "in the replica it deletes the key documents before any object"
c() { psql_q "SELECT $1 FROM (SELECT \$j\$$cert\$j\$::jsonb AS c) x"; }
is "$(c "c->>'status'")" complete "the certificate is complete"
is "$(c "(SELECT string_agg(s->>'role' || ' ' || (s->>'url') || ' ' || (s->>'status') || ' ' || (s->>'objects_deleted'), ', ')
	FROM jsonb_array_elements(c->'storage') s)")" \
	"primary file://$D/store deleted $primary_count, replica $REPLICA deleted $replica_count" \
	"it names both storages by URL and what was deleted in each"
is "$(c "(c->>'objects_deleted')::int")" $((primary_count + replica_count)) "objects_deleted counts both"
is "$(find "$D/store/acme" -type f | wc -l) $(replica_keys acme | wc -l)" "0 0" "nothing of acme is left in either storage"
is "$(psql_q "SELECT (SELECT count(*) FROM tenant_backup.tenants WHERE name = 'acme') + (SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme')
	+ (SELECT count(*) FROM tenant_backup.key_store WHERE tenant = 'acme') + (SELECT count(*) FROM tenant_backup.storage_intents WHERE tenant = 'acme' AND state = 'pending')")" 0 \
	"nor in the catalog, and nothing is pending"

# ------------------------------------------------------------ drop with the replica stopped
psql_q "SELECT tenant_backup.tenant_release('globex')" >/dev/null
replica_count=$(replica_keys globex | wc -l)
sh "$S3SERVER" stop "$D/s3" >/dev/null
cert=$(psql_q "SELECT tenant_backup.tenant_drop('globex', confirm => 'globex')" 2>"$D/drop.err")
ok $? "tenant_drop('globex') with the replica stopped goes through"
like "$(cat "$D/drop.err")" "WARNING: +tenant \"globex\" is dropped, but its deletion is pending in s3://" \
	"with a WARNING that the replica part is pending"
is "$(c "c->>'status'")" pending "the certificate says pending"
is "$(c "(SELECT string_agg(s->>'role' || ' ' || (s->>'status') || ' ' || coalesce(s->>'pending', '-'), ', ') FROM jsonb_array_elements(c->'storage') s)")" \
	'primary deleted -, replica pending ["globex/keys/", "globex/"]' \
	"the primary is done; the replica's key documents, then its objects, are pending"
is "$(find "$D/store/globex" -type f 2>/dev/null | wc -l)" 0 "nothing of globex is left in the primary"
is "$(psql_q "SELECT string_agg(object || ' ' || storage, ', ' ORDER BY id) FROM tenant_backup.storage_intents
	WHERE tenant = 'globex' AND state = 'pending' AND certificate_audit_id = $(c "c->>'audit_id'")")" \
	"globex/keys/ $REPLICA, globex/ $REPLICA" "storage_intents shows the pending deletions in the replica"
out=$(psql_q "SELECT tenant_backup.tenant_create('globex')" 2>&1)
like "$out" 'tenant "globex" cannot be created yet: the deletion of the dropped tenant of that name is still pending' \
	"the name cannot be reused while its deletion is pending"
sleep 1
is "$(intents_idle)" 2 "the launcher keeps them pending while the replica is down"
sh "$S3SERVER" start "$D/s3" "$S3_PORT" >/dev/null || { echo "Bail out! S3 server did not restart"; exit 1; }
wait_for 150 0.2 0 intents_idle >/dev/null
ok $? "once the replica is back the launcher finishes the drop"
is "$(replica_keys globex | wc -l)" 0 "nothing of globex is left in the replica"
done_cert=$(psql_q "SELECT detail FROM tenant_backup.audit WHERE tenant = 'globex' AND action = 'tenant dropped' ORDER BY id DESC LIMIT 1")
is "$(psql_q "SELECT c->>'status' || ' ' || (c->>'completes_audit_id') || ' ' || (SELECT string_agg(s->>'role' || ' ' || (s->>'status') || ' ' || (s->>'objects_deleted'), ', ')
	FROM jsonb_array_elements(c->'storage') s) FROM (SELECT \$j\$$done_cert\$j\$::jsonb AS c) x")" \
	"complete $(c "c->>'audit_id'") primary deleted $(c "c->'storage'->0->>'objects_deleted'"), replica deleted $replica_count" \
	"the completed certificate, appended to the audit log, names what was deleted in each storage"
is "$(psql_q "SELECT detail->>'certificate_sha256' = encode(sha256(convert_to((detail - 'certificate_sha256')::text, 'UTF8')), 'hex')
	FROM tenant_backup.audit WHERE tenant = 'globex' AND action = 'tenant dropped' ORDER BY id DESC LIMIT 1")" t \
	"its SHA-256 is chained into the audit log"
is "$(psql_q "SELECT r->'deletion'->'certificate'->>'status' FROM tenant_backup.tenant_compliance_report('globex') r")" complete \
	"the compliance report shows the completed certificate"
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" t "the audit chain verifies"
psql_q "SELECT tenant_backup.tenant_create('globex')" >/dev/null
ok $? "and the name can be used again"

done_testing
