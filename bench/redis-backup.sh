#!/bin/bash
# Redis tenant backup through tenant-backup-agent-redis: logical backups (SCAN, pipelined
# PTTL/DUMP, sealed) of 1M small keys and of a ~1 GB dataset, and RDB snapshots of a
# dedicated server against `redis-cli --rdb` and the obvious encrypted pipeline, on the
# same data in the same run.
#
# Starts a throwaway control plane (PostgreSQL 15, test/lib/pg.sh, port 25483, with
# tenant_backup and a login role "agent" granted tenant_backup_agent) and two throwaway
# Redis 7 servers (test/lib/redis.sh: no persistence, diskless replication with
# --repl-diskless-sync-delay 0, Redis's defaults otherwise, rdbcompression included):
# "shared" on port 26481 and "dedicated" on 26482. Both servers, the file storage and
# every output file live on tmpfs (/dev/shm) when there is one, so no side pays for a
# disk. The passwords are throwaway ones of this run; the agent gets the dedicated
# server's ACL user and password from a 0600 --config file, and the shared server's in
# the locator (sealed by the catalog); redis-cli reads its password from REDISCLI_AUTH,
# never from argv. Data, written pipelined by a small Perl client (values are slices of
# a pseudo-random text of words and hex numbers, about 2x compressible by LZF and zstd):
#
#   A  KEYS (default 1,000,000) string keys "k:NNNNNNNN" of 24-byte values, shared db 1,
#      tenant "small" (redis://tbagent:PW@127.0.0.1:26481/1: a database-number tenant)
#   B  SIZE_MB (default 1000) x 100 string keys "blob:NNNNNNNN" of 10,000-byte values,
#      shared db 2, tenant "large" (the same, /2); and the same keys and values again in
#      db 2 of the dedicated server, tenant "dedi" (tier 'dedicated', redis://127.0.0.1:26482:
#      an RDB snapshot of the whole server)
#   tiny  one key in shared db 3, tenant "tiny", to show the fixed cost of a job
#
# Then, RUNS times each (default 3), interleaved, the best wall time counting:
#
#   agent     SELECT tenant_backup.tenant_backup(TENANT, 'redis')   (queues the job)
#             tenant-backup-agent-redis --once                      (claims, backs up, seals, reports, exits)
#             on "small" (A), on "small" under `taskset -c 0` (every thread of the agent on
#             one core; redis-server stays free to run on the other), "large" (B), "dedi"
#             (RDB) and "tiny"
#   scan      SCAN cursor COUNT 1000 in db 1 and db 2 by the same Perl client, the keys only
#             read and counted: what walking the keyspace alone costs (Perl's parsing
#             included: see its client CPU-s), not a backup (there is no stock logical Redis backup tool to compare with; redis-cli
#             --scan asks for COUNT 10 and needs 100k round trips for A)
#   rdb       redis-cli -p 26482 --user tbagent --rdb FILE                  (FILE on tmpfs)
#   pipeline  redis-cli -p 26482 --user tbagent --rdb - | zstd -1 | age -r RECIPIENT > file
#
# The agent's time runs from queueing the job to the agent's exit: it includes starting
# the agent, connecting to the control plane, claiming the job and reporting it; the
# job's own started->finished from tenant_backup.jobs is printed too. Each backup's
# object is removed from the storage after its run, outside the timing (only so that
# about 1 GB of objects per run does not pile up in RAM). Columns:
#   keys/s      keys in the dataset / wall seconds
#   MB/s        logical: the dataset's key and value bytes as written by SET / 10^6 / s;
#               RDB: bytes of the RDB file (the server LZF-compresses values) / 10^6 / s
#   client CPU-s  user + system time of the agent, of the Perl scan client, of redis-cli or
#               of the whole pipeline (GNU time's rusage of the command and its children),
#               the least of the runs; "keys / client CPU-s" is the agent's rate on one
#               core's worth of CPU
#   server CPU-s  redis-server's utime + stime + cutime + cstime (/proc/PID/stat, read
#               0.3 s after the command so that a snapshot's fork child has been reaped and
#               counted), the least of the runs
#   machine CPU-s  busy time of the whole machine (/proc/stat, all cores), the least of
#               the runs: noisy when others use the machine
#   server sent it to  the target of the server's "Starting BGSAVE for SYNC" log line:
#               "replicas sockets" (diskless: the fork child's RDB streamed as written) or
#               "disk" (written whole into the server's --dir as dump.rdb, then sent)
#
# Memory: one more agent run each of "large" and "dedi", untimed, sampling
# /proc/PID/status of the agent every 20 ms; VmHWM is the kernel's peak RSS of the process.
#
# Prints markdown tables; stops every server and removes everything it created at exit.
# Usage: bench/redis-backup.sh BIN_DIR [SIZE_MB] [RUNS] [KEYS]   (run as root, like make test)
set -euo pipefail
BIN=$(cd "$1" && pwd)
SIZE_MB=${2:-1000}
RUNS=${3:-3}
KEYS_A=${4:-1000000}
KEYS_B=$((SIZE_MB * 100))
VALUE_A=24
VALUE_B=10000
PG_PORT=25483
R1=26481
R2=26482
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/bench/lib.sh"
. "$HERE/test/lib/redis.sh"
AGENT=$BIN/tenant-backup-agent-redis

