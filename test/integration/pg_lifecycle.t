#!/bin/bash
# The compliance lifecycle of a PostgreSQL tenant end to end, on file storage: row
# counts recorded at dump time; a restore drill (ok, then on a corrupted object:
# failure, nothing left behind); key rotation with restores under the old and the new
# key; bring your own key (a KMS command) working and failing; master key rotation;
# drop with its certificate, after which a copy of an object made before is unreadable;
# the compliance report; no secret in the audit log, certificate, views or server log.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)

scratch_dir
PORT=$(free_port)
mkdir -p "$D/store" "$D/kms"
chown postgres "$D/store" "$D/kms"
STORAGE="file://$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null
"$TB" keygen --out "$D/master2.key" 2>/dev/null
chown postgres "$D/master.key" "$D/master2.key"
export TENANT_BACKUP_STORAGE="$STORAGE" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
KMS="sh $HERE/lib/kms.sh $D/kms"

pg_start "$D/pg" $PORT "tenant_backup.storage = '$STORAGE'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null
in_db() { local db=$1; shift; PGDATABASE=$db psql_q "$@"; }
rows_of() { in_db "$1" "SELECT (SELECT count(*) FROM orders) || '/' || (SELECT count(*) FROM app.items)"; }

psql_q "CREATE DATABASE acme" "CREATE DATABASE globex" >/dev/null
for db in acme globex; do
	in_db $db "CREATE TABLE orders (id int PRIMARY KEY, v text)" "CREATE SCHEMA app" \
		"CREATE TABLE app.items (id int, note text)" "CREATE TABLE empty_one (x int)" \
		"INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 500) g" \
		"INSERT INTO app.items SELECT g, 'x' FROM generate_series(1, 37) g" >/dev/null
	psql_q "SELECT tenant_backup.tenant_create('$db')" "SELECT tenant_backup.tenant_add_database('$db', 'postgres', '$db')" \
		>/dev/null
done
backup() { psql_q "SELECT tenant_backup.tenant_backup('$1', wait => true)" >/dev/null; }
newest() { psql_q "SELECT id FROM tenant_backup.backups WHERE tenant = '$1' AND status = 'complete' ORDER BY id DESC LIMIT 1"; }

# ------------------------------------------------------------ contents at dump time, drill
backup acme
ok $? "acme's first backup"
b1=$(newest acme)
is "$(psql_q "SELECT contents FROM tenant_backup.backups WHERE id = $b1")" \
	'{"tables": {"app.items": 37, "public.orders": 500, "public.empty_one": 0}}' \
	"the backup recorded each table's rows as pg_dump saw them"
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('acme')")
is "$(psql_q "SELECT (d->>'ok') || ' ' || jsonb_array_length(d->'checks') || ' ' || (d->'checks'->0->>'backup_id')
	FROM (SELECT \$j\$$drill\$j\$::jsonb AS d) x")" "true 1 $b1" "the drill of acme's newest backup is ok"
is "$(psql_q "SELECT ok FROM tenant_backup.drills WHERE tenant = 'acme' ORDER BY id DESC LIMIT 1")" t \
	"the drill is recorded in tenant_backup.drills"
is "$(psql_q "SELECT detail->>'ok' FROM tenant_backup.audit WHERE action = 'restore drill' ORDER BY id DESC LIMIT 1")" true \
	"and in the audit log"
is "$(psql_q "SELECT result->'contents' = (SELECT contents FROM tenant_backup.backups WHERE id = $b1) FROM tenant_backup.jobs
	WHERE kind = 'drill' ORDER BY id DESC LIMIT 1")" t "the rows it restored are the rows recorded at dump time"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname LIKE '%tb_drill%'")" 0 "the drill's scratch database is gone"
is "$(rows_of acme)" "500/37" "acme itself is untouched"

# ------------------------------------------------------------ key rotation
k1=$(psql_q "SELECT key_id FROM tenant_backup.backups WHERE id = $b1")
k2=$(psql_q "SELECT tenant_backup.tenant_rotate_key('acme')")
like "$k2" '^[0-9a-f]{16}$' "tenant_rotate_key returns the new key id"
in_db acme "INSERT INTO orders VALUES (501, 'after rotation')" >/dev/null
backup acme
b2=$(newest acme)
is "$(psql_q "SELECT key_id FROM tenant_backup.backups WHERE id = $b2")" "$k2" "the next backup uses the new key"
is "$(psql_q "SELECT key_id || ' ' || state FROM tenant_backup.keys WHERE tenant = 'acme' ORDER BY created, key_id" | tr '\n' ' ')" \
	"$k1 retired $k2 active " "the keys view: the old key retired, the new one active"
