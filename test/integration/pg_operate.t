#!/bin/bash
# An operator's day, as a login that is only a member of tenant_backup_operator: a new
# tenant's first backup comes by itself within first_backup_delay; the operator reads
# status, job_log, tenant_overview and audit_log (but not the tables); cancels a running
# backup (its worker stops, pg_dump goes, no object is stored); pauses, resumes and
# switches off a schedule; runs check(), which catches unwritable storage, a master key
# file of mode 0644 and a master key that does not open the tenant keys in storage.
# Bad settings are refused at ALTER SYSTEM with a hint.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null
"$TB" keygen --out "$D/other.key" 2>/dev/null
chown postgres "$D/master.key" "$D/other.key"

pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5
tenant_backup.first_backup_delay = '2s'"
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE acme_db" "CREATE ROLE ops LOGIN" \
	"GRANT tenant_backup_operator TO ops" >/dev/null || pg_bail "$D/pg/server.log" "could not set up the cluster"
PGDATABASE=acme_db psql_q "CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 1000) g" >/dev/null
as_ops() { PGUSER=ops psql_q "$@"; }
objects() { find "$D/store/acme/postgres" -name '*.tbk' 2>/dev/null | wc -l; }

# ------------------------------------------------------------ the first backup comes by itself

as_ops "SELECT tenant_backup.tenant_create('acme')" "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme_db')" >/dev/null
ok $? "the operator registers tenant acme and its database"
got=$(wait_for 60 0.5 t as_ops "SELECT last_success IS NOT NULL FROM tenant_backup.status WHERE tenant = 'acme'")
is "$got" t "the new database is backed up within first_backup_delay (2s here), without anyone asking"
is "$(as_ops "SELECT queued_by || ' ' || state FROM tenant_backup.job_log WHERE tenant = 'acme'")" "schedule succeeded" \
	"job_log: the schedule queued it and it succeeded"
is "$(as_ops "SELECT overdue FROM tenant_backup.status WHERE tenant = 'acme'")" f "status: not overdue"
is "$(objects)" 1 "one backup object in storage"

# ------------------------------------------------------------ the operator sees, but not the tables

is "$(as_ops "SELECT count(*) > 0 FROM tenant_backup.audit_log WHERE tenant = 'acme'")" t "the operator reads audit_log"
is "$(as_ops "SELECT tier || ' ' || schedule_state FROM tenant_backup.tenant_overview WHERE tenant = 'acme'")" "shared on" \
	"the operator reads tenant_overview"
for table in jobs tenants audit; do
	like "$(as_ops "SELECT count(*) FROM tenant_backup.$table" 2>&1)" "permission denied for table $table" \
		"the $table table itself stays closed to the operator"
done

# ------------------------------------------------------------ cancel a running backup

# pg_dump waits for the lock a session holds on orders, so the backup stays running.
PGDATABASE=acme_db "$PG_BIN/psql" -X -q -c "BEGIN" -c "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE" \
	-c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
locker=$!
on_exit "kill $locker 2>/dev/null"
sleep 1
job=$(as_ops "SELECT tenant_backup.tenant_backup('acme')")
got=$(wait_for 40 0.5 running as_ops "SELECT state FROM tenant_backup.job_log WHERE job_id = $job")
is "$got" running "the operator's backup is running (pg_dump waits for the lock)"
is "$(as_ops "SELECT state || ' ' || cancelled_by FROM tenant_backup.tenant_cancel($job)")" "failed ops" \
	"the operator cancels it: failed, cancelled by ops"
# (A job worker may stay, idle, for tenant_backup.worker_idle_time: it holds no job.)
got=$(wait_for 40 0.5 0 psql_q "SELECT count(*) FROM pg_stat_activity WHERE (backend_type = 'tenant_backup job' AND state IS DISTINCT FROM 'idle')
	OR (datname = 'acme_db' AND application_name LIKE 'pg_dump%')")
is "$got" 0 "its job worker and pg_dump stop working within seconds"
kill "$locker" 2>/dev/null
wait "$locker" 2>/dev/null
is "$(as_ops "SELECT error FROM tenant_backup.job_log WHERE job_id = $job")" "cancelled by ops" \
	"job_log says who cancelled it"
is "$(psql_q "SELECT string_agg(status || ' ' || coalesce(error, ''), ',') FROM tenant_backup.backups b
	WHERE b.job_id = $job")" "failed cancelled by ops" "its backup row is failed, never complete"
is "$(objects)" 1 "no object of the cancelled backup is in storage"
is "$(find "$D/store/acme/postgres" -type f | grep -vc '\.tbk$\|\.json$')" 0 "nor any temporary file of it"
is "$(psql_q "SELECT actor || ' ' || (detail->>'was') FROM tenant_backup.audit WHERE action = 'job cancelled'")" \
	"ops running" "the cancel is audited with the operator's name"
sleep 3
is "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" failed "the worker's failure path did not overwrite it"

# ------------------------------------------------------------ pause, resume, off

as_ops "SELECT tenant_backup.tenant_set_schedule('acme', '2 seconds')" "SELECT tenant_backup.tenant_pause('acme')" >/dev/null
ok $? "the operator sets a 2 second schedule and pauses it"
before=$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'acme'")
sleep 5
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'acme'")" "$before" "paused: no backup is queued"
as_ops "SELECT tenant_backup.tenant_resume('acme')" >/dev/null
got=$(wait_for 40 0.5 t psql_q "SELECT count(*) > $before FROM tenant_backup.jobs WHERE tenant = 'acme'")
is "$got" t "resumed: the schedule queues backups again"
is "$(psql_q "SELECT queued_by FROM tenant_backup.jobs WHERE tenant = 'acme' ORDER BY id DESC LIMIT 1")" schedule \
	"queued by the schedule"
as_ops "SELECT tenant_backup.tenant_set_schedule('acme', 'off')" >/dev/null
wait_for 40 0.5 0 psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE state IN ('queued', 'running')" >/dev/null
before=$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'acme'")
sleep 5
is "$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE tenant = 'acme'")" "$before" \
	"schedule 'off': the built-in schedule queues nothing (for tenants driven by pg_cron)"
