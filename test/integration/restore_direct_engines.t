#!/bin/bash
# tenant-backup restore-direct of MySQL/MariaDB, Redis and MongoDB tenants, the
# disaster-recovery path when the control plane is gone: each tenant is backed up through
# the control plane and its agent, then the control plane's PostgreSQL is STOPPED, and
# restore-direct (storage and the master key only) has the engine's agent load the newest
# backup into a new target: a MariaDB database (test/lib), a Redis database number (a
# db-number tenant) and a key prefix (a prefix tenant), a MongoDB database (the project's
# wire-protocol server, or a real one with TB_TEST_MONGO_URI). The target holds what the
# source held: rows and definitions, keys with values and TTLs, documents byte for byte.
# Refused, with nothing created or changed: --into with option-like values, a password in
# --into, a target that exists or holds keys or collections, a tampered object.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/mariadb.sh"
. "$(dirname "$0")/../lib/mysql_tenants.sh"
. "$(dirname "$0")/../lib/redis.sh"
. "$(dirname "$0")/../lib/mongo.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)
PG_PORT=$(free_port)
MY_PORT=$(free_port)
R=$(free_port)

scratch_dir
mysql_tenants_setup "$PG_PORT" "$MY_PORT"
redis_start "$D/redis" "$R"
mongo_start "$D/mongo" "$(free_port)"

# --- the tenants, backed up through the control plane and their agents
my_db acme "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT, amount DECIMAL(10,2), at DATETIME(6))" \
	"INSERT INTO orders (note, amount, at) VALUES ('first', 12.50, '2026-01-02 03:04:05.123456'), ('quote''s \\\\ and ü', NULL, NULL)" \
	"CREATE SEQUENCE ticket_seq START WITH 100" \
	"CREATE TABLE tickets (id INT PRIMARY KEY DEFAULT NEXTVAL(ticket_seq), what VARCHAR(20))" \
	"INSERT INTO tickets (what) VALUES ('one'), ('two')"
rtool fill "$R" 3 "" dbten
rtool fill "$R" 0 "pre:" preten
mtool drop "$MONGO_URI_BASE" modr_src >/dev/null 2>&1
mtool fill "$MONGO_URI_BASE" modr_src mongoten
psql_q "SELECT tenant_backup.tenant_create('dbten')" "SELECT tenant_backup.tenant_create('preten')" \
	"SELECT tenant_backup.tenant_create('mongoten')" \
	"SELECT tenant_backup.tenant_add_database('dbten', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/3')" \
	"SELECT tenant_backup.tenant_add_database('preten', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/0', '{\"key_prefix\": \"pre:\"}')" \
	"SELECT tenant_backup.tenant_add_database('mongoten', 'mongodb', '$MONGO_URI_BASE/modr_src')" >/dev/null

backup() { # TENANT ENGINE: one backup by a --once agent of ENGINE; prints the new object key
	agent_use "tenant-backup-agent-$2"
	psql_q "SELECT tenant_backup.tenant_backup('$1', '$2')" >/dev/null
	agent_once "backup-$1" || diag "$(tail -3 "$D/backup-$1.log")"
	psql_q "SELECT object_key FROM tenant_backup.tenant_backups('$1') WHERE status = 'complete' ORDER BY id DESC LIMIT 1"
}
my_obj=$(backup acme mysql)
like "$my_obj" '^acme/mysql/.*\.tbk$' "acme's MySQL backup is complete"
db_obj=$(backup dbten redis)
like "$db_obj" '^dbten/redis/.*\.tbk$' "dbten's Redis backup (database 3) is complete"
pre_obj=$(backup preten redis)
like "$pre_obj" '^preten/redis/.*\.tbk$' "preten's Redis backup (prefix pre:) is complete"
mo_obj=$(backup mongoten mongodb)
like "$mo_obj" '^mongoten/mongodb/.*\.tbk$' "mongoten's MongoDB backup is complete"
rtool snapshot "$R" 3 "" >"$D/dbten.src"
rtool snapshot "$R" 0 "pre:" >"$D/preten.src"
mtool snapshot "$MONGO_URI_BASE" modr_src >"$D/mongoten.src"

# --- the control plane is gone
pg_stop "$D/pg"
psql_q "SELECT 1" >/dev/null 2>&1
ok $(($? == 0)) "the control plane's PostgreSQL is stopped"
unset TENANT_BACKUP_CONTROL

direct() { # ARGS...: tenant-backup restore-direct, its output and errors in $D/out
	"$TB" restore-direct "$@" >"$D/out" 2>&1
}

