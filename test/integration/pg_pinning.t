#!/bin/bash
# A job's connections reach one server, the one it checked: the job worker's own
# connection pins the address (pg_dump gets hostaddr= and connect_timeout, and runs
# while that connection stays open), and claims the database's identity as its server
# says it is (<system identifier>/<database oid>), so two tenants' locators that name
# the same database differently (127.0.0.1 vs localhost) cannot both back it up; a
# dedicated tenant's base backup is refused once its cluster holds another tenant's
# database, whether the catalog recorded that database's identity or not.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

tb_scratch_storage
REMOTE_PORT=$(free_port)

# The tenants' server: password authentication over TCP, its socket for this script.
pg_start "$D/remote" "$REMOTE_PORT"
sed -i '1i host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256' "$D/remote/data/pg_hba.conf"
pg_restart "$D/remote"
psql_q "CREATE ROLE app LOGIN PASSWORD 'app-pw'" "CREATE DATABASE shared OWNER app" "CREATE DATABASE other OWNER app" >/dev/null
PGDATABASE=shared psql_q "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g" "ALTER TABLE t OWNER TO app" >/dev/null
PGDATABASE=other psql_q "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g" "ALTER TABLE t OWNER TO app" >/dev/null
remote_sysid=$(psql_q "SELECT system_identifier FROM pg_control_system()")
shared_oid=$(psql_q "SELECT oid FROM pg_database WHERE datname = 'shared'")
REMOTE_HOST=$PGHOST

pg_start "$D/pg" "$(free_port)" "$TB_CONF
tenant_backup.naptime = 200
tenant_backup.retry_delays = '1 hour'"
psql_q "CREATE EXTENSION tenant_backup" "CREATE ROLE op LOGIN" "GRANT tenant_backup_operator TO op" >/dev/null ||
	pg_bail "$D/pg/server.log" "CREATE EXTENSION failed"
for t in globex initech hooli; do psql_q "SELECT tenant_backup.tenant_create('$t')" >/dev/null; done
as_op() { PGUSER=op psql_q "$1" 2>&1 | grep -m1 -E '^ERROR|^[^ ]'; }
# status|error of job's backup row once it ended.
attempt_wait() { # JOB
	local got="" last=${BACKUPS_BEFORE:-0}
	for _ in $(seq 600); do
		got=$(psql_q "SELECT status || '|' || coalesce(error, '') FROM tenant_backup.backups WHERE job_id = $1 AND id > $last AND status <> 'running' ORDER BY id LIMIT 1")
		[ -n "$got" ] && break
		sleep 0.1
	done
	echo "$got"
}
remote_q() { PGHOST=$REMOTE_HOST PGPORT=$REMOTE_PORT psql_q "$@"; }

# ------------------------------------------------------------ one database, two names

as_op "SELECT tenant_backup.tenant_add_database('globex', 'postgres', 'host=127.0.0.1 port=$REMOTE_PORT dbname=shared user=app password=app-pw')" >/dev/null
as_op "SELECT tenant_backup.tenant_add_database('initech', 'postgres', 'host=localhost port=$REMOTE_PORT dbname=shared user=app password=app-pw')" >/dev/null
is "$(psql_q "SELECT count(*) FROM tenant_backup.sources WHERE identity IS NULL")" 2 \
	"two operators' locators naming the same remote database differently are both accepted (nothing known yet)"
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('globex')")
is "$(attempt_wait "$job" | cut -d'|' -f1)" complete "globex's backup completes (as a non-superuser login of its server)"
is "$(psql_q "SELECT identity FROM tenant_backup.sources WHERE tenant = 'globex'")" "$remote_sysid/$shared_oid" \
	"and its job recorded what the database is, as the server says: <system identifier>/<database oid>"
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('initech')")
like "$(attempt_wait "$job")" \
	"^failed\|the postgres database \"[^\"]*\" of tenant \"initech\" is already a database of tenant \"globex\" \(Both reach the database $remote_sysid/$shared_oid\.\)$" \
	"initech's backup of the same database through localhost is refused, naming the tenant that has it"
is "$(find "$D/store/initech" -name '*.tbk' 2>/dev/null | wc -l)" 0 "and nothing of initech was stored"
is "$(psql_q "SELECT identity IS NULL FROM tenant_backup.sources WHERE tenant = 'initech'")" t "nor its identity recorded"

# ------------------------------------------------------------ the address is pinned

as_op "SELECT tenant_backup.tenant_add_database('hooli', 'postgres', 'host=localhost port=$REMOTE_PORT dbname=other user=app password=app-pw')" >/dev/null
mkfifo "$D/holder.in"
PGHOST=$REMOTE_HOST PGPORT=$REMOTE_PORT PGDATABASE=other "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 <"$D/holder.in" >"$D/holder.out" 2>&1 &
holder=$!
exec {holder_fd}>"$D/holder.in"
echo "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT 'locked';" >&"$holder_fd"
wait_for 50 0.1 locked grep -o locked "$D/holder.out" >/dev/null
on_exit "kill $holder 2>/dev/null"
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('hooli')")
waiting() { remote_q "SELECT count(*) FROM pg_stat_activity WHERE datname = 'other' AND application_name = 'pg_dump' AND wait_event_type = 'Lock'"; }
is "$(wait_for 100 0.1 1 waiting)" 1 "hooli's pg_dump waits for the held table"
dump_pid=$(pgrep -f -- "--dbname=.*dbname='other'.*port='$REMOTE_PORT'" | head -n 1)
dump_argv=$(tr '\0' ' ' <"/proc/$dump_pid/cmdline" 2>/dev/null)
like "$dump_argv" "host='localhost' port='$REMOTE_PORT' hostaddr='127\.0\.0\.1'" \
	"pg_dump goes to the address the job's own connection reached (hostaddr pinned), not to a new DNS answer"
