#!/bin/bash
# A hostile PostgreSQL tenant against the extension, under Debian's default
# authentication (peer on the socket, scram-sha-256 on 127.0.0.1, no trust): the
# database owner plants operators and functions that grant themselves SUPERUSER and
# run a program whenever a superuser calls them, and CHECK constraints, triggers and
# index expressions that try RESET ROLE / SET ROLE postgres during a restore. Backups,
# restores (in place, to a target) and drills run; the owner stays a plain role, no
# program ran, and no restore role is left. A backup object copied over another is
# refused before anything live changes.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/pg_debian.sh"

scratch_dir
pg_start_debian_tb
as_owner() { as_role app "$1"; } # DB: stdin as the tenant's database owner
superuser_of() { psql_q "SELECT rolsuper FROM pg_roles WHERE rolname = 'app'"; }
restore_roles() { psql_q "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tenant\_backup\_restore\_%'"; }
last_error() { psql_q "SELECT error FROM tenant_backup.jobs WHERE tenant = '$1' ORDER BY id DESC LIMIT 1"; }
psql_q "CREATE ROLE app LOGIN" >/dev/null

# ------------------------------------------------------------ 1: operators that catch a superuser
# Each fires when called by a superuser: it makes app a superuser and runs a program.
# public.!~(name,name) and ||(name,name) are better matches for "nspname !~ '^pg_'" and
# "nspname || '.'" than pg_catalog's, =(oid,regclass) for "classid = 'pg_class'::regclass".
psql_q "CREATE DATABASE shady OWNER app" >/dev/null
as_owner shady >/dev/null <<SQL
CREATE FUNCTION public.pwn(what text) RETURNS void LANGUAGE plpgsql AS \$f\$
BEGIN
	IF pg_catalog.current_setting('is_superuser') OPERATOR(pg_catalog.=) 'on' THEN
		EXECUTE pg_catalog.format('COPY (SELECT 1) TO PROGRAM %L',
			pg_catalog.concat('touch $D/pg/pwned_', what));
		BEGIN
			EXECUTE 'ALTER ROLE app SUPERUSER';
		EXCEPTION WHEN OTHERS THEN NULL; -- a read-only transaction: the program ran anyway
		END;
	END IF;
END \$f\$;
CREATE FUNCTION public.evil_ne(a name, b name) RETURNS boolean LANGUAGE plpgsql AS \$f\$
BEGIN PERFORM public.pwn('regex'); RETURN pg_catalog.textregexne(a::text, b::text); END \$f\$;
CREATE OPERATOR public.!~ (LEFTARG = name, RIGHTARG = name, FUNCTION = public.evil_ne);
CREATE FUNCTION public.evil_cat(a name, b name) RETURNS text LANGUAGE plpgsql AS \$f\$
BEGIN PERFORM public.pwn('concat'); RETURN pg_catalog.textcat(a::text, b::text); END \$f\$;
CREATE OPERATOR public.|| (LEFTARG = name, RIGHTARG = name, FUNCTION = public.evil_cat);
CREATE FUNCTION public.evil_eq(a oid, b regclass) RETURNS boolean LANGUAGE plpgsql AS \$f\$
BEGIN PERFORM public.pwn('eq'); RETURN a OPERATOR(pg_catalog.=) b::oid; END \$f\$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.evil_eq);
CREATE TABLE public.items (id int PRIMARY KEY, v text);
INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 42) g;
CREATE SCHEMA sales;
CREATE TABLE sales.orders (id int);
INSERT INTO sales.orders SELECT generate_series(1, 7);
SQL
ok $? "the owner of shady plants its operators"
psql_q "SELECT tenant_backup.tenant_create('shady')" "SELECT tenant_backup.tenant_add_database('shady', 'postgres', 'shady')" \
	>/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_backup('shady', wait => true)" 2>&1)
ok $? "a backup of shady succeeds" || diag "$out $(last_error shady)"
is "$(psql_q "SELECT contents FROM tenant_backup.backups WHERE tenant = 'shady' AND status = 'complete'")" \
	'{"tables": {"public.items": 42, "sales.orders": 7}}' "it counted the rows pg_dump dumped"
