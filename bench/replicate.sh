#!/bin/bash
# Replication between two regions: the product's replication engine against `aws s3 cp`
# of the same objects, between the same two Swift S3 servers (test/lib/s3server.sh,
# SigV4 checked), in the same run.
#
# Starts two Swift S3 servers ("primary" and "replica") and a throwaway PostgreSQL 15
# cluster with tenant_backup on the primary (test/lib/pg.sh, fsync off), everything on
# tmpfs (/dev/shm) when there is one. Makes TENANTS small tenants (default 300; one
# database each, one table of 200 rows) and one big tenant whose database holds SIZE_MB
# (default 1024) of random bytes, and backs each up once with no replica configured. Then:
#
#   small  tenant_set_replica(t, REPLICA) for every small tenant at once (which makes
#          their complete backups pending), timed until every one is 'replicated':
#          the engine copies each tenant's key documents, object and manifest raw,
#          reads the copy back and checks its SHA-256 against the catalog.
#          aws s3 cp --recursive of the same prefixes from the primary to tmpfs, then
#          aws s3 cp --recursive from there to the replica (aws cannot copy between two
#          endpoints in one command); no read-back.
#   big    the same for the big tenant alone.
#
# tenant_backup.max_workers is WORKERS (default 4): up to that many replication workers
# (one per tenant) run at once; aws s3 uses its default 10 concurrent requests.
# Prints a markdown table (each row once measured) with both times and their ratio (tenant_backup / aws: below
# 1.00x the engine is faster). Stops everything and removes what it made at exit.
# Usage: bench/replicate.sh BIN_DIR [TENANTS] [SIZE_MB] [WORKERS]   (run as root)
set -euo pipefail
BIN=$(cd "$1" && pwd)
TENANTS=${2:-300}
SIZE_MB=${3:-1024}
WORKERS=${4:-4}
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/bench/lib.sh"
S3SERVER="$HERE/test/lib/s3server.sh"
AWS=/usr/bin/aws

[ -x "$AWS" ] && /usr/bin/python3 -c 'import swift' 2>/dev/null ||
	pg_bail /dev/null "python3-swift and awscli are needed (make deps)"
bench_prepare replicate
PRIMARY_PORT=$(free_port)
REPLICA_PORT=$(free_port)
on_exit "sh '$S3SERVER' stop '$W/s3a'; sh '$S3SERVER' stop '$W/s3b'"
sh "$S3SERVER" start "$W/s3a" "$PRIMARY_PORT" >/dev/null || pg_bail /dev/null "the primary S3 server did not start"
sh "$S3SERVER" start "$W/s3b" "$REPLICA_PORT" >/dev/null || pg_bail /dev/null "the replica S3 server did not start"
. "$W/s3a/env"
export AWS_CONFIG_FILE="$W/s3a/aws-config" AWS_SHARED_CREDENTIALS_FILE="$W/s3a/aws-credentials"
export AWS_EC2_METADATA_DISABLED=true
PRIMARY_ENDPOINT=$AWS_ENDPOINT_URL
REPLICA_ENDPOINT="http://127.0.0.1:$REPLICA_PORT"
REPLICA="s3://$TB_S3_BUCKET/bench?endpoint=$REPLICA_ENDPOINT"

echo "load before: $(uptime)"
echo "working directory: $W ($(df --output=fstype "$W" | tail -1))"
pg_start "$W/pg" "$(free_port)" "tenant_backup.storage = 's3://$TB_S3_BUCKET/bench'
tenant_backup.master_key_file = '$W/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.max_workers = $WORKERS
tenant_backup.naptime = 100
max_worker_processes = 32"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null

# ------------------------------------------------------------ the backups, no replica yet

now
for i in $(seq -w 1 "$TENANTS"); do
	echo "CREATE DATABASE t$i;"
done | "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 >/dev/null
for i in $(seq -w 1 "$TENANTS"); do
	PGDATABASE=t$i psql_q "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 200) g"
	echo "SELECT tenant_backup.tenant_create('t$i'); SELECT tenant_backup.tenant_add_database('t$i', 'postgres', 't$i');"