bench_prepare redisbench redis-server redis-cli perl taskset /usr/bin/time
# Throwaway passwords of this run (hex: nothing to escape in a URI); redis_start and rtool
# read these variables when called.
REDIS_ADMIN_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
REDIS_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
REDIS_PASSWORD_URI=$REDIS_PASSWORD
(
	umask 077
	printf 'redis_user = tbagent\nredis_password = %s\n' "$REDIS_PASSWORD" >"$W/agent.conf"
)

bench_control_plane $PG_PORT

redis_start "$W/shared" $R1
redis_start "$W/dedicated" $R2
echo "$(redis-server --version | cut -d' ' -f1-3), $(redis-cli --version)"

# ---------------------------------------------------------------- data

# A minimal RESP client: "load PORT DB PREFIX N SIZE" writes N keys PREFIX%08d of SIZE-byte
# values, 1000 SETs per round trip; "scan PORT DB MIN" walks a database with SCAN COUNT
# 1000, reading every key, and fails if it saw fewer than MIN keys (SCAN may repeat one).
# The password comes from REDIS_TOOL_AUTH.
cat >"$W/tool.pl" <<'PERL'
use strict;
use warnings;
use IO::Socket::INET;
my ($what, $port, $db, $prefix, $n, $size) = @ARGV;
my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or die "connect: $!\n";
binmode $s;
my $buf = '';
sub encode { return '*' . scalar(@_) . "\r\n" . join('', map { '$' . length($_) . "\r\n$_\r\n" } @_); }
sub more { my $r = sysread($s, $buf, 1 << 20, length $buf); die "connection closed\n" unless $r; }
sub line {
	my $i;
	more() while ($i = index($buf, "\r\n")) < 0;
	my $l = substr($buf, 0, $i);
	substr($buf, 0, $i + 2, '');
	die "server error: $l\n" if substr($l, 0, 1) eq '-';
	return $l;
}
sub bulk { # after a $<len> line
	my $len = shift;
	more() while length($buf) < $len + 2;
	my $v = substr($buf, 0, $len);
	substr($buf, 0, $len + 2, '');
	return $v;
}
print $s encode('AUTH', $ENV{REDIS_TOOL_AUTH}), encode('SELECT', $db);
line() for 1 .. 2;
if ($what eq 'load') {
	srand(42);
	my @w = qw(order customer shipped pending invoice total amount status created updated region north south
		east west account balance payment card visa session token user admin guest view cart checkout item sku
		price qty note);
	my $pool = '';
	$pool .= join(' ', map { $w[int rand @w] } 1 .. 6) . sprintf(' %08x %d; ', int rand 4294967296, int rand 100000)
		while length $pool < (8 << 20);
	my $span = length($pool) - $size;
	for (my $i = 0; $i < $n; $i += 1000) {
		my $last = $i + 1000 < $n ? $i + 1000 : $n;
		print $s join('', map { encode('SET', sprintf('%s%08d', $prefix, $_), substr($pool, ($_ * 2654435761) % $span, $size)) }
			$i .. $last - 1);
		line() for $i .. $last - 1;
	}
}
elsif ($what eq 'scan') {
	my ($cursor, $count) = ('0', 0);
	do {
		print $s encode('SCAN', $cursor, 'COUNT', 1000);
		line();                         # *2
		$cursor = bulk(substr(line(), 1));
		my $k = substr(line(), 1);
		for (1 .. $k) { bulk(substr(line(), 1)); }
		$count += $k;
	} while ($cursor ne '0');
	die "SCAN saw $count keys, fewer than $prefix\n" if $count < $prefix;
}
PERL
ptool() { REDIS_TOOL_AUTH=$REDIS_ADMIN_PASSWORD perl "$W/tool.pl" "$@"; }

