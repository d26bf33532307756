# Redis 7 helpers for the integration scripts (bash, source after tap.sh): throwaway
# servers on 127.0.0.1, nothing saved to disk unless asked, stopped at exit.
#
#   redis_start DIR PORT [ARGS...]  redis-server with its files in DIR (log DIR/redis.log),
#                                   the default user's password REDIS_ADMIN_PASSWORD, and
#                                   an ACL user tbagent with REDIS_PASSWORD
#   redis_stop DIR PORT             SHUTDOWN NOSAVE, then waits for the process to exit
#   rtool ARGS...                   test/lib/redis_tool.pl as the default user
#
# PORT must be below 32768 and not 6379, where a system Redis may listen.

REDIS_ADMIN_PASSWORD='admin-pw-for-tests'
REDIS_PASSWORD='r3d:s@p%w"d'
REDIS_PASSWORD_URI='r3d%3As%40p%25w%22d'

rtool() { REDIS_TOOL_AUTH=$REDIS_ADMIN_PASSWORD perl "$(dirname "${BASH_SOURCE[0]}")/redis_tool.pl" "$@"; }

redis_start() { # DIR PORT [ARGS...]
	local dir=$1 port=$2
	shift 2
	command -v redis-server >/dev/null || { echo "Bail out! redis-server not installed (make deps)"; exit 1; }
	if ! [ "$port" -lt 32768 ] || [ "$port" = 6379 ]; then
		echo "Bail out! Redis test port $port: use a port below 32768 other than 6379"
		exit 1
	fi
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	# The agent's ACL user, with what a backup needs (SYNC for RDB snapshots).
	printf 'user default on >%s ~* &* +@all\nuser tbagent on >%s ~* &* +@all\n' \
		"$REDIS_ADMIN_PASSWORD" "$REDIS_PASSWORD" >"$dir/users.acl"
	on_exit "redis_stop '$dir' $port"
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
		--repl-diskless-sync-delay 0 --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
		--aclfile "$dir/users.acl" "$@" || { echo "Bail out! redis-server failed in $dir"; exit 1; }
	for _ in $(seq 100); do
		rtool cmd "$port" 0 PING 2>/dev/null | grep -q PONG && return 0
		sleep 0.05
	done
	echo "Bail out! redis-server on port $port did not answer"
	sed 's/^/# /' "$dir/redis.log" >&2
	exit 1
}

redis_stop() { # DIR PORT
	local pid
	[ -f "$1/redis.pid" ] || return 0
	pid=$(cat "$1/redis.pid")
	rtool cmd "$2" 0 SHUTDOWN NOSAVE >/dev/null 2>&1
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
	kill -9 "$pid" 2>/dev/null
}
