# MongoDB helpers for the integration scripts (bash, source after tap.sh): a throwaway
# in-memory server (test/lib/fakemongo.py, mongod 5.0 wire protocol) on 127.0.0.1, or a
# real server named by TB_TEST_MONGO_URI, stopped at exit.
#
#   mongo_start DIR PORT [SETNAME]  fakemongo on 127.0.0.1:PORT as the primary of the
#                                   single-node replica set SETNAME (default rs0; pass ""
#                                   for a standalone), log in DIR/fakemongo.log; exports
#                                   MONGO_URI_BASE=mongodb://127.0.0.1:PORT and waits for
#                                   ping. With TB_TEST_MONGO_URI set, nothing is started:
#                                   MONGO_URI_BASE is that URI, which should then be of the
#                                   same form (mongodb://HOST:PORT, no path or options), and
#                                   the script must use databases of its own.
#   mongo_stop DIR                  stops the server mongo_start started in DIR (SIGTERM,
#                                   then waits for the process to exit)
#   mtool ARGS...                   test/lib/mongo_tool.py (pymongo) with Debian's python3:
#                                   fill/snapshot/docs/many/cmd/drop URI DB ..., see its usage
#
# PORT must be below 32768 and not 27017, where a system mongod may listen.

MONGO_PYTHON=/usr/bin/python3

mtool() { "$MONGO_PYTHON" "$(dirname "${BASH_SOURCE[0]}")/mongo_tool.py" "$@"; }

mongo_start() { # DIR PORT [SETNAME]
	local dir=$1 port=$2 setname=${3-rs0} pid
	if [ -n "${TB_TEST_MONGO_URI:-}" ]; then
		export MONGO_URI_BASE=$TB_TEST_MONGO_URI
		mongo_wait "$MONGO_URI_BASE" || {
			echo "Bail out! TB_TEST_MONGO_URI ($TB_TEST_MONGO_URI) does not answer ping"
			exit 1
		}
		return 0
	fi
	"$MONGO_PYTHON" -c 'import mockupdb, mongomock, pymongo' 2>/dev/null || {
		echo "Bail out! python3-mockupdb / python3-mongomock not installed (make deps)"
		exit 1
	}
	if ! [ "$port" -lt 32768 ] 2>/dev/null || [ "$port" = 27017 ]; then
		echo "Bail out! MongoDB test port $port: use a port below 32768 other than 27017"
		exit 1
	fi
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	"$MONGO_PYTHON" "$(dirname "${BASH_SOURCE[0]}")/fakemongo.py" "$port" $setname \
		>"$dir/fakemongo.log" 2>&1 &
	pid=$!
	echo "$pid" >"$dir/fakemongo.pid"
	on_exit "mongo_stop '$dir'"
	export MONGO_URI_BASE="mongodb://127.0.0.1:$port"
	if ! mongo_wait "$MONGO_URI_BASE" "$pid"; then
		echo "Bail out! fakemongo on port $port did not answer ping"
		sed 's/^/# /' "$dir/fakemongo.log" >&2
		exit 1
	fi
}

# Polls ping for up to about 20 s (gives up early if PID, when given, has exited).
mongo_wait() { # URI [PID]
	for _ in $(seq 40); do
		[ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null && return 1
		MONGO_TOOL_TIMEOUT_MS=500 mtool cmd "$1" admin '{"ping": 1}' >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

mongo_stop() { # DIR
	local pid
	[ -f "$1/fakemongo.pid" ] || return 0
	pid=$(cat "$1/fakemongo.pid")
	rm -f "$1/fakemongo.pid"
	kill "$pid" 2>/dev/null || return 0
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.05
	done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}
