#!/bin/bash
# MongoDB tenant backup and restore through tenant-backup-agent-mongodb against a plain
# libmongoc cursor read and a plain libmongoc bulk insert of the same documents, in the
# same run.
#
# Starts a throwaway control plane (PostgreSQL 15, test/lib/pg.sh, port 25484, with
# tenant_backup and a login role "agent" granted tenant_backup_agent) and a MongoDB
# server: test/lib/fakemongo.py (test/lib/mongo.sh) on 127.0.0.1:27484 as the primary of
# the one-node replica set rs0, so the agent reads in one snapshot session as on a real
# replica set. fakemongo is a single-threaded Python process: it is expected to be the
# bottleneck of both sides, and its CPU time is measured for every command. With
# TB_TEST_MONGO_URI=mongodb://HOST:PORT set, that server is used instead (nothing is
# started; the databases tb_bench* are dropped before and after; the fakemongo CPU
# column stays empty). The server, the storage and every file live on tmpfs (/dev/shm)
# when there is one, so no side pays for a disk.
#
# Data: database tb_bench, one collection "docs" of SIZE_MB (default 1000) x 10^6 /
# DOC_BYTES (default 1000) documents of about DOC_BYTES bytes of BSON each, shaped as
# test/lib/mongo_tool.py's "many" makes them (ObjectId _id, int32, int64, double, date,
# bool, a UUID every 3rd, a subdocument with an array every 4th, a decimal128 every 5th,
# then a pseudo-random [a-z0-9] string padding it to size), written by bench/mongo_plain.c
# (built here with cc and pkg-config libmongoc-1.0); tenant "bench" is
# tb_bench on this server, tenant "tiny" a database of one document (the fixed cost).
#
# Then, RUNS times each (default 3), interleaved, the best wall time counting:
#
#   backup   agent   SELECT tenant_backup.tenant_backup('bench', 'mongodb')  (queues the job)
#                    tenant-backup-agent-mongodb --once    (claims, dumps, seals, reports, exits)
#            plain   mongo_plain read: mongoc_collection_find_with_opts(empty filter, no
#                    options) and mongoc_cursor_next over the whole collection, counting
#                    documents and bytes: the agent's own cursor (it adds only its snapshot
#                    session), the server's default batches (101 documents, then 16 MiB)
#            and the same two on tenant "tiny"
#   restore  agent   SELECT tenant_backup.tenant_restore('bench', 'mongodb',
#                    target => 'tb_bench_copy_N', wait => false) + agent --once (reads the
#                    object from storage, opens it, loads it: ordered bulk inserts of 1000
#                    documents or 8 MB, validation bypassed, CRC checked, renamed into place)
#            plain   mongo_plain insert: the same documents (written once, untimed, by a
#                    plain read into a file of concatenated BSON on tmpfs) in ordered bulk
#                    inserts of 1000 documents or 8 MB, validation bypassed, into
#                    tb_bench_plain_N
#
# Every restore, the agent's and the plain one, starts on a freshly started, empty
# fakemongo (stopped and started again outside the timing; with TB_TEST_MONGO_URI the
# copies are dropped instead): fakemongo's in-memory oplog keeps every inserted document
# for good, even once its collection is dropped, so 1 GB restores on one process would
# pile up about 5 GB of server memory each and every later run would pay for the earlier
# ones. The restores use the last backup of the timed runs (the earlier runs' objects
# are deleted from storage after their run, outside the timing). Each restore is
# checked: the agent's job succeeded and says it loaded every document; the plain
# insert counted them; the first run's copies are read back (documents and bytes).
#
# The agent's times run from queueing the job to the agent's exit: they include starting
# the agent, connecting to the control plane, claiming the job and reporting it; the
# job's own started->finished from tenant_backup.jobs is printed too. Columns:
#   docs/s, MB/s     documents / seconds; BSON bytes of the documents / 10^6 / seconds
#   client CPU-s     user + system time of the agent or of mongo_plain (GNU time), in the
#                    run with the best wall time
#   fakemongo CPU-s  utime + stime of the fakemongo process (/proc/PID/stat, every thread)
#                    over the command, in the same run; "busy" is that / the wall time
#                    (each run's is printed in brackets on its "run N" line: Python's
#                    garbage collector of a server holding ~10M objects makes it vary)
# Every timed command runs in the background while this script samples /proc/PID/status
# of it and of fakemongo every 50 ms (the same for both sides): VmHWM is the kernel's peak
# RSS of the process.
#
# Prints markdown tables; stops every server it started and removes everything at exit.
# Usage: bench/mongodb-backup.sh BIN_DIR [SIZE_MB] [RUNS] [DOC_BYTES]   (as root, like make test)
set -euo pipefail
BIN=$(cd "$1" && pwd)
SIZE_MB=${2:-1000}
RUNS=${3:-3}
DOC_BYTES=${4:-1000}
PG_PORT=25484
MONGO_PORT=27484
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/bench/lib.sh"
. "$HERE/test/lib/mongo.sh"
AGENT=$BIN/tenant-backup-agent-mongodb

