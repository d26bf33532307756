#!/bin/bash
# Point-in-time recovery of a dedicated PostgreSQL tenant: WAL archiving through
# archive_library = 'tenant_backup', base backups through the extension and restores
# through tenant-backup restore-pitr, each against the obvious plain alternative on the
# same cluster, the same WAL and the same base backup, in the same run.
#
# One throwaway PostgreSQL 15 cluster (test/lib/pg.sh, port 25490) is the dedicated
# tenant "acme"'s cluster: wal_level = replica, archive_mode = on, fsync = on,
# synchronous_commit = on, full_page_writes = on (as a tenant's real cluster runs, and
# as test/integration/pg_pitr.t does), max_wal_size = 32GB and checkpoint_timeout = 1h
# (checkpoints only where this script asks for them), shared_buffers 128MB (default).
# Cluster, file:// storage, the cp archive and every copy live on tmpfs (/dev/shm) when
# there is one: fsync is on for both sides but costs next to nothing there, and neither
# side pays for a disk. (tenant_backup fsyncs object, manifest and directory before it
# reports success; cp fsyncs nothing: on a disk that would be an extra cost of the safe
# side.) Data: pgbench -i -s SCALE (default 70, about 1 GB) in database "bench", the
# tenant's. The archiver is switched between the two sides with ALTER SYSTEM and a reload
# (PostgreSQL 15 restarts the archiver when archive_library changes):
#
#   tb  archive_library = 'tenant_backup', tenant_backup.archive_tenant = 'acme'
#   cp  archive_library = '', archive_command = 'test ! -f DIR/%f && cp %p DIR/%f'
#       (the PostgreSQL documentation's example)
#
# 1. Archiving under load, RUNS (default 3) times per side, alternating which goes
#    first: CHECKPOINT, then pgbench -n -c 4 -j 2 -T LOAD_SECONDS (default 30) on "bench" with that side
#    archiving; the .ready files in pg_wal/archive_status are counted every 0.25 s. Printed:
#    pgbench's tps, WAL written (pg_current_wal_lsn), segments archived during the load
#    (pg_stat_archiver.archived_count) and per second, the largest and the final backlog,
#    the time from the end of the load until the backlog is empty, and the archiver's CPU
#    time over the run (utime + stime + cutime + cstime of the archiver process in
#    /proc/PID/stat: the archive_command's shells and cp processes count as its children).
# 2. Base backup, 3 times each, interleaved, CHECKPOINT before each, best wall time counting:
#      SELECT tenant_backup.tenant_backup('acme', wait => true)   (its worker runs
#        pg_basebackup --format=tar --pgdata=- --wal-method=fetch --checkpoint=fast
#        --no-manifest and seals the stream into storage)
#      pg_basebackup -Ft -D - -X fetch -c fast --no-manifest | wc -c
#      pg_basebackup ... | zstd -1 | wc -c        (zstd's own CPU time by GNU time)
#      pg_basebackup ... | zstd -1 | age -r RECIPIENT > file
# 3. Archiver throughput on one backlog: archiving paused, one more base backup through
#    the extension (untimed; the PITR's base), then pgbench load until WAL_MB (default
#    1024) MiB of WAL were written after its start, pg_switch_wal(): a backlog of .ready
#    files. RUNS times per side, alternating which goes first, the same files: set
#    .ready again (and their archived copies removed), that side's archiving switched on
#    by a SIGHUP to the postmaster, and the time until no .ready file is left (polled
#    every 10 ms), with the archiver's CPU time as in 1. Nothing else writes meanwhile.
# 4. Restore to the latest point, RUNS times each, interleaved (the order rotates), each
#    into a new directory (removed after), started on its own port (25491-25493) as user
#    postgres; the time from the start of the unpacking until the server log says
#    "database system is ready to accept connections" (polled every 20 ms); the copy's
#    pgbench_history rows and sum of balances checked against the source in the first run:
#      tb   tenant-backup restore-pitr --tenant acme --to-latest --pgdata DIR, pg_ctl start
#           (restore_command: tenant-backup wal-fetch, default --prefetch 8)
#      tb0  the same with --prefetch 0 put into its restore_command (sed, after unpacking)
#      plain  tar -xf of the same base backup as a plain tar (tenant-backup cat, outside
#           the timing), recovery.signal, restore_command = 'cp DIR/%f %p' on the cp archive
#           of step 3 (the same WAL files, in the clear), archive_mode = off, pg_ctl start
#    The unpacking's CPU time is GNU time's (restore-pitr with its tar child; tar).
#    Phases from the copy's server log (%m timestamps): unpack (until restore-pitr or tar
#    exited), start (-> "redo starts at"), replay (-> "redo done at"; the startup
#    process's own CPU time is the "system usage" of that line), end of recovery
#    (-> "ready to accept connections": end-of-recovery checkpoint, new timeline).
#    Also, once per run, the WAL fetch alone: every backlog segment fetched one after the
#    other into one file, as recovery asks for them, by wal-fetch --prefetch 0 and by cp
#    (GNU time: wall, CPU, largest RSS).
#
# Tables: step 1 every run; steps 2 and 3 the best time; step 4 the run with the best
# total, its phases from that same run.
#
# Memory: VmHWM (the kernel's peak RSS) of the archiver (sampled every 0.25 s under load
# and every 10 ms while a backlog drains), of the job worker and its pg_basebackup
# (every 20 ms during step 3's untimed base backup, with their CPU time at the last
# sample), of restore-pitr and its tar (during tb's unpacking, every 20 ms; the plain
# tar likewise), of one wal-fetch call (GNU time). VmHWM includes the shared memory a
# server process touched.
#
# Prints markdown tables; stops every server it started and removes everything at exit.
# Usage: bench/pitr.sh BIN_DIR [SCALE] [RUNS] [LOAD_SECONDS] [WAL_MB]   (as root, like make test)
set -euo pipefail
BIN=$(cd "$1" && pwd)
SCALE=${2:-70}
RUNS=${3:-3}
LOAD_SECONDS=${4:-30}
WAL_MB=${5:-1024}
PORT=25490
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/bench/lib.sh"
TB=$BIN/tenant-backup

