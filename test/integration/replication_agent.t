#!/bin/bash
# An agent's restore falls back to the replica like the server's: a Redis tenant's
# backup, copied to a file replica by the replication engine, is restored by
# tenant-backup-agent-redis from the replica when its primary copy is deleted or has a
# byte flipped, and the job's result and the agent's log say so; a tenant without a
# replica keeps the original error.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/redis.sh"
agent_use tenant-backup-agent-redis
PG_PORT=$(free_port)
R=$(free_port)

scratch_dir
agent_bed_setup $PG_PORT redis
mkdir -p "$D/replica"
chown postgres "$D/replica"
psql_q "ALTER SYSTEM SET tenant_backup.replica_storage = 'file://$D/replica'" "SELECT pg_reload_conf()" >/dev/null
redis_start "$D/redis" $R

for t in acme globex; do
	rtool fill $R 0 "$t:" $t
	psql_q "SELECT tenant_backup.tenant_create('$t')" \
		"SELECT tenant_backup.tenant_add_database('$t', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/0', jsonb_build_object('key_prefix', '$t:'))" \
		>/dev/null
done
psql_q "SELECT tenant_backup.tenant_set_replica('globex', 'none')" >/dev/null
for t in acme globex; do
	rtool snapshot $R 0 "$t:" >"$D/$t.before"
	psql_q "SELECT tenant_backup.tenant_backup('$t', 'redis')" >/dev/null
	agent_once "backup-$t"
done
object() { psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = '$1' AND status = 'complete' ORDER BY id DESC LIMIT 1"; }
acme_object=$(object acme)
globex_object=$(object globex)
is "$(wait_for 100 0.2 replicated psql_q "SELECT replica_state FROM tenant_backup.backups WHERE object_key = '$acme_object'")" \
	replicated "the replication engine copied acme's backup to the replica"
is "$(psql_q "SELECT coalesce(replica_state, '-') FROM tenant_backup.backups WHERE object_key = '$globex_object'")" - \
	"globex's (replica 'none') was not"

restore() { # TENANT: in place, run by one --once agent; prints the job's state, notice and error
	psql_q "SELECT tenant_backup.tenant_restore('$1', 'redis', wait => false)" >/dev/null
	agent_once "restore-$1"
	psql_q "SELECT state || '|' || coalesce(result->>'notice', '') || '|' || coalesce(error, '') FROM tenant_backup.jobs
		WHERE kind = 'restore' ORDER BY id DESC LIMIT 1"
}
keys_back() { rtool snapshot $R 0 "$1:" >"$D/$1.after" && rtool compare "$D/$1.before" "$D/$1.after" >/dev/null; }

rm "$D/store/$acme_object"
rtool cmd $R 0 DEL acme:canary >/dev/null
like "$(restore acme)" "^succeeded\|restored from the replica file://$D/replica: the primary copy was missing: " \
	"primary object deleted: the agent restores from the replica, and the job's result says so"
keys_back acme
ok $? "every acme key is back"
grep -q "backup [0-9]* of tenant \"acme\" restored from the replica file://$D/replica: the primary copy was missing" \
	"$D/restore-acme.log"
ok $? "the agent's log says so too"

cp "$D/replica/$acme_object" "$D/store/$acme_object"
chown postgres "$D/store/$acme_object"
flip_byte "$D/store/$acme_object" $(($(stat -c %s "$D/store/$acme_object") / 2))
rtool cmd $R 0 DEL acme:canary >/dev/null
like "$(restore acme)" "^succeeded\|restored from the replica .*: the primary copy failed authentication: " \
	"primary object tampered: restored from the replica, saying the primary failed authentication"
keys_back acme
ok $? "every acme key is back again"

rm "$D/store/$globex_object"
rtool cmd $R 0 DEL globex:canary >/dev/null
out=$(restore globex)
like "$out" "^failed\|\|" "globex (no replica): a missing primary object fails the restore"
unlike "$out" "replica" "with the original error, no word of a replica"
is "$(rtool cmd $R 0 EXISTS globex:canary)" 0 "and nothing of globex changed"

# An agent learns the replica only of the restore its lease holds.
job=$(psql_q "SELECT id FROM tenant_backup.jobs WHERE kind = 'restore' AND tenant = 'acme' ORDER BY id DESC LIMIT 1")
out=$(PGUSER=agent psql_q "SELECT tenant_backup.agent_job_replica($job, 'agent:forged:lease')" 2>&1)
like "$out" "job $job is not held by this lease" "agent_job_replica answers only the lease holding the job"
out=$(PGUSER=agent psql_q "SELECT tenant_backup._replica_url('acme')" 2>&1)
like "$out" "permission denied" "and an agent cannot ask _replica_url for any tenant"

done_testing
