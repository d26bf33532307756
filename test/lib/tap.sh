# TAP helpers for the integration scripts (bash). Source it, call the checks,
# end with done_testing. Every check prints one "ok"/"not ok" line.
TAP_COUNT=0
TAP_FAILED=0

ok() { # CONDITION-STATUS NAME
	TAP_COUNT=$((TAP_COUNT + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $TAP_COUNT - $2"
	else
		echo "not ok $TAP_COUNT - $2"
		TAP_FAILED=$((TAP_FAILED + 1))
	fi
}

is() { # GOT EXPECTED NAME
	if [ "$1" = "$2" ]; then ok 0 "$3"; else
		ok 1 "$3"
		diag "got:      '$1'"
		diag "expected: '$2'"
	fi
}

like() { # GOT PATTERN NAME (grep -E pattern)
	if printf '%s' "$1" | grep -qE -- "$2"; then ok 0 "$3"; else
		ok 1 "$3"
		diag "got: '$1'"
		diag "expected to match: '$2'"
	fi
}

unlike() { # GOT PATTERN NAME
	if printf '%s' "$1" | grep -qE -- "$2"; then
		ok 1 "$3"
		diag "got: '$1'"
		diag "expected not to match: '$2'"
	else ok 0 "$3"; fi
}

diag() { echo "# $*" >&2; }

# Flips one bit of the byte at OFFSET in FILE: always a change, whatever the byte was.
flip_byte() { # FILE OFFSET
	perl -e 'open(my $f, "+<", $ARGV[0]) or die; seek($f, $ARGV[1], 0); read($f, my $b, 1);
		seek($f, $ARGV[1], 0); print $f chr(ord($b) ^ 1); close($f)' "$1" "$2"
}

# Runs CMD... every INTERVAL seconds, at most TRIES times, until it prints EXPECTED;
# prints what it printed last (for is/like), and fails if that never came.
wait_for() { # TRIES INTERVAL EXPECTED CMD...
	local tries=$1 interval=$2 expected=$3 got=""
	shift 3
	for _ in $(seq "$tries"); do
		got=$("$@" 2>/dev/null)
		[ "$got" = "$expected" ] && break
		sleep "$interval"
	done
	echo "$got"
	[ "$got" = "$expected" ]
}

skip_all() {
	echo "1..0 # SKIP $*"
	exit 0
}

done_testing() {
	echo "1..$TAP_COUNT"
	[ "$TAP_FAILED" -eq 0 ]
}

# A private scratch directory removed at exit, with any cleanup the test registers.
TAP_CLEANUP=""
on_exit() { TAP_CLEANUP="$*; $TAP_CLEANUP"; }
tap_exit() { eval "$TAP_CLEANUP"; }
# Cleanup runs to the end even in a script with set -e (one failing step must not skip the rest).
trap 'set +e; tap_exit' EXIT
# Sets D to a fresh scratch directory, removed at exit. Call it in the script's own
# shell, not in $(...), or the cleanup would be registered in a subshell.
scratch_dir() {
	D=$(mktemp -d /tmp/tenant-backup-test.XXXXXX) || exit 1
	on_exit "rm -rf '$D'"
}

TB=${TB_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/build/bin}/tenant-backup

# Prints a TCP port on 127.0.0.1 that nothing listens on now, chosen at random below
# the kernel's ephemeral range (some servers need a port below 32768), so that two runs
# on one machine do not collide.
free_port() {
	python3 -c 'import random, socket
for _ in range(500):
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("free_port: no free port between 20000 and 32000")'
}