is "$(ls "$D/store/acme/keys" | sort | tr '\n' ' ')" "$(printf '%s\n' "$k1.json" "$k2.json" active.json | sort | tr '\n' ' ')" \
	"both keys are in storage beside active.json; nothing else was written again"
active_key() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["key_id"])' "$D/store/acme/keys/active.json"; }
is "$(wait_for 50 0.2 "$k2" active_key)" "$k2" "active.json names the new key once the rotation committed"
psql_q "SELECT tenant_backup.tenant_restore('acme', backup_id => $b1, target => 'acme_old_key')" >/dev/null
ok $? "the backup under the old key restores"
is "$(rows_of acme_old_key)" "500/37" "with its rows"
psql_q "SELECT tenant_backup.tenant_restore('acme', backup_id => $b2, target => 'acme_new_key')" >/dev/null
ok $? "the backup under the new key restores"
is "$(rows_of acme_new_key)" "501/37" "with its rows"

# ------------------------------------------------------------ bring your own key
k3=$(psql_q "SELECT tenant_backup.tenant_set_key_source('acme', '$KMS')")
like "$k3" '^[0-9a-f]{16}$' "tenant_set_key_source makes a key wrapped by the KMS command"
is "$(psql_q "SELECT source FROM tenant_backup.keys WHERE key_id = '$k3'")" command "the keys view says its source"
grep -q '"wrap": "command"' "$D/store/acme/keys/$k3.json"
ok $? "its document in storage is wrapped by the command, not the master key"
backup acme
b3=$(newest acme)
is "$(psql_q "SELECT key_id FROM tenant_backup.backups WHERE id = $b3")" "$k3" "the next backup uses the BYOK key"
psql_q "SELECT tenant_backup.tenant_restore('acme', backup_id => $b3, target => 'acme_byok')" >/dev/null
ok $? "and restores (the KMS unwraps the key)"
is "$(rows_of acme_byok)" "501/37" "with its rows"
obj3=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE id = $b3")
out=$("$TB" cat "$obj3" 2>&1 >/dev/null)
like "$out" "wrapped by the tenant's own key command" "the CLI without the command says it needs it"
touch "$D/kms/fail"
before=$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")
out=$(psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" 2>&1)
like "$out" "key command of tenant 'acme' failed unwrapping key $k3 \(exit status 3\): kms: refusing" \
	"with the KMS refusing, the backup fails with a clear error"
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")" "$before" \
	"and no backup is added"
rm -f "$D/kms/fail"
out=$(psql_q "SELECT tenant_backup.tenant_set_key_source('acme', 'exit 7')" 2>&1)
like "$out" "failed wrapping key" "a key command that cannot wrap is refused at once"
is "$(psql_q "SELECT count(*) FROM tenant_backup.keys WHERE tenant = 'acme' AND state = 'active'") $(psql_q "SELECT key_id FROM tenant_backup.keys WHERE tenant = 'acme' AND state = 'active'")" \
	"1 $k3" "and changes nothing"

# ------------------------------------------------------------ master key rotation
psql_q "SELECT tenant_backup.tenant_add_database('globex', 'postgres', 'host=127.0.0.1 port=$PORT dbname=globex password=Globex-Secret-9')" >/dev/null
backup globex
g1=$(newest globex)
rot=$(psql_q "SELECT tenant_backup.tenant_rotate_master_key('$D/master2.key')")
like "$rot" '"tenant_keys_rewrapped": 3' "tenant_rotate_master_key re-wraps every master-wrapped key (acme's two, globex's; not the BYOK one)"
like "$rot" '"passwords_resealed": 1' "and reseals the source password"
new_id=$(psql_q "SELECT tenant_backup._master_key_id('$D/master2.key')")
is "$(psql_q "SELECT count(*) FROM tenant_backup.key_store WHERE source = 'master' AND wrapped->>'master_key_id' <> '$new_id'")" 0 \
	"no key in the catalog is wrapped by the old master key"
is "$(grep -l "\"master_key_id\": \"$new_id\"" "$D"/store/*/keys/*.json | wc -l)" 3 "nor in storage"
psql_q "ALTER SYSTEM SET tenant_backup.master_key_file = '$D/master2.key'" "SELECT pg_reload_conf()" >/dev/null
sleep 1
psql_q "SELECT tenant_backup.tenant_restore('globex', backup_id => $g1, target => 'globex_after_rotation')" >/dev/null
ok $? "a backup made before the master key rotation restores after it"
is "$(rows_of globex_after_rotation)" "500/37" "with its rows"
backup globex
ok $? "new backups work under the new master key (with the resealed password)"
TENANT_BACKUP_MASTER_KEY_FILE="$D/master2.key" "$TB" cat "$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE id = $b1")" \
	>/dev/null 2>&1
ok $? "the CLI reads an old backup with the new master key"
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master2.key"

# ------------------------------------------------------------ a drill on a corrupted backup
obj2=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE id = $b2")
cp "$D/store/$obj3" "$D/obj3.copy"
size=$(stat -c %s "$D/store/$obj3")
flip_byte "$D/store/$obj3" $((size / 2))
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('acme')")
is "$(psql_q "SELECT d->>'ok' FROM (SELECT \$j\$$drill\$j\$::jsonb AS d) x")" false "a drill of a corrupted backup reports failure"
like "$(psql_q "SELECT d->'checks'->0->>'error' FROM (SELECT \$j\$$drill\$j\$::jsonb AS d) x")" "fail.*authentication|corrupt" \
	"naming the problem"
is "$(psql_q "SELECT ok FROM tenant_backup.drills WHERE tenant = 'acme' ORDER BY id DESC LIMIT 1")" f "the failure is recorded"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname LIKE '%tb_drill%'")" 0 "and nothing is left behind"
is "$(rows_of acme)" "501/37" "acme itself is untouched"
cp "$D/obj3.copy" "$D/store/$obj3"

# ------------------------------------------------------------ compliance report
report=$(psql_q "SELECT tenant_backup.tenant_compliance_report('acme')")
is "$(psql_q "SELECT r->'encryption'->>'key_source' || ' ' || jsonb_array_length(r->'encryption'->'keys') || ' '
	|| (r->'restore_drill'->>'ok') || ' ' || (r->'deletion'->>'status') || ' ' || (r->'retention'->>'policy_origin')
	|| ' ' || jsonb_array_length(r->'retention'->'backups_held') || ' ' || (r->'audit'->>'ok')
	FROM (SELECT \$j\$$report\$j\$::jsonb AS r) x")" "command 3 false active built-in 3 true" \
	"the compliance report answers the four questions (BYOK keys, policy and backups held, last drill, deletion)"

# ------------------------------------------------------------ drop
cp "$D/store/$obj2" "$D/obj2.copy"
"$TB" cat "$obj2" >/dev/null 2>&1
ok $? "before the drop the object reads with the CLI"
psql_q "SELECT tenant_backup.tenant_hold('acme', 'litigation 42')" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_drop('acme', confirm => 'acme')" 2>&1)
like "$out" 'on legal hold' "a held tenant cannot be dropped"
psql_q "SELECT tenant_backup.tenant_release('acme')" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_drop('acme', confirm => 'globex')" 2>&1)
like "$out" "tenant_drop needs confirm => 'acme'" "the confirmation must repeat the name"
objects=$(find "$D/store/acme" -type f | wc -l)
bytes=$(find "$D/store/acme" -type f -printf '%s\n' | awk '{s += $1} END {print s}')
cert=$(psql_q "SELECT tenant_backup.tenant_drop('acme', confirm => 'acme')")
ok $? "tenant_drop('acme', confirm => 'acme')"
is "$(psql_q "SELECT c->>'tenant' || ' ' || (c->>'objects_deleted') || ' ' || (c->>'bytes_deleted') || ' '
	|| (SELECT string_agg(k, ',' ORDER BY k) FROM jsonb_array_elements_text(c->'key_ids_destroyed') k)
	FROM (SELECT \$j\$$cert\$j\$::jsonb AS c) x")" "acme $objects $bytes $(printf '%s\n' $k1 $k2 $k3 | sort | paste -sd,)" \
	"the certificate counts every object and byte deleted and names the keys destroyed"
is "$(find "$D/store/acme" -type f 2>/dev/null | wc -l)" 0 "nothing of acme is left in storage"
is "$(psql_q "SELECT (SELECT count(*) FROM tenant_backup.tenants WHERE name = 'acme') + (SELECT count(*) FROM tenant_backup.key_store WHERE tenant = 'acme')
	+ (SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme') + (SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'acme')")" 0 \
	"nor in the catalog"
is "$(psql_q "SELECT detail->>'certificate_sha256' = encode(sha256(convert_to((detail - 'certificate_sha256')::text, 'UTF8')), 'hex')
	AND hash = (\$j\$$cert\$j\$::jsonb)->>'audit_hash' FROM tenant_backup.audit WHERE action = 'tenant dropped' AND tenant = 'acme'")" t \
	"the certificate's hash is chained into the audit log"
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" t "the audit chain verifies"
is "$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE tenant = 'acme'")" \
	"$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE tenant = 'acme' AND at < now() + interval '1 hour'")" \
	"acme's audit trail is kept"
mkdir -p "$(dirname "$D/store/$obj2")"
cp "$D/obj2.copy" "$D/store/$obj2"
out=$("$TB" cat "$obj2" 2>&1 >/dev/null)
ok $((! $?)) "a copy of acme's object made before the drop no longer reads"
like "$out" "key $k2 of tenant 'acme' is not in storage" "for lack of its key"
is "$(psql_q "SELECT r->'deletion'->>'status' FROM (SELECT tenant_backup.tenant_compliance_report('acme') AS r) x")" dropped \
	"the compliance report of a dropped tenant shows its deletion certificate"
is "$(rows_of globex)" "500/37" "globex is untouched"

# ------------------------------------------------------------ retention by the worker
psql_q "SELECT tenant_backup.tenant_set_retention('globex', keep_last => 1, keep_daily => 0, keep_weekly => 0, keep_monthly => 0)" >/dev/null
doomed=$(psql_q "SELECT string_agg(object_key, ' ') FROM tenant_backup.backups WHERE tenant = 'globex' AND status = 'complete'
	AND id NOT IN (SELECT DISTINCT ON (source_id) id FROM tenant_backup.backups WHERE tenant = 'globex' AND status = 'complete'
				   ORDER BY source_id, started DESC, id DESC)")
is "$(echo $doomed | wc -w)" 2 "globex has two backups its new policy (keep_last 1 per database) lets go"
sleep 1.5
is "$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE tenant = 'globex' AND action = 'backup expired'")" 0 \
	"the worker leaves them until its retention_interval (1 hour) comes round, not on every naptime"
psql_q "ALTER SYSTEM SET tenant_backup.retention_interval = '1s'" "SELECT pg_reload_conf()" >/dev/null
expired=$(wait_for 40 0.5 2 psql_q "SELECT count(*) FROM tenant_backup.audit WHERE tenant = 'globex'
	AND action = 'backup expired' AND actor = 'tenant_backup worker'")
is "$expired" 2 "the background worker expires them on its own schedule, each with an audit row"
# Their objects go after the expiry commits, by the launcher's storage intents.
wait_for 100 0.2 0 psql_q "SELECT count(*) FROM tenant_backup.storage_intents WHERE state = 'pending'" >/dev/null
gone=0
for o in $doomed; do [ -e "$D/store/$o" ] || [ -e "$D/store/${o%.tbk}.json" ] || gone=$((gone + 1)); done
is "$gone" 2 "their objects and manifests are gone from storage"
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'globex' AND status = 'complete'")" 2 \
	"the newest backup of each database stays"

# ------------------------------------------------------------ secrets
MASTER_HEX=$(cat "$D/master.key"); MASTER2_HEX=$(cat "$D/master2.key"); KEK=$(cat "$D/kms/kek")
everything=$(psql_q "SELECT string_agg(to_jsonb(a)::text, E'\n') FROM tenant_backup.audit a"
	psql_q "SELECT string_agg(to_jsonb(k)::text, E'\n') FROM tenant_backup.keys k"
	psql_q "SELECT string_agg(to_jsonb(s)::text, E'\n') FROM tenant_backup.status s"
	psql_q "SELECT tenant_backup.tenant_compliance_report('globex')"
	echo "$cert"; echo "$report"; cat "$D/pg/server.log")
for secret in "$MASTER_HEX" "$MASTER2_HEX" "$KEK" Globex-Secret-9; do
	unlike "$everything" "$secret" "no secret (${secret:0:6}...) in the audit log, certificate, views, report or server log"
done

done_testing
