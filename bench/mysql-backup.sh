#!/bin/bash
# MariaDB tenant backup through tenant-backup-agent-mysql against plain mariadb-dump,
# the obvious encrypted pipeline and mydumper, on the same database in the same run.
#
# Starts a throwaway control plane (PostgreSQL 15, test/lib/pg.sh, port 25482, with
# tenant_backup and a login role "agent" granted tenant_backup_agent, as
# test/lib/mysql_tenants.sh sets it up) and a throwaway MariaDB 10.11 (test/lib/mariadb.sh,
# port 23482, innodb_buffer_pool_size 64M as mariadb_start sets it); both servers, the
# file storage and every output file live on tmpfs (/dev/shm) when there is one, so no
# side pays for a disk. Fills database "bench" with about SIZE_MB (default 1000) MB of
# mariadb-dump output in four InnoDB tables of ints, varchar, text, decimal and datetime
# (customers, orders, order_items, events; INSERT ... SELECT from seq_1_to_N in batches
# until the dump reaches SIZE_MB) and registers it as tenant "bench", locator
# mysql://bench:...@127.0.0.1:23482/bench (TCP, as every client below). Then, RUNS times
# each (default 3), interleaved, the best wall time counting:
#
#   agent      SELECT tenant_backup.tenant_backup('bench', 'mysql')   (queues the job)
#              tenant-backup-agent-mysql --once                       (claims, dumps, seals, reports, exits)
#   plain      mariadb-dump OPTIONS bench > /dev/null
#   pipeline   mariadb-dump OPTIONS bench | zstd -1 | age -r RECIPIENT > file
#   mydumper   mydumper -G -E -R -B bench -o DIR                      (default 4 threads)
#   mydumper   mydumper -G -E -R -B bench -o DIR --threads 2          (the machine's core count)
#
# OPTIONS are the agent's own: --single-transaction --routines --triggers --events
# --hex-blob --no-tablespaces --default-character-set=utf8mb4 --skip-dump-date. Every
# client reads its credentials from an option file (mariadb-dump --defaults-extra-file,
# mydumper --defaults-file), never from argv. mydumper's output directory is removed
# outside the timing. The agent's time runs from queueing the job to the agent's exit:
# it includes starting the agent, connecting to the control plane, claiming the job and
# reporting it. The job's own started->finished time from tenant_backup.jobs and the
# same commands on a one-row database ("tiny") are printed too, to separate that fixed
# cost. MB/s = bytes of mariadb-dump's output / 10^6 / seconds. "CPU-s" is the busy time
# of the whole machine (/proc/stat, all cores; the MariaDB server included) over the
# command, the least of the runs: it is noisy when others use the machine.
#
# Memory: one more agent run, untimed, sampling /proc/PID/status of the agent and of
# its mariadb-dump child every 20 ms; VmHWM is the kernel's peak RSS of the process.
#
# Prints markdown tables; stops both servers and removes everything it created at exit.
# Usage: bench/mysql-backup.sh BIN_DIR [SIZE_MB] [RUNS]     (run as root, like make test)
set -euo pipefail
BIN=$(cd "$1" && pwd)
SIZE_MB=${2:-1000}
RUNS=${3:-3}
PG_PORT=25482
MY_PORT=23482
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/bench/lib.sh"
. "$HERE/test/lib/mariadb.sh"
AGENT=$BIN/tenant-backup-agent-mysql

bench_prepare mybench mariadb-dump mydumper
# A throwaway password of this run, for the catalog's sealed copy and the option file.
MY_PASSWORD=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
(
	umask 077
	printf '[client]\nuser=bench\npassword=%s\nhost=127.0.0.1\nport=%s\nprotocol=TCP\n' "$MY_PASSWORD" $MY_PORT \
		>"$W/my.cnf"
)

bench_control_plane $PG_PORT

mariadb_start "$W/my" $MY_PORT
mariadb_create_user bench "$MY_PASSWORD"
echo "MariaDB $(my_q "SELECT VERSION()"), innodb_buffer_pool_size $(my_q "SELECT @@innodb_buffer_pool_size DIV 1048576") MiB"

# ---------------------------------------------------------------- data

DUMP_OPTS=(--single-transaction --routines --triggers --events --hex-blob --no-tablespaces
	--default-character-set=utf8mb4 --skip-dump-date)
