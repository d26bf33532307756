# A cluster with Debian's default pg_hba.conf for the integration scripts (bash, source
# after tap.sh and pg.sh): peer on the socket, scram-sha-256 on 127.0.0.1, no trust.
# The script itself then connects as OS user postgres.
#
#   pg_start_debian DIR PORT [EXTRA_CONF_LINES]  pg_start, then Debian's pg_hba.conf
#   pg_start_debian_tb                          in $D: file storage, a master key and such a
#                                               cluster on a free port, with tenant_backup
#                                               created and no backup of its own accord
#   psql_q SQL...                               as pg.sh's, as the superuser by peer
#   in_db DB SQL...                             psql_q in DB
#   as_role ROLE DB                             runs stdin in DB with the session user ROLE

pg_start_debian() { # DIR PORT [EXTRA_CONF_LINES]
	pg_start "$@"
	PG_DEBIAN_DIR=$1
	cat >"$1/data/pg_hba.conf" <<'HBA'
local all postgres peer
local all all peer
host all all 127.0.0.1/32 scram-sha-256
HBA
	pg_as_postgres "$1" "$PG_BIN/pg_ctl" -D "$1/data" reload >/dev/null
	for _ in $(seq 50); do
		psql_q "SELECT 1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	pg_bail "$1/server.log" "cannot connect by peer as postgres"
}

pg_start_debian_tb() {
	mkdir -p "$D/store"
	chown postgres "$D/store"
	STORAGE="file://$D/store"
	"$TB" keygen --out "$D/master.key" 2>/dev/null
	chown postgres "$D/master.key"
	export TENANT_BACKUP_STORAGE="$STORAGE" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
	pg_start_debian "$D/pg" "$(free_port)" "tenant_backup.storage = '$STORAGE'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
tenant_backup.lease_timeout = 5"
	psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$D/pg/server.log" "CREATE EXTENSION tenant_backup failed"
}

psql_q() { # SQL...
	local sql args=()
	for sql; do args+=(-c "$sql"); done
	pg_as_postgres "$PG_DEBIAN_DIR" "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 "${args[@]}"
}

in_db() { # DB SQL...
	local db=$1
	shift
	PGDATABASE=$db psql_q "$@"
}

as_role() { # ROLE DB (SQL on stdin)
	(printf 'SET SESSION AUTHORIZATION %s;\n' "$1" && cat) |
		PGDATABASE=$2 pg_as_postgres "$PG_DEBIAN_DIR" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -f -
}
