#!/bin/bash
# Replication against hostile operators and storage (issue #19 review), with a file://
# primary and a file:// replica: an operator may name only tenant_backup.replica_storage
# itself (no root above it, no sub-path, no sibling prefix), nobody may nest a replica
# root in another in use, and an operator's URL is checked again by the worker once the
# setting changed; a key document planted in the primary that does not parse (\u0000,
# nesting too deep) is not copied and does not stop the tenant's backups replicating; a
# WAL manifest planted in the replica does not stop that WAL file being copied.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

scratch_dir
mkdir -p "$D/store" "$D/replica/repl" "$D/moved"
chown -R postgres "$D/store" "$D/replica" "$D/moved"
"$TB" keygen --out "$D/master.key" 2>/dev/null || { echo "Bail out! tenant-backup keygen failed ($TB)"; exit 1; }
chown postgres "$D/master.key"
REPLICA="file://$D/replica/repl"

pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.replica_storage = '$REPLICA'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup" "CREATE ROLE ops" "GRANT tenant_backup_operator TO ops" >/dev/null ||
	pg_bail "$D/pg/server.log" "CREATE EXTENSION failed"
for t in acme globex; do
	psql_q "CREATE DATABASE $t" "SELECT tenant_backup.tenant_create('$t')" \
		"SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" >/dev/null
done

# A tenant_set_replica call as the operator: its error's message and detail, or its result.
as_ops() { # TENANT URL
	psql_q "SET SESSION AUTHORIZATION ops" "\\set VERBOSITY verbose" \
		"SELECT tenant_backup.tenant_set_replica('$1', '$2')" 2>&1 | grep -v '^LOCATION' | tr '\n' ' '
}

# ------------------------------------------------------------ what an operator may name
for url in "file://$D/replica" "$REPLICA/acme" "file://$D/replica/other" "file://$D/moved" "file://$D/store/../x"; do
	like "$(as_ops globex "$url")" 'the replica storage URL for tenant "globex" is refused' \
		"an operator cannot name ${url#file://$D}"
done
like "$(as_ops globex "file://$D/replica")" 'must be tenant_backup.replica_storage itself' \
	"the refusal says the operator may name only tenant_backup.replica_storage"
is "$(psql_q "SELECT coalesce(replica_storage, '-') FROM tenant_backup.tenants WHERE name = 'globex'")" - \
	"refusals left globex's replica as it was"
is "$(as_ops globex "$REPLICA")" "$REPLICA " "the operator may name tenant_backup.replica_storage itself"
is "$(psql_q "SELECT replica_set_by_superuser FROM tenant_backup.tenants WHERE name = 'globex'")" f \
	"recorded as not set by a superuser"

# ------------------------------------------------------------ nobody nests a replica root in another
set_replica() { # TENANT URL: as superuser
	psql_q "SELECT tenant_backup.tenant_set_replica('$1', '$2')" 2>&1 | tr '\n' ' '
}
like "$(set_replica acme "file://$D/replica")" 'above or below a replica root in use' \
	"a superuser cannot name the root above tenant_backup.replica_storage either"
like "$(set_replica acme "$REPLICA/acme")" 'above or below a replica root in use' "nor a directory inside it"
is "$(set_replica acme "file://$D/replica/acme-own")" "file://$D/replica/acme-own " \
	"a superuser may name a directory beside it"
is "$(psql_q "SELECT replica_set_by_superuser FROM tenant_backup.tenants WHERE name = 'acme'")" t \
	"recorded as set by a superuser"
like "$(set_replica globex "file://$D/replica/acme-own/x")" 'above or below a replica root in use' \
	"nor one inside another tenant's replica"
is "$(set_replica acme "$REPLICA")" "$REPLICA " "the setting's URL itself is fine"

# ------------------------------------------------------------ hostile key documents in the primary
for t in acme globex; do psql_q "SELECT tenant_backup.tenant_backup('$t', wait => true)" >/dev/null; done
not_replicated() {
	psql_q "SELECT count(*) FROM tenant_backup.backups WHERE status = 'complete' AND replica_state IS DISTINCT FROM 'replicated'"
}
wait_for 300 0.2 0 not_replicated >/dev/null
ok $? "both tenants' backups are replicated"

printf '{"x":"\\u0000"}' >"$D/store/acme/keys/nul.json"
python3 -c 'print("[" * 100000 + "]" * 100000)' >"$D/store/acme/keys/deep.json"
chown postgres "$D/store/acme/keys/nul.json" "$D/store/acme/keys/deep.json"
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
wait_for 300 0.2 0 not_replicated >/dev/null
ok $? "with a key document holding \\u0000 and one nested too deep planted in the primary, acme's new backup is replicated"
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme' AND replica_error IS NOT NULL")" 0 \
	"and no replication of acme failed"
ok "$([ ! -e "$D/replica/repl/acme/keys/nul.json" ] && [ ! -e "$D/replica/repl/acme/keys/deep.json" ]; echo $?)" \
	"the planted documents are not copied"
ok "$(ls "$D/replica/repl/acme/keys/" | grep -q '^[0-9a-f-]*\.json$'; echo $?)" "the catalog's key documents are"

