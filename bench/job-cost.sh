#!/bin/bash
# The cost of one job: what a backup through the extension costs besides its dump,
# measured three ways against the obvious alternative, on the same cluster in the
# same run (issue 17 item 14).
#
# Starts a throwaway PostgreSQL 15 cluster (test/lib/pg.sh, port 25491, fsync off as
# pg.sh sets it) with tenant_backup preloaded on file storage, the defaults of
# naptime (1 s) and max_workers (2); cluster, storage and output files on tmpfs
# (/dev/shm) when there is one. Then:
#
#   fleet  FLEET small tenants (default 300; a database each with a 1,000-row table),
#          all their backups queued in one transaction (wait => false), until the
#          last job finished (its jobs.finished), against the same databases through
#          xargs -P 2 sh -c 'pg_dump -Fc -Z0 | zstd -1 | age -r RECIPIENT > file'.
#          Target: at most 1.0x.
#   empty  SELECT tenant_backup.tenant_backup('empty', wait => true) on an empty
#          database against pg_dump -Fc of it; best of RUNS (default 5), interleaved.
#          Where the time goes is printed from the job's own timestamps: queued
#          (created: the request worker's commit), started (its worker took it) and
#          finished. Target: at most 1.5x.
#   large  a pgbench database (pgbench -i -s SCALE, default 60, about 900 MB) with
#          wait => true against pg_dump -Fc -Z0 > /dev/null; best of RUNS (at most 3),
#          a CHECKPOINT before each. Target: at most 1.10x.
#
# Prints each measurement, the ratio tenant_backup ÷ alternative and the verdict;
# stops the cluster and removes everything it created at exit.
# Usage: bench/job-cost.sh BIN_DIR [FLEET] [SCALE] [RUNS]     (run as root, like make test)
set -euo pipefail
BIN=$(cd "$1" && pwd)
FLEET=${2:-300}
SCALE=${3:-60}
RUNS=${4:-5}
PORT=25491
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/bench/lib.sh"

bench_prepare jobcost pgbench xargs

echo "load before: $(uptime)"
echo "working directory: $W ($(df --output=fstype "$W" | tail -1))"
# A large max_wal_size: checkpoints only where this script asks for them, never mid-run.
pg_start "$W/pg" $PORT "tenant_backup.storage = 'file://$W/store'
tenant_backup.master_key_file = '$W/master.key'
tenant_backup.default_schedule = '100 years'
max_wal_size = '8GB'
checkpoint_timeout = '1h'"
psql_q "CREATE EXTENSION tenant_backup"
echo "settings: naptime $(psql_q "SHOW tenant_backup.naptime"), max_workers $(psql_q "SHOW tenant_backup.max_workers")"

