# Helpers the benchmark scripts share (bash; source after test/lib/pg.sh).
#
#   now                 sets NOW to the current time in seconds (EPOCHREALTIME)
#   elapsed START       seconds since START, to the millisecond
#   min A B             the smaller of two numbers; A may be empty
#   job_seconds JOB_ID  the job's started -> finished as recorded by the extension
#   sample KEY PID      peaks of PID's VmHWM, RssAnon, RssFile and RssShmem (kB) into
#                       PEAK[KEY_hwm], PEAK[KEY_anon], PEAK[KEY_file], PEAK[KEY_shmem]

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
