#!/bin/bash
# Replication to a second storage, against real servers: two Swift S3 servers (two
# "regions", SigV4 checked), then file primary storage with an S3 replica. Backups of
# three tenants are copied byte for byte (SHA-256 of both objects), with their manifests
# and key documents; the replica stopped during replication (backups go on, status
# shows the lag and the error, the catch-up after its restart copies everything); one
# tenant's replica URL wrong (only it fails); an operator refused an endpoint= of its
# own; a worker terminated mid-copy leaves no unfinished upload; a forged key document or a tampered object in the primary never replaces a good
# copy; a dedicated tenant's archived WAL is copied; an unfinished write a dead worker
# left in a file:// replica is removed.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/s3.sh"

scratch_dir
PORT_A=$(free_port)
s3_start "$D/a" "$PORT_A"
PORT_B=$(free_port)
while [ "$PORT_B" = "$PORT_A" ]; do PORT_B=$(free_port); done
on_exit "sh '$S3SERVER' stop '$D/b/s3'"
sh "$S3SERVER" start "$D/b/s3" "$PORT_B" >/dev/null || { echo "Bail out! the second S3 server did not start"; exit 1; }
# Both servers share the test account; each URL names its endpoint.
unset AWS_ENDPOINT_URL
BUCKET=$TB_S3_BUCKET
PRIMARY="s3://$BUCKET/primary?endpoint=http://127.0.0.1:$PORT_A"
REPLICA="s3://$BUCKET/replica?endpoint=http://127.0.0.1:$PORT_B"
aws_at() { # PORT ARGS...
	local port=$1
	shift
	/usr/bin/aws --endpoint-url "http://127.0.0.1:$port" "$@"
}
# SHA-256 of an object, "missing" when it cannot be read.
sha_at() { # PORT KEY
	aws_at "$1" s3 cp "s3://$BUCKET/$2" - 2>/dev/null | sha256sum | cut -d' ' -f1 | sed 's/^e3b0c44298fc.*/missing/'
}

"$TB" keygen --out "$D/master.key" 2>/dev/null || { echo "Bail out! tenant-backup keygen failed"; exit 1; }
chown postgres "$D/master.key"
pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = '$PRIMARY'
tenant_backup.replica_storage = '$REPLICA'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200
tenant_backup.max_workers = 4
tenant_backup.lease_timeout = 5"
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE t1_db" "CREATE DATABASE t2_db" "CREATE DATABASE t3_db" \
	>/dev/null || pg_bail "$D/pg/server.log" "could not set up the extension and the tenant databases"
for t in t1 t2 t3; do
	psql_q "SELECT tenant_backup.tenant_create('$t')" \
		"SELECT tenant_backup.tenant_add_database('$t', 'postgres', '${t}_db')" >/dev/null ||
		pg_bail "$D/pg/server.log" "could not create tenant $t"
done
backup() { psql_q "SELECT count(*) FROM tenant_backup.tenant_backup('$1', 'postgres', wait => true)"; }
state_of() { psql_q "SELECT string_agg(coalesce(replica_state, '-'), ' ' ORDER BY id) FROM tenant_backup.backups WHERE tenant = '$1' AND status = 'complete'"; }

# ------------------------------------------------------------ two S3 servers: everything is copied

for t in t1 t2 t3; do is "$(backup "$t")" 1 "a backup of $t completes in the primary"; done
is "$(wait_for 100 0.2 "replicated replicated replicated" \
	psql_q "SELECT string_agg(replica_state, ' ' ORDER BY tenant) FROM tenant_backup.backups WHERE status = 'complete'")" \
	"replicated replicated replicated" "the three backups are replicated"