is "$(superuser_of)" f "the backup ran none of the owner's operators as a superuser"
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('shady')" 2>&1)
is "$(psql_q "SELECT d->>'ok' FROM (SELECT \$j\$$drill\$j\$::jsonb AS d) x" 2>&1)" true "a drill of shady is ok" ||
	diag "$drill"
is "$(superuser_of)" f "nor did the drill"
is "$(find "$D/pg" -maxdepth 1 -name 'pwned_*' | wc -l)" 0 "no program of the owner's ran"

# ------------------------------------------------------------ 2: tenant code that reaches for the superuser during a load
# escalate() tries RESET ROLE (undoing pg_restore --role) and SET ROLE postgres, then
# ALTER ROLE app SUPERUSER and a program; it swallows its errors so that the load goes on.
psql_q "CREATE DATABASE trap OWNER app" >/dev/null
as_owner trap >/dev/null <<SQL
CREATE FUNCTION public.escalate(via text, x int) RETURNS boolean LANGUAGE plpgsql AS \$f\$
BEGIN
	BEGIN
		RESET ROLE;
		ALTER ROLE app SUPERUSER;
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	BEGIN
		SET ROLE postgres;
		ALTER ROLE app SUPERUSER;
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	BEGIN
		EXECUTE pg_catalog.format('COPY (SELECT 1) TO PROGRAM %L', pg_catalog.concat('touch $D/pg/pwned_', via));
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	RETURN x IS NOT NULL;
END \$f\$;
-- Generated columns and index expressions take immutable functions only: this one lies.
CREATE FUNCTION public.escalate_immutable(via text, x int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS \$f\$
BEGIN RETURN public.escalate(via, x); END \$f\$;
CREATE TABLE public.checked (x int CHECK (public.escalate('check', x)));
INSERT INTO public.checked SELECT generate_series(1, 5);
CREATE TABLE public.generated (x int, g boolean GENERATED ALWAYS AS (public.escalate_immutable('generated', x)) STORED);
INSERT INTO public.generated (x) SELECT generate_series(1, 3);
CREATE TABLE public.indexed (x int);
INSERT INTO public.indexed SELECT generate_series(1, 4);
CREATE INDEX ON public.indexed ((public.escalate_immutable('index', x)));
CREATE FUNCTION public.on_insert() RETURNS trigger LANGUAGE plpgsql AS \$f\$
BEGIN PERFORM public.escalate('trigger', 1); RETURN NEW; END \$f\$;
CREATE TRIGGER t BEFORE INSERT ON public.checked FOR EACH ROW EXECUTE FUNCTION public.on_insert();
SQL
ok $? "the owner of trap plants its CHECK constraint, generated column, index expression and trigger"
rm -f "$D"/pg/pwned_*
psql_q "ALTER ROLE app NOSUPERUSER" "SELECT tenant_backup.tenant_create('trap')" \
	"SELECT tenant_backup.tenant_add_database('trap', 'postgres', 'trap')" \
	"SELECT tenant_backup.tenant_backup('trap', wait => true)" >/dev/null
ok $? "a backup of trap"
rows_of_trap() { in_db "$1" "SELECT (SELECT count(*) FROM checked) || '/' || (SELECT count(*) FROM generated) || '/' ||
	(SELECT count(*) FROM indexed)"; }
for how in "in place" "to a target" "in a drill"; do
	case $how in
	"in place") out=$(psql_q "SELECT tenant_backup.tenant_restore('trap')" 2>&1) ;;
	"to a target") out=$(psql_q "SELECT tenant_backup.tenant_restore('trap', target => 'trap_copy')" 2>&1) ;;
	*) out=$(psql_q "SELECT tenant_backup.tenant_restore_drill('trap')->>'ok'" 2>&1) ;;
	esac
	ok $? "restore $how completes" || diag "$out $(last_error trap)"
	is "$(superuser_of)" f "restore $how: the owner's code gained no superuser"
	is "$(find "$D/pg" -maxdepth 1 -name 'pwned_*' -printf '%f ')" "" "restore $how: it ran no program"
	is "$(restore_roles)" 0 "restore $how: no restore role is left"
	psql_q "ALTER ROLE app NOSUPERUSER" >/dev/null
	rm -f "$D"/pg/pwned_*