bench_prepare mongobench cc pkg-config /usr/bin/time
pkg-config --exists libmongoc-1.0 || pg_bail /dev/null "libmongoc-1.0 is not installed (make deps)"
# shellcheck disable=SC2046 # pkg-config's flags are words
cc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$W/mongo_plain" "$HERE/bench/mongo_plain.c" \
	$(pkg-config --cflags --libs libmongoc-1.0)
PLAIN=$W/mongo_plain
DB=tb_bench
NDOCS=$((SIZE_MB * 1000000 / DOC_BYTES))

echo "load before: $(uptime)"
echo "working directory: $W ($(df --output=fstype "$W" | tail -1))"
pg_start "$W/pg" $PG_PORT "tenant_backup.storage = 'file://$W/store'
tenant_backup.master_key_file = '$W/master.key'
tenant_backup.default_schedule = '100 years'"
psql_q "CREATE EXTENSION tenant_backup" "CREATE ROLE agent LOGIN" "GRANT tenant_backup_agent TO agent" >/dev/null
CONTROL="host=$W/pg port=$PG_PORT dbname=postgres user=agent"

# A fresh server: fakemongo started again (empty), or the real server's databases dropped.
drop_ours() {
	local db
	for db in $(mtool cmd "$MONGO_URI_BASE" admin '{"listDatabases": 1, "nameOnly": true}' |
		grep -o '"name": "tb_bench[a-z0-9_]*"' | cut -d'"' -f4); do
		mtool cmd "$MONGO_URI_BASE" "$db" '{"dropDatabase": 1}' >/dev/null
	done
}
fresh_server() {
	if [ -n "${TB_TEST_MONGO_URI:-}" ]; then
		drop_ours
	else
		mongo_stop "$W/mongo"
		mongo_start "$W/mongo" $MONGO_PORT rs0
	fi
}
if [ -n "${TB_TEST_MONGO_URI:-}" ]; then
	mongo_start "$W/mongo" $MONGO_PORT
	drop_ours
	on_exit drop_ours
	SERVER_NAME="MongoDB at $TB_TEST_MONGO_URI"
else
	mongo_start "$W/mongo" $MONGO_PORT rs0
	SERVER_NAME="fakemongo (test/lib/fakemongo.py, Python $(/usr/bin/python3 -c 'import sys; print(sys.version.split()[0])'), replica set rs0)"
fi
server_pid() { [ -f "$W/mongo/fakemongo.pid" ] && cat "$W/mongo/fakemongo.pid" || true; }
echo "server: $SERVER_NAME, version $(mtool cmd "$MONGO_URI_BASE" admin '{"buildInfo": 1}' |
	grep -o '"version": "[^"]*"' | head -n 1 | cut -d'"' -f4); libmongoc $(pkg-config --modversion libmongoc-1.0)"

# ---------------------------------------------------------------- data

