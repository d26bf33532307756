#!/bin/bash
# The control plane's own backup: pg_dump of the control database keeps every catalog
# row (tenants, settings, keys, sources, jobs, backups, audit, drills, agents, audit
# heads); pg_restore --single-transaction into a new cluster with the extension brings
# them all back, the audit chains verify there, and a backup restores from there. Then
# the newest audit rows are removed (a superuser, triggers off): the chain heads the
# launcher wrote to storage show it.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

tb_scratch_storage
CONF="$TB_CONF
tenant_backup.naptime = 200"

pg_start "$D/old" "$(free_port)" "$CONF"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$D/old/server.log" "CREATE EXTENSION failed"
for t in acme globex; do
	psql_q "CREATE DATABASE $t" >/dev/null
	PGDATABASE=$t psql_q "CREATE TABLE canary (id int PRIMARY KEY, v text)" "INSERT INTO canary VALUES (1, '$t')"
	psql_q "SELECT tenant_backup.tenant_create('$t')" "SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" \
		>/dev/null
	psql_q "SELECT tenant_backup.tenant_backup('$t', wait => true)" >/dev/null
	ok $? "a backup of $t"
done
psql_q "SELECT tenant_backup.tenant_set_schedule('acme', '6 hours')" \
	"SELECT tenant_backup.tenant_set_retention(NULL, keep_last => 3)" \
	"SELECT tenant_backup.tenant_add_database('globex', 'mysql', 'mysql://app:Pw-1@db.example/globex')" \
	"SELECT tenant_backup.agent_hello('agent-1', '{mysql}')" >/dev/null
ok $? "a schedule, a default retention, a mysql source and an agent"
psql_q "SELECT tenant_backup.tenant_restore_drill('acme')" >/dev/null
ok $? "a restore drill of acme"

# storage_intents is left out: a launcher that starts queues intents of its own (each
# tenant's active.json is written again), so the restored cluster has more of them.
TABLES="tenants settings key_store sources source_backup_state jobs backups audit drills agent_registry audit_heads
	audit_head_stored"
# One line per catalog table: its name, row count and a digest of its rows.
catalog_digest() {
	for table in $TABLES; do
		psql_q "SELECT '$table ' || count(*) || ' ' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))
				FROM tenant_backup.$table t"
	done
	psql_q "SELECT 'sequences ' || string_agg(last_value::text, ',' ORDER BY sequencename) FROM pg_sequences
			WHERE schemaname = 'tenant_backup' AND sequencename NOT LIKE 'storage_intents%'"
}
is "$(wait_for 50 0.2 t psql_q "SELECT count(*) = 1 FROM tenant_backup.audit_head_stored")" t \
	"the launcher wrote the audit chain heads to storage"
head="$D/store/_audit/head-$(psql_q "SELECT tenant_backup._master_key_id()").json"
test -f "$head"
ok $? "as _audit/head-<master key id>.json"
unlike "$(cat "$head")" "acme" "sealed: the object names no tenant in clear"
before=$(catalog_digest)
is "$(printf '%s\n' "$before" | awk '$2 == 0 {print $1}')" "" "every catalog table has rows"

"$PG_BIN/pg_dump" -Fc -d postgres -f "$D/control.dump"
ok $? "pg_dump of the control database"
pg_stop "$D/old"

# ------------------------------------------------------------ restore into a new cluster

pg_start "$D/new" "$(free_port)" "$CONF"
# Replica mode: the catalog's own triggers (a source added makes its tenant due) must not
# rewrite the rows as they are loaded. One transaction: the launcher sees nothing until
# everything is there.
PGOPTIONS="-c session_replication_role=replica" \
	"$PG_BIN/pg_restore" --single-transaction --exit-on-error -d postgres "$D/control.dump" 2>"$D/restore.err"