is "$(as_ops "SELECT count(*) FROM tenant_backup.tenant_backup('acme')")" 1 "a backup asked for still runs"

# ------------------------------------------------------------ check()

checks() { as_ops "SELECT name || '|' || status || '|' || coalesce(detail, '') || '|' || coalesce(hint, '')
	FROM tenant_backup.check()"; }
out=$(checks)
is "$(printf '%s\n' "$out" | grep -vc '|ok|')" 0 "check() as the operator: every check ok"
chmod -R a-w "$D/store"
out=$(checks)
like "$(printf '%s\n' "$out" | grep '^storage write|')" '^storage write\|error\|.*operating system user "postgres"' \
	"unwritable storage: check() says the write fails and names the server's user"
chmod -R u+w "$D/store"

chmod 0644 "$D/master.key"
like "$(checks | grep '^master key|')" '^master key\|error\|.*mode 0644' "a master key file of mode 0644 is an error"
like "$(checks | grep '^master key|')" 'chmod|0600' "with a hint to make it 0600"
chmod 0600 "$D/master.key"

psql_q "ALTER SYSTEM SET tenant_backup.master_key_file = '$D/other.key'" "SELECT pg_reload_conf()" >/dev/null
sleep 1
out=$(checks)
like "$(printf '%s\n' "$out" | grep '^storage keys|')" '^storage keys\|error\|1 of 1 tenant keys in storage do not open' \
	"another master key: check() finds the tenant keys in storage do not open with it"
like "$(printf '%s\n' "$out" | grep '^catalog keys|')" '^catalog keys\|error\|' \
	"and the catalog's keys name another master key"
psql_q "ALTER SYSTEM RESET tenant_backup.master_key_file" "SELECT pg_reload_conf()" >/dev/null
sleep 1
is "$(checks | grep -vc '|ok|')" 0 "the right key again: every check ok"
unlike "$(checks)" "$(tr -d '\n' <"$D/master.key")" "check() never shows the master key"
unlike "$(checks)" "$D/master.key" "nor, to an operator, the key file's path (a superuser-only setting)"
like "$(psql_q "SELECT detail FROM tenant_backup.check() WHERE name = 'master key'")" "$D/master.key" \
	"which a superuser's check() names"

# ------------------------------------------------------------ settings refused when set

for bad in 's3//b' 'S3://b' 'fille:///tmp/x' 'file://relative' 's3://bucket/p?endpont=http://127.0.0.1:9'; do
	out=$(psql_q "ALTER SYSTEM SET tenant_backup.storage = '$bad'" 2>&1)
	like "$out" 'invalid value for parameter "tenant_backup.storage"' "ALTER SYSTEM refuses tenant_backup.storage = '$bad'"
	like "$out" 'HINT: +Use file:///absolute/directory' "with a hint"
done
unlike "$(cat "$D/pg/data/postgresql.auto.conf")" "tenant_backup.storage" "none of them reached postgresql.auto.conf"
like "$(psql_q "ALTER SYSTEM SET tenant_backup.master_key_file = 'master.key'" 2>&1)" 'must be an absolute path' \
	"a relative master_key_file is refused"
psql_q "ALTER SYSTEM SET tenant_backup.storage = 'file://$D/store2'" "ALTER SYSTEM RESET tenant_backup.storage" >/dev/null
ok $? "a good storage URL is taken"

like "$(psql_q "ALTER SYSTEM SET tenant_backup.max_bandwidth = 'fast'" 2>&1)" 'must be a rate from 100KB/s to 100GB/s' \
	"a max_bandwidth that is no rate is refused"
like "$(psql_q "ALTER SYSTEM SET tenant_backup.max_bandwidth = '50MB/s&endpoint=http://x'" 2>&1)" 'must be a rate' \
	"and one that would add another storage option"
psql_q "ALTER SYSTEM SET tenant_backup.max_bandwidth = '50MB/s'" "ALTER SYSTEM RESET tenant_backup.max_bandwidth" >/dev/null
ok $? "max_bandwidth = '50MB/s' is taken"

# What needs the file system is said at reload: the launcher warns in the server log.
chmod 0644 "$D/master.key"
psql_q "SELECT pg_reload_conf()" >/dev/null
warned=$(wait_for 50 0.2 1 sh -c "grep -c 'WARNING:  tenant_backup.master_key_file .* can be read by other users' '$D/pg/server.log'")
is "$warned" 1 "a reload with a 0644 master key file logs a WARNING from the launcher"
chmod 0600 "$D/master.key"

done_testing