for t in t1 t2 t3; do
	read -r key sha < <(psql_q "SELECT object_key || ' ' || sha256 FROM tenant_backup.backups WHERE tenant = '$t'" | tr '|' ' ')
	is "$(sha_at "$PORT_B" "replica/$key")" "$(sha_at "$PORT_A" "primary/$key")" \
		"$t: the replica's object has the same bytes as the primary's (SHA-256)"
	is "$(sha_at "$PORT_B" "replica/$key")" "$sha" "$t: and they are the catalog's SHA-256"
	manifest=${key%.tbk}.json
	is "$(sha_at "$PORT_B" "replica/$manifest")" "$(sha_at "$PORT_A" "primary/$manifest")" "$t: its manifest is copied"
	is "$(aws_at "$PORT_B" s3 ls "s3://$BUCKET/replica/$t/keys/" | awk '{print $4}' | sort)" \
		"$(aws_at "$PORT_A" s3 ls "s3://$BUCKET/primary/$t/keys/" | awk '{print $4}' | sort)" \
		"$t: its key documents are in the replica"
done
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE replica_url = '$REPLICA' AND replicated_at IS NOT NULL")" 3 \
	"each backup records the replica URL and when it was replicated"
is "$(psql_q "SELECT count(*) FROM tenant_backup.status WHERE replication_lag IS NULL AND replication_pending = 0 AND replication_error IS NULL")" 3 \
	"status: no lag, nothing pending, no error"

# ------------------------------------------------------------ the replica stops during replication

sh "$S3SERVER" stop "$D/b/s3"
is "$(backup t1)" 1 "with the replica stopped, a backup of t1 still completes in the primary"
is "$(wait_for 100 0.2 "replicated failed" state_of t1)" "replicated failed" "its copy fails"
error=$(psql_q "SELECT replica_error FROM tenant_backup.backups WHERE tenant = 't1' ORDER BY id DESC LIMIT 1")
like "$error" "tenant \"t1\"" "the error names the tenant"
like "$error" "127\.0\.0\.1:$PORT_B" "and the replica storage"
unlike "$error" "$AWS_SECRET_ACCESS_KEY" "and no secret"
is "$(psql_q "SELECT replica_attempts || ' ' || (replica_next_attempt - now() BETWEEN interval '45 seconds' AND interval '61 seconds') FROM tenant_backup.backups WHERE tenant = 't1' ORDER BY id DESC LIMIT 1")" \
	"1 true" "one attempt, the next a minute later"
is "$(psql_q "SELECT replication_lag > interval '0' AND replication_pending = 1 AND replication_error LIKE '%t1%' FROM tenant_backup.status WHERE tenant = 't1'")" t \
	"status shows t1's replication lag, what waits and the error"
metrics=$(psql_q "SELECT tenant_backup._metrics_replication()")
like "$metrics" '^tenant_backup_replication_failing\{tenant="t1",engine="postgres"\} 1$' "the metrics say t1's replication fails"
like "$metrics" '^tenant_backup_replication_lag_seconds\{tenant="t1",engine="postgres"\} [0-9.e+]+$' \
	"and give its lag in seconds"
like "$metrics" '^tenant_backup_replication_failing\{tenant="t2",engine="postgres"\} 0$' "t2's does not fail"
if command -v promtool >/dev/null; then
	out=$(printf '%s\n' "$metrics" | promtool check metrics 2>&1)
	ok $? "promtool check metrics accepts the replication metrics"
	[ -z "$out" ] || diag "$out"
fi
is "$(psql_q "SELECT replica_state FROM tenant_backup.tenant_backups('t1') LIMIT 1")" failed \
	"tenant_backups() shows the failed copy"
is "$(backup t2)" 1 "another tenant's backup completes meanwhile"

sh "$S3SERVER" start "$D/b/s3" "$PORT_B" >/dev/null || { echo "Bail out! the second S3 server did not restart"; exit 1; }
# The backoff's minute passes.
psql_q "UPDATE tenant_backup.backups SET replica_next_attempt = now() WHERE replica_state = 'failed'" >/dev/null
is "$(wait_for 100 0.2 0 psql_q "SELECT count(*) FROM tenant_backup.backups WHERE status = 'complete' AND replica_state IS DISTINCT FROM 'replicated'")" 0 \
	"after the restart the catch-up replicates every backup"
key=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = 't1' ORDER BY id DESC LIMIT 1")
is "$(sha_at "$PORT_B" "replica/$key")" "$(sha_at "$PORT_A" "primary/$key")" "the caught-up copy has the primary's bytes"
is "$(psql_q "SELECT count(*) FROM tenant_backup.status WHERE replication_lag IS NULL AND replication_error IS NULL")" 3 \
	"status: the lag and the error are gone"

