#!/bin/bash
# PostgreSQL tenant backup and restore through the extension against plain pg_dump /
# pg_restore and the obvious encrypted pipeline, on the same database in the same run.
#
# Starts a throwaway PostgreSQL 15 cluster (test/lib/pg.sh, port 25481, fsync off as
# pg.sh sets it) with tenant_backup preloaded on file storage; the cluster, the storage
# and every output file live on tmpfs (/dev/shm) when there is one, so no side pays
# for a disk. Creates a pgbench database (pgbench -i -s SCALE, default 70, about 1 GB)
# and registers it as tenant "bench". Then, RUNS times each (default 3), interleaved,
# with a CHECKPOINT before every timed command and the best wall time counting:
#
#   backup   SELECT tenant_backup.tenant_backup('bench', wait => true)
#            pg_dump -Fc -Z0 -d bench > /dev/null
#            pg_dump -Fc -Z0 -d bench | zstd -1 | age -r RECIPIENT > file
#   restore  SELECT tenant_backup.tenant_restore('bench', target => 'bench_r<N>', wait => true)
#            pg_restore -d <fresh database> plain.dump   (of pg_dump -Fc -Z0)
#            targets are created (pg_restore only) and dropped outside the timing.
#
# tenant_backup's wall time is what a caller waits for: it includes starting the
# request and job workers, the launcher's naptime (100 ms here) and the 200 ms polling
# of wait => true. The job's own started->finished time from tenant_backup.jobs and the
# same calls on an empty database are printed too, to separate that fixed cost.
# MB/s = bytes of pg_dump's output (the backup's bytes_in) / 10^6 / seconds.
#
# Memory: one more backup and restore each, untimed, sampling /proc/PID/status of the
# job worker (postgres: tenant_backup job N, a child of this cluster's postmaster) and
# of its pg_dump / pg_restore child every 20 ms; VmHWM is the kernel's peak RSS of
# the process (shared memory and the postgres binary's pages it touched included).
#
# Prints markdown tables; stops the cluster and removes everything it created at exit.
# Usage: bench/pg-backup.sh BIN_DIR [SCALE] [RUNS]     (run as root, like make test)
set -euo pipefail
BIN=$(cd "$1" && pwd)
SCALE=${2:-70}
RUNS=${3:-3}
PORT=25481
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/bench/lib.sh"

bench_prepare pgbench

echo "load before: $(uptime)"
echo "working directory: $W ($(df --output=fstype "$W" | tail -1))"
# A large max_wal_size: checkpoints only where this script asks for them, never mid-run.
pg_start "$W/pg" $PORT "tenant_backup.storage = 'file://$W/store'
tenant_backup.master_key_file = '$W/master.key'
tenant_backup.naptime = 100
max_wal_size = '8GB'
checkpoint_timeout = '1h'"
POSTMASTER=$(head -n 1 "$W/pg/data/postmaster.pid")
psql_q "CREATE EXTENSION tenant_backup"

echo "pgbench -i -s $SCALE"
psql_q "CREATE DATABASE bench" "CREATE DATABASE tiny"
"$PG_BIN/pgbench" -i -q -s "$SCALE" bench 2>&1 | tail -n 1
DB_BYTES=$(psql_q "SELECT pg_database_size('bench')")
echo "database bench: $DB_BYTES bytes ($(psql_q "SELECT pg_size_pretty(pg_database_size('bench'))"))"
for t in bench tiny; do
	psql_q "SELECT tenant_backup.tenant_create('$t')" "SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" \
		>/dev/null
done
"$PG_BIN/pg_dump" -Fc -Z0 -d bench -f "$W/plain.dump"
DUMP_BYTES=$(stat -c %s "$W/plain.dump")
psql_q "CHECKPOINT"

# ---------------------------------------------------------------- timing


declare -A BEST=()
LINE=""
record() { # KEY SECONDS: keeps the best, and lists every run's time on its "run N" line
	BEST[$1]=$(min "${BEST[$1]:-}" "$2")
	LINE="$LINE $1=$2"
}

