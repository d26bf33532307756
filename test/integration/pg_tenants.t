#!/bin/bash
# PostgreSQL tenants end to end through the extension, on file storage (or S3 with
# TB_TEST_STORAGE=s3): three tenants with canaries; backup, the object as a real
# pg_dump archive holding only its tenant; restore in place and to a target; a
# tampered object fails before anything live changes; scheduled and pg_cron
# backups; kill -9 of pg_dump and of the job worker; a realistic schema round trip;
# no password on a command line or in the log.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)

scratch_dir
PORT=$(free_port)
if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
	. "$HERE/lib/s3.sh"
	s3_start "$D" "$(free_port)"
	STORAGE="s3://$TB_S3_BUCKET/pg"
	PORT=$(free_port)
else
	mkdir -p "$D/store"
	chown postgres "$D/store"
	STORAGE="file://$D/store"
fi
"$TB" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"
export TENANT_BACKUP_STORAGE="$STORAGE" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"

# synchronous_commit on: the kill -9 tests restart the cluster, which must not lose commits.
# A default schedule that never comes due: only the backups a test asks for happen
# (a daily one would start each tenant at a time of day derived from its name).
pg_start "$D/pg" $PORT "tenant_backup.storage = '$STORAGE'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5
synchronous_commit = on
cron.database_name = 'postgres'"
psql_q "CREATE EXTENSION tenant_backup" "CREATE EXTENSION pg_cron"

in_db() { local db=$1; shift; PGDATABASE=$db psql_q "$@"; }
canaries() { in_db "$1" "SELECT string_agg(v, ',' ORDER BY id) FROM canary"; }
for t in acme globex initech; do
	psql_q "CREATE DATABASE $t"
	in_db $t "CREATE TABLE canary (id int PRIMARY KEY, v text)" "INSERT INTO canary VALUES (1, '$t canary')"
	psql_q "SELECT tenant_backup.tenant_create('$t')" "SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" \
		>/dev/null
done

# pg_cron: set up now, checked at the end (it fires on the minute).
psql_q "SELECT cron.schedule('globex-backup', '* * * * *', \$\$SELECT tenant_backup.tenant_backup('globex')\$\$)" \
	>/dev/null

job=$(psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)")
ok $? "tenant_backup('acme', wait => true) returns"
like "$job" '^[0-9]+$' "it returns the job id"
row=$(psql_q "SELECT status, bytes_in > 0, bytes_stored > 0, length(sha256), object_key FROM tenant_backup.tenant_backups('acme')")
like "$row" '^complete\|t\|t\|64\|acme/postgres/.*\.tbk$' "the backup is complete with sizes, sha256 and object key"
obj=${row##*|}

"$TB" cat "$obj" > "$D/acme.dump"
ok $? "tenant-backup cat decrypts the object"
/usr/lib/postgresql/15/bin/pg_restore -l "$D/acme.dump" | grep -q "TABLE DATA public canary"
ok $? "the object is a pg_dump archive (pg_restore -l lists the canary table)"
/usr/lib/postgresql/15/bin/pg_restore -f "$D/acme.sql" "$D/acme.dump"
grep -q "acme canary" "$D/acme.sql"
ok $? "it holds acme's canary"
grep -qE "globex canary|initech canary" "$D/acme.sql"
ok $((! $?)) "and no other tenant's"

# After the backup: acme changes, globex changes.
in_db acme "UPDATE canary SET v = 'acme changed'" "INSERT INTO canary VALUES (2, 'acme row after backup')"
in_db globex "UPDATE canary SET v = 'globex after backup'"
restore_job=$(psql_q "SELECT tenant_backup.tenant_restore('acme')")
ok $? "tenant_restore('acme') in place"
is "$(canaries acme)" "acme canary" "acme is back as it was at the backup"
is "$(canaries globex)" "globex after backup" "globex's later change survives"
is "$(canaries "acme_tb_old_$restore_job")" "acme changed,acme row after backup" \
	"the replaced database is kept as acme_tb_old_$restore_job"

in_db acme "INSERT INTO canary VALUES (3, 'live marker')"
psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_drill')" >/dev/null
ok $? "tenant_restore to a target"
is "$(canaries acme_drill)" "acme canary" "the target holds the backup"
is "$(canaries acme)" "acme canary,live marker" "the live database is untouched"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_drill')" 2>&1)
like "$out" 'database "acme_drill" already exists' "restoring over an existing target is refused"

# A tampered object: the restore fails before anything live changes.
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
tampered=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'
	ORDER BY id DESC LIMIT 1")
if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
	aws_s3 s3 cp "s3://$TB_S3_BUCKET/pg/$tampered" "$D/t.tbk" --only-show-errors
	size=$(stat -c %s "$D/t.tbk")
	flip_byte "$D/t.tbk" $((size - 100))
	aws_s3 s3 cp "$D/t.tbk" "s3://$TB_S3_BUCKET/pg/$tampered" --only-show-errors
else
	size=$(stat -c %s "$D/store/$tampered")
	flip_byte "$D/store/$tampered" $((size - 100))
fi
in_db acme "INSERT INTO canary VALUES (4, 'before tampered restore')"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', backup_id => (SELECT id FROM tenant_backup.backups
	WHERE object_key = '$tampered'))" 2>&1)
