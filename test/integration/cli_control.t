#!/bin/bash
# The command line against the control plane, as an operator login (a member of
# tenant_backup_operator only): backup (queued, --wait with plain lines, --wait with a
# progress bar on a terminal), restore into a target, status, jobs and check as tables
# and as JSON, the exit statuses a script relies on (failed job, unknown tenant,
# unreachable control plane, bad usage), and hostile arguments passed as values.
# Also the storage listings: ls with a header and human sizes, ls of a storage that does
# not exist, ls and verify --json, and put's default zstd level (1, as everywhere).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"

pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE acme_db" "CREATE DATABASE gone_db" "CREATE ROLE ops LOGIN" \
	"GRANT tenant_backup_operator TO ops" >/dev/null || pg_bail "$D/pg/server.log" "could not set up the cluster"
PGDATABASE=acme_db psql_q "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 20000) g" \
	>/dev/null
psql_q "SELECT tenant_backup.tenant_create('acme')" "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme_db')" \
	"SELECT tenant_backup.tenant_create('gone')" "SELECT tenant_backup.tenant_add_database('gone', 'postgres', 'gone_db')" \
	>/dev/null || pg_bail "$D/pg/server.log" "could not register the tenants"
CONTROL="host=$PGHOST port=$PGPORT dbname=postgres user=ops"
tb() { "$TB" "$@" --control "$CONTROL"; }
job_state() { psql_q "SELECT state FROM tenant_backup.jobs WHERE id = $1"; }

# ------------------------------------------------------------ backup

out=$(tb backup acme 2>"$D/err")
rc=$?
is "$rc" 0 "backup without --wait exits 0 once queued"
like "$out" '^[0-9]+$' "it prints the job id"
is "$(wait_for 60 0.5 succeeded job_state "$out")" succeeded "the queued job runs and succeeds"

out=$(tb backup acme --wait 2>"$D/err")
rc=$?
is "$rc" 0 "backup --wait exits 0 when the backup succeeded"
like "$out" "job [0-9]+ backup acme/postgres \(acme_db\) succeeded: [0-9.]+ (B|KiB|MiB) in" \
	"without a terminal it ends with a plain line: the job, its size and time"
unlike "$out" $'\r|\033' "no terminal control characters without a terminal"
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")" 2 \
	"two complete backups in the catalog"

# On a terminal: a bar while the job runs. A lock holds pg_dump so that it stays running.
PGDATABASE=acme_db "$PG_BIN/psql" -X -q -c "BEGIN" -c "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE" \
	-c "SELECT pg_sleep(3)" >/dev/null 2>&1 &
locker=$!
on_exit "kill $locker 2>/dev/null"
sleep 0.5
echo "exec '$TB' backup acme --wait --control '$CONTROL'" >"$D/bar.sh"
script -qec "bash '$D/bar.sh'" /dev/null >"$D/tty.out" 2>&1 </dev/null
rc=$?
wait $locker
is "$rc" 0 "backup --wait on a terminal exits 0"
like "$(tr '\r' '\n' <"$D/tty.out")" '\[1/1\] job [0-9]+ backup acme/postgres \(acme_db\) \[[#.]{30}\] +[0-9]+% .* of [0-9.]+ (B|KiB|MiB), .*/s' \
	"on a terminal it draws a progress bar: percent of the expected total (the previous backup's size) and rate"
like "$(cat "$D/tty.out")" "succeeded" "and ends with the job's result"

# ------------------------------------------------------------ exit statuses

psql_q "DROP DATABASE gone_db" >/dev/null
out=$(tb backup gone --wait 2>&1)
rc=$?
is "$rc" 1 "backup --wait exits 1 when the job failed"
like "$out" "job [0-9]+ backup gone/postgres \(gone_db\) failed: .*gone_db" "and says which job failed and why"

out=$(tb backup nosuch 2>&1)
is "$?" 4 "an unknown tenant: exit 4 (the control plane refused)"
like "$out" 'tenant-backup backup: the control plane refused: .*nosuch' "with the control plane's message"

out=$(tb status "Acme; DROP" 2>&1)
is "$?" 2 "a malformed tenant name is bad usage (exit 2), refused before any connection"
out=$("$TB" status --control "host=127.0.0.1 port=$(free_port) dbname=postgres connect_timeout=2" 2>&1)
is "$?" 3 "an unreachable control plane: exit 3"
like "$out" "cannot connect to the control plane: .*Connection refused" "the message says so, on one line"
out=$(tb status nosuch 2>&1)
is "$?" 4 "status of a tenant the control plane does not know: exit 4"
like "$out" "no tenant 'nosuch'" "named in the message"

# Hostile values are bound parameters: they reach the functions as text, never as SQL.
out=$(tb restore acme --database "acme_db' OR true; DROP TABLE tenant_backup.jobs; --" 2>&1)
is "$?" 4 "a database name carrying SQL is refused by the control plane (exit 4)"
is "$(psql_q "SELECT count(*) > 0 FROM tenant_backup.jobs")" t "the jobs table is still there"
hostile="x'); DROP TABLE orders; --"
out=$(tb restore acme --target "$hostile" 2>&1)
is "$?" 0 "a target carrying SQL is only a name: the restore succeeds"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = \$\$$hostile\$\$")" 1 \
	"into a database of exactly that name"
is "$(PGDATABASE=acme_db psql_q "SELECT count(*) FROM orders")" 20000 "and the live table is untouched"

# ------------------------------------------------------------ restore

out=$(tb restore acme --target acme_copy 2>"$D/err")
rc=$?
is "$rc" 0 "restore into a target waits and exits 0 when done"
like "$out" "job [0-9]+ restore acme/postgres .*succeeded" "it reports the restore job's success"
is "$(PGDATABASE=acme_copy psql_q "SELECT count(*), sum(id) FROM orders")" "20000|200010000" \
	"the target holds every row of the backup"