like "$dump_argv" "connect_timeout='30'" "with a connect_timeout (tenant_backup.connect_timeout)"
like "$dump_argv" "--lock-wait-timeout=300000" "and a lock wait timeout (tenant_backup.lock_timeout)"
unlike "$dump_argv" "app-pw" "its argv holds no password"
is "$(remote_q "SELECT count(*) FROM pg_stat_activity WHERE datname = 'other' AND usename = 'app' AND client_addr = '127.0.0.1'")" 2 \
	"the job's checked connection stays open beside pg_dump's, both from 127.0.0.1 as app"
echo "COMMIT;" >&"$holder_fd"
exec {holder_fd}>&-
wait "$holder"
is "$(attempt_wait "$job" | cut -d'|' -f1)" complete "once the lock is gone, hooli's backup completes"

# ------------------------------------------------------------ a forwarder that switches servers

# The operator's own address forwards the first connection to a server that asks for
# the password, every later one to this cluster (trust on 127.0.0.1): the job's checked
# connection sees the first, pg_dump would get the second and dump the catalog.
remote_q "ALTER ROLE postgres PASSWORD 'pg-pw'" >/dev/null
FORWARD_PORT=$(free_port)
/usr/bin/python3 "$(dirname "$0")/../lib/tcp_alias.py" "$FORWARD_PORT" "$REMOTE_PORT,$PGPORT" >"$D/forwarder.out" &
forwarder=$!
on_exit "kill $forwarder 2>/dev/null"
wait_for 50 0.1 listening cat "$D/forwarder.out" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('sneaky')" >/dev/null
as_op "SELECT tenant_backup.tenant_add_database('sneaky', 'postgres', 'host=127.0.0.1 port=$FORWARD_PORT dbname=postgres user=postgres password=pg-pw')" >/dev/null
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('sneaky')")
like "$(attempt_wait "$job")" '^failed\|pg_dump child process exited with exit code 1: pg_dump: error: query failed: ERROR:  invalid snapshot identifier' \
	"pg_dump routed to another server than the checked one fails: the job's snapshot exists only where it checked"
is "$(find "$D/store/sneaky" -name '*.tbk' 2>/dev/null | wc -l)" 0 "and nothing of this cluster was stored as sneaky's"

# ------------------------------------------------------------ a dedicated tenant's cluster

psql_q "CREATE DATABASE ded_db" "CREATE DATABASE other_db" "SELECT tenant_backup.tenant_create('ded', 'dedicated')" \
	"SELECT tenant_backup.tenant_add_database('ded', 'postgres', 'ded_db')" >/dev/null
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('ded')")
is "$(attempt_wait "$job" | cut -d'|' -f1)" complete "a dedicated tenant alone on its cluster gets its base backup"
bases() { find "$D/store/ded/postgres/base" -name '*.tbk' 2>/dev/null | wc -l; }
before=$(bases)
# A database of another tenant that joined the cluster before 0.2.0 recorded identities.
psql_q "INSERT INTO tenant_backup.sources (tenant, engine, locator, added_by_superuser) VALUES ('globex', 'postgres', 'other_db', true)" >/dev/null
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('ded')")
sysid=$(psql_q "SELECT system_identifier FROM pg_control_system()")
is "$(attempt_wait "$job")" \
	"failed|the cluster of dedicated tenant \"ded\" (system identifier $sysid) also holds a database of tenant \"globex\": no base backup was taken; a dedicated tenant's cluster must hold no other tenant's database (remove it from the other tenant, or make this tenant shared)" \
	"once another tenant's database is on it (identity never recorded), its base backup is refused"
is "$(bases)" "$before" "and no base backup was stored"
psql_q "SELECT tenant_backup.tenant_cancel($job)" >/dev/null
# The same with the identity recorded, as a later catalog would hold it.
psql_q "UPDATE tenant_backup.sources SET identity = '$sysid/' || (SELECT oid FROM pg_database WHERE datname = 'other_db') WHERE locator = 'other_db'" >/dev/null
BACKUPS_BEFORE=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.backups")
job=$(psql_q "SELECT tenant_backup.tenant_backup('ded')")
like "$(attempt_wait "$job")" \
	"^failed\|the postgres server of database \"ded_db\" of tenant \"ded\" also holds a database of tenant \"globex\", and tenant \"ded\" is dedicated" \
	"with its identity recorded, the job's identity claim refuses it too"
is "$(bases)" "$before" "and no base backup was stored"

done_testing