bench_prepare pitr pgbench tar /usr/bin/time
CPARCH=$W/cparch
COPIES=$W/copies
mkdir -p "$CPARCH" "$COPIES" "$W/fetch"
chown postgres "$CPARCH" "$COPIES"
export TENANT_BACKUP_STORAGE="file://$W/store" TENANT_BACKUP_MASTER_KEY_FILE="$W/master.key"
echo "load before: $(uptime)"
echo "working directory: $W ($(df --output=fstype "$W" | tail -1)); HEAD $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?')"
pg_start "$W/pg" $PORT "tenant_backup.storage = 'file://$W/store'
tenant_backup.master_key_file = '$W/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 100
wal_level = replica
archive_mode = on
archive_library = ''
archive_command = 'true'
archive_timeout = 0
max_wal_size = '32GB'
checkpoint_timeout = '1h'
fsync = on
synchronous_commit = on
full_page_writes = on"
POSTMASTER=$(head -n 1 "$W/pg/data/postmaster.pid")
STATUS=$W/pg/data/pg_wal/archive_status
SEG=$(psql_q "SHOW wal_segment_size")
SEG_BYTES=$(psql_q "SELECT pg_size_bytes(current_setting('wal_segment_size'))")
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE bench" \
	"SELECT tenant_backup.tenant_create('acme', tier => 'dedicated')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'bench')" >/dev/null
echo "pgbench -i -s $SCALE (archive_command = 'true' meanwhile)"
now
t0=$NOW
"$PG_BIN/pgbench" -i -q -s "$SCALE" bench 2>&1 | tail -n 1
echo "  took $(elapsed "$t0") s"
DB_BYTES=$(psql_q "SELECT pg_database_size('bench')")
CLUSTER_BYTES=$(psql_q "SELECT sum(pg_database_size(oid)) FROM pg_database")
echo "database bench: $DB_BYTES bytes; all databases $CLUSTER_BYTES bytes; wal_segment_size $SEG"

# ---------------------------------------------------------------- helpers

