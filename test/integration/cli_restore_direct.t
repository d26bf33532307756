#!/bin/bash
# restore-direct with the control plane gone: a cluster with the extension backs up a
# tenant's database (its own owner role, collation C, two backups), is stopped, and a
# fresh plain cluster gets the tenant back from storage and the master key alone: the
# newest backup (or --backup-id), the recorded owner and locale, every row. The tenant's
# content is hostile: a CHECK constraint whose function makes its role a superuser when
# run by one. Loading as a superuser is refused; the load runs as --load-as ROLE (or a
# plain login), and the role stays what it was. A tampered backup, an existing database,
# a missing owner role and an engine the tenant has no backup of are refused, and no
# failure leaves a database behind.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"

# ------------------------------------------------------------ the control plane backs up acme

pg_start "$D/control" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup" "CREATE ROLE acme_owner" \
	"CREATE DATABASE acme_db OWNER acme_owner TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C'" >/dev/null ||
	pg_bail "$D/control/server.log" "could not set up the control plane"
PGDATABASE=acme_db psql_q "SET ROLE acme_owner" \
	"CREATE FUNCTION acme_check(int) RETURNS boolean LANGUAGE plpgsql AS \$\$
	 BEGIN
	   IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
	     EXECUTE 'ALTER ROLE acme_owner SUPERUSER';
	   END IF;
	   RETURN true;
	 END \$\$" \
	"CREATE TABLE orders (id int CHECK (public.acme_check(id)), note text)" \
	"INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 5000) g" >/dev/null
psql_q "ALTER DATABASE acme_db SET work_mem = '7MB'" "ALTER DATABASE acme_db SET search_path = app, public" \
	"ALTER DATABASE acme_db CONNECTION LIMIT 42" "ALTER DATABASE acme_db SET \"app.note\" = 'it''s; DROP DATABASE acme_old'" \
	"ALTER ROLE acme_owner IN DATABASE acme_db SET statement_timeout = '5s'" >/dev/null
settings() { # DATABASE: its connection limit and settings, as this cluster has them
	psql_q "SELECT d.datconnlimit || ' ' || coalesce(r.rolname, '-') || ' ' || array_to_string(s.setconfig, ' | ')
	        FROM pg_database d JOIN pg_db_role_setting s ON s.setdatabase = d.oid
	        LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = '$1' ORDER BY 1"
}
recorded_settings=$(settings acme_db)
psql_q "SELECT tenant_backup.tenant_create('acme')" "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme_db')" \
	"SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null || pg_bail "$D/control/server.log" "first backup failed"
PGDATABASE=acme_db psql_q "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(5001, 7000) g" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null || pg_bail "$D/control/server.log" "second backup failed"
newest_rows=$(PGDATABASE=acme_db psql_q "SELECT count(*), sum(id), md5(string_agg(note, ',' ORDER BY id)) FROM orders")
first_id=$(psql_q "SELECT id FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete' ORDER BY id LIMIT 1")
pg_stop "$D/control"
ok $? "the control plane is stopped"

# ------------------------------------------------------------ a fresh plain cluster

pg_start "$D/fresh" "$(free_port)" "shared_preload_libraries = ''"
export TENANT_BACKUP_STORAGE="file://$D/store" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
is "$(psql_q "SELECT count(*) FROM pg_extension WHERE extname = 'tenant_backup'")" 0 "the new cluster has no control plane"
psql_q "CREATE ROLE acme_owner LOGIN" "CREATE ROLE restorer LOGIN CREATEDB" >/dev/null
into() { echo "dbname=$1 host=$PGHOST port=$PGPORT user=${2:-postgres}"; }
superuser() { psql_q "SELECT rolsuper FROM pg_roles WHERE rolname = 'acme_owner'"; }

direct() { "$TB" restore-direct --tenant acme --engine postgres --pg-restore "$PG_BIN/pg_restore" "$@"; }
databases() { psql_q "SELECT count(*) FROM pg_database WHERE datname LIKE 'acme%'"; }

out=$(direct --into "$(into acme_db)" 2>&1)
is "$?" 2 "loading as a superuser is refused"
like "$out" "would be loaded as 'postgres', a superuser .*--load-as ROLE" "saying why and what to pass instead"
is "$(databases)|$(superuser)" "0|f" "nothing was created, and the tenant's role is no superuser"
out=$(direct --into "$(into acme_db)" --load-as nosuch 2>&1)
like "$out" "role 'nosuch' does not exist on the target server" "--load-as a role that does not exist is refused"
psql_q "GRANT pg_execute_server_program TO restorer" >/dev/null
out=$(direct --into "$(into acme_db restorer)" 2>&1)
is "$?" 2 "a login that may run server programs is refused too"
psql_q "REVOKE pg_execute_server_program FROM restorer" >/dev/null

out=$(direct --into "$(into acme_db)" --load-as acme_owner 2>"$D/err")
is "$?" 0 "restore-direct --load-as the tenant's owner exits 0"
is "$(superuser)" f "the tenant's CHECK function ran as the tenant's role: it is still no superuser"
like "$out" "restored acme/postgres/.*\.tbk into database 'acme_db'" "it names the backup and the database"
is "$(PGDATABASE=acme_db psql_q "SELECT count(*), sum(id), md5(string_agg(note, ',' ORDER BY id)) FROM orders")" \
	"$newest_rows" "every row of the newest backup is back"