ok $((! $?)) "restoring a tampered backup fails"
like "$out" "failed authentication, nothing live was changed" "with a clear error"
is "$(canaries acme)" "acme canary,live marker,before tampered restore" "the live database is unchanged"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname LIKE 'acme_tb_new_%'")" 0 "no half-restored database is left"

# A pg_dump that waits longer than the lease (here on a lock held for 8 s, the lease is
# 5 s) keeps its job: the worker renews the lease while it waits.
psql_q "CREATE DATABASE waity"
in_db waity "CREATE TABLE t (x int)"
psql_q "SELECT tenant_backup.tenant_create('waity')" "SELECT tenant_backup.tenant_add_database('waity', 'postgres', 'waity')" \
	>/dev/null
PGDATABASE=waity psql -X -q -c "BEGIN" -c "LOCK TABLE t IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(8)" -c "COMMIT" \
	>/dev/null &
sleep 0.5
psql_q "SELECT tenant_backup.tenant_backup('waity', wait => true)" >/dev/null
ok $? "a backup that waits 8 s on a lock succeeds"
is "$(psql_q "SELECT state || ',' || attempts FROM tenant_backup.jobs WHERE tenant = 'waity'")" "succeeded,1" \
	"in one attempt: its lease was kept while pg_dump waited"
wait

# A typo in the default schedule is refused when set, not discovered by the launcher later.
out=$(psql_q "ALTER SYSTEM SET tenant_backup.default_schedule = '1 dya'" 2>&1)
like "$out" "must be a positive interval" "a malformed tenant_backup.default_schedule is refused"
psql_q "ALTER SYSTEM SET tenant_backup.default_schedule = '12 hours'" "ALTER SYSTEM RESET tenant_backup.default_schedule"
ok $? "a valid one is taken"

# A schedule of a few seconds backs initech up by itself.
psql_q "SELECT tenant_backup.tenant_set_schedule('initech', '2 seconds')" >/dev/null
wait_for 60 0.25 t psql_q "SELECT count(*) > 0 FROM tenant_backup.backups WHERE tenant = 'initech' AND status = 'complete'" \
	>/dev/null
ok $? "a 2-second schedule produced a backup of initech by itself"
psql_q "SELECT tenant_backup.tenant_set_schedule('initech', NULL)" >/dev/null

# A tenant's own code runs during a restore with the tenant's rights, not a superuser's.
psql_q "CREATE ROLE tenant_owner LOGIN" "CREATE DATABASE evil OWNER tenant_owner"
PGUSER=tenant_owner PGDATABASE=evil psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE FUNCTION grab(int) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
	BEGIN
		ALTER ROLE tenant_owner SUPERUSER;
	EXCEPTION WHEN OTHERS THEN NULL;
	END;
	RETURN true;