# ------------------------------------------------------------ one tenant's replica URL is wrong

DEAD=$(free_port)
is "$(psql_q "SELECT tenant_backup.tenant_set_replica('t2', 's3://$BUCKET/replica?endpoint=http://127.0.0.1:$DEAD')")" \
	"s3://$BUCKET/replica?endpoint=http://127.0.0.1:$DEAD" "t2 gets a replica URL where nothing listens"
is "$(backup t2)" 1 "t2's backup completes"
is "$(backup t3)" 1 "t3's backup completes"
is "$(wait_for 100 0.2 failed psql_q "SELECT replica_state FROM tenant_backup.backups WHERE tenant = 't2' ORDER BY id DESC LIMIT 1")" \
	failed "t2's copy fails"
is "$(wait_for 100 0.2 replicated psql_q "SELECT replica_state FROM tenant_backup.backups WHERE tenant = 't3' ORDER BY id DESC LIMIT 1")" \
	replicated "t3's copy is replicated all the same"
like "$(psql_q "SELECT replication_error FROM tenant_backup.status WHERE tenant = 't2'")" "tenant \"t2\".*127\.0\.0\.1:$DEAD" \
	"status shows t2's error, naming its replica"

# ------------------------------------------------------------ an operator's replica URLs

psql_q "CREATE ROLE tb_rep_operator LOGIN" "GRANT tenant_backup_operator TO tb_rep_operator" >/dev/null
err=$(PGUSER=tb_rep_operator psql_q "SELECT tenant_backup.tenant_set_replica('t2', 's3://$BUCKET/x?endpoint=http://127.0.0.1:$DEAD')" 2>&1)
like "$err" "replica storage URL for tenant \"t2\" is refused" \
	"an operator cannot send the server's signed requests to an endpoint of its own"
is "$(psql_q "SELECT replica_storage FROM tenant_backup.tenants WHERE name = 't2'")" \
	"s3://$BUCKET/replica?endpoint=http://127.0.0.1:$DEAD" "t2's replica is unchanged"
err=$(PGUSER=tb_rep_operator psql_q "SELECT tenant_backup.tenant_set_replica('t2', 's3://$BUCKET/t2-copies?endpoint=http://127.0.0.1:$PORT_B')" 2>&1)
like "$err" "replica storage URL for tenant \"t2\" is refused" \
	"nor another prefix of the replica's bucket: it could hold other tenants' replicas"
is "$(PGUSER=tb_rep_operator psql_q "SELECT tenant_backup.tenant_set_replica('t2', '$REPLICA')")" "$REPLICA" \
	"an operator may name tenant_backup.replica_storage itself"
is "$(wait_for 100 0.2 0 psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 't2' AND replica_state IS DISTINCT FROM 'replicated'")" 0 \
	"t2's failed copy goes to its new replica at once"
key=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = 't2' ORDER BY id DESC LIMIT 1")
is "$(sha_at "$PORT_B" "replica/$key")" "$(sha_at "$PORT_A" "primary/$key")" "and its bytes are there"

# ------------------------------------------------------------ a worker terminated mid-copy

# t4's replica takes 5 MiB parts at 2MB/s, so its copy of a ~12 MB backup is a
# multipart upload for several seconds; the worker terminated then leaves none behind.
SLOW="s3://$BUCKET/replica?endpoint=http://127.0.0.1:$PORT_B&part_size=5MiB&max_bandwidth=2MB/s"
psql_q "CREATE DATABASE t4_db" "SELECT tenant_backup.tenant_create('t4')" \
	"SELECT tenant_backup.tenant_add_database('t4', 'postgres', 't4_db')" \
	"SELECT tenant_backup.tenant_set_replica('t4', '$SLOW')" >/dev/null
