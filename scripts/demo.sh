#!/bin/bash
# make demo: the main job end to end, every engine, on the embedded default (file
# storage), with throwaway servers on free ports: PostgreSQL (the control plane and three
# tenants' databases), MariaDB, Redis (a tenant by database number and one by key
# prefix) and MongoDB (the project's wire-protocol server, test/lib/fakemongo.py). Each
# tenant database is backed up, changed, restored and shown back as it was while the
# others keep their own changes; then the storage tree, the CLI reading storage without
# the database, and tenant_backup.status. Every server is stopped and removed at the end.
set -euo pipefail
BIN=$1
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/test/lib/mariadb.sh"
. "$HERE/test/lib/redis.sh"
. "$HERE/test/lib/mongo.sh"

step() { printf '\n== %s\n' "$*"; }
# Prints each SQL statement as typed, then runs them all with psql (options pass through).
show() {
	for arg; do case $arg in -*) ;; *) echo "${PGDATABASE:-postgres}=# $arg" ;; esac; done
	psql -X -q "$@"
}
rcli() { # DB ARGS...: redis-cli as the server's admin
	local db=$1
	shift
	REDISCLI_AUTH=$REDIS_ADMIN_PASSWORD redis-cli -p "$REDIS_PORT" -n "$db" "$@"
}
# An agent in the background, as the server's OS user (the control plane reads what it
# stores), polling every second; its log in $D/NAME.log.
agent_run() { # PROGRAM NAME [OPTIONS...]
	local program=$1 name=$2
	shift 2
	setpriv --reuid=postgres --regid=postgres --init-groups -- "$BIN/$program" --name "$name" \
		--control "host=$D/pg port=$PG_PORT dbname=postgres user=agent" --storage "file://$D/storage" \
		--master-key "$D/master.key" --poll-seconds 1 "$@" 2>"$D/$name.log" &
	on_exit "kill -TERM $! 2>/dev/null; wait $! 2>/dev/null"
}

for tool in mariadbd redis-server; do
	command -v $tool >/dev/null || { echo "demo: $tool is not installed: run make deps (as root)" >&2; exit 1; }
done
PG_PORT=$(free_port)
MY_PORT=$(free_port)
REDIS_PORT=$(free_port)
MONGO_PORT=$(free_port)

scratch_dir
mkdir -p "$D/storage"
chown postgres "$D/storage"
"$BIN/tenant-backup" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"

step "throwaway servers: PostgreSQL 15 with tenant_backup (port $PG_PORT), MariaDB ($MY_PORT), Redis ($REDIS_PORT), MongoDB wire protocol ($MONGO_PORT)"
pg_start "$D/pg" "$PG_PORT" "tenant_backup.storage = 'file://$D/storage'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200"
mariadb_start "$D/my" "$MY_PORT"
mariadb_create_user tbagent demo-password
redis_start "$D/redis" "$REDIS_PORT"
mongo_start "$D/mongo" "$MONGO_PORT"
psql_q "CREATE EXTENSION tenant_backup" "CREATE ROLE agent LOGIN" "GRANT tenant_backup_agent TO agent"

step "three tenants, each with a PostgreSQL database"
for t in acme globex initech; do
	psql_q "CREATE DATABASE $t"
	PGDATABASE=$t psql_q "CREATE TABLE orders (id int PRIMARY KEY, item text, amount numeric)" \
		"INSERT INTO orders SELECT g, '$t item ' || g, g * 10 FROM generate_series(1, 3) g"
	psql_q "SELECT tenant_backup.tenant_create('$t')" "SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" \
		>/dev/null
done
show -c "SELECT name, tier FROM tenant_backup.tenants"

step "PostgreSQL: back up all three, change acme (and globex), restore acme"
show -c "SELECT t AS tenant, tenant_backup.tenant_backup(t, 'postgres', wait => true) AS job FROM unnest('{acme,globex,initech}'::text[]) t"
PGDATABASE=acme show -c "DELETE FROM orders WHERE id = 1" -c "UPDATE orders SET amount = 0"
PGDATABASE=globex show -c "INSERT INTO orders VALUES (4, 'globex item 4', 40)"
# Loaded beside the live database, then swapped in.
show -c "SELECT tenant_backup.tenant_restore('acme', 'postgres') AS job"
echo "-- acme is back as it was backed up:"
PGDATABASE=acme psql -X -q -c "TABLE orders"
echo "-- globex keeps its later row:"
PGDATABASE=globex psql -X -q -c "TABLE orders"

step "agents take the other engines' jobs: one per engine, logging in as a tenant_backup_agent role"
agent_run tenant-backup-agent-mysql demo-mysql
agent_run tenant-backup-agent-redis demo-redis --log-format json
agent_run tenant-backup-agent-mongodb demo-mongodb

step "MariaDB: acme's shop database"
my_q "CREATE DATABASE acme_shop"
my_db acme_shop "CREATE TABLE carts (id INT PRIMARY KEY, customer VARCHAR(40), total DECIMAL(10,2))" \
	"INSERT INTO carts VALUES (1, 'ada', 12.50), (2, 'grace', 99.00)"
