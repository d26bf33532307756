# Helpers the benchmark scripts share (bash; source after test/lib/pg.sh).
#
#   now                 sets NOW to the current time in seconds (EPOCHREALTIME)
#   elapsed START       seconds since START, to the millisecond
#   min A B             the smaller of two numbers; A may be empty
#   job_seconds JOB_ID  the job's started -> finished as recorded by the extension
#   sample KEY PID      peaks of PID's VmHWM, RssAnon, RssFile and RssShmem (kB) into
#                       PEAK[KEY_hwm], PEAK[KEY_anon], PEAK[KEY_file], PEAK[KEY_shmem]
#   ratio A B           A / B as "1.23x"
#   mib KB              kB as MiB, one decimal
#   verdict RATIO TARGET  "met" when RATIO <= TARGET, else "NOT met"
#   agent_log_oddities LOG  the agent's log lines other than start, success and stop, counted
#   bench_prepare NAME TOOL...  checks that the extension is installed, that AGENT (if
#                       set) is built, and that zstd, age and the TOOLs are there; makes the working directory W (on tmpfs
#                       /dev/shm when there is one, so no side pays for a disk; removed at
#                       exit) with file storage W/store and a master key W/master.key for
#                       the server's user, and an age key whose recipient is AGE_RECIPIENT.
#                       Call it in the script's own shell, not inside $(...).
#   bench_control_plane PG_PORT  prints the load and W's file system, starts the control
#                       plane (PostgreSQL on W/pg with the extension on W's storage and
#                       master key, no schedule of its own) with a login role "agent" for
#                       agents, whose conninfo is CONTROL

NOW=0
now() { NOW=${EPOCHREALTIME/,/.}; }
elapsed() { # START
	local t=${EPOCHREALTIME/,/.}
	awk -v a="$1" -v b="$t" 'BEGIN { printf "%.3f", b - a }'
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }'; }
job_seconds() { # JOB_ID
	psql_q "SELECT round(extract(epoch FROM finished - started)::numeric, 3) FROM tenant_backup.jobs WHERE id = $1"
}

declare -A PEAK=()
peak() { # KEY VALUE_KB
	[ -n "$2" ] && [ "$2" -gt "${PEAK[$1]:-0}" ] && PEAK[$1]=$2
	return 0
}
sample() { # KEY PID
	local k v rest
	[ -r "/proc/$2/status" ] || return 0
	while read -r k v rest; do
		case $k in
			VmHWM:) peak "$1_hwm" "$v" ;;
			RssAnon:) peak "$1_anon" "$v" ;;
			RssFile:) peak "$1_file" "$v" ;;
			RssShmem:) peak "$1_shmem" "$v" ;;
		esac
	done <"/proc/$2/status" 2>/dev/null || true
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 <= t + 0) ? "met" : "NOT met" }'; }
agent_log_oddities() { # LOG
	if grep -v -E 'started as|succeeded:|stopped$' "$1" | grep -q .; then
		echo "agent log lines other than start, success and stop:"
		grep -v -E 'started as|succeeded:|stopped$' "$1" | sort | uniq -c | sed 's/^/    /'
	fi
}

bench_prepare() { # NAME TOOL...
	local name=$1 tool
	shift
	[ -z "${AGENT:-}" ] || [ -x "$AGENT" ] || pg_bail /dev/null "$AGENT is not built (make)"
	[ -e "$("$PG_BIN/pg_config" --pkglibdir)/tenant_backup.so" ] ||
		pg_bail /dev/null "tenant_backup is not installed into PostgreSQL 15 (make install)"
	for tool in zstd age age-keygen "$@"; do
		command -v "$tool" >/dev/null || pg_bail /dev/null "$tool is not installed (make deps)"
	done
	W=$(mktemp -d "$([ -d /dev/shm ] && echo /dev/shm || echo /tmp)/tenant-backup-$name.XXXXXX")
	on_exit "rm -rf '$W'"
	mkdir -p "$W/store"
	chown postgres "$W/store"
	"$BIN/tenant-backup" keygen --out "$W/master.key" 2>/dev/null
	chown postgres "$W/master.key"
	age-keygen -o "$W/age.key" 2>/dev/null
	AGE_RECIPIENT=$(age-keygen -y "$W/age.key")
}

bench_control_plane() { # PG_PORT
	echo "load before: $(uptime)"
	echo "working directory: $W ($(df --output=fstype "$W" | tail -1))"
	pg_start "$W/pg" "$1" "tenant_backup.storage = 'file://$W/store'
tenant_backup.master_key_file = '$W/master.key'
tenant_backup.default_schedule = '100 years'"
	psql_q "CREATE EXTENSION tenant_backup" "CREATE ROLE agent LOGIN" "GRANT tenant_backup_agent TO agent" >/dev/null
	CONTROL="host=$W/pg port=$1 dbname=postgres user=agent"
}