echo "loading A: $KEYS_A keys of $VALUE_A bytes; B: $KEYS_B keys of $VALUE_B bytes (twice: shared and dedicated)"
now_s=$SECONDS
ptool load $R1 1 "k:" "$KEYS_A" $VALUE_A
ptool load $R1 2 "blob:" "$KEYS_B" $VALUE_B
ptool load $R2 2 "blob:" "$KEYS_B" $VALUE_B
rtool cmd $R1 3 SET "only" "one small key" >/dev/null
echo "loaded in $((SECONDS - now_s)) s"
[ "$(rtool cmd $R1 1 DBSIZE),$(rtool cmd $R1 2 DBSIZE),$(rtool cmd $R2 2 DBSIZE)" = "$KEYS_A,$KEYS_B,$KEYS_B" ] ||
	pg_bail "$W/shared/redis.log" "the datasets do not hold the keys they should"
# The dataset's bytes as SET wrote them: key names (2 + 8, 5 + 8 bytes) and values.
BYTES_A=$((KEYS_A * (10 + VALUE_A)))
BYTES_B=$((KEYS_B * (13 + VALUE_B)))
used_memory() { rtool cmd "$1" 0 INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p'; }
echo "shared server: used_memory $(used_memory $R1); dedicated server: used_memory $(used_memory $R2)"

psql_q "SELECT tenant_backup.tenant_create('small')" \
	"SELECT tenant_backup.tenant_add_database('small', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R1/1')" \
	"SELECT tenant_backup.tenant_create('large')" \
	"SELECT tenant_backup.tenant_add_database('large', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R1/2')" \
	"SELECT tenant_backup.tenant_create('tiny')" \
	"SELECT tenant_backup.tenant_add_database('tiny', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R1/3')" \
	"SELECT tenant_backup.tenant_create('dedi', tier => 'dedicated')" \
	"SELECT tenant_backup.tenant_add_database('dedi', 'redis', 'redis://127.0.0.1:$R2')" >/dev/null

# ---------------------------------------------------------------- timing

# Busy jiffies of the whole machine (user nice system irq softirq steal).
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# CPU jiffies of a redis-server, its reaped children (snapshot forks) included.
server_jiffies() { # PORT
	local dir=$W/shared
	[ "$1" = $R2 ] && dir=$W/dedicated
	awk '{ print $14 + $15 + $16 + $17 }' "/proc/$(cat "$dir/redis.pid")/stat"
}
seconds_since() { # JIFFIES_BEFORE JIFFIES_NOW
	awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }'
}

