#!/bin/bash
# Without tenant_backup in shared_preload_libraries, the catalog works but anything
# that needs the background worker is refused with a clear error, and nothing is queued.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"
pg_start "$D/pg" "$(free_port)" "shared_preload_libraries = ''
tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'"

psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE acme"
ok $? "CREATE EXTENSION works without preloading"
psql_q "SELECT tenant_backup.tenant_create('acme')" "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme')" \
	>/dev/null
ok $? "tenants and databases can be registered"
for call in "tenant_backup('acme')" "tenant_backup('acme', wait => true)" "tenant_restore('acme')"; do
	out=$(psql_q "SELECT tenant_backup.$call" 2>&1)
	like "$out" "tenant_backup is not in shared_preload_libraries" "$call is refused"
done
like "$out" "HINT:  Add tenant_backup to shared_preload_libraries" "with a hint"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs")" 0 "nothing was queued"

done_testing