# --- MySQL/MariaDB: into a new database, its password from a 0600 file
printf '%s\n' "$MY_PASSWORD" >"$D/my.pw"
chmod 600 "$D/my.pw"
direct --tenant acme --engine mysql --into "mysql://tbagent@127.0.0.1:$MY_PORT/acme_dr" --password-file "$D/my.pw"
ok $? "restore-direct --engine mysql into a new database succeeds" || diag "$(cat "$D/out")"
like "$(tail -1 "$D/out")" "^restored $my_obj into mysql://tbagent@127.0.0.1:$MY_PORT/acme_dr$" "it says what it restored where"
"$HERE/lib/my_compare.sh" acme acme_dr
ok $? "acme_dr holds what acme held: every definition, row and AUTO_INCREMENT counter"
is "$(my_canaries acme_dr)" "acme canary" "the canary row is there"
is "$(my_q "SELECT COLUMN_DEFAULT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'acme_dr' AND TABLE_NAME = 'tickets' AND COLUMN_NAME = 'id'")" \
	'nextval(`acme_dr`.`ticket_seq`)' "a sequence default draws from acme_dr's own sequence (the manifest names acme), not acme's"
my_db acme_dr "INSERT INTO tickets (what) VALUES ('three')"
is "$(my_db acme_dr "SELECT GROUP_CONCAT(id ORDER BY id) FROM tickets")|$(my_db acme "SELECT GROUP_CONCAT(id ORDER BY id) FROM tickets")" \
	"100,101,1100|100,101" \
	"  a new row there takes its next value (1100: the dump's next value beyond the cache; acme's own would give 102)"

before=$(my_db globex "CHECKSUM TABLE canary")
direct --tenant acme --engine mysql --into "mysql://tbagent@127.0.0.1:$MY_PORT/globex" --password-file "$D/my.pw"
ok $(($? == 0)) "restore-direct into a database that exists is refused"
like "$(cat "$D/out")" 'database "globex" already exists; restore into one that does not' "it says the target exists"
is "$(my_db globex "CHECKSUM TABLE canary")|$(my_canaries globex)" "$before|globex canary" "and globex is unchanged"

schemas=$(my_schemas)
direct --tenant acme --engine mysql --into "mysql://tbagent:$MY_PASSWORD_URI@127.0.0.1:$MY_PORT/acme_pw"
ok $(($? == 0)) "a password in --into is refused"
like "$(cat "$D/out")" 'carries a password, which would be visible in the process list.*--password-file FILE or TENANT_BACKUP_MYSQL_PASSWORD' \
	"it names where the password goes instead"
unlike "$(cat "$D/out")" 's3cr' "and does not repeat it"
for into in "--defaults-file=/etc/passwd" "-Dmysql" "mysql://tbagent@127.0.0.1:$MY_PORT/--force" \
	"mysql://tbagent@127.0.0.1:$MY_PORT/-e" "redis://127.0.0.1:$R/0"; do
	direct --tenant acme --engine mysql --into "$into" --password-file "$D/my.pw"
	ok $(($? == 0)) "--into '$into' is refused"
	like "$(cat "$D/out")" "takes a mysql:// URI|not a database name this agent accepts" "  as no MySQL target ($(tail -1 "$D/out" | cut -c1-90))"
done
is "$(my_schemas)" "$schemas" "none of these created a database"

# A stop while it loads (SIGTERM to tenant-backup, which passes it on to the agent): the
# database it created is dropped again. The client waits before loading, so that the stop
# comes while the database exists.
printf '#!/bin/bash\nsleep 3\nexec mariadb "$@"\n' >"$D/slow-client"
chmod 755 "$D/slow-client"
TENANT_BACKUP_MYSQL_CLIENT_COMMAND="$D/slow-client" "$TB" restore-direct --tenant acme --engine mysql \
	--into "mysql://tbagent@127.0.0.1:$MY_PORT/acme_stopped" --password-file "$D/my.pw" >"$D/out" 2>&1 &
direct_pid=$!
is "$(wait_for 100 0.05 acme_stopped my_q "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'acme_stopped'")" \
	acme_stopped "the interrupted restore-direct has created its database"
kill -TERM "$direct_pid"
wait "$direct_pid"
ok $(($? == 0)) "SIGTERM stops restore-direct with a failure"
like "$(cat "$D/out")" "interrupted by signal 15|asked to stop" "it says it was stopped"
is "$(my_q "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'acme_stopped'")" 0 \
	"and the database it created is gone"
is "$(my_schemas)" "$schemas" "no other database was left behind"

