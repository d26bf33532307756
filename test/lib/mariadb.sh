# MariaDB 10.11 helpers for the integration scripts (bash, source after tap.sh): a
# throwaway server run as the mysql user, bound to 127.0.0.1 with its socket in its own
# directory, and stopped at exit by tap.sh's on_exit.
#
#   mariadb_start DIR PORT             mariadb-install-db into DIR/data, start mariadbd
#                                      (error log DIR/error.log, event scheduler on) and
#                                      export MARIADB_SOCKET=DIR/mysqld.sock MARIADB_PORT
#   mariadb_stop DIR                   clean shutdown; kills mariadbd by PID if that fails
#   my_client ARGS...                  the mariadb client as root over the socket, in
#                                      utf8mb4 (e.g. my_client DB < dump.sql)
#   my_q SQL...                        runs the statements as root over the socket; prints
#                                      tab-separated rows without headers, stops at the
#                                      first error
#   my_db DB SQL...                    the same in database DB
#   mariadb_create_user USER PASSWORD  USER@'127.0.0.1' and USER@'localhost' with every
#                                      privilege a backup agent needs over TCP
#
# root@localhost authenticates by unix_socket (the OS user root) and has no password; TCP
# clients must use a user made by mariadb_create_user and --protocol=TCP -h127.0.0.1 -P PORT.
# PORT must be below 32768 (above, an outgoing connection may already hold it) and never
# 3306, where a system MariaDB may listen. Call mariadb_start in the script's own shell,
# not inside $(...), so that its on_exit cleanup reaches the trap.

mariadb_bail() { # LOG MESSAGE
	echo "Bail out! $2"
	[ -f "$1" ] && tail -n 50 "$1" | sed 's/^/# /' >&2
	exit 1
}

mariadb_start() { # DIR PORT
	local dir=$1 port=$2 pid parent deadline
	if ! command -v mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null; then
		mariadb_bail /dev/null "MariaDB server not installed (make deps)"
	fi
	if ! [ "$port" -lt 32768 ] || [ "$port" = 3306 ]; then
		mariadb_bail /dev/null "MariaDB test port $port: use a port below 32768 other than 3306"
	fi
	if ! { mkdir -p "$dir" && dir=$(cd "$dir" && pwd) && chown mysql:mysql "$dir"; }; then
		mariadb_bail /dev/null "cannot create $dir for the MariaDB server"
	fi
	# mktemp directories are 0700 root: let mysql traverse the parent.
	parent=$(dirname "$dir")
	runuser -u mysql -- test -x "$parent" || chmod o+x "$parent"
	runuser -u mysql -- test -w "$dir" ||
		mariadb_bail /dev/null "user mysql cannot reach $dir (a directory above it is not traversable)"
	on_exit "mariadb_stop '$dir'"

	mariadb-install-db --no-defaults --user=mysql --datadir="$dir/data" \
		--auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 ||
		mariadb_bail "$dir/install.log" "mariadb-install-db failed in $dir/data"
	mariadbd --no-defaults --user=mysql --datadir="$dir/data" --socket="$dir/mysqld.sock" \
		--port="$port" --bind-address=127.0.0.1 --skip-name-resolve \
		--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
		--innodb-buffer-pool-size=64M --event-scheduler=ON \
		--pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" </dev/null >/dev/null 2>&1 &
	pid=$!
	deadline=$((SECONDS + 30))
	while [ $SECONDS -lt $deadline ]; do
		if mariadb_admin "$dir" ping; then
			export MARIADB_SOCKET=$dir/mysqld.sock MARIADB_PORT=$port
			return 0
		fi
		mariadb_pid_running "$pid" ||
			mariadb_bail "$dir/error.log" "mariadbd exited while starting in $dir on port $port"
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	mariadb_bail "$dir/error.log" "mariadbd did not answer within 30 s in $dir on port $port"
}

# mariadb-admin as root over DIR's socket, silent. A server that accepts but never
# answers (e.g. stopped) would block it for hours, and it ignores SIGTERM: KILL after 5 s.
mariadb_admin() { # DIR ARGS...
	local dir=$1
	shift
	timeout -s KILL 5 mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -uroot "$@" >/dev/null 2>&1
}

# True while PID runs; an exited mariadbd stays a zombie until its parent reaps it.
mariadb_pid_running() { # PID
	local state
	state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$state" != Z ]
}

mariadb_stop() { # DIR
	local dir pid
	dir=$(cd "$1" 2>/dev/null && pwd) || return 0
	pid=$(cat "$dir/mysqld.pid" 2>/dev/null) || return 0
	# Only the mariadbd of this data directory, never a process that reused the PID.
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--datadir=$dir/data " || return 0
	# mariadb-admin would poll the pid file once a second: return at once, poll here.
	mariadb_admin "$dir" --shutdown-timeout=0 shutdown
	for _ in $(seq 100); do # up to 10 s
		mariadb_pid_running "$pid" || return 0
		sleep 0.1
	done
	echo "# mariadb_stop: shutdown did not finish, killing mariadbd $pid" >&2
	kill -KILL "$pid" 2>/dev/null
}

my_client() { # ARGS...
	mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot --default-character-set=utf8mb4 "$@"
}

# Each SQL argument is one statement or more; a ';' is added after each (an empty
# statement is harmless).
my_q() { # SQL...
	my_client -N -B -e "$(printf '%s;\n' "$@")"
}

my_db() { # DB SQL...
	local db=$1
	shift
	my_client -N -B -e "$(printf '%s;\n' "$@")" "$db"
}

# ALL PRIVILEGES on *.* includes what mariadb-dump and mydumper need beyond the tables
# themselves: RELOAD, PROCESS, EVENT, TRIGGER, SHOW VIEW and LOCK TABLES.
mariadb_create_user() { # USER PASSWORD
	local user=${1//\'/\'\'} password=${2//\'/\'\'} host
	user=${user//\\/\\\\} password=${password//\\/\\\\}
	for host in 127.0.0.1 localhost; do
		my_q "CREATE OR REPLACE USER '$user'@'$host' IDENTIFIED BY '$password';" \
			"GRANT ALL PRIVILEGES ON *.* TO '$user'@'$host';" || return 1
	done
}