declare -A BEST=() CPU=() CLIENT=() SERVER=() MODE=()
# How the dedicated server sent its last snapshot: "replicas sockets" (diskless, streamed
# from the fork child as it writes) or "disk" (written whole to dump.rdb in its --dir first).
rdb_mode() { # KEY
	local mode
	mode=$(grep 'Starting BGSAVE for SYNC with target' "$W/dedicated/redis.log" | tail -n 1 | sed 's/.*target: //')
	[ -z "${MODE[$1]:-}" ] || [ "${MODE[$1]}" = "$mode" ] || mode="${MODE[$1]}, $mode"
	MODE[$1]=$mode
}
LINE=""
record() { # KEY SECONDS: keeps the best, and lists every run's time on its "run N" line
	BEST[$1]=$(min "${BEST[$1]:-}" "$2")
	LINE="$LINE $1=$2"
}
# The CPU columns of KEY, after a command that started with busy B0 and server jiffies S0.
record_cpu() { # KEY PORT B0 S0
	sleep 0.3
	CPU[$1]=$(min "${CPU[$1]:-}" "$(seconds_since "$3" "$(busy)")")
	SERVER[$1]=$(min "${SERVER[$1]:-}" "$(seconds_since "$4" "$(server_jiffies "$2")")")
	CLIENT[$1]=$(min "${CLIENT[$1]:-}" "$(awk '{ printf "%.2f", $1 + $2 }' "$W/time.out")")
}