archiver_pid() { pgrep -P "$POSTMASTER" -f '^postgres: archiver' | head -n 1 || true; }
cpu_ticks() { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)
secs() { awk -v t="$1" -v k="$TICK" 'BEGIN { printf "%.2f", t / k }'; }
ready_count() {
	local f
	shopt -s nullglob
	f=("$STATUS"/*.ready)
	shopt -u nullglob
	echo ${#f[@]}
}
any_ready() { compgen -G "$STATUS/*.ready" >/dev/null; }
lsn_bytes() { psql_q "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"; }
archived_count() { psql_q "SELECT archived_count FROM pg_stat_archiver"; }

# ALTER SYSTEM for one side's archiving: cp, tb, their paused forms, or null ('true').
alter_archiving() { # MODE
	local lib="" cmd="" tenant=""
	case $1 in
		cp) cmd="test ! -f $CPARCH/%f && cp %p $CPARCH/%f" ;;
		cp_paused) ;;
		tb)
			lib=tenant_backup
			tenant=acme
			;;
		tb_paused) lib=tenant_backup ;;
		null) cmd=true ;;
	esac
	psql_q "ALTER SYSTEM SET archive_library = '$lib'" "ALTER SYSTEM SET archive_command = '$cmd'" \
		"ALTER SYSTEM SET tenant_backup.archive_tenant = '$tenant'"
}
# Applies MODE and waits for the archiver that runs with it. After a change of
# archive_library the archiver exits; PostgreSQL 15's postmaster starts a new one at
# the first turn of its main loop at least 10 s after the previous start
# (PGARCH_RESTART_INTERVAL), and its loop may sleep up to a minute: a reload every
# second wakes it.
set_archiving() { # MODE
	local before after="" lib
	before=$(archiver_pid)
	lib=$(psql_q "SHOW archive_library")
	alter_archiving "$1"
	psql_q "SELECT pg_reload_conf()" >/dev/null
	sleep 0.3
	case $1 in tb*) [ "$lib" = tenant_backup ] || lib=changed ;; *) [ -z "$lib" ] || lib=changed ;; esac
	for i in $(seq 300); do
		after=$(archiver_pid)
		[ -n "$after" ] && { [ "$lib" != changed ] || [ "$after" != "$before" ]; } && break
		[ $((i % 10)) = 0 ] && kill -HUP "$POSTMASTER"
		sleep 0.1
	done
	[ -n "$after" ] || pg_bail "$W/pg/server.log" "no archiver after switching to $1"
}
wait_drained() { # TIMEOUT_S
	local i
	for i in $(seq $(($1 * 100))); do
		any_ready || return 0
		sleep 0.01
	done
	pg_bail "$W/pg/server.log" "the archiver did not drain its backlog in $1 s"
}
pgbench_tps() { sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$1"; }

declare -A V=() # per-run values: V[key_run]
LINE=""
put() { # KEY RUN VALUE
	V[$1_$2]=$3
	LINE="$LINE $1=$3"
}
best_run() { # KEY: the run with the smallest V[KEY_run]
	local r b="" br=1
	for r in $(seq "$RUNS"); do
		[ -n "${V[$1_$r]:-}" ] || continue
		if [ -z "$b" ] || awk -v a="${V[$1_$r]}" -v c="$b" 'BEGIN { exit !(a + 0 < c + 0) }'; then
			b=${V[$1_$r]}
			br=$r
		fi
	done
	echo "$br"
}
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.1f}" 'BEGIN { printf f, (b + 0 == 0) ? 0 : a / b }'; }

# ---------------------------------------------------------------- 1. archiving under load

echo
echo "1. archiving under pgbench load (-c 4 -j 2 -T $LOAD_SECONDS), $RUNS runs per side"
set_archiving null
psql_q "CHECKPOINT"
wait_drained 60
load_run() { # SIDE RUN
	local side=$1 run=$2 pid lsn0 lsn1 arc0 arc1 cpu0 cpu1 peak=0 n t_end load_arch ready_end
	rm -rf "${CPARCH:?}"/*
	set_archiving "$side"
	psql_q "CHECKPOINT"
	pid=$(archiver_pid)
	lsn0=$(lsn_bytes)
	arc0=$(archived_count)
	cpu0=$(cpu_ticks "$pid")
	"$PG_BIN/pgbench" -n -c 4 -j 2 -T "$LOAD_SECONDS" bench >"$W/pgbench.out" 2>&1 &
	local bench=$!
	while kill -0 "$bench" 2>/dev/null; do
		n=$(ready_count)
		[ "$n" -gt "$peak" ] && peak=$n
		[ "$side" = tb ] && sample load_archiver "$pid"
		sleep 0.25
	done
	wait "$bench" || pg_bail "$W/pgbench.out" "pgbench failed"
	now
	t_end=$NOW
	lsn1=$(lsn_bytes)
	arc1=$(archived_count)
	ready_end=$(ready_count)
	wait_drained 600
	put "l${side}_drain" "$run" "$(elapsed "$t_end")"
	[ "$(archiver_pid)" = "$pid" ] || pg_bail "$W/pg/server.log" "the archiver restarted during the $side run"
	cpu1=$(cpu_ticks "$pid")
	load_arch=$((arc1 - arc0))
	put "l${side}_tps" "$run" "$(pgbench_tps "$W/pgbench.out")"
	put "l${side}_walmb" "$run" "$(div $((lsn1 - lsn0)) 1048576 %.0f)"
	put "l${side}_segs" "$run" $((lsn1 / SEG_BYTES - lsn0 / SEG_BYTES))
	put "l${side}_arch" "$run" "$load_arch"
	put "l${side}_archps" "$run" "$(div "$load_arch" "$LOAD_SECONDS" %.2f)"
	put "l${side}_peak" "$run" "$peak"
	put "l${side}_left" "$run" "$ready_end"
	put "l${side}_total" "$run" $(($(archived_count) - arc0))
	put "l${side}_cpu" "$run" "$(secs $((cpu1 - cpu0)))"
}
for run in $(seq "$RUNS"); do
	LINE=""
	if [ $((run % 2)) = 1 ]; then order="tb cp"; else order="cp tb"; fi
	for side in $order; do load_run "$side" "$run"; done
	echo "run $run of $RUNS:$LINE"
done
rm -rf "${CPARCH:?}"/*

# ---------------------------------------------------------------- 2. base backup

BB_RUNS=3
echo
echo "2. base backups, $BB_RUNS runs each (tb archiving on)"
set_archiving tb
basebackup() { "$PG_BIN/pg_basebackup" -Ft -D - -X fetch -c fast --no-manifest; }
declare -A BB=()
for run in $(seq $BB_RUNS); do
	LINE=""
	psql_q "CHECKPOINT"
	now
	t0=$NOW
	job=$(psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)")
	BB[tb_$run]=$(elapsed "$t0")
	BB[tbjob_$run]=$(job_seconds "$job")
	[ "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" = succeeded ] ||
		pg_bail "$W/pg/server.log" "base backup job $job did not succeed"

	psql_q "CHECKPOINT"
	now
	t0=$NOW
	TAR_BYTES=$(basebackup | wc -c)
	BB[raw_$run]=$(elapsed "$t0")

	psql_q "CHECKPOINT"
	now
	t0=$NOW
	ZST_BYTES=$(basebackup | /usr/bin/time -f '%U %S' -o "$W/zstd.time" zstd -1 -q | wc -c)
	BB[zstd_$run]=$(elapsed "$t0")
	BB[zstdcpu_$run]=$(awk '{ printf "%.2f", $1 + $2 }' "$W/zstd.time")

	psql_q "CHECKPOINT"
	now
	t0=$NOW
	basebackup | zstd -1 -q | age -r "$AGE_RECIPIENT" >"$W/base.age"
	BB[age_$run]=$(elapsed "$t0")
	AGE_BYTES=$(stat -c %s "$W/base.age")
	rm -f "$W/base.age"
	echo "run $run of $BB_RUNS (s): tb=${BB[tb_$run]} tb_job=${BB[tbjob_$run]} pg_basebackup=${BB[raw_$run]}" \
		"zstd=${BB[zstd_$run]} (zstd's CPU ${BB[zstdcpu_$run]}) zstd_age=${BB[age_$run]}"
done
bbest() { # KEY
	local r b=""
	for r in $(seq $BB_RUNS); do b=$(min "$b" "${BB[$1_$r]}"); done
	echo "$b"
}
ROW=$(psql_q "SELECT bytes_in, bytes_stored FROM tenant_backup.tenant_backups('acme') LIMIT 1")
TB_IN=${ROW%|*}
TB_STORED=${ROW#*|}
wait_drained 120

# ---------------------------------------------------------------- 3. archiver throughput on one backlog

echo
echo "3. backlog: base backup (untimed, sampled), then pgbench until $WAL_MB MiB of WAL, archiving paused"
set_archiving tb_paused
psql_q "CHECKPOINT"
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >"$W/job" &
caller=$!
BB_WORKER_TICKS=0
BB_TOOL_TICKS=0
worker=""
child=""
while kill -0 "$caller" 2>/dev/null; do
	[ -n "$worker" ] && [ -d "/proc/$worker" ] ||
		worker=$(pgrep -P "$POSTMASTER" -f '^postgres: tenant_backup job' | head -n 1 || true)
	if [ -n "$worker" ]; then
		[ -n "$child" ] && [ -d "/proc/$child" ] || child=$(pgrep -P "$worker" -x pg_basebackup | head -n 1 || true)
		sample bb_worker "$worker"
		[ -n "$child" ] && sample bb_tool "$child"
		t=$(awk '{ print $14 + $15 }' "/proc/$worker/stat" 2>/dev/null || true)
		[ -n "$t" ] && BB_WORKER_TICKS=$t
		[ -n "$child" ] && t=$(awk '{ print $14 + $15 }' "/proc/$child/stat" 2>/dev/null || true) && [ -n "$t" ] && BB_TOOL_TICKS=$t
	fi
	sleep 0.02
done
wait "$caller" || pg_bail "$W/pg/server.log" "the PITR base backup failed"
job=$(cat "$W/job")
BASE_ROW=$(psql_q "SELECT object_key, start_lsn - '0/0'::pg_lsn, start_lsn, stop_lsn FROM tenant_backup.backups WHERE job_id = $job AND status = 'complete'")
[ -n "$BASE_ROW" ] || pg_bail "$W/pg/server.log" "the PITR base backup is not complete"
IFS='|' read -r BASE_OBJ BASE_START BASE_START_LSN BASE_STOP_LSN <<<"$BASE_ROW"
echo "base backup $BASE_OBJ: WAL $BASE_START_LSN .. $BASE_STOP_LSN; job $(job_seconds "$job") s;" \
	"CPU-s (last sample, every 20 ms) of the job worker $(secs "$BB_WORKER_TICKS"), of its pg_basebackup $(secs "$BB_TOOL_TICKS")"
"$PG_BIN/pgbench" -n -c 4 -j 2 -T 3600 bench >"$W/pgbench.out" 2>&1 &
bench=$!
now
t0=$NOW
while [ "$(($(lsn_bytes) - BASE_START))" -lt $((WAL_MB * 1048576)) ]; do
	kill -0 "$bench" 2>/dev/null || pg_bail "$W/pgbench.out" "pgbench stopped"
	sleep 0.2
done
kill -TERM "$bench"
wait "$bench" 2>/dev/null || true
echo "  $WAL_MB MiB of WAL after the base backup's start in $(elapsed "$t0") s"
psql_q "SELECT pg_switch_wal()" >/dev/null
sleep 0.5
HISTORY_ROWS=$(PGDATABASE=bench psql_q "SELECT count(*) FROM pgbench_history")
BALANCE=$(PGDATABASE=bench psql_q "SELECT sum(abalance) FROM pgbench_accounts")
mapfile -t BACKLOG < <(cd "$STATUS" && ls | sed -n 's/\.ready$//p' | sort)
NSEGS=$(printf '%s\n' "${BACKLOG[@]}" | grep -cE '^[0-9A-F]{24}$' || true)
echo "backlog: ${#BACKLOG[@]} files, $NSEGS of them segments; pgbench_history $HISTORY_ROWS rows"
mark_ready() {
	local f
	for f in "${BACKLOG[@]}"; do
		[ -e "$STATUS/$f.done" ] && mv "$STATUS/$f.done" "$STATUS/$f.ready"
		[ -e "$STATUS/$f.ready" ] || pg_bail /dev/null "$f is neither .ready nor .done"
	done
}
drain_run() { # SIDE RUN
	local side=$1 run=$2 pid cpu0 f
	if [ "$side" = cp ]; then
		rm -rf "${CPARCH:?}"/*
		set_archiving cp_paused
	else
		for f in "${BACKLOG[@]}"; do rm -f "$W/store/acme/postgres/wal/${f:0:8}/$f".{tbk,json}; done
		set_archiving tb_paused
	fi
	mark_ready
	alter_archiving "$side"
	pid=$(archiver_pid)
	cpu0=$(cpu_ticks "$pid")
	now
	t0=$NOW
	kill -HUP "$POSTMASTER"
	while any_ready; do
		[ "$side" = tb ] && sample drain_archiver "$pid"
		[ "$side" = cp ] && sample drain_cp_archiver "$pid"
		sleep 0.01
	done
	put "d${side}" "$run" "$(elapsed "$t0")"
	put "d${side}_cpu" "$run" "$(secs $(($(cpu_ticks "$pid") - cpu0)))"
	[ "$(archiver_pid)" = "$pid" ] || pg_bail "$W/pg/server.log" "the archiver restarted during the $side drain"
	alter_archiving "${side}_paused"
	psql_q "SELECT pg_reload_conf()" >/dev/null
}
# cp, tb, tb, cp, cp, tb...: fewer archiver restarts; in the end storage holds the last tb
# run's objects and CPARCH the last cp run's files, the same WAL, for step 4.
for run in $(seq "$RUNS"); do
	LINE=""
	if [ $((run % 2)) = 1 ]; then order="cp tb"; else order="tb cp"; fi
	for side in $order; do drain_run "$side" "$run"; done
	echo "run $run of $RUNS (s):$LINE"
done
sleep 0.3
STORED_WAL=0
for f in "${BACKLOG[@]}"; do
	[ -f "$W/store/acme/postgres/wal/${f:0:8}/$f.tbk" ] || pg_bail /dev/null "$f is not in storage"
	STORED_WAL=$((STORED_WAL + $(stat -c %s "$W/store/acme/postgres/wal/${f:0:8}/$f.tbk")))
done
PLAIN_WAL=$(du -cb "$CPARCH" | tail -n 1 | cut -f1)
chown -R postgres "$CPARCH"
"$TB" cat "$BASE_OBJ" >"$W/base.tar"
chown postgres "$W/base.tar"

# ---------------------------------------------------------------- 4. restore to the latest point

echo
echo "4. restores to the latest point, $RUNS runs each"
declare -A CPORT=([tb]=25491 [tb0]=25492 [plain]=25493)
stop_copy() { # DIR
	[ -f "$1/postmaster.pid" ] || return 0
	pg_as_postgres "$COPIES" "$PG_BIN/pg_ctl" -D "$1" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
}
log_epoch() { # LOG PATTERN: the %m timestamp of the first line with PATTERN, as epoch seconds
	local ts
	ts=$(grep -m 1 -F -- "$2" "$1" | awk '{ print $1 " " $2 " " $3 }')
	[ -n "$ts" ] && date -d "$ts" +%s.%3N
}
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
restore_run() { # METHOD RUN
	local m=$1 run=$2 dir=$COPIES/$1_$2 pid proc="" kid="" t_start log ready redo0 redo1 usage
	log=$dir.log
	on_exit "stop_copy '$dir'"
	now
	t0=$NOW
	if [ "$m" = plain ]; then
		pg_as_postgres "$COPIES" bash -c "mkdir -m 0700 '$dir' && exec /usr/bin/time -f '%U %S' -o '$COPIES/unpack.time' tar -x -f '$W/base.tar' -C '$dir'" &
	else
		pg_as_postgres "$COPIES" /usr/bin/time -f '%U %S' -o "$COPIES/unpack.time" env TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE" \
			TENANT_BACKUP_MASTER_KEY_FILE="$TENANT_BACKUP_MASTER_KEY_FILE" \
			"$TB" restore-pitr --tenant acme --to-latest --pgdata "$dir" 2>"$W/restore.err" &
	fi
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$m" = tb ]; then
			[ -n "$proc" ] || proc=$(pgrep -f "^$TB restore-pitr --tenant acme --to-latest --pgdata $dir\$" | head -n 1 || true)
			[ -n "$proc" ] && { [ -n "$kid" ] || kid=$(pgrep -P "$proc" -x tar | head -n 1 || true); }
			[ -n "$proc" ] && sample unpack_tb "$proc"
			[ -n "$kid" ] && sample unpack_tb_tar "$kid"
		elif [ "$m" = plain ]; then
			[ -n "$proc" ] || proc=$(pgrep -f "^tar -x -f $W/base.tar -C $dir\$" | head -n 1 || true)
			[ -n "$proc" ] && sample unpack_plain_tar "$proc"
		fi
		sleep 0.02
	done
	wait "$pid" || pg_bail "$W/restore.err" "$m: unpacking failed"
	put "${m}_unpack" "$run" "$(elapsed "$t0")"
	put "${m}_unpack_cpu" "$run" "$(awk '{ printf "%.2f", $1 + $2 }' "$COPIES/unpack.time")"
	put "${m}_unpack_user_sys" "$run" "$(awk '{ printf "%s+%s", $1, $2 }' "$COPIES/unpack.time")"
	if [ "$m" = plain ]; then
		pg_as_postgres "$COPIES" bash -c "touch '$dir/recovery.signal' && printf '%s\n' \
			\"restore_command = 'cp $CPARCH/%f %p'\" \"archive_mode = 'off'\" >>'$dir/postgresql.auto.conf'"
	elif [ "$m" = tb0 ]; then
		sed -i 's/ wal-fetch --tenant / wal-fetch --prefetch 0 --tenant /' "$dir/postgresql.auto.conf"
		grep -q 'wal-fetch --prefetch 0 --tenant' "$dir/postgresql.auto.conf" || pg_bail "$dir/postgresql.auto.conf" "no restore_command to edit"
	fi
	now
	t_start=$NOW
	pg_as_postgres "$COPIES" "$PG_BIN/pg_ctl" -D "$dir" -l "$log" \
		-o "-p ${CPORT[$m]} -c unix_socket_directories=$COPIES -c listen_addresses=''" start >/dev/null
	for _ in $(seq 30000); do
		grep -qF "database system is ready to accept connections" "$log" 2>/dev/null && break
		grep -qE "FATAL|database system is shut down" "$log" 2>/dev/null && pg_bail "$log" "$m: recovery failed"
		sleep 0.02
	done
	put "${m}_total" "$run" "$(elapsed "$t0")"
	[ "$("$PG_BIN/psql" -X -A -t -h "$COPIES" -p "${CPORT[$m]}" -d postgres -c "SELECT pg_is_in_recovery()")" = f ] ||
		pg_bail "$log" "$m: still in recovery"
	redo0=$(log_epoch "$log" "redo starts at")
	redo1=$(log_epoch "$log" "redo done at")
	ready=$(log_epoch "$log" "database system is ready to accept connections")
	put "${m}_start" "$run" "$(sub "$redo0" "$t_start")"
	put "${m}_replay" "$run" "$(sub "$redo1" "$redo0")"
	put "${m}_end" "$run" "$(sub "$ready" "$redo1")"
	usage=$(grep -m 1 -F "redo done at" "$log" | sed -n 's/.*CPU: user: \([0-9.]*\) s, system: \([0-9.]*\) s.*/\1 \2/p')
	put "${m}_startup_cpu" "$run" "$(awk -v u="${usage% *}" -v s="${usage#* }" 'BEGIN { printf "%.2f", u + s }')"
	put "${m}_restored" "$run" "$(grep -c 'restored log file "[0-9A-F]\{24\}" from archive' "$log" || true)"
	if [ "$run" = 1 ]; then
		got=$("$PG_BIN/psql" -X -A -t -h "$COPIES" -p "${CPORT[$m]}" -d bench -c \
			"SELECT (SELECT count(*) FROM pgbench_history) || '|' || (SELECT sum(abalance) FROM pgbench_accounts)")
		[ "$got" = "$HISTORY_ROWS|$BALANCE" ] ||
			pg_bail "$log" "$m: the copy has $got (pgbench_history rows|sum of balances), the source $HISTORY_ROWS|$BALANCE"
	fi
	stop_copy "$dir"
	rm -rf "$dir" "$log"
}
fetch_alone() { # RUN
	local seg
	printf '%s\n' "${BACKLOG[@]}" | grep -E '^[0-9A-F]{24}$' >"$W/segments"
	/usr/bin/time -f '%e %U %S %M' -o "$W/time.out" bash -c 'while read -r s; do
		"$1" wal-fetch --tenant acme --prefetch 0 "$s" "$2/RECOVERYXLOG" || exit 1; done <"$3"' _ "$TB" "$W/fetch" "$W/segments" ||
		pg_bail /dev/null "wal-fetch failed"
	read -r e u s _ <"$W/time.out"
	put fetch_tb "$1" "$e"
	put fetch_tb_cpu "$1" "$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')"
	/usr/bin/time -f '%e %U %S %M' -o "$W/time.out" bash -c 'while read -r s; do
		cp "$1/$s" "$2/RECOVERYXLOG" || exit 1; done <"$3"' _ "$CPARCH" "$W/fetch" "$W/segments" ||
		pg_bail /dev/null "cp failed"
	read -r e u s _ <"$W/time.out"
	put fetch_cp "$1" "$e"
	put fetch_cp_cpu "$1" "$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')"
	seg=$(head -n 1 "$W/segments")
	/usr/bin/time -f '%M' -o "$W/time.out" "$TB" wal-fetch --tenant acme --prefetch 0 "$seg" "$W/fetch/RECOVERYXLOG"
	PEAK[walfetch_hwm]=$(cat "$W/time.out")
	rm -f "$W/fetch/RECOVERYXLOG"
}
for run in $(seq "$RUNS"); do
	LINE=""
	fetch_alone "$run"
	if [ $((run % 2)) = 1 ]; then order="tb plain tb0"; else order="plain tb0 tb"; fi
	for m in $order; do restore_run "$m" "$run"; done
	echo "run $run of $RUNS (s):$LINE"
done
echo "load after: $(uptime)"

# ---------------------------------------------------------------- report

echo
echo "cluster: database bench $DB_BYTES bytes (pgbench -s $SCALE), all databases $CLUSTER_BYTES bytes;" \
	"base backup tar $TAR_BYTES bytes (tenant_backup bytes_in $TB_IN, stored $TB_STORED; zstd -1 $ZST_BYTES; zstd -1 | age $AGE_BYTES)"
echo
echo "### 1. Archiving under pgbench load ($LOAD_SECONDS s, -c 4 -j 2), every run"
echo
echo "| archiver | run | pgbench tps | WAL MiB written | segments completed | archived during load | segments/s archived | largest backlog | backlog at end | drain after load (s) | archiver CPU-s | CPU-ms per segment |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for side in tb cp; do for r in $(seq "$RUNS"); do
	name=$([ $side = tb ] && echo "archive_library tenant_backup" || echo "archive_command test && cp")
	printf '| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$r" "${V[l${side}_tps_$r]}" "${V[l${side}_walmb_$r]}" \
		"${V[l${side}_segs_$r]}" "${V[l${side}_arch_$r]}" "${V[l${side}_archps_$r]}" "${V[l${side}_peak_$r]}" \
		"${V[l${side}_left_$r]}" "${V[l${side}_drain_$r]}" "${V[l${side}_cpu_$r]}" \
		"$(div "$(awk -v c="${V[l${side}_cpu_$r]}" 'BEGIN { print c * 1000 }')" "${V[l${side}_total_$r]}" %.0f)"
done; done
echo
echo "### 2. Base backup (best of $BB_RUNS)"
echo
echo "| command | best of $BB_RUNS (s) | MB/s of tar | tenant_backup time ÷ this |"
echo "|---|---:|---:|---:|"
mbs() { awk -v b="$TAR_BYTES" -v s="$1" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }
TBB=$(bbest tb)
printf '| %s | %s | %s | %s |\n' "tenant_backup('acme', wait => true), wall" "$TBB" "$(mbs "$TBB")" 1.00x
printf '| %s | %s | %s | %s |\n' "— its job, started → finished" "$(bbest tbjob)" "$(mbs "$(bbest tbjob)")" ""
printf '| %s | %s | %s | %s |\n' "pg_basebackup -Ft -D - -X fetch -c fast --no-manifest \| wc -c" "$(bbest raw)" "$(mbs "$(bbest raw)")" "$(ratio "$TBB" "$(bbest raw)")"
printf '| %s | %s | %s | %s |\n' "pg_basebackup ... \| zstd -1 \| wc -c" "$(bbest zstd)" "$(mbs "$(bbest zstd)")" "$(ratio "$TBB" "$(bbest zstd)")"
printf '| %s | %s | %s | %s |\n' "pg_basebackup ... \| zstd -1 \| age > file" "$(bbest age)" "$(mbs "$(bbest age)")" "$(ratio "$TBB" "$(bbest age)")"
echo
echo "zstd -1's own CPU time in the pipeline (GNU time), every run: $(for r in $(seq $BB_RUNS); do printf '%s ' "${BB[zstdcpu_$r]}"; done)s"
echo
echo "### 3. Archiver throughput on one backlog of ${#BACKLOG[@]} files ($NSEGS segments, $(div "$PLAIN_WAL" 1048576 %.0f) MiB; stored by tenant_backup: $(div "$STORED_WAL" 1048576 %.0f) MiB), best of $RUNS"
echo
echo "| archiver | drain (s) | files/s | MB/s | archiver CPU-s | tenant_backup time ÷ this |"
echo "|---|---:|---:|---:|---:|---:|"
for side in tb cp; do
	r=$(best_run "d$side")
	name=$([ $side = tb ] && echo "archive_library tenant_backup" || echo "archive_command test && cp")
	printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "${V[d${side}_$r]}" "$(div "${#BACKLOG[@]}" "${V[d${side}_$r]}")" \
		"$(div "$(div "$PLAIN_WAL" 1000000 %.3f)" "${V[d${side}_$r]}" %.0f)" "${V[d${side}_cpu_$r]}" \
		"$(ratio "${V[dtb_$(best_run dtb)]}" "${V[d${side}_$r]}")"
done
echo
echo "### 4. Restore to the latest point: base backup ($TAR_BYTES bytes of tar) + $NSEGS WAL segments, best total of $RUNS"
echo
echo "| method | total (s) | unpack (s) | unpack CPU-s | start → redo starts (s) | replay (s) | startup CPU-s in replay | end of recovery (s) | segments restored | total ÷ plain |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
PLAIN_BEST=${V[plain_total_$(best_run plain_total)]}
for m in tb tb0 plain; do
	r=$(best_run "${m}_total")
	name=$(case $m in tb) echo "restore-pitr + wal-fetch (prefetch 8)" ;; tb0) echo "restore-pitr + wal-fetch --prefetch 0" ;;
		plain) echo "tar -x + restore_command cp" ;; esac)
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "${V[${m}_total_$r]}" "${V[${m}_unpack_$r]}" "${V[${m}_unpack_cpu_$r]}" \
		"${V[${m}_start_$r]}" "${V[${m}_replay_$r]}" "${V[${m}_startup_cpu_$r]}" "${V[${m}_end_$r]}" \
		"${V[${m}_restored_$r]}" "$(ratio "${V[${m}_total_$r]}" "$PLAIN_BEST")"