# The password is sealed with the master key as the source is added.
show -c "SELECT engine, locator FROM tenant_backup.tenant_add_database('acme', 'mysql', 'mysql://tbagent:demo-password@127.0.0.1:$MY_PORT/acme_shop')"
show -c "SELECT tenant_backup.tenant_backup('acme', 'mysql', wait => true) AS job"
my_db acme_shop "DELETE FROM carts WHERE id = 1" "UPDATE carts SET total = 0"
echo "-- acme_shop changed:"
my_client -t acme_shop -e "SELECT * FROM carts"
show -c "SELECT tenant_backup.tenant_restore('acme', 'mysql') AS job"
echo "-- acme_shop restored:"
my_client -t acme_shop -e "SELECT * FROM carts"

step "Redis: globex owns database 1, initech the keys under 'initech:' in database 0 (shared with others)"
rcli 1 MSET cart:1 "globex cart" visits 10 >/dev/null
rcli 0 MSET initech:cart:1 "initech cart" initech:visits 5 other:session "not initech's" >/dev/null
rcli 0 EXPIRE initech:cart:1 86400 >/dev/null
REDIS_LOCATOR="redis://tbagent:$REDIS_PASSWORD_URI@127.0.0.1:$REDIS_PORT"
show -c "SELECT engine, locator FROM tenant_backup.tenant_add_database('globex', 'redis', '$REDIS_LOCATOR/1')"
show -c "SELECT engine, options FROM tenant_backup.tenant_add_database('initech', 'redis', '$REDIS_LOCATOR/0', '{\"key_prefix\": \"initech:\"}')"
show -c "SELECT t AS tenant, tenant_backup.tenant_backup(t, 'redis', wait => true) AS job FROM unnest('{globex,initech}'::text[]) t"
rcli 1 FLUSHDB >/dev/null
rcli 0 DEL initech:visits >/dev/null
rcli 0 SET initech:cart:1 "overwritten" >/dev/null
rcli 0 SET other:session "changed later, not initech's" >/dev/null
redis_keys() { # DB: each key = value
	for key in $(rcli "$1" --scan | sort); do printf '   db %s: %s = "%s"\n' "$1" "$key" "$(rcli "$1" GET "$key")"; done
}
echo "-- after FLUSHDB of database 1, initech:visits deleted, initech:cart:1 and other:session overwritten:"
redis_keys 1
redis_keys 0
show -c "SELECT t AS tenant, tenant_backup.tenant_restore(t, 'redis') AS job FROM unnest('{globex,initech}'::text[]) t"
echo "-- restored: globex's database and initech's keys (with their TTL: $(rcli 0 TTL initech:cart:1) s);" \
	"other:session keeps its later value:"
redis_keys 1
redis_keys 0

step "MongoDB: acme's events database"
mtool cmd "$MONGO_URI_BASE" acme_events \
	'{"insert": "events", "documents": [{"_id": 1, "kind": "signup"}, {"_id": 2, "kind": "order"}, {"_id": 3, "kind": "refund"}]}' >/dev/null
mtool cmd "$MONGO_URI_BASE" acme_events '{"createIndexes": "events", "indexes": [{"key": {"kind": 1}, "name": "by_kind"}]}' >/dev/null
show -c "SELECT engine, locator FROM tenant_backup.tenant_add_database('acme', 'mongodb', '$MONGO_URI_BASE/acme_events')"
show -c "SELECT tenant_backup.tenant_backup('acme', 'mongodb', wait => true) AS job"
echo "-- acme_events: $(mtool counts "$MONGO_URI_BASE" acme_events)"
mtool cmd "$MONGO_URI_BASE" acme_events '{"drop": "events"}' >/dev/null
echo "-- after dropping the events collection: $(mtool counts "$MONGO_URI_BASE" acme_events)"
show -c "SELECT tenant_backup.tenant_restore('acme', 'mongodb') AS job"
echo "-- restored: $(mtool counts "$MONGO_URI_BASE" acme_events), indexes:" \
	"$(mtool cmd "$MONGO_URI_BASE" acme_events '{"listIndexes": "events"}' | grep -o '"name": "[^"]*"' | cut -d'"' -f4 | tr '\n' ' ')"

step "the storage tree: one prefix per tenant and engine, tenant keys stored wrapped"
(cd "$D/storage" && find . -type f | sort)

step "the same backups read straight from storage with the CLI (no database needed)"
export TENANT_BACKUP_STORAGE="file://$D/storage" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
"$BIN/tenant-backup" ls
"$BIN/tenant-backup" verify --tenant acme

step "what an operator sees"
show -c "SELECT tenant, engine, last_success IS NOT NULL AS backed_up, overdue, last_error, queued_jobs, waiting_for_agent FROM tenant_backup.status ORDER BY 1, 2"
show -c "SELECT name, engines, version, jobs_done FROM tenant_backup.agents ORDER BY 1"
show -x -c "SELECT * FROM tenant_backup.status WHERE tenant = 'initech' AND engine = 'redis'"
echo "-- the Redis agent's log (--log-format json: one object per line):"
sed 's/^/   /' "$D/demo-redis.log"

printf '\ndemo finished; every server is stopped and its directory removed\n'