PGDATABASE=t4_db psql_q "CREATE TABLE bulk AS SELECT string_agg(md5(random()::text), '') AS v FROM generate_series(1, 800000) g GROUP BY g % 40" >/dev/null
is "$(backup t4)" 1 "t4's backup of ~25 MB completes"
uploads() { aws_at "$PORT_B" s3api list-multipart-uploads --bucket "$BUCKET" --prefix replica/t4/ --query 'length(Uploads || `[]`)' --output text; }
is "$(wait_for 100 0.1 1 uploads)" 1 "its copy is a multipart upload in the replica"
pid=$(psql_q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_backup replication' AND query LIKE '%t4/postgres/%'")
is "$(psql_q "SELECT pg_terminate_backend($pid)")" t "the replication worker is terminated mid-copy"
is "$(wait_for 50 0.2 0 uploads)" 0 "its upload is aborted as it exits: no unfinished write is left"
is "$(wait_for 150 0.2 replicated psql_q "SELECT replica_state FROM tenant_backup.backups WHERE tenant = 't4'")" replicated \
	"the next worker copies the backup"
key=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = 't4'")
is "$(sha_at "$PORT_B" "replica/$key")" "$(sha_at "$PORT_A" "primary/$key")" "with the primary's bytes"

unlike "$(cat "$D/pg/server.log")" "$AWS_SECRET_ACCESS_KEY" "the server log holds no S3 secret"
pg_stop "$D/pg"

# ------------------------------------------------------------ file primary, S3 replica

mkdir -p "$D/files"
chown postgres "$D/files"
pg_start "$D/pg2" "$(free_port)" "tenant_backup.storage = 'file://$D/files'
tenant_backup.replica_storage = 's3://$BUCKET/from-files?endpoint=http://127.0.0.1:$PORT_B'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE f1_db" "CREATE DATABASE f2_db" >/dev/null ||
	pg_bail "$D/pg2/server.log" "could not set up the second cluster"
for t in f1 f2; do
	psql_q "SELECT tenant_backup.tenant_create('$t')" \
		"SELECT tenant_backup.tenant_add_database('$t', 'postgres', '${t}_db')" >/dev/null
	is "$(backup "$t")" 1 "$t is backed up into file storage"
done
is "$(wait_for 100 0.2 "replicated replicated" \
	psql_q "SELECT string_agg(replica_state, ' ' ORDER BY tenant) FROM tenant_backup.backups WHERE status = 'complete'")" \
	"replicated replicated" "both backups are replicated to S3"
for t in f1 f2; do
	key=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = '$t'")
	is "$(sha_at "$PORT_B" "from-files/$key")" "$(sha256sum "$D/files/$key" | cut -d' ' -f1)" \
		"$t: the S3 copy has the file's bytes"
	is "$(aws_at "$PORT_B" s3 ls "s3://$BUCKET/from-files/$t/keys/" | awk '{print $4}' | sort)" \
		"$(ls "$D/files/$t/keys" | sort)" "$t: its key documents are in the replica"
done

# ------------------------------------------------------------ what the primary holds is checked, not trusted

REP=from-files
key_doc=$(cd "$D/files" && ls f2/keys/*.json | grep -v active.json | head -n 1)
good_doc_sha=$(sha_at "$PORT_B" "$REP/$key_doc")
is "$good_doc_sha" "$(sha256sum <"$D/files/$key_doc" | cut -d' ' -f1)" "f2's key document is in the replica as in the primary"
echo '{"forged": true}' >"$D/files/$key_doc"
is "$(backup f2)" 1 "with a forged key document in the primary, f2 is backed up again"
is "$(wait_for 100 0.2 "replicated replicated" state_of f2)" "replicated replicated" "and replicated"
is "$(sha_at "$PORT_B" "$REP/$key_doc")" "$good_doc_sha" \
	"the forged key document (not the catalog's wrapped key) did not replace the replica's"

read -r id key < <(psql_q "SELECT id || ' ' || object_key FROM tenant_backup.backups WHERE tenant = 'f2' ORDER BY id LIMIT 1")
good_sha=$(sha_at "$PORT_B" "$REP/$key")
flip_byte "$D/files/$key" 100
# Copied again, say after tenant_set_replica: the primary's bytes no longer match the catalog.
psql_q "UPDATE tenant_backup.backups SET replica_state = 'pending' WHERE id = $id" >/dev/null
is "$(wait_for 100 0.2 failed psql_q "SELECT replica_state FROM tenant_backup.backups WHERE id = $id")" failed \
	"a primary object whose bytes are not the catalog's SHA-256 is not replicated"
like "$(psql_q "SELECT replica_error FROM tenant_backup.backups WHERE id = $id")" "does not have the SHA-256" "the error says why"
is "$(sha_at "$PORT_B" "$REP/$key")" "$good_sha" "and the replica's good copy is left as it was"

# ------------------------------------------------------------ a dedicated tenant's archived WAL

psql_q "SELECT tenant_backup.tenant_create('d1', 'dedicated')" >/dev/null
wal=d1/postgres/wal/00000001/000000010000000000000003
sealed=$(echo "WAL bytes" | "$TB" put --tenant d1 --engine postgres --storage "file://$D/files" --master-key "$D/master.key")
ok $? "an object of d1 is sealed into the primary"
mkdir -p "$D/files/${wal%/*}"
mv "$D/files/$sealed" "$D/files/$wal.tbk"
python3 - "$D/files/${sealed%.tbk}.json" "$D/files/$wal.json" "$wal.tbk" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1]))
m["object"], m["backup_id"] = sys.argv[3], "000000010000000000000003"
json.dump(m, open(sys.argv[2], "w"))
os.remove(sys.argv[1])
PY
chown -R postgres "$D/files"
# The minute between passes over a dedicated tenant's WAL passes.
psql_q "UPDATE tenant_backup.replica_wal SET next_attempt = now() WHERE tenant = 'd1'" >/dev/null
is "$(wait_for 100 0.2 "$(sha256sum <"$D/files/$wal.tbk" | cut -d' ' -f1)" sha_at "$PORT_B" "$REP/$wal.tbk")" \
	"$(sha256sum <"$D/files/$wal.tbk" | cut -d' ' -f1)" "d1's archived WAL file is copied to the replica"
is "$(wait_for 50 0.2 "$(sha256sum <"$D/files/$wal.json" | cut -d' ' -f1)" sha_at "$PORT_B" "$REP/$wal.json")" \
	"$(sha256sum <"$D/files/$wal.json" | cut -d' ' -f1)" "with its manifest"
is "$(psql_q "SELECT copied || ' ' || (error IS NULL) FROM tenant_backup.replica_wal WHERE tenant = 'd1'")" "1 true" \
	"replica_wal records the pass"

# ------------------------------------------------------------ an unfinished write left in a file replica

# A replication worker that died mid-copy leaves its hidden temporary file: the next
# pass of that tenant removes it once it is older than a lease.
mkdir -p "$D/replica-files/f1/postgres"
chown -R postgres "$D/replica-files"
is "$(psql_q "SELECT tenant_backup.tenant_set_replica('f1', 'file://$D/replica-files')")" "file://$D/replica-files" \
	"f1 gets a file:// replica of its own"
leftover="$D/replica-files/f1/postgres/.left-over.tbk.tmp-0123abcd"
echo partial >"$leftover"
touch -d '1 hour ago' "$leftover"
is "$(backup f1)" 1 "f1 is backed up again"
is "$(wait_for 100 0.2 "replicated replicated" state_of f1)" "replicated replicated" \
	"the new backup is replicated (the older one stays replicated where it was)"
ok "$([ ! -e "$leftover" ]; echo $?)" "the unfinished write a dead worker left in the replica is gone"
key=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = 'f1' ORDER BY id DESC LIMIT 1")
is "$(sha256sum <"$D/replica-files/$key" | cut -d' ' -f1)" "$(sha256sum <"$D/files/$key" | cut -d' ' -f1)" \
	"the file replica has the primary's bytes"
is "$(psql_q "SELECT string_agg(replica_url, ' ' ORDER BY id) FROM tenant_backup.backups WHERE tenant = 'f1'")" \
	"s3://$BUCKET/from-files?endpoint=http://127.0.0.1:$PORT_B file://$D/replica-files" \
	"each backup records the replica it was copied to"
done_testing
