#!/bin/bash
# Realistic layouts of a PostgreSQL tenant restore exactly, now that a restore loads as
# the tenant (test/fixtures/pg_layouts.sql: a database owned by app, extensions a DBA
# installed, a foreign server, objects and default privileges of two roles, RLS, a
# materialized view, a generated column, a domain, a partitioned table), under
# Debian's default authentication: to a target, in a drill and in place, each equal
# to a superuser's pg_restore of the same dump (schemas with owners and grants, every
# table's rows).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/pg_debian.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)

scratch_dir
pg_start_debian_tb
psql_q "CREATE ROLE app LOGIN" "CREATE ROLE reporting" \
	"CREATE DATABASE layout OWNER app" >/dev/null || pg_bail "$D/pg/server.log" "cannot set up the cluster"
PGDATABASE=layout pg_as_postgres "$D/pg" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -f - \
	<"$HERE/fixtures/pg_layouts.sql" >/dev/null
ok $? "the layouts fixture loads"
psql_q "SELECT tenant_backup.tenant_create('layout')" \
	"SELECT tenant_backup.tenant_add_database('layout', 'postgres', 'layout')" \
	"SELECT tenant_backup.tenant_backup('layout', wait => true)" >/dev/null
ok $? "a backup of layout"
obj=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = 'layout' AND status = 'complete'")

# The reference: the same dump restored by a superuser.
"$TB" cat "$obj" >"$D/layout.dump"
ok $? "tenant-backup cat decrypts the backup"
chown postgres "$D/layout.dump"
psql_q "CREATE DATABASE layout_super OWNER app TEMPLATE template0" >/dev/null
PGDATABASE=layout_super pg_as_postgres "$D/pg" "$PG_BIN/pg_restore" --exit-on-error -d layout_super "$D/layout.dump"
ok $? "a superuser's pg_restore of the same dump"

# pg_compare.sh compares without owners; owners and grants are compared here too.
same_as_super() { # DB NAME
	local diffs
	diffs=$(pg_as_postgres "$D/pg" bash "$HERE/lib/pg_compare.sh" layout_super "$1" 2>&1)
	ok $? "$2: schema and every table's rows equal a superuser's restore" || diag "$diffs"
	for db in layout_super "$1"; do
		pg_as_postgres "$D/pg" "$PG_BIN/pg_dump" --schema-only --dbname="$db" |
			sed -E -e '/^\\(un)?restrict /d' -e '/^(CREATE|ALTER|COMMENT ON) DATABASE /d' >"$D/$db.owners"
	done
	diffs=$(diff "$D/layout_super.owners" "$D/$1.owners")
	ok $? "$2: every object's owner and grants too" || diag "$(echo "$diffs" | head -30)"
}
pg_as_postgres "$D/pg" "$PG_BIN/pg_dump" --schema-only --dbname=layout_super >"$D/super.sql"
is "$(grep -cE 'OWNER TO reporting|DEFAULT PRIVILEGES FOR ROLE reporting|GRANT ALL ON FOREIGN DATA WRAPPER postgres_fdw TO app' \
	"$D/super.sql")" 5 "the reference holds reporting's objects and default privileges, and the DBA's grant"
out=$(psql_q "SELECT tenant_backup.tenant_restore('layout', target => 'layout_copy')" 2>&1)
ok $? "restore to a target" || diag "$out"
same_as_super layout_copy "to a target"
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('layout')->>'ok'" 2>&1)
is "$drill" true "a drill of layout is ok"
in_db layout "DELETE FROM shop.orders WHERE id % 2 = 0" "UPDATE shop.customers SET name = 'changed'"
out=$(psql_q "SELECT tenant_backup.tenant_restore('layout')" 2>&1)
ok $? "restore in place" || diag "$out"
same_as_super layout "in place"
is "$(psql_q "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant\_backup\_restore\_%'")" 0 \
	"no restore role is left"

done_testing
