# PostgreSQL 15 helpers for the integration scripts (bash, source after tap.sh): a
# throwaway cluster owned by the postgres user, bound to 127.0.0.1 with its socket in
# its own directory, and stopped at exit by tap.sh's on_exit.
#
#   pg_start DIR PORT [EXTRA_CONF_LINES]  initdb into DIR/data, start it (log in DIR/server.log)
#                                         and export PGHOST=DIR PGPORT PGUSER PGDATABASE;
#                                         EXTRA_CONF_LINES (newline-separated) go last in
#                                         postgresql.conf, so they override the defaults
#   pg_stop DIR                           fast shutdown; kills the postmaster by PID if that fails
#   pg_restart DIR                        fast restart (e.g. after changing postgresql.conf)
#   psql_q SQL...                         runs each SQL (one -c each) in $PGDATABASE; prints
#                                         unaligned tuples only, stops at the first error
#   pg_log_tail DIR                       last 50 lines of the server log
#
# Call pg_start in the script's own shell, not inside $(...), so that its on_exit cleanup
# reaches the trap. The server preloads pg_cron (cron.database_name = 'postgres'), and
# tenant_backup too once the extension is installed into this PostgreSQL.
# TB_PG_BIN: another (relocated) copy of the installation, say to try a build while
# another run uses the system one.
PG_BIN=${TB_PG_BIN:-/usr/lib/postgresql/15/bin}

# Copies this PostgreSQL installation (binaries, libraries, share) under ROOT, where it
# finds its files relative to its binaries, and points PG_BIN at the copy: a test that
# installs another build of the extension (make install DESTDIR=ROOT) does it there,
# never in the installation the other tests use.
pg_private_install() { # ROOT
	local root=$1 lib share
	lib=$(dirname "$PG_BIN")
	share=$("$PG_BIN/pg_config" --sharedir)
	mkdir -p "$root$(dirname "$lib")" "$root$(dirname "$share")" &&
		cp -a "$lib" "$root$(dirname "$lib")/" && cp -a "$share" "$root$(dirname "$share")/" ||
		pg_bail /dev/null "could not copy the PostgreSQL installation into $root"
	PG_BIN=$root$PG_BIN
	[ "$("$PG_BIN/pg_config" --sharedir)" = "$root$share" ] ||
		pg_bail /dev/null "the copy in $root does not find its own files (not a relocatable installation)"
}

# Runs a command as postgres from DIR (postgres cannot cd into root's home directory).
pg_as_postgres() { # DIR CMD...
	local dir=$1
	shift
	(cd "$dir" && runuser -u postgres -- "$@")
}

pg_bail() { # LOG MESSAGE
	echo "Bail out! $2"
	[ -f "$1" ] && tail -n 50 "$1" | sed 's/^/# /' >&2
	exit 1
}

pg_start() { # DIR PORT [EXTRA_CONF_LINES]
	local dir=$1 port=$2 extra=${3:-} preload=pg_cron parent
	[ -x "$PG_BIN/initdb" ] || pg_bail /dev/null "PostgreSQL 15 server not installed in $PG_BIN (make deps)"
	if ! { mkdir -p "$dir" && dir=$(cd "$dir" && pwd) && chown postgres:postgres "$dir"; }; then
		pg_bail /dev/null "cannot create $dir for the PostgreSQL cluster"
	fi
	# mktemp directories are 0700 root: let postgres traverse the parent.
	parent=$(dirname "$dir")
	runuser -u postgres -- test -x "$parent" || chmod o+x "$parent"
	runuser -u postgres -- test -w "$dir" ||
		pg_bail /dev/null "user postgres cannot reach $dir (a directory above it is not traversable)"
	on_exit "pg_stop '$dir'"

	pg_as_postgres "$dir" "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust \
		-E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
		pg_bail "$dir/initdb.log" "initdb failed in $dir/data"
	[ -e "$("$PG_BIN/pg_config" --pkglibdir)/tenant_backup.so" ] && preload=tenant_backup,pg_cron
	cat >>"$dir/data/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
fsync = off
# Commits reach the kernel before they return (fsync stays off): tests that kill a
# backend make the postmaster reset shared memory, which would lose asynchronously
# committed transactions still in the WAL buffers.
synchronous_commit = on
full_page_writes = off
shared_preload_libraries = '$preload'
cron.database_name = 'postgres'
# Failed jobs retry at once unless a test sets its own back-off.
tenant_backup.retry_delays = '0'
# A new database is not backed up by itself unless a test sets a delay of its own.
tenant_backup.first_backup_delay = '100 years'
$extra
EOF
	pg_as_postgres "$dir" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
		pg_bail "$dir/server.log" "PostgreSQL did not start in $dir on port $port"
	export PGHOST=$dir PGPORT=$port PGUSER=postgres PGDATABASE=postgres
}

# True while PID runs; an exited postmaster stays a zombie until init reaps it.
pg_pid_running() { # PID
	local state
	state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$state" != Z ]
}

pg_stop() { # DIR
	local dir=$1 pid
	[ -f "$dir/data/postmaster.pid" ] || return 0
	pg_as_postgres "$dir" "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 && return 0
	pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
	# Only a postmaster of this data directory, never a process that reused the PID.
	[ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-D $dir/data" || return 0
	echo "# pg_stop: pg_ctl stop failed, killing postmaster $pid" >&2
	kill -QUIT "$pid" 2>/dev/null
	for _ in $(seq 50); do
		pg_pid_running "$pid" || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
}

pg_restart() { # DIR
	pg_as_postgres "$1" "$PG_BIN/pg_ctl" -D "$1/data" -l "$1/server.log" -m fast -w -t 60 restart >/dev/null ||
		pg_bail "$1/server.log" "PostgreSQL did not restart in $1"
}

# A scratch directory ($D) with file storage ($D/store) and a master key ($D/master.key)
# that the server can read, and TB_CONF: the settings that point tenant_backup at them,
# with no schedule of its own. Call it in the script's own shell, as scratch_dir.
tb_scratch_storage() {
	scratch_dir
	mkdir -p "$D/store" && chown postgres "$D/store" || { echo "Bail out! cannot create $D/store"; exit 1; }
	"$TB" keygen --out "$D/master.key" 2>/dev/null || { echo "Bail out! tenant-backup keygen failed ($TB)"; exit 1; }
	chown postgres "$D/master.key"
	TB_CONF="tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'"
}

# pg_start with TB_CONF and the extra lines, then CREATE EXTENSION tenant_backup.
pg_start_tb() { # DIR PORT [EXTRA_CONF_LINES]
	pg_start "$1" "$2" "$TB_CONF${3:+
$3}"
	psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$1/server.log" "CREATE EXTENSION failed"
}

psql_q() { # SQL...
	local sql args=()
	for sql; do args+=(-c "$sql"); done
	"$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 "${args[@]}"
}

pg_log_tail() { # DIR
	tail -n 50 "$1/server.log"
}
