# The MySQL agent's test bed (bash, source after tap.sh, pg.sh and mariadb.sh, in a
# scratch_dir): a control-plane PostgreSQL with the extension, a MariaDB server, file
# storage, a master key, a login role for agents, and three tenants whose MariaDB
# databases hold a canary row, a view, a procedure and a trigger.
#
#   mysql_tenants_setup PG_PORT MY_PORT   (with TB_TEST_STORAGE=s3: S3 on $S3_PORT)
#   object_get KEY FILE / object_put FILE KEY   a stored object, on file storage or S3
#   agent_start NAME [OPTIONS...]   runs $AGENT_BIN (default: tenant-backup-agent-mysql beside $TB) in the background (log
#                                   $D/NAME.log, PID in AGENT_PID), stopped at exit
#   agent_stop PID                  SIGTERM, and waits for it to exit
#   agent_once NAME [OPTIONS...]    runs it with --once in the foreground, log $D/NAME.log
#   my_canaries DB                  the canary rows of DB, comma-separated
#
# The agent's password for MariaDB is MY_PASSWORD (it has ':', '@', '%' and '"', so the
# locator carries it percent-encoded). Every dump goes through $D/dump-wrapper, which
# records its arguments in $D/dump-argv and, with SLOW_DUMP_SECONDS, keeps the job
# busy that long after the dump.

MY_PASSWORD='s3cr:t@p%w"d'
AGENT_BIN=${AGENT_BIN:-$(dirname "$TB")/tenant-backup-agent-mysql}
MY_PASSWORD_URI='s3cr%3At%40p%25w%22d'

mysql_tenants_setup() { # PG_PORT MY_PORT
	local pg_port=$1 my_port=$2 t
	if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
		. "$(dirname "${BASH_SOURCE[0]}")/s3.sh"
		s3_start "$D" "$S3_PORT"
		STORAGE="s3://$TB_S3_BUCKET/my"
	else
		mkdir -p "$D/store"
		chown postgres "$D/store"
		STORAGE="file://$D/store"
	fi
	"$TB" keygen --out "$D/master.key" 2>/dev/null
	chown postgres "$D/master.key"
	export TENANT_BACKUP_STORAGE="$STORAGE" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
	pg_start "$D/pg" "$pg_port" "tenant_backup.storage = '$STORAGE'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200
synchronous_commit = on"
	psql_q "CREATE EXTENSION tenant_backup" \
		"CREATE ROLE agent LOGIN" "GRANT tenant_backup_agent TO agent" >/dev/null
	export TENANT_BACKUP_CONTROL="host=$D/pg port=$pg_port dbname=postgres user=agent"

	mariadb_start "$D/my" "$my_port"
	mariadb_create_user tbagent "$MY_PASSWORD"
	for t in acme globex initech; do
		my_q "CREATE DATABASE $t"
		my_db $t "CREATE TABLE canary (id INT PRIMARY KEY, v VARCHAR(100), touched INT NOT NULL DEFAULT 0)" \
			"INSERT INTO canary (id, v) VALUES (1, '$t canary')" \
			"CREATE VIEW canary_view AS SELECT id, UPPER(v) AS loud FROM canary" \
			"CREATE TRIGGER canary_touch BEFORE UPDATE ON canary FOR EACH ROW SET NEW.touched = OLD.touched + 1" \
			"CREATE PROCEDURE canary_count(OUT n INT) SELECT COUNT(*) INTO n FROM canary"
		psql_q "SELECT tenant_backup.tenant_create('$t')" \
			"SELECT tenant_backup.tenant_add_database('$t', 'mysql', 'mysql://tbagent:$MY_PASSWORD_URI@127.0.0.1:$my_port/$t')" \
			>/dev/null
	done

	cat >"$D/dump-wrapper" <<EOF
#!/bin/bash
printf '%s\n' "\$@" >>"$D/dump-argv"
mariadb-dump "\$@" || exit
sleep "\${SLOW_DUMP_SECONDS:-0}"
EOF
	chmod 755 "$D/dump-wrapper"
	export TENANT_BACKUP_MYSQL_DUMP_COMMAND="$D/dump-wrapper"
}

agent_start() { # NAME [OPTIONS...]
	local name=$1
	shift
	"$AGENT_BIN" --name "$name" "$@" >>"$D/$name.log" 2>&1 &
	AGENT_PID=$!
	on_exit "agent_stop $AGENT_PID"
}

agent_once() { # NAME [OPTIONS...]
	local name=$1
	shift
	"$AGENT_BIN" --name "$name" --once "$@" >>"$D/$name.log" 2>&1
}

my_canaries() { # DB
	my_db "$1" "SELECT GROUP_CONCAT(v ORDER BY id SEPARATOR ',') FROM canary"
}

# SIGTERM, as an operator stops it; quietly (bash reports jobs ended by a signal).
agent_stop() { # PID
	{ kill -TERM "$1" && wait "$1"; } 2>/dev/null
}

object_get() { # KEY FILE
	if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
		aws_s3 s3 cp "s3://$TB_S3_BUCKET/my/$1" "$2" --only-show-errors
	else
		cp "$D/store/$1" "$2"
	fi
}

object_put() { # FILE KEY
	if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
		aws_s3 s3 cp "$1" "s3://$TB_S3_BUCKET/my/$2" --only-show-errors
	else
		cp "$1" "$D/store/$2"
	fi
}
