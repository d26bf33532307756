#!/bin/bash
# Storage and catalog never disagree: a rolled-back rotation leaves no key in storage
# and the CLI seals with the catalog's active key (keys/active.json), not the newest
# document; a rolled-back expire deletes nothing; an ERROR or a pg_terminate_backend
# after a backup's put began leaves no temporary; the janitor removes unfinished writes
# and unreferenced objects after their grace, with an audit row each, and nothing else;
# a drop with an unlistable directory refuses before destroying keys; a BYOK key source
# on the archived tenant needs tenant_backup.archive_key_command, with which the
# archiver keeps archiving.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)

scratch_dir
mkdir -p "$D/store" "$D/kms"
chown postgres "$D/store" "$D/kms"
"$TB" keygen --out "$D/master.key" 2>/dev/null || { echo "Bail out! tenant-backup keygen failed ($TB)"; exit 1; }
chown postgres "$D/master.key"
export TENANT_BACKUP_STORAGE="file://$D/store" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
KMS="sh $HERE/lib/kms.sh $D/kms"

pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5
tenant_backup.retry_delays = '1 h'
tenant_backup.janitor_interval = '1s'
wal_level = replica
archive_mode = on
archive_library = 'tenant_backup'
tenant_backup.archive_tenant = 'ded'"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$D/pg/server.log" "CREATE EXTENSION failed"

key_docs() { (cd "$D/store" && ls acme/keys/ 2>/dev/null | grep -E '^[0-9a-f]{16}\.json$' | sort | paste -sd' '); }
active_key() { psql_q "SELECT key_id FROM tenant_backup.key_store WHERE tenant = '$1' AND state = 'active'"; }
# Unfinished writes of acme's backups (objects and manifests). The launcher's own
# short-lived writes (keys/active.json, the audit head under _audit/) are not theirs and
# would make a count of the whole storage flicker.
temporaries() { find "$D/store/acme/postgres" -maxdepth 1 -name '.*.tmp-*' 2>/dev/null | wc -l; }
intents_idle() { psql_q "SELECT count(*) FROM tenant_backup.storage_intents WHERE state = 'pending'"; }
# Every backup object (not archived WAL) in storage, and every object the catalog names: the same set.
stored_objects() { (cd "$D/store" && find . -path '*/wal' -prune -o -name '*.tbk' -print | sed 's|^\./||' | sort | paste -sd' '); }
catalog_objects() { psql_q "SELECT coalesce(string_agg(object_key, ' ' ORDER BY object_key COLLATE \"C\"), '') FROM tenant_backup.backups WHERE object_key IS NOT NULL"; }
storage_matches_catalog() { # NAME
	is "$(stored_objects)" "$(catalog_objects)" "$1: storage holds exactly the objects the catalog names"
}
job_done() { psql_q "SELECT state <> 'running' AND (state <> 'queued' OR attempts > 0) FROM tenant_backup.jobs WHERE id = $1"; }

psql_q "CREATE DATABASE acme" >/dev/null
PGDATABASE=acme psql_q "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 1000) g" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('acme')" "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme')" >/dev/null

# ------------------------------------------------------------ the active key
wait_for 50 0.2 0 intents_idle >/dev/null
[ -f "$D/store/acme/keys/active.json" ]
ok $? "after commit the launcher writes acme/keys/active.json"
before=$(key_docs)
psql_q "BEGIN" "SELECT tenant_backup.tenant_rotate_key('acme')" "ROLLBACK" >/dev/null
is "$(key_docs)" "$before" "a rolled-back tenant_rotate_key leaves no key document in storage"
psql_q "BEGIN" "SAVEPOINT s" "SELECT tenant_backup.tenant_rotate_key('acme')" "ROLLBACK TO SAVEPOINT s" \
	"SELECT tenant_backup.tenant_rotate_key('acme')" "COMMIT" >/dev/null
is "$(echo "$(key_docs)" | wc -w)" 2 "a rotation rolled back to a savepoint leaves none either, the committed one stays"
# A backend killed hard (the postmaster restarts) cannot undo: its key document stays, newest of all.
# active.json is written after commit, by the launcher: read it once that is done.
wait_for 50 0.2 0 intents_idle >/dev/null
active=$(active_key acme)
"$PG_BIN/psql" -X -q -c "BEGIN" -c "SELECT tenant_backup.tenant_rotate_key('acme')" \
	-c "SELECT pg_sleep(30)" >/dev/null 2>&1 &
wait_for 50 0.1 3 sh -c "ls '$D/store/acme/keys/' | grep -cE '^[0-9a-f]{16}\.json$'" >/dev/null
kill -KILL "$(psql_q "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()")"
wait
wait_for 100 0.2 1 psql_q "SELECT 1" >/dev/null
# Key ids are random: the crashed rotation's document is the one the catalog does not name.
known=$(psql_q "SELECT key_id FROM tenant_backup.key_store WHERE tenant = 'acme'")
orphans=$(cd "$D/store/acme/keys" && ls | sed -n 's/^\([0-9a-f]\{16\}\)\.json$/\1/p' | grep -vxF "$known")
is "$(echo "$orphans" | grep -c .) $(active_key acme)" "1 $active" \
	"a crashed rotation leaves a key document the catalog does not know; the active key is unchanged"
