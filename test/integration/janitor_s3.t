#!/bin/bash
# The janitor on S3 (Swift s3api, SigV4 checked): a multipart upload still being
# written is left alone though begun more than a lease ago (its age is its newest
# part's); left open by a killed writer (tenant-backup put, SIGKILL), it is listed by
# _storage_unfinished() and aborted once its last part is older than a lease, with an
# audit row; an
# agent killed between storing its object and reporting it leaves an object no catalog
# row names, which stays while its job holds the lease and goes once janitor_grace has
# passed after the job was reclaimed, with an audit row. Storage then holds exactly the
# objects the catalog names.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/redis.sh"
agent_use tenant-backup-agent-redis
TB_TEST_STORAGE=s3
S3_PORT=$(free_port)
PG_PORT=$(free_port)
R=$(free_port)

scratch_dir
agent_bed_setup "$PG_PORT" jan
redis_start "$D/redis" "$R"
# The janitor waits (an hour) until the test has looked at what a killed writer left.
psql_q "ALTER SYSTEM SET tenant_backup.janitor_interval = '1h'" "ALTER SYSTEM SET tenant_backup.lease_timeout = 20" \
	"SELECT pg_reload_conf()" >/dev/null
S3_PREFIX="s3://$TB_S3_BUCKET/jan"
uploads() { # how many multipart uploads are open under jan/acme/
	aws_s3 s3api list-multipart-uploads --bucket "$TB_S3_BUCKET" --prefix jan/acme/ --query 'length(Uploads || `[]`)' \
		--output text
}
audited() { # ACTION: how many audit rows of acme say it
	psql_q "SELECT count(*) FROM tenant_backup.audit WHERE tenant = 'acme' AND action = '$1'"
}
stored_objects() { # every .tbk under jan/acme/ (not keys/), sorted
	aws_s3 s3 ls "$S3_PREFIX/acme/" --recursive | awk '{print $4}' | sed 's|^jan/||' | grep '\.tbk$' | sort | paste -sd' '
}
catalog_objects() {
	psql_q "SELECT coalesce(string_agg(object_key, ' ' ORDER BY object_key COLLATE \"C\"), '') FROM tenant_backup.backups
			WHERE tenant = 'acme' AND object_key IS NOT NULL"
}

rtool fill "$R" 1 "" acme
psql_q "SELECT tenant_backup.tenant_create('acme')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/1')" \
	>/dev/null
wait_for 50 0.2 0 psql_q "SELECT count(*) FROM tenant_backup.storage_intents WHERE state = 'pending'" >/dev/null

# ------------------------------------------------------------ a multipart upload left open

mkfifo "$D/put.in"
TENANT_BACKUP_STORAGE="$S3_PREFIX?part_size=5MiB" "$TB" put --tenant acme --engine redis <"$D/put.in" >/dev/null 2>"$D/put.err" &
put=$!
exec {feed}>"$D/put.in"
random() { openssl enc -aes-128-ctr -nosalt -pass pass:"janitor$1" -in /dev/zero 2>/dev/null | head -c 6000000; }
parts() { # parts uploaded so far of the one upload under jan/acme/
	local key id
	read -r key id < <(aws_s3 s3api list-multipart-uploads --bucket "$TB_S3_BUCKET" --prefix jan/acme/ \
		--query 'Uploads[0].[Key, UploadId]' --output text)
	aws_s3 s3api list-parts --bucket "$TB_S3_BUCKET" --key "$key" --upload-id "$id" --query 'length(Parts || `[]`)' \
		--output text
}
random 1 >&"$feed"
is "$(wait_for 100 0.1 1 uploads)" 1 "a writer with 6 MB sent of its object has a multipart upload open"
sleep 21
random 2 >&"$feed"
is "$(wait_for 100 0.1 2 parts)" 2 "more than a lease (20 s) later it uploads its second part"
psql_q "ALTER SYSTEM SET tenant_backup.janitor_interval = '1s'" "SELECT pg_reload_conf()" >/dev/null
like "$(psql_q "SELECT bytes >= 10000000 FROM tenant_backup._storage_unfinished() WHERE key LIKE 'acme/redis/%' AND upload <> ''")" \
	'^t$' "_storage_unfinished() lists it, with its upload id and the bytes of its parts"
sleep 2
is "$(uploads)" 1 "begun more than a lease ago but written within one, the janitor leaves it"
kill -KILL "$put"
wait "$put" 2>/dev/null
exec {feed}>&-
is "$(wait_for 150 0.2 1 audited 'unfinished write removed')" 1 "the janitor removes it once older than a lease"
is "$(uploads)" 0 "no multipart upload is open any more"
like "$(psql_q "SELECT detail->>'object' FROM tenant_backup.audit WHERE tenant = 'acme' AND action = 'unfinished write removed'")" \
	'^acme/redis/' "the audit row names the object"

# ------------------------------------------------------------ an agent killed between store and report

kept=$(psql_q "SELECT tenant_backup.tenant_backup('acme', 'redis')") && agent_once first >/dev/null
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $kept")" succeeded "a first backup through the agent"
job=$(psql_q "SELECT tenant_backup.tenant_backup('acme', 'redis')")
# acme's audit chain head, held by an idle transaction: the report waits in _job_finish's audit row.
mkfifo "$D/holder.in"
"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 <"$D/holder.in" >"$D/holder.out" 2>&1 &
holder=$!
exec {hold}>"$D/holder.in"
echo "BEGIN; SELECT tenant_backup.tenant_set_schedule('acme', '2 days'); SELECT 'in transaction';" >&"$hold"
wait_for 50 0.1 "in transaction" grep -o "in transaction" "$D/holder.out" >/dev/null
agent_start killed --poll-seconds 1
before=$(catalog_objects)
stored_count() { stored_objects | wc -w; }
wait_for 100 0.1 2 stored_count >/dev/null
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" running "the agent stored its object and waits to report it"
kill -KILL "$AGENT_PID"
psql_q "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'agent'" >/dev/null
echo "COMMIT;" >&"$hold"
exec {hold}>&-
wait "$holder"
orphan=$(stored_objects | tr ' ' '\n' | grep -vxF "$before")
like "$orphan" '^acme/redis/.+\.tbk$' "killed with its report unsent, the agent leaves an object no catalog row names"
psql_q "ALTER SYSTEM SET tenant_backup.janitor_grace = '1s'" "SELECT pg_reload_conf()" >/dev/null
sleep 22
is "$(stored_objects | tr ' ' '\n' | grep -cxF "$orphan")" 1 \
	"past the grace (a lease here) the object stays while its job holds the lease: it may still be reported"
# The lease runs out (the agent's was 60 s): the launcher reclaims the job, which waits for an agent again.
psql_q "UPDATE tenant_backup.jobs SET lease_expires = now() WHERE id = $job" >/dev/null
is "$(wait_for 100 0.1 queued psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" queued "the job is reclaimed"
is "$(wait_for 150 0.2 1 audited 'unreferenced object removed')" 1 \
	"then the janitor removes the unreported object (janitor_grace, at least a lease)"
is "$(psql_q "SELECT detail->>'object' FROM tenant_backup.audit WHERE tenant = 'acme' AND action = 'unreferenced object removed'")" \
	"$orphan" "the audit row names it"
is "$(stored_objects)" "$(catalog_objects)" "storage holds exactly the objects the catalog names"
like "$(catalog_objects)" '^acme/redis/.+\.tbk$' "the first backup's object stays"

done_testing