echo "loading $NDOCS documents of about $DOC_BYTES bytes into $DB.docs"
now; t0=$NOW
"$PLAIN" fill "$MONGO_URI_BASE" $DB docs "$NDOCS" "$DOC_BYTES" >"$W/out" || pg_bail /dev/null "loading failed"
read -r DOCS BYTES <"$W/out"
echo "loaded $DOCS documents, $BYTES bytes of BSON, in $(elapsed "$t0") s" \
	"(fakemongo RSS now $(awk '/^VmRSS/ { printf "%.0f MiB", $2 / 1024 }' "/proc/$(server_pid)/status" 2>/dev/null || echo n/a))"
"$PLAIN" fill "$MONGO_URI_BASE" ${DB}_tiny docs 1 "$DOC_BYTES" >/dev/null
for t in bench tiny; do
	db=$DB
	[ $t = tiny ] && db=${DB}_tiny
	psql_q "SELECT tenant_backup.tenant_create('$t')" \
		"SELECT tenant_backup.tenant_add_database('$t', 'mongodb', '$MONGO_URI_BASE/$db')" >/dev/null
done

# ---------------------------------------------------------------- timing

server_jiffies() { # PID
	[ -n "$1" ] && awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || true
}
seconds_since() { # JIFFIES_BEFORE JIFFIES_NOW
	[ -n "$1" ] && [ -n "$2" ] &&
		awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }' || true
}

declare -A BEST=() CLIENT=() SERVER=()
LINE=""
# Keeps KEY's best wall time and the client and server CPU of that run; lists every run's
# time (and server CPU-s, in brackets) on its "run N" line.
record() { # KEY SECONDS [CLIENT_CPU SERVER_CPU]
	if [ -z "${BEST[$1]:-}" ] || awk -v a="$2" -v b="${BEST[$1]}" 'BEGIN { exit !(a + 0 < b + 0) }'; then
		BEST[$1]=$2
		CLIENT[$1]=${3:-}
		SERVER[$1]=${4:-}
	fi
	LINE="$LINE $1=$2${4:+ [$4]}"
}

# Runs CMD under GNU time in the background, sampling it and the server every 50 ms
# (peaks into PEAK[KEY_*] and PEAK[server_*]); sets T (wall), C (client CPU-s) and S
# (server CPU-s). CMD's stdout goes to $W/out, its stderr to LOG.
T="" C="" S=""
run() { # KEY LOG CMD...
	local key=$1 log=$2 tpid child="" spid s0
	shift 2
	spid=$(server_pid)
	s0=$(server_jiffies "$spid")
	now; t0=$NOW
	/usr/bin/time -f '%U %S' -o "$W/time.out" "$@" >"$W/out" 2>>"$log" &
	tpid=$!
	while [ -d "/proc/$tpid" ] && [ "$(cut -d' ' -f3 "/proc/$tpid/stat" 2>/dev/null)" != Z ]; do
		[ -n "$child" ] || child=$(pgrep -P "$tpid" | head -n 1 || true)
		[ -n "$child" ] && sample "$key" "$child"
		[ -n "$spid" ] && sample server "$spid"
		sleep 0.05
	done
	wait "$tpid" || pg_bail "$log" "$key failed: $*"
	T=$(elapsed "$t0")
	S=$(seconds_since "$s0" "$(server_jiffies "$spid")")
	C=$(awk '{ printf "%.2f", $1 + $2 }' "$W/time.out")
}

