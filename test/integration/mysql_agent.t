#!/bin/bash
# MariaDB tenants through the extension and tenant-backup-agent-mysql, on a real MariaDB
# (file storage, or S3 with TB_TEST_STORAGE=s3):
# backup lands at <tenant>/mysql/ and decrypts to a dump of only its tenant; restore in
# place (the previous database kept, other tenants untouched) and to a target; the
# realistic schema round-trips (my_compare.sh); a tampered object fails before anything
# changes; no password on a command line, in the log or in the catalog; configuration
# errors are clear. A backup records its contents (rows per table, counted in the dump);
# a restore drill loads the newest backup into scratch, counts it, drops the scratch and
# reports ok only when object and counts match, and fails cleanly on a corrupted object;
# backups made before and after a key rotation, and with the tenant's own key command
# (BYOK), restore; a refusing key command fails the backup.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/mariadb.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/mysql_tenants.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)
TB_BIN=$(dirname "$TB")
# The agent built with AddressSanitizer/UBSan when there is one (make test builds it).
agent_use tenant-backup-agent-mysql

scratch_dir
if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
	S3_PORT=$(free_port)
	mysql_tenants_setup "$(free_port)" "$(free_port)"
else
	mysql_tenants_setup "$(free_port)" "$(free_port)"
fi

"$TB_BIN/tenant-backup-agent-mysql" --help | grep -q -- "--once"
ok $? "--help describes the options"