tb_backup() { psql_q "SELECT tenant_backup.tenant_backup('$1', wait => true)"; }
tb_restore() { psql_q "SELECT tenant_backup.tenant_restore('$1', target => '$2', wait => true)"; }

for run in $(seq "$RUNS"); do
	LINE=""
	psql_q "CHECKPOINT"
	now; t0=$NOW
	job=$(tb_backup bench)
	record tb_backup "$(elapsed "$t0")"
	record tb_backup_job "$(job_seconds "$job")"

	psql_q "CHECKPOINT"
	now; t0=$NOW
	"$PG_BIN/pg_dump" -Fc -Z0 -d bench >/dev/null
	record pg_dump "$(elapsed "$t0")"

	psql_q "CHECKPOINT"
	now; t0=$NOW
	"$PG_BIN/pg_dump" -Fc -Z0 -d bench | zstd -1 -q | age -r "$AGE_RECIPIENT" >"$W/pipeline.age"
	record pipeline "$(elapsed "$t0")"

	psql_q "CHECKPOINT"
	now; t0=$NOW
	job=$(tb_restore bench "bench_r$run")
	record tb_restore "$(elapsed "$t0")"
	record tb_restore_job "$(job_seconds "$job")"
	if [ "$run" = 1 ]; then
		got=$(PGDATABASE=bench_r1 psql_q "SELECT count(*) FROM pgbench_accounts")
		[ "$got" = $((SCALE * 100000)) ] || pg_bail "$W/pg/server.log" "bench_r1 has $got accounts, not $((SCALE * 100000))"
	fi
	psql_q "DROP DATABASE bench_r$run"

	psql_q "CREATE DATABASE bench_p$run TEMPLATE template0" "CHECKPOINT"
	now; t0=$NOW
	"$PG_BIN/pg_restore" -d "bench_p$run" "$W/plain.dump"
	record pg_restore "$(elapsed "$t0")"
	psql_q "DROP DATABASE bench_p$run"

	# The fixed cost: the same calls on an empty database.
	now; t0=$NOW
	job=$(tb_backup tiny)
	record tiny_tb "$(elapsed "$t0")"
	record tiny_tb_job "$(job_seconds "$job")"
	now; t0=$NOW
	"$PG_BIN/pg_dump" -Fc -Z0 -d tiny >/dev/null
	record tiny_pg_dump "$(elapsed "$t0")"
	echo "run $run of $RUNS (s):$LINE"