tenant_add() { # NAME DATABASE
	psql_q "SELECT tenant_backup.tenant_create('$1')" "SELECT tenant_backup.tenant_add_database('$1', 'postgres', '$2')" \
		>/dev/null
}
declare -A BEST=()
record() { BEST[$1]=$(min "${BEST[$1]:-}" "$2"); }
queue_busy() { psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE state IN ('queued', 'running')"; }
report() { # NAME TB_SECONDS ALTERNATIVE ALT_SECONDS TARGET
	local r
	r=$(ratio "$2" "$4")
	printf '%-6s tenant_backup %8.3f s   %s %8.3f s   %s (target <= %sx: %s)\n' "$1" "$2" "$3" "$4" "$r" "$5" \
		"$(verdict "${r%x}" "$5")"
}

# ---------------------------------------------------------------- fleet

echo "fleet: $FLEET databases"
for i in $(seq -w 1 "$FLEET"); do
	psql_q "CREATE DATABASE f$i"
	PGDATABASE=f$i psql_q "CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 1000) g"
	tenant_add "f$i" "f$i"
done
psql_q "CHECKPOINT"
# Both sides run twice, alternately; the best counts.
mkdir -p "$W/fleet"
for run in 1 2; do
	first=$(psql_q "SELECT coalesce(max(id), 0) FROM tenant_backup.jobs")
	now; t0=$NOW
	{
		echo "BEGIN;"
		for i in $(seq -w 1 "$FLEET"); do echo "SELECT tenant_backup.tenant_backup('f$i');"; done
		echo "COMMIT;"
	} | "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 >/dev/null
	until [ "$(queue_busy)" = 0 ]; do sleep 0.1; done
	fleet_tb=$(psql_q "SELECT round(extract(epoch FROM max(finished)) - $t0, 3) FROM tenant_backup.jobs WHERE id > $first")
	failed=$(psql_q "SELECT count(*) FROM tenant_backup.jobs WHERE id > $first AND state <> 'succeeded'")
	[ "$failed" = 0 ] || pg_bail "$W/pg/server.log" "$failed fleet jobs did not succeed"
	record fleet_tb "$fleet_tb"
	record fleet_span "$(psql_q "SELECT round(extract(epoch FROM max(finished) - min(created)), 3) FROM tenant_backup.jobs WHERE id > $first")"

	psql_q "CHECKPOINT"
	now; t0=$NOW
	seq -w 1 "$FLEET" | xargs -P 2 -I{} sh -c \
		"'$PG_BIN/pg_dump' -Fc -Z0 -d f{} | zstd -1 -q | age -r '$AGE_RECIPIENT' > '$W/fleet/f{}.age'"
	fleet_xargs=$(elapsed "$t0")
	record fleet_xargs "$fleet_xargs"
	echo "fleet run $run: tenant_backup $fleet_tb s, xargs -P 2 $fleet_xargs s"
	psql_q "CHECKPOINT"
done
per_slot() { awk -v s="$1" -v n="$FLEET" 'BEGIN { printf "%.1f", 2000 * s / n }'; }
echo "fleet: a tenant every $(per_slot "${BEST[fleet_tb]}") ms per worker (tenant_backup), $(per_slot "${BEST[fleet_xargs]}") ms per slot (xargs)"

# ---------------------------------------------------------------- empty

psql_q "CREATE DATABASE empty"
tenant_add empty empty
for run in $(seq "$RUNS"); do
	now; t0=$NOW
	job=$(psql_q "SELECT max(j) FROM tenant_backup.tenant_backup('empty', wait => true) j")
	now; t1=$NOW
	record empty_tb "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
	# The job's own timestamps against the call's start and return (one clock: this machine's).
	IFS='|' read -r queued claimed ran returned < <(psql_q "SELECT round(extract(epoch FROM created) - $t0, 3),
		round(extract(epoch FROM started - created), 3), round(extract(epoch FROM finished - started), 3),
		round($t1 - extract(epoch FROM finished), 3) FROM tenant_backup.jobs WHERE id = $job")
	record empty_queued "$queued"
	record empty_claimed "$claimed"
	record empty_job "$ran"
	record empty_returned "$returned"
	now; t0=$NOW
	"$PG_BIN/pg_dump" -Fc -d empty >/dev/null
	dumped=$(elapsed "$t0")
	record empty_pg_dump "$dumped"
	echo "empty run $run: queued $queued s after the call, started $claimed s later, ran $ran s," \
		"returned $returned s after it finished; pg_dump $dumped s"
done

# ---------------------------------------------------------------- large

echo "pgbench -i -s $SCALE"
psql_q "CREATE DATABASE large"
"$PG_BIN/pgbench" -i -q -s "$SCALE" large 2>&1 | tail -n 1
echo "database large: $(psql_q "SELECT pg_database_size('large')") bytes ($(psql_q "SELECT pg_size_pretty(pg_database_size('large'))"))"
tenant_add large large
for run in $(seq "$((RUNS < 3 ? RUNS : 3))"); do
	psql_q "CHECKPOINT"
	now; t0=$NOW
	job=$(psql_q "SELECT max(j) FROM tenant_backup.tenant_backup('large', wait => true) j")
	took=$(elapsed "$t0")
	record large_tb "$took"
	record large_job "$(job_seconds "$job")"
	psql_q "CHECKPOINT"
	now; t0=$NOW
	"$PG_BIN/pg_dump" -Fc -Z0 -d large >/dev/null
	dumped=$(elapsed "$t0")
	record large_pg_dump "$dumped"
	echo "large run $run: tenant_backup $took s (job $(job_seconds "$job") s), pg_dump $dumped s"
done
echo "load after: $(uptime)"

# ---------------------------------------------------------------- report

echo
echo "empty: best parts, seconds — call to queued ${BEST[empty_queued]}, queued to started ${BEST[empty_claimed]}," \
	"the job ${BEST[empty_job]}, finished to returned ${BEST[empty_returned]}"
report fleet "${BEST[fleet_tb]}" "xargs -P 2 pg_dump|zstd|age" "${BEST[fleet_xargs]}" 1.0
report empty "${BEST[empty_tb]}" "pg_dump -Fc" "${BEST[empty_pg_dump]}" 1.5
report large "${BEST[large_tb]}" "pg_dump -Fc -Z0 >/dev/null" "${BEST[large_pg_dump]}" 1.10
echo "large: its job alone (started -> finished) ${BEST[large_job]} s, $(ratio "${BEST[large_job]}" "${BEST[large_pg_dump]}") of pg_dump"