done | "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 >/dev/null
psql_q "CREATE DATABASE big" >/dev/null
# Random bytes, 1 MiB a row: a backup object of about SIZE_MB that zstd cannot shrink.
head -c $((SIZE_MB * 1048576)) /dev/urandom >"$W/random"
chown postgres "$W/random"
PGDATABASE=big psql_q "CREATE TABLE blobs (id int, data bytea)" \
	"INSERT INTO blobs SELECT r, pg_read_binary_file('$W/random', (r - 1) * 1048576::bigint, 1048576)
	 FROM generate_series(1, $SIZE_MB) r" >/dev/null
rm "$W/random"
psql_q "SELECT tenant_backup.tenant_create('big')" "SELECT tenant_backup.tenant_add_database('big', 'postgres', 'big')" >/dev/null
for i in $(seq -w 1 "$TENANTS"); do
	echo "SELECT tenant_backup.tenant_backup('t$i', wait => false);"
done | "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('big', wait => false)" >/dev/null
until [ "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE state NOT IN ('succeeded', 'failed')")" = 0 ]; do
	sleep 0.5
done
[ "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE status = 'complete'")" = $((TENANTS + 1)) ] ||
	pg_bail "$W/pg/server.log" "not every backup completed"
echo "setup and backups: $(elapsed "$NOW") s"
big_bytes=$(psql_q "SELECT bytes_stored FROM tenant_backup.backups WHERE tenant = 'big'")
small_bytes=$(psql_q "SELECT sum(bytes_stored) FROM tenant_backup.backups WHERE tenant <> 'big'")

# ------------------------------------------------------------ the product's replication

replicate() { # FILTER (SQL on backups b): seconds until every backup of those tenants is replicated
	local start
	now
	start=$NOW
	psql_q "SELECT tenant_backup.tenant_set_replica(t.name, '$REPLICA') FROM tenant_backup.tenants t
	        WHERE t.name IN (SELECT b.tenant FROM tenant_backup.backups b WHERE $1)" >/dev/null
	until [ "$(psql_q "SELECT count(*) FROM tenant_backup.backups b WHERE $1 AND b.status = 'complete'
	                    AND b.replica_state IS DISTINCT FROM 'replicated'")" = 0 ]; do
		[ "$(psql_q "SELECT count(*) FROM tenant_backup.backups b WHERE $1 AND b.replica_state = 'failed'")" = 0 ] ||
			pg_bail "$W/pg/server.log" "a copy failed: $(psql_q "SELECT replica_error FROM tenant_backup.backups WHERE replica_state = 'failed' LIMIT 1")"
		sleep 0.1
	done
	elapsed "$start"
}
aws_copy() { # EXCLUDE_OR_INCLUDE ARGS...: seconds for aws s3 cp --recursive primary -> tmpfs -> replica
	local start dir="$W/awscopy"
	rm -rf "$dir"
	now
	start=$NOW
	"$AWS" --endpoint-url "$PRIMARY_ENDPOINT" s3 cp --recursive --only-show-errors "$@" \
		"s3://$TB_S3_BUCKET/bench/" "$dir/"
	"$AWS" --endpoint-url "$REPLICA_ENDPOINT" s3 cp --recursive --only-show-errors \
		"$dir/" "s3://$TB_S3_BUCKET/aws/"
	elapsed "$start"
	rm -rf "$dir"
}

# Each row as soon as it is measured: a run cut short still leaves what it measured.
echo
echo "| copy | stored MB | tenant_backup s | aws s3 cp s | tenant_backup / aws |"
echo "|---|---|---|---|---|"
small_tb=$(replicate "b.tenant <> 'big'")
small_aws=$(aws_copy --exclude 'big/*')
echo "| $TENANTS small tenants (backup, manifest, key document each) | $(awk -v b="$small_bytes" 'BEGIN { printf "%.1f", b / 1e6 }') | $small_tb | $small_aws | $(ratio "$small_tb" "$small_aws") |"
big_tb=$(replicate "b.tenant = 'big'")
big_aws=$(aws_copy --exclude '*' --include 'big/*')
echo "| one big tenant (backup, manifest, key document) | $(awk -v b="$big_bytes" 'BEGIN { printf "%.1f", b / 1e6 }') | $big_tb | $big_aws | $(ratio "$big_tb" "$big_aws") |"
echo "load after: $(uptime)"