agent_cmd=("$AGENT" --control "$CONTROL" --storage "file://$W/store" --master-key "$W/master.key" --name bench --once)
job_ok() { # JOB
	[ "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $1")" = succeeded ] ||
		pg_bail "$W/agent.log" "job $1 did not succeed: $(psql_q "SELECT error FROM tenant_backup.jobs WHERE id = $1")"
}
# Queues a backup of TENANT and runs the agent once: KEY (wall, from the queueing) and
# KEY_job (the job's started -> finished). The previous backup's object is deleted.
declare -A OBJECT=()
agent_backup() { # KEY TENANT
	local job spid s0
	spid=$(server_pid)
	s0=$(server_jiffies "$spid")
	now; t1=$NOW
	job=$(psql_q "SELECT tenant_backup.tenant_backup('$2', 'mongodb')")
	run "$1" "$W/agent.log" "${agent_cmd[@]}"
	record "$1" "$(elapsed "$t1")" "$C" "$(seconds_since "$s0" "$(server_jiffies "$spid")")"
	job_ok "$job"
	record "$1_job" "$(job_seconds "$job")"
	[ -n "${OBJECT[$2]:-}" ] && rm -f "$W/store/${OBJECT[$2]}"
	OBJECT[$2]=$(psql_q "SELECT object_key FROM tenant_backup.tenant_backups('$2') WHERE status = 'complete' LIMIT 1")
}
plain_read() { # KEY DB: the plain cursor read; checks it saw every document
	run "$1" "$W/plain.log" "$PLAIN" read "$MONGO_URI_BASE" "$2" docs
	record "$1" "$T" "$C" "$S"
	[ "$2" != $DB ] || [ "$(cat "$W/out")" = "$DOCS $BYTES" ] ||
		pg_bail /dev/null "the plain read of $2 saw $(cat "$W/out"), not $DOCS $BYTES"
}

echo "backups: $RUNS runs"
for r in $(seq "$RUNS"); do
	LINE=""
	agent_backup backup bench
	plain_read read $DB
	agent_backup tiny tiny
	plain_read tiny_read ${DB}_tiny
	echo "run $r of $RUNS (s):$LINE"
done
ROW=$(psql_q "SELECT bytes_in, bytes_stored FROM tenant_backup.tenant_backups('bench') WHERE status = 'complete' LIMIT 1")
BYTES_IN=${ROW%|*}
BYTES_STORED=${ROW#*|}
BACKUP_LINE=$(grep -F 'backup of tenant "bench"' "$W/agent.log" | grep succeeded | tail -n 1 | sed 's/.*succeeded: //')

# The documents as a plain read gets them, for the plain insert (untimed).
"$PLAIN" read "$MONGO_URI_BASE" $DB docs "$W/docs.bson" >"$W/out"
[ "$(cat "$W/out")" = "$DOCS $BYTES" ] || pg_bail /dev/null "writing docs.bson saw $(cat "$W/out")"

check_copy() { # DB: reads a copy back (documents and bytes)
	"$PLAIN" read "$MONGO_URI_BASE" "$1" docs >"$W/out"
	[ "$(cat "$W/out")" = "$DOCS $BYTES" ] || pg_bail "$W/agent.log" "$1 holds $(cat "$W/out"), not $DOCS $BYTES"
}

echo "restores: $RUNS runs, each on a fresh server"
for r in $(seq "$RUNS"); do
	LINE=""
	fresh_server
	spid=$(server_pid)
	s0=$(server_jiffies "$spid")
	now; t1=$NOW
	job=$(psql_q "SELECT tenant_backup.tenant_restore('bench', 'mongodb', target => '${DB}_copy_$r', wait => false)")
	run restore "$W/agent.log" "${agent_cmd[@]}"
	record restore "$(elapsed "$t1")" "$C" "$(seconds_since "$s0" "$(server_jiffies "$spid")")"
	job_ok "$job"
	record restore_job "$(job_seconds "$job")"
	grep -q " $DOCS documents into \"${DB}_copy_$r\"" "$W/agent.log" ||
		pg_bail "$W/agent.log" "the restore's log line does not say $DOCS documents"
	[ "$r" = 1 ] && check_copy "${DB}_copy_$r"
	fresh_server
	run insert "$W/plain.log" "$PLAIN" insert "$MONGO_URI_BASE" "${DB}_plain_$r" docs "$W/docs.bson"
	record insert "$T" "$C" "$S"
	[ "$(cat "$W/out")" = "$DOCS $BYTES" ] || pg_bail /dev/null "the plain insert wrote $(cat "$W/out")"
	[ "$r" = 1 ] && check_copy "${DB}_plain_$r"
	echo "run $r of $RUNS (s):$LINE"
done
RESTORE_LINE=$(grep -F 'restore of tenant "bench"' "$W/agent.log" | grep succeeded | tail -n 1 | sed 's/.*succeeded: //')
echo "load after: $(uptime)"
if grep -v -E 'started as|succeeded:|stopped$' "$W/agent.log" | grep -q .; then
	echo "agent log lines other than start, success and stop:"
	grep -v -E 'started as|succeeded:|stopped$' "$W/agent.log" | sort | uniq -c | sed 's/^/    /'
fi

# ---------------------------------------------------------------- report

per() { awk -v n="$1" -v s="$2" 'BEGIN { if (n != "" && s + 0 > 0) printf "%.0f", n / s }'; }
mbps() { awk -v b="$BYTES" -v s="$1" 'BEGIN { if (s + 0 > 0) printf "%.1f", b / 1e6 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
busy() { awk -v c="$1" -v t="$2" 'BEGIN { if (c != "" && t + 0 > 0) printf "%.0f%%", 100 * c / t }'; }
mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 <= t + 0) ? "met" : "NOT met" }'; }
row() { # LABEL KEY [BASE]: BASE is the plain command's key for the ratio column
	local k=$2 docs=$DOCS
	case $k in tiny*) docs=1 ;; esac
	printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${BEST[$k]}" "$(per "$docs" "${BEST[$k]}")" \
		"$([ "$docs" = 1 ] || mbps "${BEST[$k]}")" "${CLIENT[$k]:-}" "${SERVER[$k]:-}" \
		"$(busy "${SERVER[$k]:-}" "${BEST[$k]}")" "$([ -n "${3:-}" ] && ratio "${BEST[$k]}" "${BEST[$3]}")"
}

