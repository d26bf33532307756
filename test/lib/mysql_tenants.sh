# The MySQL agent's test bed (bash, source after tap.sh, pg.sh, mariadb.sh and
# agents.sh, in a scratch_dir): the agents' bed (agents.sh) with a MariaDB server and
# three tenants whose databases hold a canary row, a view, a procedure and a trigger.
#
#   mysql_tenants_setup PG_PORT MY_PORT   (with TB_TEST_STORAGE=s3: S3 on $S3_PORT)
#   my_canaries DB                  the canary rows of DB, comma-separated
#   my_contents DB                  {"tables": {"<table>": <rows>, ...}} of DB's base tables,
#                                   counted with COUNT(*): what a backup of DB records
#   my_schemas                      every database of the server, comma-separated
#
# The agent's password for MariaDB is MY_PASSWORD (it has ':', '@', '%' and '"', so the
# locator carries it percent-encoded). Every dump goes through $D/dump-wrapper, which
# records its arguments in $D/dump/argv and, with SLOW_DUMP_SECONDS, keeps the job
# busy that long after the dump; $D/dump is writable by the agents' OS user (agents.sh).

MY_PASSWORD='s3cr:t@p%w"d'
AGENT_BIN=${AGENT_BIN:-$(dirname "$TB")/tenant-backup-agent-mysql}
MY_PASSWORD_URI='s3cr%3At%40p%25w%22d'

mysql_tenants_setup() { # PG_PORT MY_PORT
	local pg_port=$1 my_port=$2 t
	agent_bed_setup "$pg_port" my

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

	mkdir -p "$D/dump" && touch "$D/dump/argv" && chown -R postgres "$D/dump"
	cat >"$D/dump-wrapper" <<EOF
#!/bin/bash
printf '%s\n' "\$@" >>"$D/dump/argv"
mariadb-dump "\$@" || exit
sleep "\${SLOW_DUMP_SECONDS:-0}"
EOF
	chmod 755 "$D/dump-wrapper"
	export TENANT_BACKUP_MYSQL_DUMP_COMMAND="$D/dump-wrapper"
}

my_canaries() { # DB
	my_db "$1" "SELECT GROUP_CONCAT(v ORDER BY id SEPARATOR ',') FROM canary"
}

my_contents() { # DB
	local db=$1 table sep="" json=""
	while IFS= read -r table; do
		json+="$sep\"$table\": $(my_db "$db" "SELECT COUNT(*) FROM \`${table//\`/\`\`}\`")"
		sep=", "
	done < <(my_q "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$db'
		AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME")
	echo "{\"tables\": {$json}}"
}

my_schemas() {
	my_q "SELECT GROUP_CONCAT(SCHEMA_NAME ORDER BY SCHEMA_NAME) FROM information_schema.SCHEMATA"
}