# ------------------------------------------------------------ a WAL manifest planted in the replica
# The replica is untrusted too: its listing a WAL file's manifest (without the object,
# or beside an object of another size) does not stop the primary's file being copied.
psql_q "SELECT tenant_backup.tenant_create('d1', 'dedicated')" >/dev/null
wal=d1/postgres/wal/00000001/000000010000000000000003
mkdir -p "$D/replica/repl/${wal%/*}"
echo '{"planted": true}' >"$D/replica/repl/$wal.json"
chown -R postgres "$D/replica/repl/d1"
sealed=$(echo "WAL bytes" | "$TB" put --tenant d1 --engine postgres --storage "file://$D/store" --master-key "$D/master.key")
mkdir -p "$D/store/${wal%/*}"
mv "$D/store/$sealed" "$D/store/$wal.tbk"
python3 - "$D/store/${sealed%.tbk}.json" "$D/store/$wal.json" "$wal.tbk" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1]))
m["object"], m["backup_id"] = sys.argv[3], "000000010000000000000003"
json.dump(m, open(sys.argv[2], "w"))
os.remove(sys.argv[1])
PY
chown -R postgres "$D/store"
wal_sha() { sha256sum <"$1" 2>/dev/null | cut -d' ' -f1; }
psql_q "UPDATE tenant_backup.replica_wal SET next_attempt = now() WHERE tenant = 'd1'" >/dev/null
is "$(wait_for 100 0.2 "$(wal_sha "$D/store/$wal.tbk")" wal_sha "$D/replica/repl/$wal.tbk")" "$(wal_sha "$D/store/$wal.tbk")" \
	"with a manifest planted in the replica, d1's archived WAL file is copied all the same"
is "$(wal_sha "$D/replica/repl/$wal.json")" "$(wal_sha "$D/store/$wal.json")" "and the planted manifest is replaced by the primary's"
echo short >"$D/replica/repl/$wal.tbk"
psql_q "UPDATE tenant_backup.replica_wal SET next_attempt = now() WHERE tenant = 'd1'" >/dev/null
is "$(wait_for 100 0.2 "$(wal_sha "$D/store/$wal.tbk")" wal_sha "$D/replica/repl/$wal.tbk")" "$(wal_sha "$D/store/$wal.tbk")" \
	"a replica object of another size beside its manifest is copied again"

# ------------------------------------------------------------ an operator's URL no longer allowed
psql_q "ALTER SYSTEM SET tenant_backup.replica_storage = 'file://$D/moved'" "SELECT pg_reload_conf()" >/dev/null
sleep 1
psql_q "SELECT tenant_backup.tenant_backup('globex', wait => true)" >/dev/null
globex_failed() { psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'globex' AND replica_state = 'failed'"; }
wait_for 300 0.2 1 globex_failed >/dev/null
like "$(psql_q "SELECT replica_error FROM tenant_backup.backups WHERE tenant = 'globex' AND replica_state = 'failed'")" 'must be tenant_backup.replica_storage itself' \
	"once the setting moved, the worker refuses globex's operator-set URL, naming the setting"
is "$(find "$D/replica/repl/globex" -name '*.tbk' | wc -l)" 1 "and writes nothing more there"

# ------------------------------------------------------------ tenant_backup.replica_storage_allowed
mkdir -p "$D/allowed-a" "$D/allowed-b"
chown postgres "$D/allowed-a" "$D/allowed-b"
psql_q "ALTER SYSTEM SET tenant_backup.replica_storage_allowed = 'file://$D/allowed-a, file://$D/allowed-b'" \
	"SELECT pg_reload_conf()" >/dev/null
sleep 1
is "$(as_ops globex "file://$D/allowed-b")" "file://$D/allowed-b " \
	"an operator may name a URL listed in tenant_backup.replica_storage_allowed"
like "$(as_ops globex "file://$D/allowed-b/globex")" 'the replica storage URL for tenant "globex" is refused' \
	"but not a directory inside it"
like "$(set_replica acme "file://$D/allowed-a/acme")" 'above or below a replica root in use' \
	"nor may a superuser nest a replica inside a listed root"
alter_refused() { # SETTING VALUE: ALTER SYSTEM's error
	psql_q "ALTER SYSTEM SET tenant_backup.$1 = '$2'" 2>&1 | tr '\n' ' '
}
like "$(alter_refused replica_storage_allowed "file://$D/allowed-a, file://$D/allowed-a/sub")" \
	'Entry 1 of tenant_backup.replica_storage_allowed is refused: It is above or below another entry' \
	"a list with one root inside another is refused"
like "$(alter_refused replica_storage_allowed "file://$D/store/elsewhere")" \
	'Entry 1 of tenant_backup.replica_storage_allowed is refused: It overlaps tenant_backup.storage' \
	"so is one inside the primary storage"
like "$(alter_refused replica_storage_allowed "file://$D/moved/x")" \
	'Entry 1 of tenant_backup.replica_storage_allowed is refused: It is above or below tenant_backup.replica_storage' \
	"and one inside tenant_backup.replica_storage"
like "$(alter_refused replica_storage "file://$D/allowed-b/x")" \
	'above or below an entry of tenant_backup.replica_storage_allowed' \
	"nor may tenant_backup.replica_storage move inside a listed root"

pg_stop "$D/pg"
done_testing
