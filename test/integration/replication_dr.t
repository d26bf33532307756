#!/bin/bash
# Two regions: a primary Swift S3 server and a replica one. Restores fall back to the
# replica's copy when the primary's is missing or fails authentication, and say so; a
# tenant without a replica keeps the original error. Then docs/disaster-recovery.md's
# "The primary region is gone" as written: the primary server stopped and its data
# removed, every step of the runbook run against the replica alone.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/lib/s3.sh"

scratch_dir
s3_start "$D" "$(free_port)"
PRIMARY_DIR="$D/s3"
REPLICA_PORT=$(free_port)
on_exit "sh '$S3SERVER' stop '$D/s3b'"
sh "$S3SERVER" start "$D/s3b" "$REPLICA_PORT" >/dev/null || { echo "Bail out! the replica S3 server did not start"; exit 1; }
REPLICA_ENDPOINT="http://127.0.0.1:$REPLICA_PORT"
PRIMARY="s3://$TB_S3_BUCKET/pg"
REPLICA="s3://$TB_S3_BUCKET/dr?endpoint=$REPLICA_ENDPOINT"
aws_replica() { /usr/bin/aws --endpoint-url "$REPLICA_ENDPOINT" "$@"; }

"$TB" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"
pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = '$PRIMARY'
tenant_backup.replica_storage = '$REPLICA'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$D/pg/server.log" "CREATE EXTENSION failed"

in_db() { local db=$1; shift; PGDATABASE=$db psql_q "$@"; }
rows() { in_db "$1" "SELECT count(*), sum(id), md5(string_agg(note, ',' ORDER BY id)) FROM orders"; }
psql_q "CREATE ROLE acme_owner LOGIN" >/dev/null
for t in acme globex; do
	psql_q "CREATE DATABASE $t OWNER acme_owner" >/dev/null
	in_db $t "SET ROLE acme_owner" "CREATE TABLE orders (id int PRIMARY KEY, note text)" \
		"INSERT INTO orders SELECT g, '$t ' || md5(g::text) FROM generate_series(1, 3000) g" >/dev/null
	psql_q "SELECT tenant_backup.tenant_create('$t')" "SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" \
		>/dev/null
done
# globex keeps its copies in the primary region only.
psql_q "SELECT tenant_backup.tenant_set_replica('globex', 'none')" >/dev/null
for t in acme globex; do
	psql_q "SELECT tenant_backup.tenant_backup('$t', wait => true)" >/dev/null ||
		pg_bail "$D/pg/server.log" "the backup of $t failed"
