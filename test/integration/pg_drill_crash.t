#!/bin/bash
# A restore drill killed mid-way (issue 16, item 5): the job worker is killed with
# kill -9 while pg_restore copies rows into the drill's scratch database. The scratch
# it leaves is listed in tenant_backup.scratch_databases (kind drill, with its tenant,
# job, size and age), tenant_remove_scratch refuses it while the job still runs and
# removes it once the job is over; the tenant's own database is never touched. A
# base backup drill's scratch directory of the job is listed in
# tenant_backup.scratch_directories and removed by the launcher once the job is over.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/pg_debian.sh"

scratch_dir
pg_start_debian_tb
psql_q "CREATE DATABASE drill_db" >/dev/null || pg_bail "$D/pg/server.log" "cannot set up the cluster"
in_db drill_db "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 600000) g" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('drilled')" \
	"SELECT tenant_backup.tenant_add_database('drilled', 'postgres', 'drill_db')" \
	"SELECT tenant_backup.tenant_backup('drilled', wait => true)" >/dev/null
ok $? "a backup of drill_db"

psql_q "SELECT tenant_backup.tenant_restore_drill('drilled')" >/dev/null 2>&1 &
drill_call=$!
wait_for 1200 0.05 1 psql_q "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'drill\_db\_tb\_drill\_%' AND query ILIKE 'COPY%'" >/dev/null
ok $? "the drill is copying rows into its scratch database"
job=$(psql_q "SELECT id FROM tenant_backup.jobs WHERE kind = 'drill' AND tenant = 'drilled'")
pid=$(psql_q "SELECT pid FROM pg_stat_activity WHERE application_name = 'tenant_backup drill of drilled'")
kill -STOP "$pid"
scratch="drill_db_tb_drill_$job"
listed=$(psql_q "SELECT kind || ' ' || tenant || ' ' || job_id || ' ' || (bytes > 0) || ' ' || (age >= '0'::interval)
	FROM tenant_backup.scratch_databases WHERE database = '$scratch'")
is "$listed" "drill drilled $job true true" "while the drill runs its scratch is listed: kind, tenant, job, size, age"
out=$(psql_q "SELECT tenant_backup.tenant_remove_scratch('$scratch')" 2>&1)
like "$out" "database \"$scratch\" belongs to job $job, which is running" "and cannot be removed while its job runs"
# A base backup drill's scratch directory of this job (as one unpacks it) is listed too.
dir="${TMPDIR:-/tmp}/tenant_backup_drill_${PGPORT}_${job}_killed"
mkdir -p "$dir/base" && head -c 1048576 /dev/zero >"$dir/base/file" && chown -R postgres "$dir"
is "$(psql_q "SELECT tenant || ' ' || job_id || ' ' || job_state || ' ' || bytes || ' ' || (age >= '0'::interval)
	FROM tenant_backup.scratch_directories WHERE directory = '$dir'")" "drilled $job running 1048576 true" \
	"a drill's scratch directory is listed: tenant, job, its state, size, age"
is "$(psql_q "SET ROLE tenant_backup_operator; SELECT count(*) FROM tenant_backup.scratch_directories")" 1 \
	"operators may read it"
kill -KILL "$pid"
wait "$drill_call" 2>/dev/null

# The postmaster restarted every backend; the job's lease runs out, the job fails.
state=$(wait_for 1200 0.05 failed psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")
is "$state" failed "the killed drill's job ends failed"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = '$scratch'")" 1 "its scratch database was left behind"
wait_for 100 0.1 gone bash -c "[ -e '$dir' ] && echo there || echo gone" >/dev/null
ok $? "the launcher removed the drill's scratch directory once its job failed"
is "$(psql_q "SELECT count(*) FROM tenant_backup.scratch_directories")|$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'scratch directory removed'")" \
	"0|1" "it is no longer listed; its removal is audited"
is "$(psql_q "SELECT kind || ' ' || tenant || ' ' || job_state FROM tenant_backup.scratch_databases WHERE database = '$scratch'")" \
	"drill drilled failed" "the view lists it with its job's end"
out=$(psql_q "SELECT tenant_backup.tenant_remove_scratch('$scratch')" 2>&1)
ok $? "tenant_remove_scratch takes it" || diag "$out"
gone=$(wait_for 1200 0.05 gone psql_q "SELECT CASE WHEN count(*) = 0 THEN 'gone' END FROM pg_database WHERE datname = '$scratch'")
is "$gone" gone "the launcher dropped the drill's scratch database"
is "$(psql_q "SELECT count(*) FROM tenant_backup.audit WHERE action = 'scratch database dropped' AND detail->>'database' = '$scratch'")" 1 \
	"the drop is audited"
is "$(in_db drill_db "SELECT count(*) FROM bulk")" 600000 "the tenant's own database is untouched"
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('drilled')")
is "$(echo "$drill" | jq -r .ok)" true "a drill after it succeeds"
is "$(psql_q "SELECT count(*) FROM tenant_backup.scratch_databases")" 0 "and leaves nothing"

done_testing
