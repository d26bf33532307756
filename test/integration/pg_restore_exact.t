#!/bin/bash
# A PostgreSQL restore brings back the database itself, not only its content (issue 16,
# items 1-3, 6, 7): the ICU collation, owner, connection limit, settings, role-in-
# database settings, comment and grants of the backed-up database, in place, to a
# target (with the backup's grants) and after the database was dropped; a tenant with
# two databases restores the one it names, and one of them can be removed.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/pg_debian.sh"

scratch_dir
pg_start_debian_tb
psql_q "CREATE ROLE app LOGIN" "CREATE ROLE reader LOGIN" \
	"CREATE DATABASE acme OWNER app TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C.UTF-8' CONNECTION LIMIT 40" \
	"ALTER DATABASE acme SET search_path = app, public" "ALTER DATABASE acme SET work_mem = '8MB'" \
	"ALTER ROLE reader IN DATABASE acme SET statement_timeout = '17s'" \
	"COMMENT ON DATABASE acme IS 'shop of DATABASE acme ; it''s ours'" \
	"GRANT CONNECT ON DATABASE acme TO reader" "REVOKE TEMPORARY ON DATABASE acme FROM PUBLIC" \
	"CREATE DATABASE acme2 OWNER app" >/dev/null || pg_bail "$D/pg/server.log" "cannot set up the cluster"
in_db acme "CREATE SCHEMA app AUTHORIZATION app" "CREATE TABLE app.t (w text)" "ALTER TABLE app.t OWNER TO app" \
	"INSERT INTO app.t VALUES ('Z'), ('a'), ('B'), ('ä'), ('b')" "GRANT USAGE ON SCHEMA app TO reader" \
	"GRANT SELECT ON app.t TO reader" >/dev/null
in_db acme2 "CREATE TABLE other (id int)" "INSERT INTO other VALUES (2)" >/dev/null

# Everything a database is beyond its content, with its own name left out.
props() { # DB
	psql_q "SELECT concat_ws(' | ', d.datlocprovider, d.daticulocale, d.datcollate, d.datconnlimit,
		pg_get_userbyid(d.datdba), shobj_description(d.oid, 'pg_database'),
		(SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.datacl) a),
		(SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ','), ';' ORDER BY r.rolname NULLS FIRST)
		 FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid))
		FROM pg_database d WHERE d.datname = '$1'"
}
# What the application sees: its table by its unqualified name, in the database's sort order.
app_view() { # DB
	pg_as_postgres "$D/pg" env PGPASSWORD=reader-pw "$PG_BIN/psql" -X -A -t -q -U reader -h 127.0.0.1 -d "$1" \
		-c "SHOW statement_timeout" \
		-c "SELECT string_agg(w, ' ' ORDER BY w) FROM t" 2>&1 | tr '\n' ' '
}
psql_q "ALTER ROLE reader PASSWORD 'reader-pw'" >/dev/null

original=$(props acme)
like "$original" "^i \| de-DE \| C.UTF-8 \| 40 \| app \| shop of DATABASE acme ; it's ours \| =c/app,app=CTc/app,reader=c/app \| \*:search_path=app, public,work_mem=8MB;reader:statement_timeout=17s$" \
	"the live database has its properties"
is "$(app_view acme)" "17s a ä b B Z " "the application sees its table in ICU order, with reader's setting"

psql_q "SELECT tenant_backup.tenant_create('acme')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme')" \
	"SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
ok $? "a backup of acme"

# To a target: the backup's properties and grants (before: defaults, closed to PUBLIC).
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_copy')" 2>&1)
ok $? "restore to a target" || diag "$out"
is "$(props acme_copy)" "$original" "the target has the backup's collation, owner, limit, comment, grants and settings"
is "$(app_view acme_copy)" "17s a ä b B Z " "the application reaches the target as reader, sorted as before"