done
acme_rows=$(rows acme)
globex_rows=$(rows globex)
object() { psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = '$1' AND status = 'complete' ORDER BY id DESC LIMIT 1"; }
acme_object=$(object acme)
globex_object=$(object globex)

# The replication engine copies acme's object, manifest and key documents raw, below
# the replica's root, and checks the copy.
replicated() { # OBJECT: its replica_state once the engine is done with it
	wait_for 150 0.2 replicated psql_q "SELECT replica_state FROM tenant_backup.backups WHERE object_key = '$1'"
}
is "$(replicated "$acme_object")" replicated "the replication engine copied acme's backup to the replica"
aws_replica s3 ls "s3://$TB_S3_BUCKET/dr/acme/keys/" | grep -q '\.json$'
ok $? "with acme's key documents"

restore_job() { # JOB: its state, result notice and error
	psql_q "SELECT state || '|' || coalesce(result->>'notice', '') || '|' || coalesce(error, '') FROM tenant_backup.jobs WHERE id = $1"
}

# ------------------------------------------------------------ the primary copy is deleted

aws_s3 s3 rm "s3://$TB_S3_BUCKET/pg/$acme_object" --only-show-errors
job=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_missing')" 2>"$D/err")
ok $? "tenant_restore succeeds when the primary object is missing"
is "$(rows acme_missing)" "$acme_rows" "every row came back, from the replica's copy"
like "$(restore_job "$job")" "^succeeded\|restored from the replica s3://$TB_S3_BUCKET/dr/ \(endpoint $REPLICA_ENDPOINT, .*\): the primary copy was missing: .*$acme_object" \
	"the job's result says where it came from and why"
grep -q "tenant_backup: backup [0-9]* of tenant \"acme\" restored from the replica .*the primary copy was missing" "$D/pg/server.log"
ok $? "and so does the server log"
like "$(cat "$D/err")" "NOTICE: +job $job of tenant \"acme\": restored from the replica s3://$TB_S3_BUCKET/dr/ " \
	"the caller of tenant_restore(wait => true) gets a NOTICE saying so"
unlike "$(restore_job "$job")" "AWS_SECRET|tb-s3-test-secret" "the message holds no secret"

# ------------------------------------------------------------ the primary copy is tampered

aws_replica s3 cp "s3://$TB_S3_BUCKET/dr/$acme_object" "$D/good.tbk" --only-show-errors
cp "$D/good.tbk" "$D/t.tbk"
flip_byte "$D/t.tbk" $(($(stat -c %s "$D/t.tbk") / 2))
aws_s3 s3 cp "$D/t.tbk" "s3://$TB_S3_BUCKET/pg/$acme_object" --only-show-errors
job=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_tampered')" 2>"$D/err")
ok $? "tenant_restore succeeds when a byte of the primary object was flipped"
is "$(rows acme_tampered)" "$acme_rows" "from the replica, whole"
like "$(restore_job "$job")" "^succeeded\|restored from the replica .*: the primary copy failed authentication: " \
	"saying the primary copy failed authentication"

# In place too: the live database is replaced by the replica's copy only.
in_db acme "DELETE FROM orders WHERE id > 100" >/dev/null
job=$(psql_q "SELECT tenant_backup.tenant_restore('acme')" 2>"$D/err")
ok $? "an in-place restore falls back the same way"
is "$(rows acme)" "$acme_rows" "acme is back as it was at the backup"

# Both copies bad: neither is loaded, and the error names both.
aws_replica s3 cp "$D/t.tbk" "s3://$TB_S3_BUCKET/dr/$acme_object" --only-show-errors
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_both')" 2>&1)
ok $((! $?)) "with the replica's copy tampered as well the restore fails"
like "$out" "cannot be restored from either copy: the primary copy failed authentication: .*; the replica s3://" \
	"naming both copies"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'acme_both'")" 0 "nothing is left behind"
aws_replica s3 cp "$D/good.tbk" "s3://$TB_S3_BUCKET/dr/$acme_object" --only-show-errors

# ------------------------------------------------------------ a tenant without a replica

aws_s3 s3 rm "s3://$TB_S3_BUCKET/pg/$globex_object" --only-show-errors
out=$(psql_q "SELECT tenant_backup.tenant_restore('globex', target => 'globex_missing')" 2>&1)
ok $((! $?)) "globex (replica 'none'): a missing primary object fails the restore"
like "$out" "cannot be read, nothing live was changed: " "with the original error"
unlike "$out" "replica" "and no word of a replica"
is "$(rows globex)" "$globex_rows" "globex's live database is untouched"

# ------------------------------------------------------------ the primary region is gone

# A fresh backup of acme, copied to the replica, then the primary server stopped and
# its data removed.
in_db acme "INSERT INTO orders VALUES (9001, 'after the first backup')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null || pg_bail "$D/pg/server.log" "backup failed"
acme_rows=$(rows acme)
acme_object=$(object acme)
is "$(replicated "$acme_object")" replicated "the new backup is on the replica too"
sh "$S3SERVER" stop "$PRIMARY_DIR"
rm -rf "$PRIMARY_DIR"
aws_s3 s3 ls "s3://$TB_S3_BUCKET/" >/dev/null 2>&1
ok $((! $?)) "the primary region is gone: its S3 server is stopped and its data removed"

# The runbook, from a host with the master key and the replica's credentials.
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
out=$("$TB" ls --storage "$REPLICA" acme 2>&1)
ok $? "runbook 1: tenant-backup ls --storage REPLICA lists the tenant's backups"
like "$out" "$acme_object" "the newest backup is there"
out=$("$TB" verify --storage "$REPLICA" --tenant acme 2>&1)
ok $? "runbook 2: tenant-backup verify --storage REPLICA --tenant acme checks every backup"
like "$out" "ok +$acme_object" "the newest authenticates whole, with the replica's key documents"
out=$("$TB" restore-direct --storage "$REPLICA" --tenant acme --engine postgres \
	--into "dbname=acme_dr host=$PGHOST port=$PGPORT user=postgres" --load-as acme_owner 2>&1)
ok $? "runbook 3: tenant-backup restore-direct --storage REPLICA restores the tenant"
is "$(rows acme_dr)" "$acme_rows" "its rows match the newest backup"

# --replica beside the dead primary: the read goes to the replica and says so.
"$TB" cat "$acme_object" --storage "$PRIMARY?retries=1" --replica "$REPLICA" >"$D/cat.out" 2>"$D/err"
ok $? "tenant-backup cat --storage PRIMARY --replica REPLICA reads the backup"
like "$(cat "$D/err")" "read from the replica s3://$TB_S3_BUCKET/dr/ .*: the primary copy could not be read: " \
	"saying the primary could not be read"

# Runbook 4: the replica becomes the storage; new backups and restores use it.
psql_q "ALTER SYSTEM SET tenant_backup.storage = '$REPLICA'" "ALTER SYSTEM SET tenant_backup.replica_storage = ''" \
	"SELECT pg_reload_conf()" >/dev/null
sleep 1
job=$(psql_q "SELECT tenant_backup.tenant_restore('acme', target => 'acme_after')" 2>"$D/err")
ok $? "runbook 4: with tenant_backup.storage pointed at the replica, tenant_restore works"
is "$(rows acme_after)" "$acme_rows" "restoring the newest backup"
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
ok $? "and new backups go to the former replica"
aws_replica s3 ls "s3://$TB_S3_BUCKET/dr/$(object acme)" >/dev/null
ok $? "where the new object is"

done_testing