my_dump() { # DB: mariadb-dump as the agent runs it, to stdout
	mariadb-dump --defaults-extra-file="$W/my.cnf" "${DUMP_OPTS[@]}" -- "$1"
}

my_q "CREATE DATABASE bench" "CREATE DATABASE tiny"
my_db tiny "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))" "INSERT INTO t VALUES (1, 'one')"
my_db bench "CREATE TABLE customers (
	id INT PRIMARY KEY, name VARCHAR(80) NOT NULL, email VARCHAR(120) NOT NULL, country CHAR(2) NOT NULL,
	created DATETIME NOT NULL, balance DECIMAL(12,2) NOT NULL, notes TEXT, KEY (email))" \
	"CREATE TABLE orders (
	id BIGINT PRIMARY KEY, customer_id INT NOT NULL, status VARCHAR(16) NOT NULL, total DECIMAL(12,2) NOT NULL,
	placed DATETIME NOT NULL, shipped DATETIME NULL, note VARCHAR(255), KEY (customer_id))" \
	"CREATE TABLE order_items (
	order_id BIGINT NOT NULL, line SMALLINT NOT NULL, sku VARCHAR(32) NOT NULL, qty INT NOT NULL,
	price DECIMAL(10,2) NOT NULL, PRIMARY KEY (order_id, line))" \
	"CREATE TABLE events (
	id BIGINT PRIMARY KEY, at DATETIME NOT NULL, kind VARCHAR(32) NOT NULL, customer_id INT, payload TEXT NOT NULL,
	KEY (at))" \
	"CREATE VIEW big_orders AS SELECT id, customer_id, total FROM orders WHERE total > 500" \
	"CREATE TRIGGER orders_touch BEFORE UPDATE ON orders FOR EACH ROW SET NEW.note = CONCAT(OLD.note, ' (changed)')" \
	"CREATE PROCEDURE customer_orders(IN c INT) SELECT * FROM orders WHERE customer_id = c"

# One batch: BATCH customers, 10 orders each, 3 items per order, 10 events per customer.
# Text is words and numbers with an MD5 here and there, about as compressible as
# application data (zstd -1 makes it about 4.5x smaller, far less than pgbench's 80x).
BATCH=10000
add_batch() { # N: the Nth batch, from 0
	local c0=$(($1 * BATCH + 1)) c1=$((($1 + 1) * BATCH))
	my_db bench "SET SESSION unique_checks = 0" \
		"INSERT INTO customers SELECT seq,
	CONCAT(ELT(1 + seq % 12, 'Ada', 'Bruno', 'Chiara', 'Dmitri', 'Elena', 'Farid', 'Greta', 'Hiro', 'Ines', 'Jonas', 'Kaori', 'Luis'),
		' ', ELT(1 + (seq DIV 12) % 10, 'Rossi', 'Novak', 'Schmidt', 'Garcia', 'Tanaka', 'Okafor', 'Larsen', 'Moreau', 'Silva', 'Kowalski')),
	CONCAT('user', seq, '.', LEFT(MD5(seq), 6), '@', ELT(1 + seq % 5, 'example.com', 'mail.test', 'corp.example', 'shop.test', 'inbox.example')),
	ELT(1 + seq % 8, 'DE', 'FR', 'IT', 'ES', 'JP', 'US', 'BR', 'PL'),
	'2020-01-01' + INTERVAL (seq * 7919) % 150000000 SECOND,
	((seq * 104729) % 10000000) / 100,
	IF(seq % 4 = 0, NULL, CONCAT('Prefers ', ELT(1 + seq % 3, 'email', 'phone', 'post'), ' contact; account ', MD5(seq * 3),
		'; segment ', seq % 17, '; last reviewed by team ', ELT(1 + seq % 4, 'north', 'south', 'east', 'west'), '.'))
	FROM seq_${c0}_to_${c1}" \
		"INSERT INTO orders SELECT seq, 1 + (seq - 1) DIV 10,
	ELT(1 + seq % 5, 'new', 'paid', 'shipped', 'delivered', 'cancelled'),
	((seq * 7907) % 200000) / 100,
	'2021-01-01' + INTERVAL (seq * 104723) % 120000000 SECOND,
	IF(seq % 5 IN (2, 3), '2021-01-03' + INTERVAL (seq * 104723) % 120000000 SECOND, NULL),
	IF(seq % 3 = 0, NULL, CONCAT('Deliver to door ', seq % 97, ', ', ELT(1 + seq % 4, 'ring twice', 'leave with neighbour', 'call on arrival', 'no notes'), ' ref ', LEFT(MD5(seq), 10)))
	FROM seq_$((c0 * 10 - 9))_to_$((c1 * 10))" \
		"INSERT INTO order_items SELECT 1 + (seq - 1) DIV 3, 1 + (seq - 1) % 3,
	CONCAT('SKU-', LPAD((seq * 31) % 50000, 6, '0'), '-', ELT(1 + seq % 4, 'S', 'M', 'L', 'XL')),
	1 + seq % 7, ((seq * 7901) % 50000) / 100
	FROM seq_$((c0 * 30 - 29))_to_$((c1 * 30))" \
		"INSERT INTO events SELECT seq,
	'2022-01-01' + INTERVAL seq * 3 SECOND,
	ELT(1 + seq % 6, 'login', 'logout', 'view', 'cart_add', 'checkout', 'password_reset'),
	1 + (seq * 7) % $c1,
	CONCAT('{\"ip\":\"', INET_NTOA(167772160 + (seq * 2654435761) % 16777216), '\",\"agent\":\"Mozilla/5.0 (',
		ELT(1 + seq % 3, 'X11; Linux x86_64', 'Windows NT 10.0; Win64; x64', 'Macintosh; Intel Mac OS X 14_1'),
		')\",\"session\":\"', MD5(seq), '\",\"path\":\"/', ELT(1 + seq % 4, 'shop', 'account', 'cart', 'search'), '/', seq % 1000,
		'\",\"ms\":', seq % 900, '}')
	FROM seq_$((c0 * 10 - 9))_to_$((c1 * 10))"
}