done
is "$out" true "the drill of trap is ok"
is "$(rows_of_trap trap)/$(rows_of_trap trap_copy)" "5/3/4/5/3/4" "in place and in the target, every row is back"
is "$(in_db trap_copy "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'checked'")" app \
	"the restored tables keep their owner"
is "$(in_db trap "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class c
	JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'")" app "every restored object is app's"

# A load that tenant code makes fail: the caller reads pg_restore's own error, and nothing stays.
psql_q "CREATE DATABASE bomb OWNER app" >/dev/null
as_owner bomb >/dev/null <<'SQL'
CREATE FUNCTION public.refuse_restorers(x int) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
	IF pg_catalog.starts_with(session_user::text, 'tenant_backup_restore') THEN
		RAISE EXCEPTION 'no restores here';
	END IF;
	RETURN true;
END $f$;
CREATE TABLE public.t (x int CHECK (public.refuse_restorers(x)));
INSERT INTO public.t VALUES (1);
SQL
psql_q "SELECT tenant_backup.tenant_create('bomb')" "SELECT tenant_backup.tenant_add_database('bomb', 'postgres', 'bomb')" \
	"SELECT tenant_backup.tenant_backup('bomb', wait => true)" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_restore('bomb', target => 'bomb_copy')" 2>&1)
ok $((! $?)) "a restore that the tenant's CHECK constraint breaks fails"
like "$out" 'pg_restore: error: .*no restores here' "with pg_restore's first error line"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'bomb_copy'")|$(restore_roles)" "0|0" \
	"no target and no restore role are left"

# The marker role every restore role is a member of must stay bare.
psql_q "GRANT pg_execute_server_program TO tenant_backup_restorer" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_restore('trap', target => 'trap_marker')" 2>&1)
like "$out" "role tenant_backup_restorer has rights of its own" \
	"a restore refuses a marker role that was given a membership"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'trap_marker'")|$(restore_roles)" "0|0" \
	"and leaves no target and no restore role"
psql_q "REVOKE pg_execute_server_program FROM tenant_backup_restorer" >/dev/null

# A source reached with the tenant's own login (not a superuser): the load runs as that login.
psql_q "ALTER ROLE app CREATEDB PASSWORD 'app-login-pw'" "CREATE DATABASE trap_login TEMPLATE trap OWNER app" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('trap_login')" "SELECT tenant_backup.tenant_add_database('trap_login',
	'postgres', 'host=127.0.0.1 port=$PGPORT dbname=trap_login user=app password=app-login-pw')" \
	"SELECT tenant_backup.tenant_backup('trap_login', wait => true)" >/dev/null
ok $? "a backup of trap_login through app's own login"
out=$(psql_q "SELECT tenant_backup.tenant_restore('trap_login', target => 'trap_login_copy')" 2>&1)
ok $? "its restore to a target as app" || diag "$out"
is "$(superuser_of)|$(find "$D/pg" -maxdepth 1 -name 'pwned_*' | wc -l)|$(restore_roles)" "f|0|0" \
	"app's code ran as app: no superuser, no program, no restore role"
is "$(rows_of_trap trap_login_copy)" "5/3/4" "and every row is back"
psql_q "ALTER ROLE app NOCREATEDB" >/dev/null

# ------------------------------------------------------------ 3: an object copied over another
psql_q "CREATE DATABASE victim OWNER app" >/dev/null
in_db victim "CREATE TABLE t (v text)" "INSERT INTO t VALUES ('first backup')" "ALTER TABLE t OWNER TO app"
psql_q "SELECT tenant_backup.tenant_create('victim')" \
	"SELECT tenant_backup.tenant_add_database('victim', 'postgres', 'victim')" \
	"SELECT tenant_backup.tenant_backup('victim', wait => true)" >/dev/null