echo data | "$TB" put --tenant acme --engine postgres >/dev/null 2>"$D/put.err"
put_rc=$?
chown -R postgres "$D/store"
(exit $put_rc)
ok $? "the CLI seals a new object"
is "$(grep -h '"key_id"' "$D"/store/acme/postgres/*.json | grep -c "$active")" 1 \
	"with the catalog's active key (active.json), not the newest document in storage"
rm -f "$D"/store/acme/postgres/*.tbk "$D"/store/acme/postgres/*.json

# ------------------------------------------------------------ expire in a transaction
for _ in 1 2 3; do psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null; done
psql_q "SELECT tenant_backup.tenant_set_retention('acme', keep_last => 1, keep_daily => 0, keep_weekly => 0, keep_monthly => 0)" >/dev/null
objects=$(stored_objects)
is "$(echo "$objects" | wc -w)" 3 "three backups stored"
psql_q "BEGIN" "SELECT count(*) FROM tenant_backup.tenant_expire('acme', dry_run => false)" "ROLLBACK" >/dev/null
is "$(stored_objects)" "$objects" "a rolled-back tenant_expire deletes nothing from storage"
storage_matches_catalog "after the rolled-back expire"
expired=$(psql_q "SELECT count(*) FROM tenant_backup.tenant_expire('acme', dry_run => false)")
is "$expired" 2 "a committed tenant_expire removes two backups from the catalog"
wait_for 50 0.2 0 intents_idle >/dev/null
storage_matches_catalog "after the launcher carried out the expire's intents"

# ------------------------------------------------------------ an ERROR after the put began
psql_q "UPDATE tenant_backup.sources SET sealed_password = 'v1:0000000000000000:bm90IHNlYWxlZA' WHERE tenant = 'acme'" >/dev/null
job=$(psql_q "SELECT tenant_backup.tenant_backup('acme')")
wait_for 100 0.2 t job_done "$job" >/dev/null
like "$(psql_q "SELECT error FROM tenant_backup.jobs WHERE id = $job")" "." "a source whose sealed password does not open fails the backup"
wait_for 50 0.1 0 psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup job'" >/dev/null
is "$(temporaries)" 0 "and leaves no temporary object once its worker exited"
storage_matches_catalog "after the ERROR"
psql_q "UPDATE tenant_backup.sources SET sealed_password = NULL WHERE tenant = 'acme'" \
	"UPDATE tenant_backup.jobs SET state = 'failed' WHERE id = $job" >/dev/null

# ------------------------------------------------------------ pg_terminate_backend during a dump
exec {lockfd}> >(PGDATABASE=acme "$PG_BIN/psql" -X -q >/dev/null 2>&1)
echo "BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60);" >&"$lockfd"
job=$(psql_q "SELECT tenant_backup.tenant_backup('acme')")
wait_for 100 0.1 1 temporaries >/dev/null
is "$(temporaries)" 1 "a backup waiting for pg_dump has its temporary object in storage"
psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'tenant_backup job'" >/dev/null
wait_for 100 0.1 0 psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup job'" >/dev/null
is "$(temporaries)" 0 "pg_terminate_backend of its worker leaves no temporary object"
psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%LOCK TABLE orders%' AND pid <> pg_backend_pid()" >/dev/null
exec {lockfd}>&-
psql_q "UPDATE tenant_backup.jobs SET state = 'failed', lease_owner = NULL WHERE id = $job" >/dev/null
storage_matches_catalog "after pg_terminate_backend"

# ------------------------------------------------------------ the janitor
kept=$(catalog_objects)
mkdir -p "$D/store/acme/postgres/wal/00000001"
printf 'partial' > "$D/store/acme/postgres/.2026-01-01T000000Z-900.tbk.tmp-0123abcd"
printf 'fresh' > "$D/store/acme/postgres/.2026-01-01T000000Z-901.tbk.tmp-4567cdef"
cp "$D/store/$kept" "$D/store/acme/postgres/2026-01-01T000000Z-902.tbk"
cp "$D/store/${kept%.tbk}.json" "$D/store/acme/postgres/2026-01-01T000000Z-902.json"
printf 'lone manifest' > "$D/store/acme/postgres/2026-01-01T000000Z-903.json"
printf 'wal' > "$D/store/acme/postgres/wal/00000001/000000010000000000000001.tbk"
printf 'key' > "$D/store/acme/keys/00000000deadbeef.json"
touch -d '2 hours ago' "$D/store/acme/postgres/.2026-01-01T000000Z-900.tbk.tmp-0123abcd" \
	"$D/store/acme/postgres/2026-01-01T000000Z-902."* "$D/store/acme/postgres/2026-01-01T000000Z-903.json" \
	"$D/store/acme/postgres/wal/00000001/000000010000000000000001.tbk" "$D/store/acme/keys/00000000deadbeef.json"
chown -R postgres "$D/store/acme"
wait_for 50 0.2 1 psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'unfinished write removed'" >/dev/null
[ ! -e "$D/store/acme/postgres/.2026-01-01T000000Z-900.tbk.tmp-0123abcd" ]
ok $? "the janitor removes an unfinished write older than a lease"
[ -e "$D/store/acme/postgres/.2026-01-01T000000Z-901.tbk.tmp-4567cdef" ]
ok $? "and leaves a younger one"
sleep 1.5
[ -e "$D/store/acme/postgres/2026-01-01T000000Z-902.tbk" ]
ok $? "an unreferenced complete object stays while younger than janitor_grace (1 day)"
psql_q "ALTER SYSTEM SET tenant_backup.janitor_grace = '1 hour'" "SELECT pg_reload_conf()" >/dev/null
wait_for 50 0.2 2 psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'unreferenced object removed'" >/dev/null
[ ! -e "$D/store/acme/postgres/2026-01-01T000000Z-902.tbk" ] && [ ! -e "$D/store/acme/postgres/2026-01-01T000000Z-902.json" ] &&
	[ ! -e "$D/store/acme/postgres/2026-01-01T000000Z-903.json" ]
ok $? "after janitor_grace it removes the unreferenced object, its manifest and a lone manifest"
is "$(psql_q "SELECT string_agg(detail->>'object', ' ' ORDER BY id) FROM tenant_backup.audit WHERE action = 'unreferenced object removed'")" \
	"acme/postgres/2026-01-01T000000Z-902.tbk acme/postgres/2026-01-01T000000Z-903.json" "with an audit row for each"
[ -e "$D/store/acme/postgres/wal/00000001/000000010000000000000001.tbk" ] && [ -e "$D/store/acme/keys/00000000deadbeef.json" ] &&
	[ -e "$D/store/$kept" ]
ok $? "archived WAL, key documents and objects the catalog names are never the janitor's"
rm -f "$D/store/acme/postgres/.2026-01-01T000000Z-901.tbk.tmp-4567cdef"
storage_matches_catalog "after the janitor"

# ------------------------------------------------------------ a drop that cannot list everything
mkdir -p "$D/store/acme/mysql/locked"
chmod 000 "$D/store/acme/mysql/locked"
before=$(key_docs)
out=$(psql_q "SELECT tenant_backup.tenant_drop('acme', confirm => 'acme')" 2>&1)
like "$out" 'tenant "acme" is not dropped: its storage cannot be listed' "a drop with an unlistable directory refuses"
is "$(key_docs) $(psql_q "SELECT count(*) FROM tenant_backup.key_store WHERE tenant = 'acme' AND state = 'active'")" "$before 1" \
	"before destroying any key, in storage or the catalog"
chmod 755 "$D/store/acme/mysql/locked"
psql_q "SELECT tenant_backup.tenant_drop('acme', confirm => 'acme')" >/dev/null
ok $? "once listable, the drop goes through"
is "$(find "$D/store/acme" -type f | wc -l)" 0 "and leaves nothing of acme"

# ------------------------------------------------------------ BYOK on the archived tenant
psql_q "SELECT tenant_backup.tenant_create('ded', tier => 'dedicated')" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_set_key_source('ded', '$KMS')" 2>&1)
like "$out" 'tenant "ded" cannot get a key command: this cluster archives its WAL' \
	"a key command for the archived tenant is refused without tenant_backup.archive_key_command"
like "$out" 'Set tenant_backup.archive_key_command' "the hint says what to set"
is "$(psql_q "SELECT count(*) FROM tenant_backup.key_store WHERE tenant = 'ded'")" 1 "and no key was made"
psql_q "ALTER SYSTEM SET tenant_backup.archive_key_command = '$KMS'" "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
byok=$(psql_q "SELECT tenant_backup.tenant_set_key_source('ded', '$KMS')")
like "$byok" '^[0-9a-f]{16}$' "with it set, the archived tenant gets its key command"
wait_for 50 0.2 0 intents_idle >/dev/null
# A fresh archiver reads the active key (command-wrapped) at once.
pg_restart "$D/pg"
seg=$(psql_q "SELECT pg_walfile_name(pg_switch_wal())")
psql_q "CREATE TABLE wake (n int)" "SELECT pg_switch_wal()" >/dev/null
wait_for 300 0.1 t psql_q "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver" >/dev/null
ok $? "the archiver archives the BYOK tenant's WAL"
is "$(grep -l "\"key_id\": \"$byok\"" "$D"/store/ded/postgres/wal/*/*.json 2>/dev/null | wc -l | awk '$1 > 0 {print "yes"}')" yes \
	"sealed with the key the tenant's command wraps"
like "$(grep -c "ded unwrap $byok" "$D/kms/calls")" '^[1-9]' "unwrapped by running tenant_backup.archive_key_command"

done_testing
