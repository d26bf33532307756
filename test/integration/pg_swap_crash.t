#!/bin/bash
# An in-place PostgreSQL restore survives a crash at every step (issue 16, items 4 and
# 5): the job worker is killed (kill -9: the postmaster restarts every backend) at the
# start of the load, in the middle of it, and while the swap has closed the live
# database to connections; the server is restarted with -m immediate once the swap is
# done. Each time the live database accepts connections and holds either its own data
# or the restored data, nothing is lost, the journal (tenant_backup.restore_swaps)
# says which, and what was left over is listed in tenant_backup.scratch_databases.
# Not killed, a swap whose renames wait for a lock gives up within half the lease (the
# launcher never takes the job from a worker mid-swap), and a prepared transaction that
# holds the live database is named at once.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/pg_debian.sh"

scratch_dir
pg_start_debian_tb
# A prepared transaction holds the live database open, so that the swap waits there.
# Commits are durable, as in production: an immediate restart keeps what was committed.
psql_q "ALTER SYSTEM SET max_prepared_transactions = 2" "ALTER SYSTEM SET synchronous_commit = on" \
	"ALTER SYSTEM SET fsync = on" >/dev/null
pg_restart "$D/pg"
psql_q "CREATE ROLE app" "CREATE DATABASE crash_db OWNER app" >/dev/null ||
	pg_bail "$D/pg/server.log" "cannot set up the cluster"
in_db crash_db "CREATE TABLE marker (v text)" "INSERT INTO marker VALUES ('backup')" \
	"CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 1000000) g" \
	"CREATE INDEX ON bulk (h)" "ALTER TABLE marker OWNER TO app" "ALTER TABLE bulk OWNER TO app" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('crash')" \
	"SELECT tenant_backup.tenant_add_database('crash', 'postgres', 'crash_db')" \
	"SELECT tenant_backup.tenant_backup('crash', wait => true)" >/dev/null
ok $? "a backup of crash_db"
in_db crash_db "UPDATE marker SET v = 'live'" >/dev/null