object_get "$my_obj" "$D/pristine"
cp "$D/pristine" "$D/tampered"
flip_byte "$D/tampered" $(($(stat -c %s "$D/tampered") / 2))
object_put "$D/tampered" "$my_obj"
direct --tenant acme --engine mysql --into "mysql://tbagent@127.0.0.1:$MY_PORT/acme_tampered" --password-file "$D/my.pw"
ok $(($? == 0)) "a tampered MySQL backup is refused"
like "$(cat "$D/out")" 'nothing was created: backup .* did not authenticate' "before anything is created, it says"
is "$(my_schemas)" "$schemas" "and no database was created"
object_put "$D/pristine" "$my_obj"

# --- Redis: a db-number tenant into another database number, a prefix tenant into a prefix
export TENANT_BACKUP_REDIS_PASSWORD=$REDIS_PASSWORD
direct --tenant dbten --engine redis --into "redis://tbagent@127.0.0.1:$R/7"
ok $? "restore-direct --engine redis of a db-number tenant into database 7 succeeds" || diag "$(cat "$D/out")"
rtool snapshot "$R" 7 "" >"$D/dbten.dr"
out=$(rtool compare "$D/dbten.src" "$D/dbten.dr")
ok $? "database 7 holds every key of database 3: types, values and TTLs ($(wc -l <"$D/dbten.dr") keys)" || diag "$out"
grep -q ' -1$' "$D/dbten.dr" && [ "$(grep -vc ' -1$' "$D/dbten.dr")" -ge 2 ]
ok $? "  keys without and with a TTL among them"

direct --tenant preten --engine redis --into "redis://tbagent@127.0.0.1:$R/5?key_prefix=dr:"
ok $? "restore-direct of a prefix tenant into prefix dr: of database 5 succeeds" || diag "$(cat "$D/out")"
rtool snapshot "$R" 5 "dr:" >"$D/preten.dr"
out=$(rtool compare "$D/preten.src" "$D/preten.dr")
ok $? "dr: holds every key pre: held, with its value and TTL" || diag "$out"
is "$(rtool cmd "$R" 5 DBSIZE)" "$(wc -l <"$D/preten.dr")" "  and nothing else was written to database 5 (no staged key left)"

rtool cmd "$R" 8 SET other "not yours" >/dev/null
direct --tenant dbten --engine redis --into "redis://tbagent@127.0.0.1:$R/8"
ok $(($? == 0)) "restore-direct into a database that holds keys is refused"
like "$(cat "$D/out")" 'target database 8 already holds keys; restore into an empty one' "it says so"
is "$(rtool cmd "$R" 8 DBSIZE) $(rtool cmd "$R" 8 GET other)" "1 not yours" "and database 8 is unchanged"
rtool snapshot "$R" 0 "pre:" >"$D/preten.live"
direct --tenant preten --engine redis --into "redis://tbagent@127.0.0.1:$R/0?key_prefix=pre:"
ok $(($? == 0)) "restore-direct into a prefix that holds keys (the tenant's own) is refused"
like "$(cat "$D/out")" 'target prefix pre: already holds keys' "it says so"
rtool snapshot "$R" 0 "pre:" >"$D/preten.after"
rtool compare "$D/preten.live" "$D/preten.after" >/dev/null
ok $? "and the tenant's live keys are unchanged"
direct --tenant dbten --engine redis --into "redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$R/9"
ok $(($? == 0)) "a password in a Redis --into is refused"
direct --tenant dbten --engine redis --into "--help"
ok $(($? == 0)) "--into '--help' is refused"
like "$(cat "$D/out")" 'takes a redis:// URI' "  as no Redis target"

object_get "$db_obj" "$D/pristine"
cp "$D/pristine" "$D/tampered"
flip_byte "$D/tampered" $(($(stat -c %s "$D/tampered") - 40))
object_put "$D/tampered" "$db_obj"
direct --tenant dbten --engine redis --into "redis://tbagent@127.0.0.1:$R/10"
ok $(($? == 0)) "a tampered Redis backup is refused"
like "$(cat "$D/out")" 'nothing was created: backup .* did not authenticate' "before anything is written"
is "$(rtool cmd "$R" 10 DBSIZE)" 0 "database 10 stays empty"
object_put "$D/pristine" "$db_obj"

# --- MongoDB: into a new database
direct --tenant mongoten --engine mongodb --into "$MONGO_URI_BASE/modr_dr"
ok $? "restore-direct --engine mongodb into a new database succeeds" || diag "$(cat "$D/out")"
mtool snapshot "$MONGO_URI_BASE" modr_dr >"$D/mongoten.dr"
diff "$D/mongoten.src" "$D/mongoten.dr" >"$D/mongo.diff"
ok $? "modr_dr holds what modr_src held: collections, views, options, indexes, documents byte for byte" ||
	diag "$(head -5 "$D/mongo.diff")"