declare -A PORT=([small]=$R1 [large]=$R1 [tiny]=$R1 [dedi]=$R2)
agent_run() { # [PREFIX COMMAND...]: the agent once, under GNU time (CPU into $W/time.out)
	/usr/bin/time -f '%U %S' -o "$W/time.out" "$@" "$AGENT" --config "$W/agent.conf" --control "$CONTROL" \
		--storage "file://$W/store" --master-key "$W/master.key" --name bench --once >>"$W/agent.log" 2>&1
}
# Queues a backup of TENANT and runs the agent once; records KEY (wall, from the queueing)
# and KEY_job (the job's started -> finished); then removes the object from storage.
declare -A BYTES_IN=() BYTES_STORED=()
agent_backup() { # KEY TENANT [PREFIX COMMAND...]
	local key=$1 tenant=$2 job b0 s0 t row
	shift 2
	b0=$(busy)
	s0=$(server_jiffies "${PORT[$tenant]}")
	now; t0=$NOW
	job=$(psql_q "SELECT tenant_backup.tenant_backup('$tenant', 'redis')")
	agent_run "$@" || pg_bail "$W/agent.log" "the agent failed on tenant $tenant"
	t=$(elapsed "$t0")
	record "$key" "$t"
	record_cpu "$key" "${PORT[$tenant]}" "$b0" "$s0"
	[ "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" = succeeded ] ||
		pg_bail "$W/agent.log" "job $job of tenant $tenant did not succeed"
	record "${key}_job" "$(job_seconds "$job")"
	row=$(psql_q "SELECT bytes_in, bytes_stored FROM tenant_backup.tenant_backups('$tenant') ORDER BY id DESC LIMIT 1")
	BYTES_IN[$tenant]=${row%|*}
	BYTES_STORED[$tenant]=${row#*|}
	rm -rf "${W:?}/store/$tenant"
}
timed() { # KEY PORT CMD...: the wall time of CMD, which must succeed, under GNU time
	local key=$1 port=$2 b0 s0 t
	shift 2
	b0=$(busy)
	s0=$(server_jiffies "$port")
	now; t0=$NOW
	/usr/bin/time -f '%U %S' -o "$W/time.out" "$@" || pg_bail "$W/cli.log" "$key failed"
	t=$(elapsed "$t0")
	record "$key" "$t"
	record_cpu "$key" "$port" "$b0" "$s0"
}
export REDISCLI_AUTH=$REDIS_PASSWORD
CLI=(redis-cli -h 127.0.0.1 -p $R2 --user tbagent)

for run in $(seq "$RUNS"); do
	LINE=""
	agent_backup small small
	agent_backup small_core small taskset -c 0
	timed scan_small $R1 env REDIS_TOOL_AUTH="$REDIS_ADMIN_PASSWORD" perl "$W/tool.pl" scan $R1 1 "$KEYS_A"
	agent_backup large large
	timed scan_large $R1 env REDIS_TOOL_AUTH="$REDIS_ADMIN_PASSWORD" perl "$W/tool.pl" scan $R1 2 "$KEYS_B"
	agent_backup rdb_agent dedi
	rdb_mode rdb_agent
	rm -f "$W/cli.rdb"
	timed rdb_cli $R2 bash -c 'log=$1; shift; exec "$@" >>"$log" 2>&1' rdb "$W/cli.log" "${CLI[@]}" --rdb "$W/cli.rdb"
	rdb_mode rdb_cli
	[ "$run" = 1 ] && RDB_BYTES=$(stat -c %s "$W/cli.rdb")
	rm -f "$W/cli.rdb" "$W/pipeline.age"
	timed rdb_pipeline $R2 bash -c 'set -o pipefail; log=$1 out=$2 recipient=$3; shift 3
		"$@" --rdb - 2>>"$log" | zstd -1 -q | age -r "$recipient" >"$out"' \
		pipeline "$W/cli.log" "$W/pipeline.age" "$AGE_RECIPIENT" "${CLI[@]}"
	rdb_mode rdb_pipeline
	AGE_BYTES=$(stat -c %s "$W/pipeline.age")
	rm -f "$W/pipeline.age"
	agent_backup tiny tiny
	echo "run $run of $RUNS (s):$LINE"
done
grep -q 'Transfer finished with success' "$W/cli.log" || pg_bail "$W/cli.log" "redis-cli --rdb did not report success"

# ---------------------------------------------------------------- memory

declare -A SAMPLES=()
sampled() { # KEY TENANT: one more agent run, its /proc/PID/status sampled every 20 ms
	local job agent_pid samples=0
	job=$(psql_q "SELECT tenant_backup.tenant_backup('$2', 'redis')")
	"$AGENT" --config "$W/agent.conf" --control "$CONTROL" --storage "file://$W/store" --master-key "$W/master.key" \
		--name bench --once >>"$W/agent.log" 2>&1 &
	agent_pid=$!
	while [ -d "/proc/$agent_pid" ] && [ "$(cut -d' ' -f3 "/proc/$agent_pid/stat" 2>/dev/null)" != Z ]; do
		sample "$1" "$agent_pid"
		samples=$((samples + 1))
		sleep 0.02
	done
	wait "$agent_pid" || pg_bail "$W/agent.log" "the sampled agent run of $2 failed"
	[ "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" = succeeded ] ||
		pg_bail "$W/agent.log" "the sampled job $job did not succeed"
	SAMPLES[$1]=$samples
	rm -rf "${W:?}/store/$2"
}
echo "memory: one more agent run each of large and dedi, sampled"
sampled large large
sampled rdb dedi
echo "load after: $(uptime)"
agent_log_oddities "$W/agent.log"

# ---------------------------------------------------------------- report

per() { awk -v n="$1" -v s="$2" 'BEGIN { if (n != "" && s + 0 > 0) printf "%.0f", n / s }'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (b != "" && s + 0 > 0) printf "%.0f", b / 1e6 / s }'; }
row() { printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$@"; }
logical() { # LABEL KEY KEYS BYTES
	row "$1" "${BEST[$2]}" "$(per "$3" "${BEST[$2]}")" "$(mbps "$4" "${BEST[$2]}")" "${CLIENT[$2]}" \
		"$(per "$3" "${CLIENT[$2]}")" "${SERVER[$2]}" "${CPU[$2]}"
}
job_row() { # LABEL KEY KEYS BYTES
	row "$1" "${BEST[$2]}" "$(per "$3" "${BEST[$2]}")" "$(mbps "$4" "${BEST[$2]}")" "" "" "" ""
}

echo
echo "A: $KEYS_A keys of $VALUE_A bytes ($BYTES_A bytes of keys and values), backup bytes_in ${BYTES_IN[small]}," \
	"stored ${BYTES_STORED[small]}; B: $KEYS_B keys of $VALUE_B bytes ($BYTES_B bytes), backup bytes_in" \
	"${BYTES_IN[large]}, stored ${BYTES_STORED[large]}; RDB of the dedicated server (B): $RDB_BYTES bytes," \
	"agent's bytes_in ${BYTES_IN[dedi]}, stored ${BYTES_STORED[dedi]}; zstd -1 | age file $AGE_BYTES bytes"
echo
echo "| logical backup | best of $RUNS (s) | keys/s | MB/s | client CPU-s | keys / client CPU-s | redis-server CPU-s | machine CPU-s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
logical "A: tenant_backup('small') + agent --once, wall" small "$KEYS_A" "$BYTES_A"
job_row "A: — its job, started → finished" small_job "$KEYS_A" "$BYTES_A"
logical "A: the same, agent under taskset -c 0 (one core)" small_core "$KEYS_A" "$BYTES_A"
job_row "A: — its job, started → finished" small_core_job "$KEYS_A" "$BYTES_A"
logical "A: SCAN COUNT 1000 only (Perl client)" scan_small "$KEYS_A" "$BYTES_A"
logical "B: tenant_backup('large') + agent --once, wall" large "$KEYS_B" "$BYTES_B"
job_row "B: — its job, started → finished" large_job "$KEYS_B" "$BYTES_B"
logical "B: SCAN COUNT 1000 only (Perl client)" scan_large "$KEYS_B" "$BYTES_B"
logical "tiny (1 key): tenant_backup('tiny') + agent --once" tiny "" ""
job_row "tiny: — its job, started → finished" tiny_job "" ""
echo
rrow() { # LABEL KEY
	printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${BEST[$2]}" "$(mbps "$RDB_BYTES" "${BEST[$2]}")" \
		"${CLIENT[$2]:-}" "${SERVER[$2]:-}" "${CPU[$2]:-}" "${MODE[${2%_job}]:-}" "$(ratio "${BEST[$2]}" "${BEST[rdb_cli]}")"
}
echo "| RDB snapshot of the dedicated server (B) | best of $RUNS (s) | MB/s | client CPU-s | redis-server CPU-s | machine CPU-s | server sent it to | this ÷ redis-cli --rdb |"
echo "|---|---:|---:|---:|---:|---:|---|---:|"
rrow "tenant_backup('dedi') + agent --once, wall" rdb_agent
rrow "— its job, started → finished" rdb_agent_job
rrow "redis-cli --rdb FILE" rdb_cli
rrow "redis-cli --rdb - \| zstd -1 \| age > file" rdb_pipeline
echo
echo "| agent (peak while it ran) | samples | VmHWM MiB | max RssAnon MiB | max RssFile MiB |"
echo "|---|---:|---:|---:|---:|"
for k in large rdb; do
	printf '| %s | %s | %s | %s | %s |\n' "$([ $k = large ] && echo "logical backup of B" || echo "RDB snapshot of B")" \
		"${SAMPLES[$k]}" "$(mib "${PEAK[${k}_hwm]:-}")" "$(mib "${PEAK[${k}_anon]:-}")" "$(mib "${PEAK[${k}_file]:-}")"
done
echo
rdb_ratio=$(ratio "${BEST[rdb_agent]}" "${BEST[rdb_cli]}")
wall_rate=$(per "$KEYS_A" "${BEST[small]}")
core_rate=$(per "$KEYS_A" "${BEST[small_core]}")
cpu_rate=$(per "$KEYS_A" "${CLIENT[small]}")
echo "targets: RDB within 1.1x of redis-cli --rdb: $rdb_ratio (the job alone:" \
	"$(ratio "${BEST[rdb_agent_job]}" "${BEST[rdb_cli]}")), $(verdict "${rdb_ratio%x}" 1.1);" \
	"logical at least 200k keys/s on one core: $core_rate keys/s with the agent on one core" \
	"($wall_rate unpinned; $cpu_rate keys per agent CPU-second)," \
	"$(verdict 200000 "$core_rate")"