END $f$;
CREATE TABLE t (x int CHECK (grab(x)));
INSERT INTO t VALUES (1);
SQL
psql_q "SELECT tenant_backup.tenant_create('evil')" "SELECT tenant_backup.tenant_add_database('evil', 'postgres', 'evil')" \
	"SELECT tenant_backup.tenant_backup('evil', wait => true)" >/dev/null
psql_q "SELECT tenant_backup.tenant_restore('evil', target => 'evil_drill')" >/dev/null
ok $? "restore of a database owned by a plain role"
is "$(psql_q "SELECT rolsuper FROM pg_roles WHERE rolname = 'tenant_owner'")" f \
	"its functions ran with its own rights during the restore (no superuser gained)"
is "$(psql_q "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'evil_drill'")" tenant_owner \
	"the restored database keeps its owner"

# In place, the database keeps who may connect to it and its properties.
psql_q "REVOKE CONNECT ON DATABASE acme FROM PUBLIC" "GRANT CONNECT ON DATABASE acme TO tenant_owner" \
	"ALTER DATABASE acme CONNECTION LIMIT 7"
acl_before=$(psql_q "SELECT datacl::text || ' ' || datconnlimit FROM pg_database WHERE datname = 'acme'")
good=$(psql_q "SELECT min(id) FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', backup_id => $good)" 2>&1)
ok $? "restore in place again (the first backup: the latest was tampered with)" || diag "$out"
is "$(psql_q "SELECT datacl::text || ' ' || datconnlimit FROM pg_database WHERE datname = 'acme'")" "$acl_before" \
	"acme keeps its grants (PUBLIC still may not connect) and its connection limit"

# A realistic schema round-trips exactly.
psql_q "CREATE DATABASE hooli"
in_db hooli -f "$HERE/fixtures/realistic_schema.sql" >/dev/null 2>&1 || PGDATABASE=hooli psql -X -q -v ON_ERROR_STOP=1 \
	-f "$HERE/fixtures/realistic_schema.sql" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('hooli')" "SELECT tenant_backup.tenant_add_database('hooli', 'postgres', 'hooli')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('hooli', wait => true)" >/dev/null
ok $? "backup of a database with a realistic schema"
psql_q "SELECT tenant_backup.tenant_restore('hooli', target => 'hooli_copy')" >/dev/null
ok $? "restored to a copy"
diffs=$("$HERE/lib/pg_compare.sh" hooli hooli_copy 2>&1)
ok $? "schema-only dumps and per-table checksums are identical"
[ -n "$diffs" ] && diag "$diffs"

# kill -9: a slow tenant reached over TCP with a password in its locator.
psql_q "CREATE DATABASE umbrella"
in_db umbrella "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 1500000) g"
psql_q "SELECT tenant_backup.tenant_create('umbrella')" \
	"SELECT tenant_backup.tenant_add_database('umbrella', 'postgres',
		'host=127.0.0.1 port=$PORT dbname=umbrella user=postgres password=Sup3rS3cretPw')" >/dev/null
wait_running() { # until a pg_dump of umbrella runs
	for _ in $(seq 100); do
		pgrep -f "pg_dump.*dbname='umbrella'" >/dev/null && return 0
		sleep 0.1
	done
	return 1
}
psql_q "SELECT tenant_backup.tenant_backup('umbrella')" >/dev/null
wait_running
ok $? "pg_dump of umbrella runs"
unlike "$(ps -eo args)" "Sup3rS3cretPw" "no password on any command line while it runs"
last_umbrella_job="SELECT state || ',' || attempts FROM tenant_backup.jobs WHERE tenant = 'umbrella' ORDER BY id DESC LIMIT 1"
pkill -9 -f "pg_dump.*dbname='umbrella'"
is "$(wait_for 150 0.2 succeeded,2 psql_q "$last_umbrella_job")" "succeeded,2" \
	"after kill -9 of pg_dump the job is retried and succeeds"