# --- backup with --once
psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql')" >/dev/null
agent_once once1
ok $? "an agent run with --once does the queued job and exits 0"
row=$(psql_q "SELECT status, bytes_in > 0, length(sha256), object_key FROM tenant_backup.tenant_backups('acme')")
like "$row" '^complete\|t\|64\|acme/mysql/.*\.tbk$' "the backup is complete, with size, sha256 and an object under acme/mysql/"
obj=${row##*|}
"$TB" cat "$obj" >"$D/acme.sql"
ok $? "tenant-backup cat decrypts it"
grep -q "acme canary" "$D/acme.sql"
ok $? "the dump holds acme's canary"
grep -qE "globex canary|initech canary" "$D/acme.sql"
ok $((! $?)) "and no other tenant's"
for what in 'CREATE TABLE `canary`' 'VIEW `canary_view`' 'TRIGGER canary_touch' 'PROCEDURE `canary_count`'; do
	grep -qF "$what" "$D/acme.sql"
	ok $? "the dump has $what"
done
like "$(grep -c 'acme' "$D/once1.log")" '^[1-9]' "the agent logs one line for the job"
like "$(grep 'succeeded' "$D/once1.log")" 'backup of tenant "acme" \(mysql, job [0-9]+, backup [0-9]+, attempt 1\) succeeded: .* in, .* stored, [0-9.]+ s' \
	"the line names tenant, engine, job, backup, bytes and time"
is "$(psql_q "SELECT contents FROM tenant_backup.backups WHERE object_key = '$obj'")" '{"tables": {"canary": 1}}' \
	"the backup records its contents, counted in the dump: each table with its rows (views are not tables)"
like "$(grep 'succeeded' "$D/once1.log")" '; 1 table, 1 row$' "and its log line says what it counted"

# --- a running agent, woken by NOTIFY (it would otherwise look only every 60 s)
agent_start daemon --poll-seconds 60
DAEMON_PID=$AGENT_PID
wait_for 50 0.1 1 psql_q "SELECT count(*) FROM tenant_backup.agents WHERE name = 'daemon' AND silent_for < '10 s'" >/dev/null
ok $? "the agent says hello: tenant_backup.agents lists it with a recent heartbeat"
start=$SECONDS
job=$(psql_q "SELECT tenant_backup.tenant_backup('globex', 'mysql', wait => true)")
ok $? "tenant_backup('globex', 'mysql', wait => true) returns once the agent reported"
[ $((SECONDS - start)) -lt 20 ]
ok $? "the agent was woken by the notification, not by its 60 s poll"
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" succeeded "the job succeeded"
is "$(psql_q "SELECT last_success IS NOT NULL FROM tenant_backup.status WHERE tenant = 'globex' AND engine = 'mysql'")" t \
	"tenant_backup.status shows the agent's backup"
is "$(psql_q "SELECT jobs_done FROM tenant_backup.agents WHERE name = 'daemon'")" 1 "the agents view counts the job"

# --- restore in place
my_db acme "UPDATE canary SET v = 'acme changed'" "INSERT INTO canary (id, v) VALUES (2, 'acme after backup')" \
	"DROP VIEW canary_view" "DROP PROCEDURE canary_count"
my_db globex "UPDATE canary SET v = 'globex after backup'"
restore=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', wait => true)")
ok $? "tenant_restore('acme', 'mysql', wait => true) in place"
is "$(my_canaries acme)" "acme canary" "acme is back as it was at the backup"
is "$(my_db acme "SELECT touched FROM canary WHERE id = 1")" 0 "with its rows exactly (the trigger did not fire on load)"
is "$(my_db acme "SELECT loud FROM canary_view")" "ACME CANARY" "its view is back"
is "$(my_db acme "CALL canary_count(@n)" "SELECT @n")" 1 "its procedure is back"
my_db acme "UPDATE canary SET v = 'after restore' WHERE id = 1"
is "$(my_db acme "SELECT touched FROM canary WHERE id = 1")" 1 "its trigger is back and fires"
is "$(my_canaries globex)" "globex after backup" "globex's later change survives"
old="acme_tb_old_$restore"
is "$(my_canaries "$old")" "acme changed,acme after backup" "the replaced contents are kept as $old"
is "$(my_q "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'acme\\_tb\\_new\\_%'")" 0 \
	"no scratch database is left"

# --- restore to a target
my_db acme "INSERT INTO canary (id, v) VALUES (3, 'live marker')"
psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', target => 'acme_copy', wait => true)" >/dev/null
ok $? "tenant_restore to target acme_copy"
is "$(my_canaries acme_copy)" "acme canary" "the target holds the backup"
is "$(my_canaries acme)" "after restore,live marker" "the live database is untouched"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', target => 'acme_copy', wait => true)" 2>&1)
ok $(($? == 0)) "a target that exists is refused"
like "$out" 'already exists' "the error says it exists"

# --- the realistic schema round-trips, in place and to a target
my_q "CREATE DATABASE umbrella"
my_client umbrella <"$HERE/fixtures/mariadb_schema.sql"
ok $? "the realistic schema loads into umbrella"
psql_q "SELECT tenant_backup.tenant_create('umbrella')" \
	"SELECT tenant_backup.tenant_add_database('umbrella', 'mysql', 'mysql://tbagent:$MY_PASSWORD_URI@127.0.0.1:$MARIADB_PORT/umbrella')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('umbrella', wait => true)" >/dev/null
ok $? "umbrella backs up"
umbrella_contents=$(my_contents umbrella)
is "$(psql_q "SELECT contents = \$j\$$umbrella_contents\$j\$::jsonb
	FROM tenant_backup.backups WHERE tenant = 'umbrella' AND status = 'complete'")" t \
	"its contents are the fixture's: every base table with its COUNT(*)"
is "$(psql_q "SELECT (SELECT count(*) FROM jsonb_object_keys(contents->'tables')), contents->'tables'->>'order_items',
	contents->'tables'->>'Straßenadressen', contents->'tables' ?| ARRAY['invoice_numbers', 'active_products']
	FROM tenant_backup.backups WHERE tenant = 'umbrella' AND status = 'complete'")" "9|7475|1500|f" \
	"9 tables, 7475 order items, a non-ASCII name; no sequence, no view"
psql_q "SELECT tenant_backup.tenant_restore('umbrella', 'mysql', target => 'umbrella_copy', wait => true)" >/dev/null
ok $? "and restores to umbrella_copy"
# The fidelity of the server's own dump tool: FLOAT goes through its 6-digit text form.
my_q "CREATE DATABASE umbrella_ref"
mariadb-dump --no-defaults --socket="$MARIADB_SOCKET" -uroot --single-transaction --routines --triggers --events \
	--hex-blob umbrella | my_client umbrella_ref
"$HERE/lib/my_compare.sh" umbrella_ref umbrella_copy
ok $? "umbrella_copy holds exactly what mariadb-dump | mariadb gives (definitions, counters, rows)"
is "$("$HERE/lib/my_compare.sh" umbrella umbrella_copy 2>&1 | grep '^  ' | cut -d: -f1)" "  table type_edge_cases" \
	"and differs from umbrella only where FLOAT needs more than 6 digits (a documented limit)"
my_db umbrella "DELETE FROM order_items WHERE order_id % 2 = 0" "DROP VIEW IF EXISTS active_products" \
	"DROP TRIGGER IF EXISTS orders_audit_status" "CREATE TABLE stray (id INT)"
restore=$(psql_q "SELECT tenant_backup.tenant_restore('umbrella', 'mysql', wait => true)")
ok $? "umbrella restores in place after changes"
"$HERE/lib/my_compare.sh" umbrella umbrella_copy
ok $? "umbrella is again what was backed up (definitions, counters, rows)"
is "$(my_q "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'umbrella_tb_old_$restore' AND TABLE_NAME = 'stray'")" 1 \
	"the previous contents, with the stray table, are in umbrella_tb_old_$restore"

# --- a restore drill: the newest backup loaded into scratch, counted, compared, dropped
# The field at PATH ({checks,0,ok}) of the JSON in $drill.
drill_get() { psql_q "SELECT \$j\$$drill\$j\$::jsonb #>> '$1'"; }
schemas=$(my_schemas)
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('umbrella')")
ok $? "tenant_restore_drill('umbrella') runs"
is "$(drill_get '{ok}')|$(drill_get '{checks,0,engine}')|$(drill_get '{checks,0,ok}')|$(drill_get '{checks,0,error}')" \
	"true|mysql|true|" "it is ok: the mysql check passed, no error"
is "$(psql_q "SELECT j.result->'contents' = b.contents, j.result->>'sha256' = b.sha256, b.id = $(drill_get '{checks,0,backup_id}')
	FROM tenant_backup.jobs j JOIN tenant_backup.backups b ON b.id = j.backup_id
	WHERE j.kind = 'drill' AND j.tenant = 'umbrella'")" "t|t|t" \
	"the agent counted in scratch what the backup recorded at dump time, and read the object it recorded"
like "$(grep 'drill of tenant "umbrella"' "$D/daemon.log")" 'succeeded: .*; drill: 9 tables, 16185 rows$' \
	"the agent's log line says what the scratch held"
is "$(my_schemas)" "$schemas" "nothing is left behind: the scratch database was dropped"
"$HERE/lib/my_compare.sh" umbrella umbrella_copy
ok $? "umbrella is unchanged (definitions, counters, rows)"
is "$(psql_q "SELECT d.ok, (SELECT count(*) FROM tenant_backup.audit a WHERE a.action = 'restore drill' AND a.tenant = 'umbrella')
	FROM tenant_backup.drills d WHERE d.tenant = 'umbrella'")" "t|1" "tenant_backup.drills and the audit log record it"
# Counts that differ from what the backup recorded fail the drill, naming the table.
psql_q "UPDATE tenant_backup.backups SET contents = jsonb_set(contents, '{tables,orders}', '2991')
	WHERE tenant = 'umbrella' AND status = 'complete'"
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('umbrella')")
is "$(drill_get '{ok}')" false "a drill whose counts differ from the recorded ones is not ok"
like "$(drill_get '{checks,0,error}')" 'orders: 2991 at dump time, 2990 restored' "its error names the table and both counts"
psql_q "UPDATE tenant_backup.backups SET contents = \$j\$$umbrella_contents\$j\$
	WHERE tenant = 'umbrella' AND status = 'complete'"
is "$(my_schemas)" "$schemas" "and it left nothing behind either"

# --- a tampered object fails before anything changes
my_db acme "INSERT INTO canary (id, v) VALUES (4, 'before tamper')"
before=$(my_canaries acme)
object_get "$obj" "$D/pristine"
cp "$D/pristine" "$D/tampered"
flip_byte "$D/tampered" $(($(stat -c %s "$D/tampered") / 2))
object_put "$D/tampered" "$obj"
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', backup_id => (SELECT id FROM tenant_backup.backups WHERE object_key = '$obj'), wait => true)" 2>&1)
ok $(($? == 0)) "restoring the tampered object fails"
like "$out" 'authenticat|corrupt|tamper' "the error says the backup failed authentication"
is "$(my_canaries acme)" "$before" "acme is untouched"
is "$(my_q "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'acme\\_tb\\_new\\_%'")" 0 \
	"the partly loaded scratch database was dropped"
schemas=$(my_schemas)
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('acme')")
ok $? "a drill of the tampered backup runs (a failed check is no SQL error)"
is "$(drill_get '{ok}')|$(drill_get '{checks,0,ok}')|$(drill_get '{checks,0,backup_id}')" \
	"false|false|$(psql_q "SELECT id FROM tenant_backup.backups WHERE object_key = '$obj'")" \
	"it is not ok, for the newest backup: the tampered one"
like "$(drill_get '{checks,0,error}')" 'restore drill of database "acme" of tenant "acme": .*(authenticat|corrupt)' \
	"its error says the backup failed authentication"
is "$(my_schemas)" "$schemas" "nothing is left behind"
is "$(my_canaries acme)" "$before" "acme is untouched"
object_put "$D/pristine" "$obj"

# --- key rotation: the backups made before and after it each restore with their own key
newest_backup() { # TENANT
	psql_q "SELECT id FROM tenant_backup.backups WHERE tenant = '$1' AND status = 'complete' ORDER BY id DESC LIMIT 1"
}
# Adds a canary row to acme and backs acme up; B: the new backup's id.
acme_change_and_backup() { # ID TEXT
	my_db acme "INSERT INTO canary (id, v) VALUES ($1, '$2')" &&
		psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql', wait => true)" >/dev/null && B=$(newest_backup acme)
}
psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql', wait => true)" >/dev/null
ok $? "acme backs up under its first key"
b1=$(newest_backup acme)
my_q "CREATE DATABASE acme_ref1"
mariadb-dump --no-defaults --socket="$MARIADB_SOCKET" -uroot --single-transaction --routines --triggers --events \
	--hex-blob acme | my_client acme_ref1
k2=$(psql_q "SELECT tenant_backup.tenant_rotate_key('acme')")
ok $? "tenant_rotate_key('acme') makes key $k2"
acme_change_and_backup 5 'after rotation'
ok $? "acme backs up under the new key"
b2=$B
is "$(psql_q "SELECT (SELECT key_id FROM tenant_backup.backups WHERE id = $b2) = '$k2',
	(SELECT count(DISTINCT key_id) FROM tenant_backup.backups WHERE id IN ($b1, $b2))")" "t|2" \
	"the two backups have different keys, the second the new one"
psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', backup_id => $b1, target => 'acme_key1', wait => true)" \
	"SELECT tenant_backup.tenant_restore('acme', 'mysql', backup_id => $b2, target => 'acme_key2', wait => true)" >/dev/null
ok $? "each restores into its own target"
"$HERE/lib/my_compare.sh" acme_ref1 acme_key1
ok $? "the one made under the old key holds acme as it was then (definitions, counters, rows)"
"$HERE/lib/my_compare.sh" acme acme_key2
ok $? "the one made under the new key holds acme as it is (definitions, counters, rows)"

# --- BYOK: acme's keys wrapped by its own key command (a stand-in KMS)
mkdir "$D/kms" && chown postgres "$D/kms"
k3=$(psql_q "SELECT tenant_backup.tenant_set_key_source('acme', 'sh $HERE/lib/kms.sh $D/kms')")
ok $? "tenant_set_key_source gives acme its own key command (key $k3)"
acme_change_and_backup 6 'under byok'
ok $? "acme backs up with a key from its command"
b3=$B
is "$(psql_q "SELECT key_id FROM tenant_backup.backups WHERE id = $b3")" "$k3" "under the command's key"
psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', backup_id => $b3, target => 'acme_byok', wait => true)" >/dev/null
ok $? "and restores"
"$HERE/lib/my_compare.sh" acme acme_byok
ok $? "into what acme holds (definitions, counters, rows)"
grep -q "^acme unwrap $k3\$" "$D/kms/calls"
ok $? "the key was unwrapped by the command"
complete=$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")
touch "$D/kms/fail"
out=$(psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql', wait => true)" 2>&1)
ok $(($? == 0)) "with the key command refusing, the backup fails"
like "$out" 'key command' "the error names the key command"
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")" "$complete" \
	"no complete backup is added"
rm -f "$D/kms/fail"
psql_q "SELECT tenant_backup.tenant_set_key_source('acme', NULL)" >/dev/null
ok $? "acme goes back to the master key"

# --- secrets
grep -rqF "$MY_PASSWORD" "$D"/dump/argv "$D"/*.log
ok $((! $?)) "the MariaDB password is in no tool's argv and no agent log"
grep -qF -- "--defaults-file=/dev/fd/" "$D/dump/argv"
ok $? "the dump tool got its credentials from the only option file it reads, through a pipe"
is "$(psql_q "SELECT count(*) FROM tenant_backup.sources WHERE locator LIKE '%s3cr%' OR sealed_password NOT LIKE 'tbs1:%'")" 0 \
	"the catalog keeps the locator without the password, which is sealed"
grep -qF "$MY_PASSWORD" "$D/pg/server.log"
ok $((! $?)) "nor is it in the control plane's log"

# The daemon stops first: LeakSanitizer reports when the process exits.
agent_stop "$DAEMON_PID"
grep -q 'ERROR: \(Address\|Leak\)Sanitizer\|runtime error' "$D"/*.log
ok $((! $?)) "no sanitizer report in the agents' logs"

# --- configuration errors
printf 'storage = %s\nmysql_password = x\n' "$STORAGE" >"$D/loose.conf"
chmod 644 "$D/loose.conf"
out=$("$TB_BIN/tenant-backup-agent-mysql" --config "$D/loose.conf" --once 2>&1)
ok $(($? == 0)) "a configuration file with a password readable by others is refused"
like "$out" 'readable by others' "the error says why"
printf 'bogus_key = 1\n' >"$D/bad.conf"
out=$("$TB_BIN/tenant-backup-agent-mysql" --config "$D/bad.conf" --once 2>&1)
like "$out" 'bad.conf:1: unknown key "bogus_key"' "an unknown key is named with its file and line"
out=$(TENANT_BACKUP_CONTROL="host=127.0.0.1 port=1 dbname=postgres user=agent" "$TB_BIN/tenant-backup-agent-mysql" --once 2>&1)
ok $(($? == 0)) "--once with an unreachable control plane exits non-zero"
like "$out" 'control plane unreachable' "and says so"

done_testing