# privileges => false: the target as a fresh CREATE DATABASE leaves it (PUBLIC may connect
# and create temporary tables), without the backup's grants; its other properties stay.
acl() { psql_q "SELECT coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(datacl) a), 'defaults')
	FROM pg_database WHERE datname = '$1'"; }
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_bare', privileges => false)" 2>&1)
ok $? "restore to a target with privileges => false" || diag "$out"
is "$(acl acme_bare)" "=Tc/app,app=CTc/app" "the bare target has PUBLIC's default grants and none of the backup's"
is "$(psql_q "SELECT has_database_privilege('reader', 'acme_bare', 'TEMPORARY')")" t \
	"PUBLIC's TEMPORARY, which the backup had revoked, is there as CREATE DATABASE gives it"
is "$(props acme_bare | cut -d'|' -f1-6,8)" "$(echo "$original" | cut -d'|' -f1-6,8)" \
	"the bare target still has the backup's collation, owner, limit, comment and settings"
job=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_bare2', privileges => false, wait => false)")
is "$(psql_q "SELECT restore_privileges FROM tenant_backup.jobs WHERE id = $job")" f "a queued request carries privileges => false to its job"
wait_for 300 0.1 succeeded psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job" >/dev/null
is "$(acl acme_bare2)" "=Tc/app,app=CTc/app" "and its target is bare too"
is "$(psql_q "SELECT string_agg(detail->>'target', ',' ORDER BY id) FROM tenant_backup.audit WHERE action = 'restore without grants requested'")" \
	"acme_bare,acme_bare2" "each bare target restore is audited"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', privileges => false)" 2>&1)
like "$out" 'privileges => false of tenant "acme" needs a PostgreSQL restore to a target' \
	"privileges => false is refused in place"
like "$out" "An in-place restore keeps the live database's grants" "and the refusal says why"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', privileges => false, wait => false)" 2>&1)
like "$out" 'needs a PostgreSQL restore to a target' "also when queued"
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE kind = 'restore' AND restore_target IS NULL")" 0 \
	"no in-place restore was queued"
psql_q "DROP DATABASE acme_bare" "DROP DATABASE acme_bare2" >/dev/null

# In place, after the live database's properties changed: the backup's come back, but
# who may connect stays as decided for the live database since (an auditor was let in).
psql_q "ALTER DATABASE acme RESET search_path" "COMMENT ON DATABASE acme IS 'changed'" \
	"CREATE ROLE auditor" "GRANT CONNECT ON DATABASE acme TO auditor" >/dev/null
in_db acme "DELETE FROM app.t WHERE w = 'Z'" >/dev/null
changed=$(props acme)
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme')" 2>&1)
ok $? "restore in place" || diag "$out"
is "$(props acme)" "${original/reader=c\/app/auditor=c/app,reader=c/app}" \
	"in place: the restored database has the backup's properties and the live one's grants"
is "$(app_view acme)" "17s a ä b B Z " "in place: the application finds t again, in ICU order"
old=$(psql_q "SELECT datname FROM pg_database WHERE datname LIKE 'acme\_tb\_old\_%'")
is "$(props "$old")" "$changed" "the previous database is kept as $old with its own properties"

# The database was dropped: it is recreated, with its properties.
psql_q "DROP DATABASE acme WITH (FORCE)" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme')" 2>&1)
ok $? "restore of a dropped database" || diag "$out"
is "$(props acme)" "$original" "the dropped database is recreated with its properties"
is "$(app_view acme)" "17s a ä b B Z " "and its data"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname LIKE 'acme\_tb\_new\_%'")" 0 "no fresh database is left"
out=$(psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" 2>&1)
ok $? "the recreated database backs up" || diag "$out"

# A tenant with two databases: a target restore must name one.
psql_q "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme2')" \
	"SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
is "$(psql_q "SELECT string_agg(DISTINCT database, ',' ORDER BY database) FROM tenant_backup.tenant_backups('acme')")" \
	"acme,acme2" "tenant_backups says which database each backup is of"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'two_copy')" 2>&1)
like "$out" 'tenant "acme" has several postgres databases: say which one to restore into "two_copy"' \
	"a target restore of a tenant with two databases is refused without database =>"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'two_copy', database => 'acme2')" 2>&1)
