#!/bin/bash
# The agents take nothing from an operator, a server or storage on trust. Each attack
# is run and shown refused or harmless, the other tenants' data checked unchanged:
# a MySQL restore target or database name read as a client option; an operator's
# locator through the socket, without its own password, on a system schema or
# authenticating as someone else; one MySQL/MongoDB database claimed by two tenants
# through two spellings; Redis locators aliasing one server (by text, and through
# another address the text cannot show); the agent's Redis password sent to any host;
# RDB restore targets outside redis_restore_dir, through symbolic links or creating
# directories; restore targets that are another tenant's database; MongoDB locators on admin or with file-reading options; a restore of an
# object storage swapped or that is not the one the catalog recorded.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/mariadb.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/mysql_tenants.sh"
. "$(dirname "$0")/../lib/redis.sh"
. "$(dirname "$0")/../lib/mongo.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)

scratch_dir
mysql_tenants_setup "$(free_port)" "$(free_port)"
psql_q "CREATE ROLE op LOGIN" "GRANT tenant_backup_operator TO op" >/dev/null
op_q() { PGUSER=op psql_q "$@"; }
# The newest job of TENANT: "state: error".
last_job() { psql_q "SELECT state || coalesce(': ' || error, '') FROM tenant_backup.jobs WHERE tenant = '$1' ORDER BY id DESC LIMIT 1"; }
complete_backups() { psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = '$1' AND status = 'complete'"; }
stored_objects() { find "$D/store/$1" -name '*.tbk' 2>/dev/null | wc -l; }
# The agents' configuration: their own credentials, and where those may go.
agent_conf() { # LINES
	printf '%s\n' "$@" >"$D/agent.conf"
	chown postgres "$D/agent.conf"
	chmod 600 "$D/agent.conf"
}
run_jobs() { agent_once "run-$1" --config "$D/agent.conf" >/dev/null 2>&1; } # NAME
# A restore job put straight into the catalog, past the SQL API's checks: onto TENANT's
# source of ENGINE, of the newest complete backup of BACKUP_OF, into TARGET (NULL: in place).
queue_restore() { # TENANT ENGINE BACKUP_OF [TARGET]
	psql_q "INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine, backup_id, restore_target, max_attempts)
		SELECT 'restore', '$1', s.id, '$2', b.id, nullif(\$t\$${4:-}\$t\$, ''), 1
		FROM tenant_backup.sources s, tenant_backup.backups b
		WHERE s.tenant = '$1' AND s.engine = '$2' AND b.tenant = '$3' AND b.engine = '$2' AND b.status = 'complete'
		ORDER BY b.id DESC LIMIT 1" >/dev/null
}

# ================================================================ MySQL
agent_use tenant-backup-agent-mysql
agent_conf "mysql_user = tbagent" "mysql_password = $MY_PASSWORD" "mysql_fallback_credentials_hosts = 127.0.0.1"
psql_q "SELECT tenant_backup.tenant_backup(t, 'mysql') FROM unnest(ARRAY['acme', 'globex', 'initech']) t" >/dev/null
run_jobs mysql-first
is "$(complete_backups acme)$(complete_backups globex)$(complete_backups initech)" 111 "acme, globex and initech back up"

# --- an agent speaks only for the job its lease holds
job=$(psql_q "SELECT id FROM tenant_backup.jobs WHERE tenant = 'acme' ORDER BY id LIMIT 1")
out=$(PGUSER=agent psql_q "SELECT * FROM tenant_backup.agent_job_trust($job, 'agent:forged:lease')" 2>&1)
like "$out" "job $job is not held by this lease" "agent_job_trust answers only the lease holding the job"
out=$(PGUSER=agent psql_q "SELECT tenant_backup.agent_source_identity($job, 'agent:forged:lease', 'x/acme')" 2>&1)
like "$out" "job $job is not held by this lease" "agent_source_identity takes an identity only from that lease"
is "$(psql_q "SELECT count(*) FROM tenant_backup.sources WHERE identity = 'x/acme'")" 0 "and records nothing"

# --- item 6: a restore target that the client would read as an option
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', target => '--init-command=DROP DATABASE globex')" 2>&1)
like "$out" 'invalid MySQL target database name' "tenant_restore refuses a MySQL target beginning with '-'"
for bad in 'a/b' 'a.b' 'back\slash' 'trailing ' "$(printf 'x%.0s' {1..65})"; do
	out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', target => \$t\$$bad\$t\$)" 2>&1)
	like "$out" 'invalid (MySQL )?target database name' "and a target MariaDB would not take as a name ($(printf %.12s "$bad"))"
done
# The agent refuses it too, whoever queued it (here straight into the catalog).
queue_restore acme mysql acme '--init-command=DROP DATABASE globex'
run_jobs mysql-target
like "$(last_job acme)" "^failed: .*the restore target is not a database name this agent accepts: .*not beginning with '-'" \
	"the agent refuses a target beginning with '-' before anything runs"
is "$(my_canaries globex)" "globex canary" "globex is still there, untouched"
is "$(my_q "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '-%'")" 0 "no database was created"

# --- item 6: a source database whose <name>_tb_new_<job> would be an option
DASH='--init-command=DROP DATABASE initech #'
my_q "CREATE DATABASE \`$DASH\`"
psql_q "SELECT tenant_backup.tenant_create('dash')" \
	"SELECT tenant_backup.tenant_add_database('dash', 'mysql', 'mysql://tbagent:$MY_PASSWORD_URI@127.0.0.1:$MARIADB_PORT/--init-command=DROP%20DATABASE%20initech%20%23')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('dash', 'mysql')" >/dev/null
run_jobs mysql-dash
like "$(last_job dash)" "^failed: .*is not a database name this agent accepts" "a source database beginning with '-' is refused"
is "$(complete_backups dash)|$(my_canaries initech)" "0|initech canary" "no backup of it; initech is untouched"

# --- item 10: an operator's locator through the socket, as the agent's OS user
my_q "CREATE USER 'postgres'@'localhost' IDENTIFIED VIA unix_socket" "GRANT SELECT ON mysql.* TO 'postgres'@'localhost'"
op_q "SELECT tenant_backup.tenant_create('sock')" \
	"SELECT tenant_backup.tenant_add_database('sock', 'mysql', 'mysql://postgres@localhost/mysql?socket=$MARIADB_SOCKET')" >/dev/null
ok $? "an operator adds a socket locator on the mysql schema (nothing at add time can tell)"
psql_q "SELECT tenant_backup.tenant_backup('sock', 'mysql')" >/dev/null
run_jobs mysql-sock
like "$(last_job sock)" '^failed: .*names a socket; a locator added by an operator connects over TCP only' \
	"the agent refuses it: an operator's locator goes over TCP"
is "$(complete_backups sock)|$(stored_objects sock)" "0|0" "no backup, nothing in storage (no password hashes)"

# --- item 10: no password of its own (the agent's mysql_password would be sent)
my_q "CREATE DATABASE opdb" "CREATE TABLE opdb.t (v TEXT)" "INSERT INTO opdb.t VALUES ('opdb row')"
op_q "SELECT tenant_backup.tenant_create('nopw')" \
	"SELECT tenant_backup.tenant_add_database('nopw', 'mysql', 'mysql://tbagent@127.0.0.1:$MARIADB_PORT/opdb')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('nopw', 'mysql')" >/dev/null
run_jobs mysql-nopw
like "$(last_job nopw)" '^failed: .*carries no user and password of its own' \
	"an operator's locator without a password does not get the agent's"
is "$(complete_backups nopw)" 0 "and backs nothing up"

# --- item 10: a system schema, with a password
op_q "SELECT tenant_backup.tenant_create('sys')" \
	"SELECT tenant_backup.tenant_add_database('sys', 'mysql', 'mysql://tbagent:$MY_PASSWORD_URI@127.0.0.1:$MARIADB_PORT/mysql')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('sys', 'mysql')" >/dev/null
run_jobs mysql-sys
like "$(last_job sys)" "^failed: .*names the server's own schema" "an operator's locator on the mysql schema is refused"
is "$(complete_backups sys)|$(stored_objects sys)" "0|0" "no backup of it"

# --- item 10: the server authenticates someone else than the locator's user
my_q "CREATE USER ''@'127.0.0.1' IDENTIFIED BY 'anonpw'" "GRANT ALL ON opdb.* TO ''@'127.0.0.1'"
op_q "SELECT tenant_backup.tenant_create('anon')" \
	"SELECT tenant_backup.tenant_add_database('anon', 'mysql', 'mysql://nosuch:anonpw@127.0.0.1:$MARIADB_PORT/opdb')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('anon', 'mysql')" >/dev/null
run_jobs mysql-anon
like "$(last_job anon)" '^failed: .*authenticated another user than the locator.s "nosuch"' \
	"a login the server maps to another account (the anonymous one) is refused"
is "$(complete_backups anon)" 0 "and backs nothing up"

# --- item 8: acme's database through another user, as another tenant's
my_q "CREATE USER 'other'@'127.0.0.1' IDENTIFIED BY 'otherpw'" "GRANT ALL ON acme.* TO 'other'@'127.0.0.1'"
op_q "SELECT tenant_backup.tenant_create('twin')" \
	"SELECT tenant_backup.tenant_add_database('twin', 'mysql', 'mysql://other:otherpw@127.0.0.1:$MARIADB_PORT/acme')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('twin', 'mysql')" >/dev/null
run_jobs mysql-twin
like "$(last_job twin)" '^failed: .*is already a database of tenant "acme"' \
	"acme's database under another locator is refused for another tenant"
is "$(complete_backups twin)|$(stored_objects twin)" "0|0" "no backup of acme's rows for twin"
queue_restore twin mysql globex
my_db acme "INSERT INTO canary (id, v) VALUES (7, 'acme live')"
run_jobs mysql-twin-restore
like "$(last_job twin)" '^failed: ' "a restore through it fails too"
is "$(my_canaries acme)" "acme canary,acme live" "acme is untouched"

# --- a restore target that is another tenant's database (gone from the server for now)
my_q "CREATE DATABASE gonedb"
psql_q "SELECT tenant_backup.tenant_create('gone')" \
	"SELECT tenant_backup.tenant_add_database('gone', 'mysql', 'mysql://tbagent:$MY_PASSWORD_URI@127.0.0.1:$MARIADB_PORT/gonedb')" \
	"SELECT tenant_backup.tenant_backup('gone', 'mysql')" >/dev/null
run_jobs mysql-gone
my_q "DROP DATABASE gonedb"
psql_q "SELECT tenant_backup.tenant_restore('globex', 'mysql', target => 'gonedb', wait => false)" >/dev/null
run_jobs mysql-gone-target
like "$(last_job globex)" '^failed: .*the restore target "gonedb" of tenant "globex" is a database of tenant "gone"' \
	"a restore into a database name that is another tenant's source is refused"
is "$(my_q "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'gonedb'")" 0 "and creates nothing"

# --- item 14.5: storage swaps an older backup in under a newer one's name
b1_obj=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")
psql_q "SELECT tenant_backup.tenant_backup('acme', 'mysql')" >/dev/null
run_jobs mysql-b2
b2=$(psql_q "SELECT id FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete' ORDER BY id DESC LIMIT 1")
b2_obj=$(psql_q "SELECT object_key FROM tenant_backup.backups WHERE id = $b2")
my_db acme "INSERT INTO canary (id, v) VALUES (8, 'after b2')"
cp "$D/store/$b2_obj" "$D/b2.pristine"
cp "$D/store/$b1_obj" "$D/store/$b2_obj"
# The databases but the agents' own swap journal (tenant_backup_agent), which a restore creates.
tenant_schemas() { my_schemas | sed 's/,tenant_backup_agent$//'; }
schemas=$(tenant_schemas)
psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', backup_id => $b2, wait => false)" >/dev/null
run_jobs mysql-swap
like "$(last_job acme)" "^failed: .*the object stored as $b2_obj is another backup of tenant \"acme\"" \
	"restoring an object storage swapped for an older one fails on its header's backup id"
is "$(my_canaries acme)|$(tenant_schemas)" "acme canary,acme live,after b2|$schemas" "acme is unchanged, no database left behind"
cp "$D/b2.pristine" "$D/store/$b2_obj"
sha=$(psql_q "SELECT sha256 FROM tenant_backup.backups WHERE id = $b2")
psql_q "UPDATE tenant_backup.backups SET sha256 = repeat('0', 64) WHERE id = $b2"
psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', backup_id => $b2, wait => false)" >/dev/null
run_jobs mysql-sha
like "$(last_job acme)" "^failed: .*is not backup $b2 of tenant \"acme\" as the catalog recorded it \(SHA-256 $sha, recorded 0{64}\); nothing live was changed" \
	"an object whose SHA-256 is not the catalog's is loaded but never swapped in"
is "$(my_canaries acme)|$(tenant_schemas)" "acme canary,acme live,after b2|$schemas" "acme is unchanged, the loaded copy dropped"
psql_q "UPDATE tenant_backup.backups SET sha256 = '$sha' WHERE id = $b2"
psql_q "SELECT tenant_backup.tenant_restore('acme', 'mysql', backup_id => $b2, wait => false)" >/dev/null
run_jobs mysql-good
is "$(last_job acme)|$(my_canaries acme)" "succeeded|acme canary,acme live" "with the catalog's object, the restore goes through"

# ================================================================ Redis
agent_use tenant-backup-agent-redis
R=$(free_port)
R2=$(free_port)
ALIAS=$(free_port)
RECORDER=$(free_port)
redis_start "$D/redis" "$R"
redis_start "$D/redis2" "$R2"
mkdir -p "$D/rdbdir/good" "$D/rdbdir/dangling" "$D/outside"
ln -s "$D/outside" "$D/rdbdir/link"
ln -s "$D/outside/planted" "$D/rdbdir/dangling/dump.rdb"
chown -R postgres "$D/rdbdir" "$D/outside"
agent_conf "redis_user = tbagent" "redis_password = $REDIS_PASSWORD" \
	"redis_fallback_credentials_hosts = 127.0.0.1:$R, 127.0.0.1:$R2" "redis_restore_dir = $D/rdbdir"
/usr/bin/python3 "$HERE/lib/tcp_alias.py" "$ALIAS" "$R" >/dev/null 2>&1 &
on_exit "kill $!"
/usr/bin/python3 "$HERE/lib/tcp_alias.py" "$RECORDER" 0 "$D/recorded" >/dev/null 2>&1 &
on_exit "kill $!"
rtool fill "$R" 1 "" ra
rtool snapshot "$R" 1 "" >"$D/ra.before"
psql_q "SELECT tenant_backup.tenant_create('ra')" \
	"SELECT tenant_backup.tenant_add_database('ra', 'redis', 'redis://127.0.0.1:$R/1')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('ra', 'redis')" >/dev/null
run_jobs redis-ra
is "$(last_job ra)" succeeded "ra (database 1) backs up with the agent's own credentials, its server being listed"

# --- item 7: spellings of ra's server and database, refused when added
psql_q "SELECT tenant_backup.tenant_create('rb')" >/dev/null
for alias in "localhost:$R/1" "LOCALHOST:$R/1" "127.0.0.1:$R/01" "[::ffff:127.0.0.1]:$R/1" "localhost.:$R/001"; do
	out=$(op_q "SELECT tenant_backup.tenant_add_database('rb', 'redis', 'redis://$alias')" 2>&1)
	like "$out" 'the Redis keys of tenant "rb" would overlap those of tenant "ra"' "redis://$alias is ra's keyspace: refused"
done
# --- item 7: an address the text cannot tell apart (another port forwarding to the server)
op_q "SELECT tenant_backup.tenant_add_database('rb', 'redis', 'redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$ALIAS/1')" >/dev/null
ok $? "redis://127.0.0.1:<alias port>/1 is added (its text names another server)"
psql_q "SELECT tenant_backup.tenant_backup('rb', 'redis')" >/dev/null
run_jobs redis-rb
like "$(last_job rb)" '^failed: .*the Redis keys of tenant "rb" overlap those of tenant "ra" on the same server \(database 1' \
	"its backup is refused: the server's run_id is ra's, database 1 is ra's"
is "$(complete_backups rb)|$(stored_objects rb)" "0|0" "rb holds no copy of ra's keys"
queue_restore rb redis ra
rtool cmd "$R" 1 SET "ra:later" "written after the backup" >/dev/null
rtool snapshot "$R" 1 "" >"$D/ra.live"
run_jobs redis-rb-restore
like "$(last_job rb)" '^failed: ' "a restore through the alias fails"
rtool snapshot "$R" 1 "" >"$D/ra.after"
rtool compare "$D/ra.live" "$D/ra.after" >/dev/null
ok $? "ra's keys are untouched"

# --- a restore target that is another tenant's (empty) database
psql_q "SELECT tenant_backup.tenant_create('rempty')" "SELECT tenant_backup.tenant_create('rc')" \
	"SELECT tenant_backup.tenant_add_database('rempty', 'redis', 'redis://127.0.0.1:$R/6')" \
	"SELECT tenant_backup.tenant_add_database('rc', 'redis', 'redis://127.0.0.1:$R/3')" >/dev/null
rtool fill "$R" 3 "" rc
psql_q "SELECT tenant_backup.tenant_backup('rempty', 'redis')" "SELECT tenant_backup.tenant_backup('rc', 'redis')" >/dev/null
run_jobs redis-rc
is "$(last_job rempty),$(last_job rc)" "succeeded,succeeded" "rempty (database 6, empty) and rc (database 3) back up"
psql_q "SELECT tenant_backup.tenant_restore('rc', 'redis', target => '6', wait => false)" >/dev/null
run_jobs redis-rc-target
like "$(last_job rc)" '^failed: .*the Redis keys of tenant "rc" overlap those of tenant "rempty" on the same server \(database 6' \
	"a restore into another tenant's database is refused, empty as it is"
is "$(rtool cmd "$R" 6 DBSIZE)" 0 "nothing was written there"

# --- item 10: the agent's Redis password goes only to the listed servers
op_q "SELECT tenant_backup.tenant_create('leak')" \
	"SELECT tenant_backup.tenant_add_database('leak', 'redis', 'redis://127.0.0.1:$RECORDER/0')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('leak', 'redis')" >/dev/null
run_jobs redis-leak
like "$(last_job leak)" '^failed: ' "a backup from an operator's host that answers nothing fails"
[ -s "$D/recorded" ]
ok $? "the host did receive the agent's commands"
grep -qF "$REDIS_PASSWORD" "$D/recorded"
ok $((! $?)) "but not the agent's password (no AUTH: the host is not in redis_fallback_credentials_hosts)"

# --- item 14.5: a keys restore whose object is not the one the catalog recorded
rb1=$(psql_q "SELECT id FROM tenant_backup.backups WHERE tenant = 'ra' AND status = 'complete'")
psql_q "UPDATE tenant_backup.backups SET sha256 = repeat('1', 64) WHERE id = $rb1"
psql_q "SELECT tenant_backup.tenant_restore('ra', 'redis', wait => false)" >/dev/null
run_jobs redis-sha
like "$(last_job ra)" "^failed: .*is not backup $rb1 of tenant \"ra\" as the catalog recorded it" \
	"a Redis restore of an object that is not the catalog's fails"
rtool snapshot "$R" 1 "" >"$D/ra.after"
rtool compare "$D/ra.live" "$D/ra.after" >/dev/null
ok $? "with ra's keys untouched and nothing staged left"

# --- item 15.9: RDB restore targets confined to redis_restore_dir
rtool fill "$R2" 0 "" dedi
psql_q "SELECT tenant_backup.tenant_create('dedi', tier => 'dedicated')" \
	"SELECT tenant_backup.tenant_add_database('dedi', 'redis', 'redis://127.0.0.1:$R2')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('dedi', 'redis')" >/dev/null
run_jobs redis-dedi
is "$(last_job dedi)" succeeded "the dedicated tenant's RDB snapshot backs up"
rdb_restore() { # TARGET: prints the job's outcome
	psql_q "SELECT tenant_backup.tenant_restore('dedi', 'redis', target => \$t\$$1\$t\$, wait => false)" >/dev/null
	run_jobs redis-rdb
	last_job dedi
}
like "$(rdb_restore ../escape)" '^failed: .*has a "." or ".." component' "a target with .. is refused"
like "$(rdb_restore "$D/outside")" '^failed: .*is outside redis_restore_dir' "an absolute target outside redis_restore_dir is refused"
like "$(rdb_restore "$D/rdbdir/new/deep/dir")" '^failed: .*component "new" does not exist \(create it first: nothing is created\)' \
	"a target that does not exist is refused"
like "$(rdb_restore made/deep)" '^failed: .*component "made" does not exist' "relative to redis_restore_dir as well"
[ ! -e "$D/rdbdir/new" ] && [ ! -e "$D/rdbdir/made" ] && [ ! -e "$D/escape" ]
ok $? "and no directory was created"
like "$(rdb_restore link)" '^failed: .*component "link" is a symbolic link' "a target through a symbolic link is refused"
like "$(rdb_restore "$D/rdbdir/dangling")" '^failed: .*dump.rdb already exists' \
	"a dangling dump.rdb symbolic link counts as an existing file"
is "$(ls -A "$D/outside")" "" "nothing was written outside redis_restore_dir"
is "$(rdb_restore good)" succeeded "a directory inside redis_restore_dir takes the snapshot"
[ -f "$D/rdbdir/good/dump.rdb" ] && [ ! -L "$D/rdbdir/good/dump.rdb" ] && [ "$(head -c 5 "$D/rdbdir/good/dump.rdb")" = REDIS ]
ok $? "as a regular dump.rdb, with no temporary file beside it: $(ls -A "$D/rdbdir/good" | tr '\n' ' ')"

# ================================================================ MongoDB
agent_use tenant-backup-agent-mongodb
agent_conf "mongodb_password = not-for-operators"
M=$(free_port)
mongo_start "$D/mongo" "$M"
mtool fill "$MONGO_URI_BASE" shop shop
mtool snapshot "$MONGO_URI_BASE" shop >"$D/shop.before"
psql_q "SELECT tenant_backup.tenant_create('shop')" \
	"SELECT tenant_backup.tenant_add_database('shop', 'mongodb', '$MONGO_URI_BASE/shop')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('shop', 'mongodb')" >/dev/null
run_jobs mongo-shop
is "$(last_job shop)" succeeded "shop's MongoDB database backs up"

# --- item 8: shop's database under another spelling
op_q "SELECT tenant_backup.tenant_create('mtwin')" \
	"SELECT tenant_backup.tenant_add_database('mtwin', 'mongodb', '$MONGO_URI_BASE/SHOP?appname=alias')" >/dev/null
psql_q "SELECT tenant_backup.tenant_backup('mtwin', 'mongodb')" >/dev/null
run_jobs mongo-twin
like "$(last_job mtwin)" '^failed: .*is already a database of tenant "shop"' \
	"shop's database (another case, another URI) is refused for another tenant"
is "$(complete_backups mtwin)|$(stored_objects mtwin)" "0|0" "no copy of shop's documents for mtwin"

# --- a restore target that is another tenant's (empty) database
psql_q "SELECT tenant_backup.tenant_create('mempty')" \
	"SELECT tenant_backup.tenant_add_database('mempty', 'mongodb', '$MONGO_URI_BASE/mempty')" \
	"SELECT tenant_backup.tenant_backup('mempty', 'mongodb')" >/dev/null
run_jobs mongo-mempty
psql_q "SELECT tenant_backup.tenant_restore('shop', 'mongodb', target => 'MEmpty', wait => false)" >/dev/null
run_jobs mongo-target
like "$(last_job shop)" '^failed: .*the restore target "MEmpty" of tenant "shop" is a database of tenant "mempty"' \
	"a restore into another tenant's database (in any case) is refused"
is "$(mtool cmd "$MONGO_URI_BASE" MEmpty '{"listCollections": 1, "nameOnly": true}' | grep -c '"name"')" 0 "nothing was written there"

# --- item 15.10: reserved databases and URI options that read files
op_q "SELECT tenant_backup.tenant_create('mbad')" >/dev/null
mongo_attempt() { # LOCATOR: added by the operator and backed up; prints the job's outcome
	psql_q "DELETE FROM tenant_backup.sources WHERE tenant = 'mbad'" >/dev/null
	op_q "SELECT tenant_backup.tenant_add_database('mbad', 'mongodb', \$l\$$1\$l\$)" >/dev/null
	psql_q "SELECT tenant_backup.tenant_backup('mbad', 'mongodb')" >/dev/null
	run_jobs mongo-bad
	last_job mbad
}
like "$(mongo_attempt "$MONGO_URI_BASE/admin")" "^failed: .*names one of the server's own databases" "a locator on admin is refused"
like "$(mongo_attempt "$MONGO_URI_BASE/Local")" "^failed: .*names one of the server's own databases" "and on local, in any case"
like "$(mongo_attempt "$MONGO_URI_BASE/mb?tls=true&tlsCAFile=/etc/shadow")" '^failed: .*has a URI option this agent does not take' \
	"tlsCAFile (a file the agent would read) is refused"
like "$(mongo_attempt "$MONGO_URI_BASE/mb?TLSCERTIFICATEKEYFILE=/etc/ssl/private/key.pem")" '^failed: .*has a URI option this agent does not take' \
	"tlsCertificateKeyFile too, in any case"
like "$(mongo_attempt "$MONGO_URI_BASE/mb?authMechanism=GSSAPI")" '^failed: .*only those are allowed' \
	"an authentication by the agent's own identity (GSSAPI) is refused"
is "$(mongo_attempt "$MONGO_URI_BASE/mb?replicaSet=rs0&readPreference=primary&appname=x")" succeeded \
	"the allowed options work"
out=$(psql_q "SELECT tenant_backup.tenant_restore('shop', 'mongodb', target => 'admin')" 2>&1)
like "$out" 'invalid MongoDB target database name' "a restore into admin is refused when queued"

# --- item 14.5: a MongoDB restore of an object that is not the catalog's
mb=$(psql_q "SELECT id FROM tenant_backup.backups WHERE tenant = 'shop' AND status = 'complete'")
psql_q "UPDATE tenant_backup.backups SET sha256 = repeat('2', 64) WHERE id = $mb"
mtool cmd "$MONGO_URI_BASE" shop '{"insert": "orders", "documents": [{"_id": "live-after-backup"}]}' >/dev/null
mtool snapshot "$MONGO_URI_BASE" shop >"$D/shop.live"
psql_q "SELECT tenant_backup.tenant_restore('shop', 'mongodb', wait => false)" >/dev/null
run_jobs mongo-sha
like "$(last_job shop)" "^failed: .*is not backup $mb of tenant \"shop\" as the catalog recorded it" \
	"a MongoDB restore of an object that is not the catalog's fails"
mtool snapshot "$MONGO_URI_BASE" shop >"$D/shop.after"
cmp -s "$D/shop.live" "$D/shop.after"
ok $? "shop is unchanged, its staging collections dropped"

grep -q 'ERROR: \(Address\|Leak\)Sanitizer\|runtime error' "$D"/*.log
ok $((! $?)) "no sanitizer report in the agents' logs"

done_testing