done
echo
echo "WAL fetch alone, $NSEGS segments one after the other (best of $RUNS):"
echo
echo "| command | wall (s) | segments/s | CPU-s |"
echo "|---|---:|---:|---:|"
for k in tb cp; do
	r=$(best_run "fetch_$k")
	name=$([ $k = tb ] && echo "tenant-backup wal-fetch --prefetch 0" || echo "cp")
	printf '| %s | %s | %s | %s |\n' "$name" "${V[fetch_${k}_$r]}" "$(div "$NSEGS" "${V[fetch_${k}_$r]}")" "${V[fetch_${k}_cpu_$r]}"
done
echo
echo "| process (peak while it ran) | VmHWM MiB | max RssAnon MiB |"
echo "|---|---:|---:|"
mrow() { printf '| %s | %s | %s |\n' "$1" "$(mib "${PEAK[${2}_hwm]:-}")" "$(mib "${PEAK[${2}_anon]:-}")"; }
mrow "archiver, tenant_backup, under load" load_archiver
mrow "archiver, tenant_backup, draining the backlog" drain_archiver
mrow "archiver, archive_command, draining the backlog" drain_cp_archiver
mrow "job worker, base backup" bb_worker
mrow "its pg_basebackup" bb_tool
mrow "restore-pitr, unpacking" unpack_tb
mrow "its tar" unpack_tb_tar
mrow "plain tar -x" unpack_plain_tar
printf '| %s | %s | %s |\n' "one wal-fetch --prefetch 0 (GNU time)" "$(mib "${PEAK[walfetch_hwm]:-}")" ""