out=$(tb restore acme --target acme_copy2 --no-wait 2>&1)
like "$out" '^[0-9]+$' "restore --no-wait prints the job id"
is "$(wait_for 60 0.5 succeeded job_state "$out")" succeeded "and the restore runs"

# ------------------------------------------------------------ status, jobs, check

out=$(tb status acme)
is "$?" 0 "status of a tenant exits 0"
like "$(echo "$out" | head -n 1)" '^TENANT +ENGINE +DATABASE +LAST SUCCESS +AGE +STATE +RUNNING +QUEUED +LAST ERROR$' \
	"status has a header"
like "$(echo "$out" | sed -n 2p)" '^acme +postgres +acme_db +20[0-9-]+ [0-9:]+Z +[0-9]+s +ok +0' \
	"a row per database: last success, age, ok, nothing queued"
out=$(tb status gone)
like "$out" 'gone +postgres +gone_db .*does not exist' "a tenant whose backups fail shows the last backup error"
json=$(tb status --json)
is "$(echo "$json" | /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(sorted(r["tenant"] for r in d), [r["last_success"] is not None for r in d if r["tenant"] == "acme"])')" \
	"['acme', 'gone'] [True]" "status --json: one JSON array of the view's rows"

out=$(tb jobs acme --limit 2)
like "$(echo "$out" | head -n 1)" '^JOB +KIND +TENANT +ENGINE +DATABASE +STATE +PHASE +QUEUED BY +QUEUED +TOOK +BYTES +ERROR$' \
	"jobs has a header"
is "$(echo "$out" | sed 1d | wc -l)" 2 "--limit 2: two jobs"
json=$(tb jobs --json --limit 0)
is "$(echo "$json" | /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(len(d), sorted({r["kind"] for r in d}), [r["state"] for r in d if r["tenant"] == "gone"][0])')" \
	"$(psql_q "SELECT count(*) FROM tenant_backup.jobs") ['backup', 'restore'] failed" \
	"jobs --json: every job with its kind and state"

json=$(tb check --json)
rc=$?
is "$(echo "$json" | /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(all({"name", "status", "detail", "hint"} <= set(r) for r in d) and len(d) > 0)')" \
	True "check --json: the rows of tenant_backup.check()"
expected_rc=$(echo "$json" | /usr/bin/python3 -c 'import json, sys; print(1 if any(r["status"] == "error" for r in json.load(sys.stdin)) else 0)')
is "$rc" "$expected_rc" "check exits 1 exactly when a check is in error"
like "$(tb check | head -n 1)" '^CHECK +STATUS +DETAIL +HINT$' "check as a table has a header"

# ------------------------------------------------------------ storage listings

export TENANT_BACKUP_STORAGE="file://$D/store" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
out=$("$TB" ls acme)
like "$(echo "$out" | head -n 1)" '^FINISHED +ENGINE +DATABASE +BACKUP ID +SIZE +STORED +OBJECT$' "ls has a header"
like "$(echo "$out" | sed -n 2p)" '^20[0-9T:-]+Z +postgres +[^ ]+ +[0-9]+ +[0-9.]+ (KiB|MiB) +[0-9.]+ (KiB|MiB) +acme/postgres/' \
	"ls shows human sizes"
out=$("$TB" ls --storage "file://$D/no-such-dir" 2>&1)
is "$?" 1 "ls of a storage directory that does not exist fails"
like "$out" "storage directory '$D/no-such-dir' does not exist" "and says so"
json=$("$TB" ls acme --json)
is "$(echo "$json" | /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(len(d["backups"]), d["skipped"], d["backups"][0]["tenant"])')" \
	"3 [] acme" "ls --json: the backups' manifests and what was skipped"
json=$("$TB" verify --tenant acme --json 2>/dev/null)
is "$(echo "$json" | /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["checked"], d["failed"], all(r["ok"] for r in d["results"]))')" \
	"3 0 True" "verify --json: every backup checked, with its result"

# put's default level is the extension's and the agents' (1): same bytes stored as --level 1.
seq 1 200000 >"$D/input"
put_stored() { # put OPTIONS...: the stored size of the object it made
	local object
	object=$("$TB" put --tenant put1 --engine mysql --workers 1 "$@" <"$D/input") || return 1
	"$TB" ls put1/mysql --json | /usr/bin/python3 -c 'import json, sys
print([b["stored_bytes"] for b in json.load(sys.stdin)["backups"] if b["object"] == sys.argv[1]][0])' "$object"
}
default=$(put_stored)
level1=$(put_stored --level 1)
level3=$(put_stored --level 3)
is "$default" "$level1" "put compresses at zstd level 1 by default"
[ -n "$level3" ] && [ "$level3" != "$level1" ]
ok $? "(level 3 stores another size: $level3 against $level1)"

# ------------------------------------------------------------ the control plane goes away during --wait

PGDATABASE=acme_db "$PG_BIN/psql" -X -q -c "BEGIN" -c "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE" \
	-c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
on_exit "kill $! 2>/dev/null"
sleep 0.5
tb backup acme --wait >"$D/wait.out" 2>&1 &
waiter=$!
wait_for 40 0.5 running psql_q "SELECT state FROM tenant_backup.jobs ORDER BY id DESC LIMIT 1" >/dev/null
pg_stop "$D/pg"
wait $waiter
is "$?" 3 "backup --wait exits 3 when the control plane goes away while it follows the job"
like "$(cat "$D/wait.out")" "tenant-backup backup: lost the connection to the control plane: .*(terminat|closed)" \
	"saying that the connection was lost"

done_testing