in_db victim "UPDATE t SET v = 'second backup'"
psql_q "SELECT tenant_backup.tenant_backup('victim', wait => true)" >/dev/null
read -r first first_obj <<<"$(psql_q "SELECT id || ' ' || object_key FROM tenant_backup.backups WHERE tenant = 'victim'
	AND status = 'complete' ORDER BY id LIMIT 1" | tr '|' ' ')"
read -r second second_obj <<<"$(psql_q "SELECT id || ' ' || object_key FROM tenant_backup.backups WHERE tenant = 'victim'
	AND status = 'complete' ORDER BY id DESC LIMIT 1" | tr '|' ' ')"
cp "$D/store/$first_obj" "$D/store/$second_obj"
in_db victim "UPDATE t SET v = 'live'"
out=$(psql_q "SELECT tenant_backup.tenant_restore('victim', backup_id => $second)" 2>&1)
ok $((! $?)) "restoring backup $second, whose object is backup $first's, fails"
like "$out" "backup $second.*holds backup $first" "naming both backups"
is "$(in_db victim "SELECT string_agg(v, ',') FROM t")" live "the live database is unchanged"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname LIKE 'victim_tb_%'")" 0 "no half-restored database is left"
out=$(psql_q "SELECT tenant_backup.tenant_restore('victim', backup_id => $second, target => 'victim_copy')" 2>&1)
ok $((! $?)) "restoring it to a target fails too"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'victim_copy'")" 0 "and leaves no target behind"

# ------------------------------------------------------------ 4: the backup reads pg_dump's archive strictly
# pg_dump stand-ins (tenant_backup.bin_dir) whose output is not what PostgreSQL 15's
# pg_dump --format=custom --compress=0 writes: each backup fails naming why.
mkdir -p "$D/fakebin"
chown postgres "$D/fakebin"
fake_dump() { # BODY: the stand-in's shell script
	printf '#!/bin/sh\n%s\n' "$1" >"$D/fakebin/pg_dump"
	chmod 755 "$D/fakebin/pg_dump"
}
psql_q "ALTER SYSTEM SET tenant_backup.bin_dir = '$D/fakebin'" "SELECT pg_reload_conf()" >/dev/null
before=$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'shady' AND status = 'complete'")
zeros='\000\000\000\000\000'
while IFS='~' read -r script why name; do
	fake_dump "$script"
	out=$(psql_q "SELECT tenant_backup.tenant_backup('shady', wait => true)" 2>&1)
	like "$out" "$why" "$name"
done <<STANDINS
$PG_BIN/pg_dump "\$@" | head -c 3000~ends before its table of contents does~a truncated archive is refused
$PG_BIN/pg_dump "\$@"; printf junk~a data block of an unknown type~bytes after the last data block are refused
$PG_BIN/pg_dump "\$@" --compress=1~its data is compressed~a compressed archive is refused
printf 'PGDMP\\001\\017\\000\\004\\010\\001'~archive version 1.15; only 1.14~another archive version is refused
printf 'PGDMP\\001\\016\\000\\004\\010\\001$zeros$zeros$zeros$zeros$zeros$zeros$zeros$zeros\\000\\377\\377\\377\\177'~more than the 64 MB~a string above the cap is refused before it is read
STANDINS
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'shady' AND status = 'complete'")" "$before" \
	"none of them became a complete backup"
psql_q "ALTER SYSTEM RESET tenant_backup.bin_dir" "SELECT pg_reload_conf()" >/dev/null

# ------------------------------------------------------------ 5: a cluster that listens on its socket only
# The restore role then logs in over the socket, with the one documented "local" line.
cat >"$D/pg/data/pg_hba.conf" <<'HBA'
local all postgres peer
local all +tenant_backup_restorer scram-sha-256
local all all peer
HBA
echo "listen_addresses = ''" >>"$D/pg/data/postgresql.conf"
pg_restart "$D/pg"
out=$(psql_q "SELECT tenant_backup.tenant_restore('trap', target => 'trap_socket')" 2>&1)
ok $? "a restore on a cluster without TCP, as the restore role over the socket" || diag "$out"
is "$(rows_of_trap trap_socket)|$(superuser_of)|$(restore_roles)" "5/3/4|f|0" \
	"every row is back, no superuser was gained, no restore role is left"

done_testing