echo "generating about $SIZE_MB MB of dump in batches of $BATCH customers"
now_s=$SECONDS
add_batch 0
BATCH_BYTES=$(my_dump bench | wc -c)
BATCHES=$(awk -v s="$SIZE_MB" -v b="$BATCH_BYTES" 'BEGIN { n = int(s * 1e6 / b + 0.5); print n < 1 ? 1 : n }')
for i in $(seq 1 $((BATCHES - 1))); do add_batch "$i"; done
echo "$BATCHES batches in $((SECONDS - now_s)) s"
# Written pages to the data files now, not during a timed run.
my_q "SET GLOBAL innodb_max_dirty_pages_pct = 0"
for _ in $(seq 600); do
	[ "$(my_q "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'INNODB_BUFFER_POOL_PAGES_DIRTY'")" -lt 16 ] && break
	sleep 0.1
done
my_q "SET GLOBAL innodb_max_dirty_pages_pct = DEFAULT" "ANALYZE TABLE bench.customers, bench.orders, bench.order_items, bench.events" >/dev/null
TABLE_ROWS=$(my_db bench "SELECT GROUP_CONCAT(CONCAT(t, ' ', n) SEPARATOR ', ') FROM (
	SELECT 'customers' t, COUNT(*) n FROM customers UNION ALL SELECT 'orders', COUNT(*) FROM orders
	UNION ALL SELECT 'order_items', COUNT(*) FROM order_items UNION ALL SELECT 'events', COUNT(*) FROM events) x")
TABLE_BYTES=$(my_q "SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'bench'")
FILE_BYTES=$(du -sb "$W/my/data/bench" | cut -f1)
my_dump bench >"$W/plain.sql"
DUMP_BYTES=$(stat -c %s "$W/plain.sql")
ZSTD_BYTES=$(zstd -1 -q -c "$W/plain.sql" | wc -c)
rm -f "$W/plain.sql"
echo "database bench: $TABLE_ROWS rows; data + index $TABLE_BYTES bytes, files $FILE_BYTES bytes; dump $DUMP_BYTES bytes"

for t in bench tiny; do
	psql_q "SELECT tenant_backup.tenant_create('$t')" \
		"SELECT tenant_backup.tenant_add_database('$t', 'mysql', 'mysql://bench:$MY_PASSWORD@127.0.0.1:$MY_PORT/$t')" \
		>/dev/null
done

# ---------------------------------------------------------------- timing

