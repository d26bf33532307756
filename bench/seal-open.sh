#!/bin/bash
# Seal and open throughput of tenant-backup against the obvious pipelines on the
# same input in the same run: zstd -1 | age, and zstd -1 | openssl enc -aes-256-ctr.
# Inputs: random bytes, and a tar of /usr (compressible). Each command runs RUNS
# times; the best time counts. Prints MB/s and the ratio to the fastest pipeline,
# once pinned to one core (taskset -c 0) and once with every core.
# Usage: bench/seal-open.sh BIN_DIR [SIZE_MB] [RUNS]
set -euo pipefail
BIN=$1
SIZE_MB=${2:-512}
RUNS=${3:-3}
TB="$BIN/tenant-backup"
# tmpfs when there is one: the pipelines do not fsync, so neither should the comparison.
W=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp)/tenant-backup-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
export TENANT_BACKUP_STORAGE="file://$W/store" TENANT_BACKUP_MASTER_KEY_FILE="$W/master.key"
"$TB" keygen --out "$W/master.key" 2>/dev/null
age-keygen -o "$W/age.key" 2>/dev/null
AGE_RECIPIENT=$(age-keygen -y "$W/age.key")
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$W/openssl.pass"

echo "generating inputs of $SIZE_MB MB"
openssl enc -aes-128-ctr -nosalt -pass pass:bench -in /dev/zero 2>/dev/null | head -c $((SIZE_MB << 20)) > "$W/random" || true
tar cf - /usr/lib /usr/share 2>/dev/null | head -c $((SIZE_MB << 20)) > "$W/compressible" || true

best_seconds() { # COMMAND...: best wall time over RUNS runs
	local best=""
	for _ in $(seq "$RUNS"); do
		local t0 t1
		t0=$(date +%s.%N)
		"$@" > /dev/null
		t1=$(date +%s.%N)
		best=$(echo "$t0 $t1 ${best:-}" | awk '{d = $2 - $1; if ($3 == "" || d < $3) print d; else print $3}')
	done
	echo "$best"
}

# Each seal replaces the previous output, as the pipelines' "> file" does, inside the timing.
seal_tb() {
	rm -rf "$W/store/bench/postgres"
	"$TB" put --tenant bench --engine postgres --level 1 --workers "$WORKERS" < "$1"
}
seal_age() { zstd -1 -q -c < "$1" | age -r "$AGE_RECIPIENT" > "$W/out.age"; }
seal_ossl() { zstd -1 -q -c < "$1" | openssl enc -aes-256-ctr -pbkdf2 -pass "file:$W/openssl.pass" > "$W/out.ossl"; }
open_tb() { "$TB" cat "$(cat "$W/obj")" > /dev/null; }
open_age() { age -d -i "$W/age.key" < "$W/out.age" | zstd -d -q > /dev/null; }
open_ossl() { openssl enc -d -aes-256-ctr -pbkdf2 -pass "file:$W/openssl.pass" < "$W/out.ossl" | zstd -d -q > /dev/null; }

mbps() { echo "$SIZE_MB $1" | awk '{printf "%.0f", $1 * 1.048576 / $2}'; }

run_case() { # PIN INPUT
	local pin=$1 input=$2 tb age ossl
	local -a cmd=()
	[ "$pin" = "1 core" ] && cmd=(taskset -c 0)
	tb=$(best_seconds "${cmd[@]}" bash -c "$(declare -f seal_tb); W='$W' TB='$TB' WORKERS=$WORKERS seal_tb '$W/$input'")
	"$TB" ls bench | head -1 | awk '{print $5}' > "$W/obj"
	age=$(best_seconds "${cmd[@]}" bash -c "$(declare -f seal_age); W='$W' AGE_RECIPIENT='$AGE_RECIPIENT' seal_age '$W/$input'")
	ossl=$(best_seconds "${cmd[@]}" bash -c "$(declare -f seal_ossl); W='$W' seal_ossl '$W/$input'")
	report "$pin" "$input" seal "$tb" "$age" "$ossl"
	tb=$(best_seconds "${cmd[@]}" bash -c "$(declare -f open_tb); TB='$TB' W='$W' open_tb")
	age=$(best_seconds "${cmd[@]}" bash -c "$(declare -f open_age); W='$W' open_age")
	ossl=$(best_seconds "${cmd[@]}" bash -c "$(declare -f open_ossl); W='$W' open_ossl")
	report "$pin" "$input" open "$tb" "$age" "$ossl"
	rm -rf "$W/store/bench"
}

report() { # PIN INPUT OP TB AGE OSSL
	local fastest
	fastest=$(echo "$5 $6" | awk '{print ($1 < $2) ? $1 : $2}')
	printf '| %-6s | %-12s | %-4s | %6s | %6s | %6s | %5.2fx |\n' "$1" "$2" "$3" "$(mbps "$4")" "$(mbps "$5")" \
		"$(mbps "$6")" "$(echo "$fastest $4" | awk '{print $1 / $2}')"
}

echo
echo "| cores  | input        | op   | tenant-backup MB/s | zstd-1\|age MB/s | zstd-1\|openssl MB/s | tenant-backup vs fastest pipeline |"
echo "|--------|--------------|------|------|------|------|-------|"
for pin in "1 core" "all"; do
	WORKERS=$([ "$pin" = "1 core" ] && echo 1 || nproc)
	for input in random compressible; do
		run_case "$pin" "$input"
	done
done
echo
echo "ratio > 1.00x: tenant-backup is faster than the fastest pipeline (zstd level 1 everywhere)"
