#!/bin/bash
# The extension's SQL API under pgTAP: starts one cluster with tenant_backup on file
# storage, runs every test/sql/*.sql and reports each as a subtest. Around them, what
# SQL cannot see: the tenant key file tenant_create() writes to storage, that the
# master key and source passwords appear nowhere, and two wait => true behaviours
# that need a second login role or a real backup.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null || { echo "Bail out! tenant-backup keygen failed ($TB)"; exit 1; }
chown postgres "$D/master.key"
MASTER_HEX=$(tr -d '\n' <"$D/master.key")

pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5"
# tenant_db_a and tenant_db_b are the tenant databases the SQL tests add; acme is this script's.
psql_q "CREATE EXTENSION pgtap" "CREATE EXTENSION tenant_backup" \
	"CREATE DATABASE tenant_db_a" "CREATE DATABASE tenant_db_b" "CREATE DATABASE acme" >/dev/null ||
	pg_bail "$D/pg/server.log" "could not set up the extension and the test databases"

# ------------------------------------------------------------ the tenant key in storage

like "$MASTER_HEX" '^[0-9a-f]{64}$' "the master key file holds 64 hex digits"
is "$(psql_q "SELECT name FROM tenant_backup.tenant_create('acme')")" acme "tenant_create('acme') succeeds"
key_id=$(psql_q "SELECT key_id FROM tenant_backup.key_store WHERE tenant = 'acme'")
like "$key_id" '^[0-9a-f]{16}$' "the catalog has acme's key id"
# The launcher may already have written acme/keys/active.json (which key is active): not a key.
is "$(ls "$D/store/acme/keys" | grep -vx active.json)" "$key_id.json" \
	"storage holds acme/keys/<key id>.json, acme's only key file"
key_file="$D/store/acme/keys/$key_id.json"
# Runs SQL in which :'doc' is the key file's text.
with_key_file() { # SQL
	printf '%s\n' "$1" | "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -v doc="$(cat "$key_file")"
}
is "$(with_key_file "SELECT :'doc'::jsonb->>'key_id'")" "$key_id" "the key file names the catalog's key id"
is "$(with_key_file "SELECT :'doc'::jsonb->>'tenant'")" acme "the key file names the tenant"
is "$(with_key_file "SELECT wrapped = :'doc'::jsonb FROM tenant_backup.key_store WHERE tenant = 'acme'")" t \
	"the key file is the wrapped document in the catalog"
unlike "$(cat "$key_file")" "$MASTER_HEX" "the key file does not contain the master key"
unlike "$(psql_q "SELECT wrapped::text FROM tenant_backup.key_store")" "$MASTER_HEX" \
	"the catalog's wrapped keys do not contain the master key"

# ------------------------------------------------------------ no secret anywhere

password=Pa55-9f3c1e
psql_q "SELECT tenant_backup.tenant_add_database('acme', 'mysql', 'mysql://app:$password@db.example/acme')" >/dev/null
ok $? "a mysql source with a password is added"
"$PG_BIN/pg_dump" -d postgres >"$D/control.sql"
ok $? "the control database dumps"
unlike "$(cat "$D/control.sql")" "$password" "the control database holds the source password nowhere in clear"
unlike "$(cat "$D/control.sql")" "$MASTER_HEX" "the control database holds the master key nowhere"
grep -rqF "$MASTER_HEX" "$D/store"
ok $((!$?)) "no file in storage contains the master key"

# ------------------------------------------------------------ the SQL tests

# Runs one pgTAP file and reports it as a subtest: its TAP lines indented, then one
# ok / not ok line for the file (not ok if psql failed, the plan was not met or a
# test failed). psql's own messages are shown as diagnostics when it is not ok.
pgtap_file() { # FILE
	local file=$1 name out status planned ran
	name=$(basename "$file")
	out=$("$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -f "$file" 2>"$D/psql.err")
	status=$?
	echo "    # Subtest: $name"
	printf '%s\n' "$out" | sed 's/^/    /'
	planned=$(printf '%s\n' "$out" | sed -n 's/^1\.\.\([0-9][0-9]*\)$/\1/p')
	ran=$(printf '%s\n' "$out" | grep -cE '^(not )?ok [0-9]+')
	if [ "$status" -eq 0 ] && [ -n "$planned" ] && [ "$planned" -eq "$ran" ] &&
		! printf '%s\n' "$out" | grep -qE '^not ok'; then
		ok 0 "$name"
		return
	fi
	ok 1 "$name"
	[ "$status" -eq 0 ] || diag "psql exited with status $status"
	[ "${planned:-none}" = "$ran" ] || diag "planned ${planned:-no plan}, ran $ran"
	while IFS= read -r line; do diag "psql: $line"; done <"$D/psql.err"
}

# api_agents.sql reports a real backup object of agent-t's mysql engine.
echo "an agent's mysql dump" | "$TB" put --tenant agent-t --engine mysql --storage "file://$D/store" \
	--master-key "$D/master.key" >/dev/null && chown -R postgres "$D/store"
ok $? "a backup object of agent-t (mysql) is sealed into storage for api_agents.sql"

for file in "$HERE"/sql/*.sql; do
	pgtap_file "$file"
done

# ------------------------------------------------------------ wait => true, with real backups

psql_q "CREATE ROLE tb_test_operator LOGIN" "GRANT tenant_backup_operator TO tb_test_operator" \
	"SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme')" >/dev/null
ok $? "a login role of tenant_backup_operator and acme's postgres database are set up"
last_actor() { psql_q "SELECT actor FROM tenant_backup.audit WHERE action = 'backup requested' ORDER BY id DESC LIMIT 1"; }

PGUSER=tb_test_operator psql_q "SELECT tenant_backup.tenant_backup('acme', 'postgres')" >/dev/null
ok $? "the operator queues a backup with wait => false"
is "$(last_actor)" tb_test_operator "the audit names the operator as the actor of a wait => false request"
is "$(PGUSER=tb_test_operator psql_q "SELECT count(*) FROM tenant_backup.tenant_backup('acme', 'postgres', wait => true)")" 1 \
	"the operator backs up acme with wait => true"
# Fails today: the request worker writes the audit row as the bootstrap superuser.
is "$(last_actor)" tb_test_operator "the audit names the operator as the actor of a wait => true request"

# Fails today: the statement's first call holds the audit lock the request worker
# needs, while the statement waits for the worker; only the timeout ends it.
err=$(PGOPTIONS="-c statement_timeout=5s" psql_q "SELECT tenant_backup.tenant_set_schedule('acme', '1 day') IS NOT NULL,
	(SELECT count(*) FROM tenant_backup.tenant_backup('acme', 'postgres', wait => true))" 2>&1 >/dev/null | head -n 1)
unlike "$err" "statement timeout" \
	"wait => true in the same statement as another API call returns instead of waiting for itself"

unlike "$(cat "$D/pg/server.log")" "$MASTER_HEX" "the server log does not contain the master key"
done_testing
