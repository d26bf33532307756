# The point-in-time recovery test bed (bash, source after tap.sh and pg.sh, in a
# scratch_dir): a dedicated tenant's cluster archiving its WAL through the extension,
# and helpers to restore copies of it, as an operator would, as the server's user.
#
#   pitr_cluster_start PORT STORAGE  master key, then a cluster (fsync on) with
#                                    archive_library tenant_backup for tenant acme
#                                    (tier dedicated) and its database app
#   archived_up_to_now               switches WAL; waits until that segment is archived
#   restore_pitr DIR OPTIONS...      tenant-backup restore-pitr --tenant acme --pgdata DIR
#   start_copy DIR PORT              starts a restored copy (log DIR.log, socket in
#                                    $D/restore), waits until it left recovery; stopped at exit
#   copy_q PORT SQL                  runs SQL in the copy's database app
#
# Copies go below $D/restore, a directory of the server's user.

pitr_cluster_start() { # PORT STORAGE
	chmod 755 "$D"
	mkdir -p "$D/restore"
	chown postgres "$D/restore"
	"$TB" keygen --out "$D/master.key" 2>/dev/null
	chown postgres "$D/master.key"
	export TENANT_BACKUP_STORAGE="$2" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
	pg_start "$D/pg" "$1" "tenant_backup.storage = '$2'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
wal_level = replica
archive_mode = on
archive_library = 'tenant_backup'
tenant_backup.archive_tenant = 'acme'
fsync = on
full_page_writes = on
synchronous_commit = on"
	psql_q "CREATE EXTENSION tenant_backup" "SELECT tenant_backup.tenant_create('acme', tier => 'dedicated')" \
		"CREATE DATABASE app" "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'app')" >/dev/null
}

# Something to archive first: a switch right after another makes no new segment.
archived_up_to_now() {
	local seg
	psql_q "CREATE TABLE IF NOT EXISTS wake (n int)" "INSERT INTO wake VALUES (1)" >/dev/null 2>&1
	seg=$(psql_q "SELECT pg_walfile_name(pg_switch_wal())")
	wait_for 900 0.1 t psql_q "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver" >/dev/null
}

restore_pitr() { # DIR OPTIONS...
	local dir=$1
	shift
	pg_as_postgres "$D" env TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE" \
		TENANT_BACKUP_MASTER_KEY_FILE="$TENANT_BACKUP_MASTER_KEY_FILE" "$TB" restore-pitr --tenant acme --pgdata "$dir" "$@"
}

start_copy() { # DIR PORT
	chown -R postgres "$1"
	pg_as_postgres "$D" "$PG_BIN/pg_ctl" -D "$1" -l "$1.log" -w -t 120 \
		-o "-p $2 -c unix_socket_directories=$D/restore -c listen_addresses=''" start >/dev/null 2>&1 || {
		diag "$(tail -5 "$1.log")"
		return 1
	}
	on_exit "pg_as_postgres '$D' '$PG_BIN/pg_ctl' -D '$1' -m immediate stop >/dev/null 2>&1"
	wait_for 300 0.1 f psql -X -A -t -h "$D/restore" -p "$2" -d postgres -c "SELECT pg_is_in_recovery()" >/dev/null
}

copy_q() { # PORT SQL
	psql -X -A -t -q -h "$D/restore" -p "$1" -d app -c "$2"
}