worker_pid() {
	psql_q "SELECT pid FROM pg_stat_activity WHERE application_name = 'tenant_backup restore of crash'" 2>/dev/null
}
# Polls SQL until it returns a row (up to 60 s); prints it.
poll() { # SQL
	local got
	for _ in $(seq 1200); do
		got=$(psql_q "$1" 2>/dev/null)
		[ -n "$got" ] && echo "$got" && return 0
		sleep 0.05
	done
	return 1
}
start_restore() {
	job=$(psql_q "SELECT tenant_backup.tenant_restore('crash', wait => false)")
}
# After a crash: the server back, the dead job failed, the launcher finished its journal row as STEP.
recovered() { # NAME MARKER DATA STEP
	local step
	step=$(poll "SELECT step FROM tenant_backup.restore_swaps WHERE job_id = $job
		AND step NOT IN ('loading', 'swapping')")
	is "$step" "$4" "$1: the launcher finished the journal of job $job: $4"
	is "$(in_db crash_db "SELECT v FROM marker" 2>&1)" "$2" "$1: crash_db accepts connections and holds the $3 data"
	is "$(in_db crash_db "SELECT count(*) FROM bulk" 2>&1)" 1000000 "$1: with every row"
}
kill_worker() {
	local pid
	pid=$(worker_pid)
	[ -n "$pid" ] && kill -KILL "$pid"
}

# 1. At the start of the load: stopped as soon as the journal has the job, then killed.
start_restore
poll "SELECT step FROM tenant_backup.restore_swaps WHERE job_id = $job" >/dev/null
pid=$(worker_pid)
kill -STOP "$pid"
is "$(psql_q "SELECT step || ' ' || (old IS NOT NULL) FROM tenant_backup.restore_swaps WHERE job_id = $job")" "loading true" \
	"start of the load: journaled as loading, the live database to be kept"
kill -KILL "$pid"
recovered "start of the load" live own interrupted
# Stopped before or just after CREATE DATABASE: whatever it made is listed.
made=$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'crash_db_tb_new_$job'")
is "$(psql_q "SELECT count(*) FROM tenant_backup.scratch_databases WHERE job_id = $job AND kind = 'new'
	AND tenant = 'crash' AND restore_step = 'interrupted'")" "$made" "start of the load: a fresh database it made is listed"
psql_q "SELECT tenant_backup.tenant_remove_scratch(database) FROM tenant_backup.scratch_databases WHERE job_id = $job" >/dev/null

# 2. Mid-load: killed while pg_restore copies the rows.
start_restore
poll "SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'crash\_db\_tb\_new\_%' AND query ILIKE 'COPY%'" >/dev/null
ok $? "mid-load: pg_restore is copying rows into the fresh database"
kill_worker
recovered mid-load live own interrupted
like "$(psql_q "SELECT string_agg(database || ':' || bytes::text, ',') FROM tenant_backup.scratch_databases
	WHERE job_id = $job AND bytes > 0")" "^crash_db_tb_new_$job:" "mid-load: the partly loaded database is listed with its size"
psql_q "SELECT tenant_backup.tenant_remove_scratch(database) FROM tenant_backup.scratch_databases WHERE job_id = $job" >/dev/null

# 3. In the swap: live closed to connections, the renames waiting for the lock on
# crash_db that another session's COMMENT ON DATABASE holds (up to half the 5 s lease).
hold_database_lock() {
	exec {lockfd}> >(pg_as_postgres "$PG_DEBIAN_DIR" "$PG_BIN/psql" -X -q >/dev/null 2>&1)
	echo "BEGIN; COMMENT ON DATABASE crash_db IS 'held'; SELECT pg_sleep(60) AS holds_crash_db;" >&"$lockfd"
	poll "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%holds_crash_db%' AND pid <> pg_backend_pid()" >/dev/null
}
release_database_lock() {
	psql_q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%holds_crash_db%'
		AND pid <> pg_backend_pid()" >/dev/null 2>&1
	exec {lockfd}>&-
}
hold_database_lock
start_restore
poll "SELECT 1 FROM tenant_backup.restore_swaps s JOIN pg_database d ON d.datname = s.live
	WHERE s.job_id = $job AND s.step = 'swapping' AND NOT d.datallowconn" >/dev/null
ok $? "in the swap: journaled as swapping, crash_db closed to connections"
kill_worker
recovered "in the swap" live own "rolled back"
release_database_lock
# The same wait, not killed: the renames give up within half the lease (the launcher
# never takes the job from the worker in its swap), and live opens again.
hold_database_lock
out=$(psql_q "SELECT tenant_backup.tenant_restore('crash')" 2>&1)
like "$out" 'could not swap the restored "crash_db_tb_new_[0-9]+" in as "crash_db" \(nothing was renamed.*lock timeout' \
	"a swap whose renames wait for a lock longer than half the lease fails, saying nothing was renamed"
unlike "$out" "worker died or stopped answering" "its worker's error, not the launcher's"
is "$(in_db crash_db "SELECT v FROM marker" 2>&1)" live "crash_db accepts connections and holds its own data"
release_database_lock
psql_q "SELECT tenant_backup.tenant_remove_scratch(database) FROM tenant_backup.scratch_databases WHERE kind = 'new'" >/dev/null
# A prepared transaction holds live open with no session to end: said at once, by name.
in_db crash_db "BEGIN" "INSERT INTO marker VALUES ('held')" "PREPARE TRANSACTION 'hold'" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_restore('crash')" 2>&1)
like "$out" 'could not swap the restored "crash_db_tb_new_[0-9]+" in as "crash_db" \(nothing was renamed' \
	"a swap that cannot rename fails, saying nothing was renamed"
like "$out" "database \"crash_db\" is held open by prepared transactions \('hold'\): COMMIT PREPARED or ROLLBACK PREPARED" \
	"and names the prepared transaction that holds the live database (at once: ALTER DATABASE would wait for it past the lease)"
is "$(in_db crash_db "SELECT v FROM marker" 2>&1)" live "after the failed swap crash_db accepts connections and holds its own data"
in_db crash_db "ROLLBACK PREPARED 'hold'" >/dev/null
psql_q "SELECT tenant_backup.tenant_remove_scratch(database) FROM tenant_backup.scratch_databases WHERE kind = 'new'" >/dev/null
psql_q "SELECT tenant_backup.tenant_remove_scratch(database) FROM tenant_backup.scratch_databases WHERE job_id = $job" >/dev/null

# 4. After the swap: the server is restarted at once (no shutdown checkpoint).
start_restore
poll "SELECT 1 FROM tenant_backup.restore_swaps WHERE job_id = $job AND step = 'swapped'" >/dev/null
ok $? "after the swap: journaled as swapped" ||
	diag "$(psql_q "SELECT state || ': ' || coalesce(error, '') FROM tenant_backup.jobs WHERE id = $job")"
pg_as_postgres "$D/pg" "$PG_BIN/pg_ctl" -D "$D/pg/data" -l "$D/pg/server.log" -m immediate -w -t 60 restart >/dev/null
ok $? "pg_ctl -m immediate restart"
recovered "after the swap" backup restored swapped
is "$(in_db "crash_db_tb_old_$job" "SELECT v FROM marker" 2>&1)" live "after the swap: the previous data is kept as crash_db_tb_old_$job"
is "$(psql_q "SELECT kind || ' ' || tenant FROM tenant_backup.scratch_databases WHERE job_id = $job")" "old crash" \
	"after the swap: the kept copy is listed"
is "$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'restore recovered'")" 3 \
	"each recovery of a dead worker's restore is audited"

done_testing