is "$(psql_q "SELECT pg_get_userbyid(datdba), datcollate, datctype, pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'acme_db'")" \
	"acme_owner|C|C|UTF8" "the database has its recorded owner, locale and encoding (the cluster's default is C.UTF-8)"
is "$(PGDATABASE=acme_db psql_q "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'")" acme_owner \
	"its tables keep their owner"
is "$(settings acme_db)" "$recorded_settings" \
	"its connection limit and settings (also a role's in it, and a value with quotes) are as recorded"

out=$(direct --into "$(into acme_old)" --load-as acme_owner --backup-id "$first_id" 2>&1)
is "$?" 0 "restore-direct --backup-id exits 0"
is "$(PGDATABASE=acme_old psql_q "SELECT count(*) FROM orders")" 5000 "it restored the older backup asked for"

# ------------------------------------------------------------ refusals leave nothing behind

PGDATABASE=acme_db psql_q "SET ROLE acme_owner" "INSERT INTO orders VALUES (-1, 'live')" >/dev/null
out=$(direct --into "$(into acme_db)" --load-as acme_owner 2>&1)
is "$?" 1 "a database that exists is refused"
like "$out" "database 'acme_db' already exists on the target server" "with a message that says so"
is "$(PGDATABASE=acme_db psql_q "SELECT count(*) FROM orders WHERE id = -1")" 1 "the existing database is untouched"

newest=$("$TB" ls acme --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["backups"][0]["object"])')
size=$(stat -c %s "$D/store/$newest")
flip_byte "$D/store/$newest" $((size / 2))
out=$(direct --into "$(into acme_tampered)" --load-as acme_owner 2>&1)
is "$?" 1 "a tampered backup is refused"
like "$out" "authenticat|sha-?256|SHA-256|does not match" "because it does not authenticate"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'acme_tampered'")" 0 "and no database was created"
flip_byte "$D/store/$newest" $((size / 2))

psql_q "DROP DATABASE acme_old" "DROP OWNED BY acme_owner" "ALTER DATABASE acme_db OWNER TO postgres" \
	"DROP DATABASE acme_db" "DROP ROLE acme_owner" >/dev/null
out=$(direct --into "$(into acme_noowner restorer)" 2>&1)
is "$?" 1 "without the tenant's owner role, the restore fails"
like "$out" 'role "acme_owner" does not exist' "pg_restore's reason is shown"
like "$out" "loading database 'acme_noowner' \(dropped again\)" "and the half-made database is dropped"
is "$(databases)" 0 "no database is left behind"
out=$(direct --into "$(into acme_mine restorer)" --no-owner 2>&1)
is "$?" 0 "--no-owner restores without the role"
is "$(PGDATABASE=acme_mine psql_q "SELECT count(*) FROM orders")" 7000 "with every row"
is "$(PGDATABASE=acme_mine psql_q "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'")" restorer \
	"owned by the connecting user"

# A name is a value: quotes in it make no SQL, and the database has exactly that name.
hostile="acme\"; DROP DATABASE acme_mine; --"
out=$(direct --into "dbname='${hostile}' host=$PGHOST port=$PGPORT user=restorer" --no-owner 2>&1)
is "$?" 0 "a database name with quotes is restored into"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname IN ('acme_mine', \$\$$hostile\$\$)")" 2 \
	"a database of exactly that name, and the other one is still there"

# Interrupted while it loads: the plaintext and the half-made database go.
mkdir -p "$D/tmp"
printf '#!/bin/sh\ncase "$*" in *--exit-on-error*) exec sleep 30 ;; esac\nexec "%s/pg_restore" "$@"\n' "$PG_BIN" \
	>"$D/slow-pg_restore"
chmod +x "$D/slow-pg_restore"
TMPDIR="$D/tmp" "$TB" restore-direct --tenant acme --engine postgres --pg-restore "$D/slow-pg_restore" \
	--into "$(into acme_interrupted restorer)" --no-owner >"$D/int.out" 2>&1 &
restorer_pid=$!
wait_for 40 0.25 1 psql_q "SELECT count(*) FROM pg_database WHERE datname = 'acme_interrupted'" >/dev/null
is "$(ls "$D"/tmp/*/backup.dump 2>/dev/null | wc -l)" 1 "while it loads, the authenticated plaintext is in a private directory"
kill -TERM "$restorer_pid"
wait "$restorer_pid"
is "$?" 1 "SIGTERM stops restore-direct (exit 1)"
like "$(cat "$D/int.out")" "interrupted by signal 15: stopped and cleaned up" "saying so"
is "$(ls -A "$D/tmp")" "" "the plaintext and its directory are gone"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'acme_interrupted'")" 0 "and so is the half-made database"

out=$("$TB" restore-direct --tenant acme --engine mysql --into mysql://127.0.0.1/acme 2>&1)
is "$?" 1 "an engine the tenant has no backup of fails (MySQL, Redis, MongoDB: restore_direct_engines.t)"
like "$out" "no complete mysql backup of tenant 'acme' in storage" "and says so"
out=$(direct --into "host=$PGHOST" 2>&1)
is "$?" 2 "--into without dbname is refused"
out=$("$TB" restore-direct --tenant nosuch --engine postgres --into "$(into x)" 2>&1)
is "$?" 1 "a tenant without backups in storage fails"
like "$out" "no complete postgres backup of tenant 'nosuch' in storage" "and says so"

done_testing