ok $? "database => acme2 to a target" || diag "$out"
is "$(in_db two_copy "SELECT id FROM other" 2>&1)" 2 "the target holds acme2's data"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme2', database => 'acme')" 2>&1)
like "$out" 'database "acme2" already exists; nothing was changed' "a target that exists is refused"
is "$(in_db acme2 "SELECT id FROM other" 2>&1)" 2 "and left as it was"
is "$(psql_q "SELECT count(*) FROM tenant_backup.scratch_databases WHERE database = 'acme2'")" 0 "and is no scratch"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'x', database => 'nope')" 2>&1)
like "$out" 'tenant "acme" has no database "nope"' "an unknown database is refused by name"
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('acme', database => 'acme2')")
is "$(echo "$drill" | jq -r '[.ok, (.checks | length), .checks[0].database] | @tsv')" "true	1	acme2" \
	"a drill of one database of two"

# Removing a database: its backups stay, nothing more is scheduled, audited.
kept=$(psql_q "SELECT tenant_backup.tenant_remove_database('acme', 'postgres', 'acme2')" 2>&1)
is "$kept" 1 "tenant_remove_database keeps acme2's backup"
is "$(psql_q "SELECT count(*) FROM tenant_backup.tenant_backups('acme') WHERE source_id IS NULL")" 1 \
	"its backup is listed without a database"
is "$(psql_q "SELECT count(*) FROM tenant_backup.tenant_backup('acme')")" 1 "a backup of acme now queues one job"
is "$(psql_q "SELECT detail->>'locator' FROM tenant_backup.audit WHERE action = 'database removed'")" acme2 \
	"the removal is audited"
is "$(psql_q "SELECT has_function_privilege('tenant_backup_operator', 'tenant_backup.tenant_remove_database(text, text, text)', 'EXECUTE')::text
	|| has_function_privilege('public', 'tenant_backup.tenant_remove_database(text, text, text)', 'EXECUTE')::text")" \
	truefalse "operators may remove a database, PUBLIC may not"

# Leftovers: listed, removed on request by the launcher, old copies dropped after keep_old_copy.
sleep 1
is "$(psql_q "SELECT kind || ' ' || tenant FROM tenant_backup.scratch_databases WHERE database = '$old'")" "old acme" \
	"the kept copy is listed, and still there after launcher rounds (keep_old_copy is a week)"
out=$(psql_q "SELECT tenant_backup.tenant_remove_scratch('acme')" 2>&1)
like "$out" 'database "acme" is not a scratch database' "a tenant's own database is not scratch"
psql_q "SELECT tenant_backup.tenant_remove_scratch('$old')" >/dev/null
wait_for 100 0.1 0 psql_q "SELECT count(*) FROM pg_database WHERE datname = '$old'" >/dev/null
ok $? "tenant_remove_scratch: the launcher dropped $old"
is "$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'scratch database dropped' AND detail->>'database' = '$old'")" 1 \
	"the drop is audited"
psql_q "ALTER SYSTEM SET tenant_backup.keep_old_copy = '2s'" "SELECT pg_reload_conf()" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', database => 'acme')" 2>&1)
ok $? "another restore in place" || diag "$out"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname LIKE 'acme\_tb\_old\_%'")" 1 "it kept the previous copy"
wait_for 100 0.1 0 psql_q "SELECT count(*) FROM pg_database WHERE datname LIKE 'acme\_tb\_old\_%'" >/dev/null
ok $? "the launcher drops an old copy once it is older than keep_old_copy"
is "$(app_view acme)" "17s a ä b B Z " "the live database is untouched by it"

# A drill's scratch directory a crash left behind goes once its job is over; another
# user's directory of that name stays.
scratch_of() { echo "${TMPDIR:-/tmp}/tenant_backup_drill_${PGPORT}_1_$1"; }
mkdir "$(scratch_of crashed)" "$(scratch_of notours)" && touch "$(scratch_of crashed)/base.tar" &&
	chown -R postgres "$(scratch_of crashed)"
wait_for 100 0.1 gone bash -c "[ -e '$(scratch_of crashed)' ] && echo there || echo gone" >/dev/null
ok $? "the launcher removes a drill scratch directory whose job is over"
ok "$([ -d "$(scratch_of notours)" ]; echo $?)" "a directory of that name owned by another user stays"
rmdir "$(scratch_of notours)"
is "$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'scratch directory removed'")" 1 "its removal is audited"

done_testing
