# The test bed every agent shares (bash, source after tap.sh and pg.sh, in a
# scratch_dir): a control-plane PostgreSQL with the extension, storage (file, or S3 with
# TB_TEST_STORAGE=s3 on $S3_PORT), a master key and a login role for agents.
#
#   agent_bed_setup PG_PORT PREFIX  PREFIX: the S3 key prefix of this bed's backups
#   agent_use PROGRAM               AGENT_BIN: PROGRAM built with AddressSanitizer/UBSan
#                                   when make test built one (TB_ASAN_BIN), else beside $TB
#   object_get KEY FILE / object_put FILE KEY   a stored object, on file storage or S3
#   agent_start NAME [OPTIONS...]   runs $AGENT_BIN in the background (log $D/NAME.log,
#                                   PID in AGENT_PID), stopped at exit
#   agent_stop PID                  SIGTERM, and waits for it to exit
#   agent_once NAME [OPTIONS...]    runs it with --once in the foreground, log $D/NAME.log

agent_bed_setup() { # PG_PORT PREFIX
	local pg_port=$1
	AGENT_BED_PREFIX=$2
	if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
		. "$(dirname "${BASH_SOURCE[0]}")/s3.sh"
		s3_start "$D" "$S3_PORT"
		STORAGE="s3://$TB_S3_BUCKET/$AGENT_BED_PREFIX"
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
}

agent_use() { # PROGRAM
	AGENT_BIN=$(dirname "$TB")/$1
	if [ -x "${TB_ASAN_BIN:-}/$1" ]; then
		AGENT_BIN=$TB_ASAN_BIN/$1
		export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
	fi
}

# Agents run as the server's OS user here: on file storage the control plane reads
# the objects an agent stored (agent_report checks them), which root's 0600 files
# forbid. setpriv execs the agent in its own process, so that $! and agent_stop reach it.
AGENT_AS_SERVER_USER=(setpriv --reuid=postgres --regid=postgres --init-groups --)

agent_start() { # NAME [OPTIONS...]
	local name=$1
	shift
	"${AGENT_AS_SERVER_USER[@]}" "$AGENT_BIN" --name "$name" "$@" >>"$D/$name.log" 2>&1 &
	AGENT_PID=$!
	on_exit "agent_stop $AGENT_PID"
}

agent_once() { # NAME [OPTIONS...]
	local name=$1
	shift
	"${AGENT_AS_SERVER_USER[@]}" "$AGENT_BIN" --name "$name" --once "$@" >>"$D/$name.log" 2>&1
}

# SIGTERM, as an operator stops it; quietly (bash reports jobs ended by a signal).
agent_stop() { # PID
	{ kill -TERM "$1" && wait "$1"; } 2>/dev/null
}

object_get() { # KEY FILE
	if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
		aws_s3 s3 cp "s3://$TB_S3_BUCKET/$AGENT_BED_PREFIX/$1" "$2" --only-show-errors
	else
		cp "$D/store/$1" "$2"
	fi
}

object_put() { # FILE KEY
	if [ "${TB_TEST_STORAGE:-file}" = s3 ]; then
		aws_s3 s3 cp "$1" "s3://$TB_S3_BUCKET/$AGENT_BED_PREFIX/$2" --only-show-errors
	else
		cp "$1" "$D/store/$2"
	fi
}

agent_drill() { # TENANT: tenant_restore_drill with an agent running; prints "ok" or "failed: <first check's error>"
	local out
	agent_start "drill-$1" --poll-seconds 1
	out=$(psql_q "SELECT tenant_backup.tenant_restore_drill('$1')")
	agent_stop "$AGENT_PID"
	psql_q "SELECT CASE WHEN (r->>'ok')::boolean THEN 'ok' ELSE 'failed: ' || coalesce(r->'checks'->0->>'error', '?') END
			FROM (SELECT \$j\$$out\$j\$::jsonb r) s"
}
backup_id() { # OBJECT_KEY: its backup's id
	psql_q "SELECT id FROM tenant_backup.backups WHERE object_key = '$1'"
}

# Bring your own key: TENANT's keys from now on wrapped by the stand-in KMS in $D/kms.
agent_kms_source() { # TENANT
	mkdir -p "$D/kms"
	chown postgres "$D/kms"
	psql_q "SELECT tenant_backup.tenant_set_key_source('$1', 'sh $(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kms.sh $D/kms')" \
		>/dev/null
	ok $? "tenant_set_key_source('$1', <kms command>)"
}

# The agent had the KMS unwrap TENANT's key; with the KMS refusing, a backup (the test's
# own backup function) fails naming the key command and adds no complete backup.
agent_kms_refusal() { # TENANT
	local complete
	grep -q "^$1 unwrap " "$D/kms/calls"
	ok $? "the agent had the KMS unwrap $1's key"
	touch "$D/kms/fail"
	complete=$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = '$1' AND status = 'complete'")
	backup "$1" >/dev/null
	like "$(psql_q "SELECT state || ': ' || coalesce(error, '') FROM tenant_backup.jobs WHERE tenant = '$1' ORDER BY id DESC LIMIT 1")" \
		'^failed: .*key command' "with the KMS refusing, the backup fails naming the key command"
	is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = '$1' AND status = 'complete'")" "$complete" \
		"and no complete backup is added"
	rm -f "$D/kms/fail"
}