done
BACKUP_ROW=$(psql_q "SELECT bytes_in, bytes_stored FROM tenant_backup.tenant_backups('bench') LIMIT 1")
BYTES_IN=${BACKUP_ROW%|*}
BYTES_STORED=${BACKUP_ROW#*|}
AGE_BYTES=$(stat -c %s "$W/pipeline.age")

# ---------------------------------------------------------------- memory

# Samples the job worker of this cluster and its child TOOL while SQL runs.
measure() { # PREFIX TOOL SQL
	local prefix=$1 tool=$2 caller worker="" child="" samples=0
	psql_q "CHECKPOINT"
	psql_q "$3" >/dev/null &
	caller=$!
	while kill -0 "$caller" 2>/dev/null; do
		[ -n "$worker" ] && [ -d "/proc/$worker" ] ||
			worker=$(pgrep -P "$POSTMASTER" -f '^postgres: tenant_backup job' | head -n 1 || true)
		if [ -n "$worker" ]; then
			[ -n "$child" ] && [ -d "/proc/$child" ] || child=$(pgrep -P "$worker" -x "$tool" | head -n 1 || true)
			sample "${prefix}_worker" "$worker"
			[ -n "$child" ] && sample "${prefix}_tool" "$child"
			samples=$((samples + 1))
		fi
		sleep 0.02
	done
	wait "$caller" || pg_bail "$W/pg/server.log" "$3 failed"
	[ "$samples" -gt 0 ] || pg_bail "$W/pg/server.log" "the job worker of '$3' was never seen"
	PEAK[${prefix}_samples]=$samples
}
echo "memory: one more backup and restore, sampled"
measure backup pg_dump "SELECT tenant_backup.tenant_backup('bench', wait => true)"
measure restore pg_restore "SELECT tenant_backup.tenant_restore('bench', target => 'bench_mem', wait => true)"
psql_q "DROP DATABASE bench_mem"
echo "load after: $(uptime)"

# ---------------------------------------------------------------- report

mbps() { awk -v b="$DUMP_BYTES" -v s="$1" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }

backup_ratio=$(ratio "${BEST[tb_backup]}" "${BEST[pg_dump]}")
memory_mb=$(mib "${PEAK[backup_worker_hwm]}")
echo
echo "database bench (pgbench scale $SCALE): pg_database_size $DB_BYTES bytes;" \
	"pg_dump -Fc -Z0 output $DUMP_BYTES bytes (backup bytes_in $BYTES_IN);" \
	"stored object $BYTES_STORED bytes (zstd level $(psql_q "SHOW tenant_backup.compression_level")); zstd -1 | age file $AGE_BYTES bytes"
echo
echo "| operation | command | best of $RUNS (s) | MB/s | tenant_backup time ÷ this |"
echo "|---|---|---:|---:|---:|"
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
row backup "tenant_backup('bench', wait => true), wall" "${BEST[tb_backup]}" "$(mbps "${BEST[tb_backup]}")" 1.00x
row backup "— its job, started → finished" "${BEST[tb_backup_job]}" "$(mbps "${BEST[tb_backup_job]}")" ""
row backup "pg_dump -Fc -Z0 > /dev/null" "${BEST[pg_dump]}" "$(mbps "${BEST[pg_dump]}")" "$backup_ratio"
row backup "pg_dump -Fc -Z0 \| zstd -1 \| age > file" "${BEST[pipeline]}" "$(mbps "${BEST[pipeline]}")" \
	"$(ratio "${BEST[tb_backup]}" "${BEST[pipeline]}")"
row restore "tenant_restore('bench', target => ..., wait => true), wall" "${BEST[tb_restore]}" \
	"$(mbps "${BEST[tb_restore]}")" 1.00x
row restore "— its job, started → finished" "${BEST[tb_restore_job]}" "$(mbps "${BEST[tb_restore_job]}")" ""
row restore "pg_restore -d fresh plain.dump" "${BEST[pg_restore]}" "$(mbps "${BEST[pg_restore]}")" \
	"$(ratio "${BEST[tb_restore]}" "${BEST[pg_restore]}")"
row "empty db" "tenant_backup('tiny', wait => true), wall" "${BEST[tiny_tb]}" "" 1.00x
row "empty db" "— its job, started → finished" "${BEST[tiny_tb_job]}" "" ""
row "empty db" "pg_dump -Fc -Z0 > /dev/null" "${BEST[tiny_pg_dump]}" "" \
	"$(ratio "${BEST[tiny_tb]}" "${BEST[tiny_pg_dump]}")"
echo
echo "| process (peak while it ran) | samples | VmHWM MiB | max RssAnon MiB | max RssShmem MiB |"
echo "|---|---:|---:|---:|---:|"
for p in backup restore; do
	tool=$([ $p = backup ] && echo pg_dump || echo pg_restore)
	printf '| %s | %s | %s | %s | %s |\n' "job worker, $p" "${PEAK[${p}_samples]}" "$(mib "${PEAK[${p}_worker_hwm]:-}")" \
		"$(mib "${PEAK[${p}_worker_anon]:-}")" "$(mib "${PEAK[${p}_worker_shmem]:-}")"
	printf '| %s | %s | %s | %s | %s |\n' "its $tool" "" "$(mib "${PEAK[${p}_tool_hwm]:-}")" \
		"$(mib "${PEAK[${p}_tool_anon]:-}")" "$(mib "${PEAK[${p}_tool_shmem]:-}")"
done
echo
echo "targets: backup within 1.15x of pg_dump -Fc -Z0: $backup_ratio, $(verdict "${backup_ratio%x}" 1.15);" \
	"job worker peak memory (VmHWM) under 64 MB: $memory_mb MiB, $(verdict "$((${PEAK[backup_worker_hwm]} * 1024))" 64000000)"
