#!/bin/bash
# make demo: the main job end to end on the embedded default (file storage) in a
# throwaway PostgreSQL cluster: three tenants, a backup of acme, a change to acme,
# tenant_restore('acme'), and acme back as it was while globex and initech are untouched.
# When MariaDB is installed (make deps installs it), acme also gets a MariaDB database,
# backed up and restored the same way by tenant-backup-agent-mysql.
set -euo pipefail
BIN=$1
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
. "$HERE/test/lib/mariadb.sh"

step() { printf '\n== %s\n' "$*"; }
# Prints each SQL statement as typed, then runs them all with psql.
show() {
	for arg; do [ "$arg" = -c ] || echo "${PGDATABASE:-postgres}=# $arg"; done
	psql -X -q "$@"
}

scratch_dir
mkdir -p "$D/storage"
chown postgres "$D/storage"
"$BIN/tenant-backup" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"

step "a throwaway PostgreSQL 15 cluster with tenant_backup preloaded (port 25499)"
pg_start "$D/pg" 25499 "tenant_backup.storage = 'file://$D/storage'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup"

step "three tenants, each with its own database and data"
for t in acme globex initech; do
	psql_q "CREATE DATABASE $t"
	PGDATABASE=$t psql_q "CREATE TABLE orders (id int PRIMARY KEY, item text, amount numeric)" \
		"INSERT INTO orders SELECT g, '$t item ' || g, g * 10 FROM generate_series(1, 3) g"
	psql_q "SELECT tenant_backup.tenant_create('$t')" >/dev/null
	psql_q "SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" >/dev/null
done
show -c "SELECT name, tier FROM tenant_backup.tenants"

step "back up acme"
show -c "SELECT tenant_backup.tenant_backup('acme', wait => true) AS job"
show -c "SELECT id, engine, status, bytes_in, bytes_stored, object_key FROM tenant_backup.tenant_backups('acme')"

step "acme changes after the backup (and so does globex)"
PGDATABASE=acme show -c "DELETE FROM orders WHERE id = 1" -c "UPDATE orders SET amount = 0"
PGDATABASE=globex show -c "INSERT INTO orders VALUES (4, 'globex item 4', 40)"
PGDATABASE=acme show -c "TABLE orders"

step "tenant_restore('acme'): loaded beside the live database, then swapped"
show -c "SELECT tenant_backup.tenant_restore('acme') AS job"

step "acme is back as it was; globex keeps its later change; initech untouched"
for t in acme globex initech; do
	echo "-- $t"
	PGDATABASE=$t psql -X -q -c "TABLE orders"
done
show -c "SELECT datname FROM pg_database WHERE datname LIKE 'acme%' ORDER BY 1"

if command -v mariadbd >/dev/null; then
	step "a throwaway MariaDB (port 23499): acme keeps its shop there too"
	mariadb_start "$D/my" 23499
	mariadb_create_user tbagent demo-password
	my_q "CREATE DATABASE acme_shop"
	my_db acme_shop "CREATE TABLE carts (id INT PRIMARY KEY, customer VARCHAR(40), total DECIMAL(10,2))" \
		"INSERT INTO carts VALUES (1, 'ada', 12.50), (2, 'grace', 99.00)"
	# The password is sealed with the master key as the source is added.
	show -c "SELECT engine, locator FROM tenant_backup.tenant_add_database('acme', 'mysql', 'mysql://tbagent:demo-password@127.0.0.1:23499/acme_shop')"

	step "tenant-backup-agent-mysql takes the MySQL jobs (a login role granted tenant_backup_agent)"
	psql_q "CREATE ROLE agent LOGIN" "GRANT tenant_backup_agent TO agent"
	"$BIN/tenant-backup-agent-mysql" --control "host=$D/pg port=25499 dbname=postgres user=agent" \
		--storage "file://$D/storage" --master-key "$D/master.key" --name demo-agent --poll-seconds 5 \
		2>"$D/agent.log" &
	on_exit "kill -TERM $! 2>/dev/null"
	show -c "SELECT tenant_backup.tenant_backup('acme', 'mysql', wait => true) AS job"
	show -c "SELECT name, engines, last_seen IS NOT NULL AS heard_from, jobs_done FROM tenant_backup.agents"
	my_db acme_shop "DELETE FROM carts"
	echo "-- acme_shop after DELETE FROM carts: $(my_db acme_shop "SELECT COUNT(*) FROM carts") rows"
	show -c "SELECT tenant_backup.tenant_restore('acme', 'mysql', wait => true) AS job"
	echo "-- acme_shop restored:"
	my_client -t acme_shop -e "SELECT * FROM carts"
	show -c "SELECT tenant, engine, last_success IS NOT NULL AS backed_up, running_job FROM tenant_backup.status WHERE tenant = 'acme'"
	echo "-- the agent's log:"
	sed 's/^/   /' "$D/agent.log"
else
	step "MariaDB is not installed: skipping the MySQL tenant (make deps installs it)"
fi

step "the storage tree: one prefix per tenant, keys stored wrapped"
(cd "$D/storage" && find . -type f | sort)

step "the same backup read straight from storage with the CLI (no database needed)"
export TENANT_BACKUP_STORAGE="file://$D/storage" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
"$BIN/tenant-backup" ls
"$BIN/tenant-backup" verify --tenant acme

printf '\ndemo finished; the cluster is stopped and its directory removed\n'
