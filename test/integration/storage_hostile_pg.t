#!/bin/bash
# A FIFO in file storage in place of a tenant's backup object, met by the extension's
# restore worker: the restore fails at once with an error naming the object, no worker
# is left hanging on it, and the cluster stops with pg_ctl -m fast in seconds. (The
# worker takes the tenant's key from the catalog; the CLI, which reads key documents
# from storage, meets FIFOs in their place in storage_hostile.t.)
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
STORAGE="file://$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"
export TENANT_BACKUP_STORAGE="$STORAGE" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"

pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = '$STORAGE'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5"
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE acme"
PGDATABASE=acme psql_q "CREATE TABLE canary (v text)" "INSERT INTO canary VALUES ('acme canary')"
psql_q "SELECT tenant_backup.tenant_create('acme')" "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme')" \
	>/dev/null
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
ok $? "a backup of acme"

object=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")
mv "$D/store/$object" "$D/object.aside"
mkfifo "$D/store/$object"
chown postgres "$D/store/$object"
start=$SECONDS
out=$(timeout 60 "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -c "SELECT tenant_backup.tenant_restore('acme')" 2>&1)
rc=$?
ok $((rc == 0 || rc == 124)) "tenant_restore with a FIFO as the backup object fails (exit $rc after $((SECONDS - start)) s)"
like "$out" "'$object' in $STORAGE is a FIFO, not a regular file" "the error names the object and what it is"
like "$out" "nothing live was changed" "and says nothing live was changed"
is "$(PGDATABASE=acme psql_q "SELECT v FROM canary")" "acme canary" "acme is untouched"
got=$(wait_for 20 0.25 0 psql_q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tenant_backup job' AND state IS DISTINCT FROM 'idle'")
is "$got" 0 "no job worker is left at work (none hangs opening the FIFO)"

start=$SECONDS
pg_as_postgres "$D/pg" "$PG_BIN/pg_ctl" -D "$D/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1
rc=$?
took=$((SECONDS - start))
ok $rc "pg_ctl -m fast stop succeeds"
ok $((took > 10)) "within seconds (${took} s)"

done_testing