mtool snapshot "$MONGO_URI_BASE" modr_src >"$D/mongoten.live"
direct --tenant mongoten --engine mongodb --into "$MONGO_URI_BASE/modr_src"
ok $(($? == 0)) "restore-direct into a database that has collections is refused"
like "$(cat "$D/out")" 'target database "modr_src" already has collections' "it says so"
mtool snapshot "$MONGO_URI_BASE" modr_src >"$D/mongoten.after"
cmp -s "$D/mongoten.live" "$D/mongoten.after"
ok $? "and it is unchanged"
direct --tenant mongoten --engine mongodb --into "$MONGO_URI_BASE/admin"
ok $(($? == 0)) "the server's own database admin is no target"

object_get "$mo_obj" "$D/pristine"
cp "$D/pristine" "$D/tampered"
flip_byte "$D/tampered" $(($(stat -c %s "$D/tampered") / 3))
object_put "$D/tampered" "$mo_obj"
direct --tenant mongoten --engine mongodb --into "$MONGO_URI_BASE/modr_tampered"
ok $(($? == 0)) "a tampered MongoDB backup is refused"
like "$(cat "$D/out")" 'nothing was created: backup .* did not authenticate' "before anything is created"
is "$(mtool cmd "$MONGO_URI_BASE" modr_tampered '{"listCollections": 1, "nameOnly": true}' | grep -c '"name"')" 0 \
	"modr_tampered has no collection"
object_put "$D/pristine" "$mo_obj"

# --- another tenant's backup in this tenant's place, with a manifest rewritten to match
# it (backup id, key id, SHA-256 and size are dbten's own): only the authenticated header
# tells whose it is
forged=preten/redis/$(basename "$db_obj")
object_get "$db_obj" "$D/dbten.tbk"
object_get "${db_obj%.tbk}.json" "$D/dbten.json"
python3 -c 'import json, sys
m = json.load(open(sys.argv[1])); m["tenant"] = "preten"; m["object"] = sys.argv[2]; m.pop("database", None)
json.dump(m, open(sys.argv[3], "w"))' "$D/dbten.json" "$forged" "$D/forged.json"
object_put "$D/dbten.tbk" "$forged"
object_put "$D/forged.json" "${forged%.tbk}.json"
forged_id=$(basename "$db_obj" .tbk)
direct --tenant preten --engine redis --into "redis://tbagent@127.0.0.1:$R/11" --backup-id "${forged_id##*-}"
ok $(($? == 0)) "dbten's backup stored as preten's, its manifest rewritten to match, is refused"
like "$(cat "$D/out")" "nothing was created: backup $forged .*holds a redis backup of tenant 'dbten'" \
	"by its authenticated header, before anything is written"
is "$(rtool cmd "$R" 11 DBSIZE)" 0 "database 11 stays empty"

# --- the replica: the primary's copy gone, the agent reads the replica's
if [ "${TB_TEST_STORAGE:-file}" = file ]; then
	cp -a "$D/store" "$D/replica"
	rm "$D/store/$mo_obj"
	direct --tenant mongoten --engine mongodb --into "$MONGO_URI_BASE/modr_replica" --replica "file://$D/replica"
	ok $? "with the primary's object gone, restore-direct --replica restores from the replica" || diag "$(cat "$D/out")"
	like "$(cat "$D/out")" "replica" "  saying so"
	mtool snapshot "$MONGO_URI_BASE" modr_replica >"$D/mongoten.replica"
	cmp -s "$D/mongoten.src" "$D/mongoten.replica"
	ok $? "  and modr_replica holds what modr_src held"
	cp "$D/replica/$mo_obj" "$D/store/$mo_obj"
fi

# --- the agent is found beside tenant-backup, or named
direct --tenant dbten --engine redis --into "redis://tbagent@127.0.0.1:$R/12" --agent "$D/no-such-agent"
ok $(($? == 0)) "--agent naming no program fails"
like "$(cat "$D/out")" "cannot run the redis agent $D/no-such-agent" "it names the agent it could not run"
direct --tenant dbten --engine redis --into "redis://tbagent@127.0.0.1:$R/12" \
	--agent "$(dirname "$TB")/tenant-backup-agent-redis"
ok $? "--agent PATH runs that agent"
is "$(rtool cmd "$R" 12 DBSIZE)" "$(wc -l <"$D/dbten.src")" "  which restored every key"

done_testing