echo
echo "database $DB: $DOCS documents, $BYTES bytes of BSON (about $DOC_BYTES each) in one collection;" \
	"backup bytes_in $BYTES_IN (the mongodump archive), stored object $BYTES_STORED bytes;" \
	"backup: $BACKUP_LINE; restore: $RESTORE_LINE"
echo
echo "| backup | best of $RUNS (s) | docs/s | MB/s | client CPU-s | fakemongo CPU-s | fakemongo busy | ÷ plain read |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
row "agent: tenant_backup('bench', 'mongodb') + agent --once, wall" backup read
row "— its job, started → finished" backup_job read
row "plain: libmongoc cursor read of the collection" read read
row "tiny (1 document): tenant_backup + agent --once, wall" tiny tiny_read
row "tiny: — its job, started → finished" tiny_job tiny_read
row "tiny: plain cursor read" tiny_read tiny_read
echo
echo "| restore | best of $RUNS (s) | docs/s | MB/s | client CPU-s | fakemongo CPU-s | fakemongo busy | ÷ plain insert |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
row "agent: tenant_restore('bench', 'mongodb', target => ...) + agent --once, wall" restore insert
row "— its job, started → finished" restore_job insert
row "plain: libmongoc ordered bulk insert of the same documents" insert insert
echo
echo "| process (peak over all its timed runs) | VmHWM MiB | max RssAnon MiB | max RssFile MiB |"
echo "|---|---:|---:|---:|"
mrow() { printf '| %s | %s | %s | %s |\n' "$1" "$(mib "${PEAK[$2_hwm]:-}")" "$(mib "${PEAK[$2_anon]:-}")" \
	"$(mib "${PEAK[$2_file]:-}")"; }
mrow "tenant-backup-agent-mongodb, backup" backup
mrow "tenant-backup-agent-mongodb, restore" restore
mrow "mongo_plain read" read
mrow "mongo_plain insert" insert
[ -n "${PEAK[server_hwm]:-}" ] && mrow "fakemongo (all of the timed runs)" server
echo
backup_ratio=$(ratio "${BEST[backup]}" "${BEST[read]}")
echo "target: backup within 1.2x of the plain cursor read: $backup_ratio" \
	"(the job alone: $(ratio "${BEST[backup_job]}" "${BEST[read]}")), $(verdict "${backup_ratio%x}" 1.2);" \
	"restore: $(ratio "${BEST[restore]}" "${BEST[insert]}") of the plain bulk insert" \
	"(the job alone: $(ratio "${BEST[restore_job]}" "${BEST[insert]}"))"