is "$(psql_q "SELECT string_agg(status, ',' ORDER BY id) FROM tenant_backup.backups WHERE tenant = 'umbrella'")" \
	"failed,complete" "the killed attempt's backup is failed, never complete"

psql_q "SELECT tenant_backup.tenant_backup('umbrella')" >/dev/null
wait_running
kill -9 $(psql_q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_backup job'")
ok $? "kill -9 of the job worker (the cluster restarts)"
is "$(wait_for 200 0.2 succeeded,2 psql_q "$last_umbrella_job")" "succeeded,2" \
	"after kill -9 of the worker the job is retried and succeeds"
is "$(psql_q "SELECT string_agg(status, ',' ORDER BY id) FROM tenant_backup.backups WHERE tenant = 'umbrella'")" \
	"failed,complete,failed,complete" "the interrupted attempt is failed, never complete"
# A malformed conninfo is refused when added, without echoing it.
out=$(psql_q "SELECT tenant_backup.tenant_create('leaky')" \
	"SELECT tenant_backup.tenant_add_database('leaky', 'postgres', 'host=127.0.0.1 dbnmae=x password=LeakCheckPw9')" 2>&1)
like "$out" "not a valid PostgreSQL conninfo" "a malformed conninfo is refused when it is added"
# A source that cannot be reached fails each attempt after its password was opened:
# no password file may stay behind.
psql_q "SELECT tenant_backup.tenant_add_database('leaky', 'postgres',
	'host=127.0.0.1 port=1 dbname=x user=postgres password=LeakCheckPw9')" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_backup('leaky', wait => true)" 2>&1)
like "$out" "could not connect to the database of tenant \"leaky\": connection to server at \"127.0.0.1\", port 1 failed" \
	"an unreachable source fails the backup with a clear error"
is "$(find "$D/pg/data" -name '*tenant_backup*' | wc -l)" 0 "no password file is left behind"
grep -rqs "LeakCheckPw9" "$D/pg/data/base" "$D/pg/data/pgsql_tmp" 2>/dev/null
ok $((! $?)) "nor the password anywhere in the data directory's files"
# An operator's conninfo with a password the server never asks for (trust here) is not
# used: pg_dump would act with this server's own identity (dblink's rule).
psql_q "CREATE ROLE tb_operator LOGIN" "GRANT tenant_backup_operator TO tb_operator" \
	"SELECT tenant_backup.tenant_create('sneaky')" >/dev/null
PGUSER=tb_operator psql_q "SELECT tenant_backup.tenant_add_database('sneaky', 'postgres',
	'host=127.0.0.1 port=$PORT dbname=globex user=postgres password=notused')" >/dev/null
ok $? "an operator can add a conninfo with a password"
out=$(PGUSER=tb_operator psql_q "SELECT tenant_backup.tenant_backup('sneaky', wait => true)" 2>&1)
like "$out" "did not ask for the password" "but its backup is refused when the server does not ask for it"
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'sneaky' AND status = 'complete'")" 0 \
	"and nothing of globex was dumped for it"

psql_q "SELECT tenant_backup.tenant_add_database('umbrella', 'oracle', 'host=x password=LogLeakPw7')" >/dev/null 2>&1
unlike "$(cat "$D/pg/server.log")" "LogLeakPw7" "a refused tenant_add_database call is not logged with its password"
unlike "$(cat "$D/pg/server.log")" "Sup3rS3cretPw" "the password never reaches the server log"
unlike "$(psql_q "SELECT locator || coalesce(sealed_password, '') FROM tenant_backup.sources")" "Sup3rS3cretPw" \
	"nor the catalog in clear"

# pg_cron fires on the minute.
wait_for 75 1 t psql_q "SELECT count(*) > 0 FROM tenant_backup.backups WHERE tenant = 'globex' AND status = 'complete'" \
	>/dev/null
ok $? "SELECT cron.schedule(..., 'SELECT tenant_backup.tenant_backup(''globex'')') produced a backup"

done_testing