# Busy jiffies of the whole machine (user nice system irq softirq steal).
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
cpu_since() { # BUSY_BEFORE: CPU seconds the machine was busy since
	awk -v a="$1" -v b="$(busy)" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }'
}

declare -A BEST=() CPU=()
LINE=""
record() { # KEY SECONDS [CPU_SECONDS]: keeps the best, and lists every run's time on its "run N" line
	BEST[$1]=$(min "${BEST[$1]:-}" "$2")
	[ -n "${3:-}" ] && CPU[$1]=$(min "${CPU[$1]:-}" "$3")
	LINE="$LINE $1=$2"
}

agent_once() { # LOG
	"$AGENT" --control "$CONTROL" --storage "file://$W/store" --master-key "$W/master.key" --name bench --once \
		>>"$1" 2>&1
}
# Queues a backup of TENANT and runs the agent once; records KEY (wall, from the queueing)
# and KEY_job (the job's started -> finished).
agent_backup() { # KEY TENANT
	local job b0 t
	b0=$(busy)
	now; t0=$NOW
	job=$(psql_q "SELECT tenant_backup.tenant_backup('$2', 'mysql')")
	agent_once "$W/agent.log" || pg_bail "$W/agent.log" "the agent failed on tenant $2"
	t=$(elapsed "$t0")
	record "$1" "$t" "$(cpu_since "$b0")"
	[ "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" = succeeded ] ||
		pg_bail "$W/agent.log" "job $job of tenant $2 did not succeed"
	record "$1_job" "$(job_seconds "$job")"
}
timed() { # KEY CMD...: the wall time of CMD, which must succeed
	local key=$1 b0 t
	shift
	b0=$(busy)
	now; t0=$NOW
	"$@" || pg_bail "$([ "${key#mydumper}" != "$key" ] && echo "$W/mydumper.log" || echo /dev/null)" "$key failed"
	t=$(elapsed "$t0")
	record "$key" "$t" "$(cpu_since "$b0")"
}
plain() { my_dump "$1" >/dev/null; }
pipeline() { my_dump bench | zstd -1 -q | age -r "$AGE_RECIPIENT" >"$W/pipeline.age"; }
dumper() { # [MYDUMPER OPTIONS...]
	mydumper --defaults-file "$W/my.cnf" -G -E -R -B bench -o "$W/mydumper" -v 1 "$@" >>"$W/mydumper.log" 2>&1
}

for run in $(seq "$RUNS"); do
	LINE=""
	agent_backup agent bench
	timed plain plain bench
	timed pipeline pipeline
	rm -rf "$W/mydumper"
	timed mydumper dumper
	[ "$run" = 1 ] && MYDUMPER_BYTES=$(du -sb "$W/mydumper" | cut -f1) &&
		MYDUMPER_FILES=$(find "$W/mydumper" -type f | wc -l)
	rm -rf "$W/mydumper"
	timed mydumper2 dumper --threads 2
	rm -rf "$W/mydumper"
	# The fixed cost: the same on a one-row database.
	agent_backup tiny_agent tiny
	timed tiny_plain plain tiny
	echo "run $run of $RUNS (s):$LINE"
done
BACKUP_ROW=$(psql_q "SELECT bytes_in, bytes_stored FROM tenant_backup.tenant_backups('bench') LIMIT 1")
BYTES_IN=${BACKUP_ROW%|*}
BYTES_STORED=${BACKUP_ROW#*|}
AGE_BYTES=$(stat -c %s "$W/pipeline.age")

# ---------------------------------------------------------------- memory

echo "memory: one more agent run, sampled"
job=$(psql_q "SELECT tenant_backup.tenant_backup('bench', 'mysql')")
"$AGENT" --control "$CONTROL" --storage "file://$W/store" --master-key "$W/master.key" --name bench --once \
	>>"$W/agent.log" 2>&1 &
agent_pid=$!
child="" samples=0
while [ -d "/proc/$agent_pid" ] && [ "$(cut -d' ' -f3 "/proc/$agent_pid/stat" 2>/dev/null)" != Z ]; do
	[ -n "$child" ] && [ -d "/proc/$child" ] || child=$(pgrep -P "$agent_pid" -x mariadb-dump | head -n 1 || true)
	sample agent "$agent_pid"
	[ -n "$child" ] && sample dump "$child"
	samples=$((samples + 1))
	sleep 0.02
done
wait "$agent_pid" || pg_bail "$W/agent.log" "the sampled agent run failed"
[ "$(psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $job")" = succeeded ] ||
	pg_bail "$W/agent.log" "the sampled job $job did not succeed"
[ -n "${PEAK[dump_hwm]:-}" ] || pg_bail "$W/agent.log" "the agent's mariadb-dump was never seen"
PEAK[samples]=$samples
echo "load after: $(uptime)"
agent_log_oddities "$W/agent.log"

# ---------------------------------------------------------------- report

mbps() { awk -v b="$DUMP_BYTES" -v s="$1" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }

plain_ratio=$(ratio "${BEST[agent]}" "${BEST[plain]}")
memory_mb=$(mib "${PEAK[agent_hwm]}")
echo
echo "database bench: $TABLE_ROWS rows; InnoDB data + index $TABLE_BYTES bytes ($FILE_BYTES bytes of .ibd files);" \
	"mariadb-dump output $DUMP_BYTES bytes (zstd -1: $ZSTD_BYTES); backup bytes_in $BYTES_IN," \
	"stored object $BYTES_STORED bytes; zstd -1 | age file $AGE_BYTES bytes;" \
	"mydumper output $MYDUMPER_BYTES bytes in $MYDUMPER_FILES files"
echo
echo "| command | best of $RUNS (s) | MB/s | least CPU-s | agent time ÷ this |"
echo "|---|---:|---:|---:|---:|"
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
row "agent: tenant_backup('bench', 'mysql') + agent --once, wall" "${BEST[agent]}" "$(mbps "${BEST[agent]}")" \
	"${CPU[agent]}" 1.00x
row "— its job, started → finished" "${BEST[agent_job]}" "$(mbps "${BEST[agent_job]}")" "" ""
row "mariadb-dump OPTIONS > /dev/null" "${BEST[plain]}" "$(mbps "${BEST[plain]}")" "${CPU[plain]}" "$plain_ratio"
row "mariadb-dump OPTIONS \| zstd -1 \| age > file" "${BEST[pipeline]}" "$(mbps "${BEST[pipeline]}")" \
	"${CPU[pipeline]}" "$(ratio "${BEST[agent]}" "${BEST[pipeline]}")"
row "mydumper -G -E -R (4 threads)" "${BEST[mydumper]}" "$(mbps "${BEST[mydumper]}")" "${CPU[mydumper]}" \
	"$(ratio "${BEST[agent]}" "${BEST[mydumper]}")"
row "mydumper -G -E -R --threads 2" "${BEST[mydumper2]}" "$(mbps "${BEST[mydumper2]}")" "${CPU[mydumper2]}" \
	"$(ratio "${BEST[agent]}" "${BEST[mydumper2]}")"
row "tiny: tenant_backup + agent --once, wall" "${BEST[tiny_agent]}" "" "${CPU[tiny_agent]}" 1.00x
row "tiny: — its job, started → finished" "${BEST[tiny_agent_job]}" "" "" ""
row "tiny: mariadb-dump OPTIONS > /dev/null" "${BEST[tiny_plain]}" "" "${CPU[tiny_plain]}" \
	"$(ratio "${BEST[tiny_agent]}" "${BEST[tiny_plain]}")"
echo
echo "| process (peak while it ran) | samples | VmHWM MiB | max RssAnon MiB | max RssFile MiB |"
echo "|---|---:|---:|---:|---:|"
printf '| %s | %s | %s | %s | %s |\n' "tenant-backup-agent-mysql" "${PEAK[samples]}" "$(mib "${PEAK[agent_hwm]:-}")" \
	"$(mib "${PEAK[agent_anon]:-}")" "$(mib "${PEAK[agent_file]:-}")"
printf '| %s | %s | %s | %s | %s |\n' "its mariadb-dump" "" "$(mib "${PEAK[dump_hwm]:-}")" \
	"$(mib "${PEAK[dump_anon]:-}")" "$(mib "${PEAK[dump_file]:-}")"
echo
echo "targets: agent within 1.15x of plain mariadb-dump: $plain_ratio, $(verdict "${plain_ratio%x}" 1.15);" \
	"agent peak memory (VmHWM) under 64 MB: $memory_mb MiB, $(verdict "$((${PEAK[agent_hwm]} * 1024))" 64000000)"