ok $? "pg_restore --single-transaction in replica mode into a new cluster (it creates the extension)"
[ -s "$D/restore.err" ] && diag "$(cat "$D/restore.err")"
is "$(catalog_digest)" "$before" "every catalog row and sequence is there, unchanged"
is "$(psql_q "SELECT ok || ',' || rows_checked || ',' || coalesce(problem, '') FROM tenant_backup.tenant_audit_verify()")" \
	"true,$(psql_q "SELECT count(*) FROM tenant_backup.audit")," "tenant_audit_verify() passes on every row"
psql_q "SELECT tenant_backup.tenant_set_schedule('globex', '12 hours')" >/dev/null
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" t "new audit rows chain on after the restore"
psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_back')" >/dev/null
ok $? "acme restores from its backup through the restored catalog"
is "$(PGDATABASE=acme_back psql_q "SELECT v FROM canary")" acme "with its rows"

# ------------------------------------------------------------ a master key rotation

"$TB" keygen --out "$D/master2.key" 2>/dev/null
chown postgres "$D/master2.key"
psql_q "SELECT tenant_backup.tenant_rotate_master_key('$D/master2.key')" \
	"ALTER SYSTEM SET tenant_backup.master_key_file = '$D/master2.key'" "SELECT pg_reload_conf()" >/dev/null
ok $? "the master key is rotated and the server pointed at the new one"
sleep 0.5
psql_q "SELECT tenant_backup.tenant_set_schedule('acme', '8 hours')" >/dev/null
head="$D/store/_audit/head-$(psql_q "SELECT tenant_backup._master_key_id()").json"
is "$(wait_for 50 0.2 yes bash -c "[ -f '$head' ] && echo yes")" yes "the launcher wrote the heads under the new master key"
like "$(psql_q "SELECT ok || ' ' || problem FROM tenant_backup.tenant_audit_verify()")" \
	"^true [0-9]+ rows were written under an earlier master key: their links are checked" \
	"the chains verify, the rows MAC'd under the old key by their links"

# ------------------------------------------------------------ the newest audit rows removed

is "$(wait_for 50 0.2 t psql_q "SELECT (SELECT heads_sum FROM tenant_backup.audit_head_stored) =
									   (SELECT sum(last_id) FROM tenant_backup.audit_heads)")" t \
	"the launcher wrote the new chain heads to storage"
newest=$(psql_q "SELECT max(id) FROM tenant_backup.audit WHERE tenant = 'acme'")
psql_q "SET session_replication_role = replica;
		DELETE FROM tenant_backup.audit WHERE id = $newest;
		UPDATE tenant_backup.audit_heads h SET last_id = a.id, last_hash = a.hash
		FROM (SELECT id, hash FROM tenant_backup.audit WHERE tenant = 'acme' ORDER BY id DESC LIMIT 1) a
		WHERE h.chain = 'acme'" >/dev/null
ok $? "a superuser removes acme's newest audit row and points its chain head at the row before"
is "$(psql_q "SELECT ok || ',' || first_broken_id FROM tenant_backup.tenant_audit_verify()")" "false,$newest" \
	"tenant_audit_verify() finds it missing"
like "$(psql_q "SELECT problem FROM tenant_backup.tenant_audit_verify()")" \
	"row $newest of the chain of tenant \"acme\", stored as its head at .*the newest rows were removed" \
	"and says the newest rows were removed"
sleep 1
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" f \
	"the launcher did not seal the shortened chain over the stored heads"
like "$(cat "$D/new/server.log")" "the audit chain heads are not written over: row $newest" "and warned why"
rm "$head"
like "$(psql_q "SELECT ok || ' ' || problem FROM tenant_backup.tenant_audit_verify()")" \
	"^false the audit chain heads were written to storage at .* but storage has none" \
	"heads removed from storage show too"
echo '{"sealed": "tbs1:0000000000000000:00:00"}' >"$head"
like "$(psql_q "SELECT ok || ' ' || problem FROM tenant_backup.tenant_audit_verify()")" \
	"^false the audit chain heads in storage cannot be read" "a forged head in storage is refused, not believed"

done_testing
