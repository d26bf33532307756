#!/bin/bash
# Which database a backup is of, from storage alone (issue 16, item 6): the manifest
# records it, `tenant-backup ls` shows it in a column and in --json, and restore-direct
# --database picks one database of a tenant's several. A manifest from before (no
# database) still lists; a database field storage forged with terminal escapes is
# refused, not printed.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"
export TENANT_BACKUP_STORAGE="file://$D/store" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"

pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE shop_db" "CREATE DATABASE crm_db" >/dev/null ||
	pg_bail "$D/pg/server.log" "could not set up the control plane"
PGDATABASE=shop_db psql_q "CREATE TABLE t (v text)" "INSERT INTO t VALUES ('shop')" >/dev/null
PGDATABASE=crm_db psql_q "CREATE TABLE t (v text)" "INSERT INTO t VALUES ('crm')" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('acme')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'shop_db')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'crm_db')" \
	"SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null || pg_bail "$D/pg/server.log" "backup failed"
# The newest backup of all is shop_db's: a restore of crm_db must pick by database, not by time.
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
psql_q "SELECT tenant_backup.tenant_remove_database('acme', 'postgres', 'crm_db')" \
	"SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null

manifests=("$D"/store/acme/postgres/*.json)
is "$(cat "${manifests[@]}" | jq -r .database | sort | uniq -c | awk '{print $2 ":" $1}' | paste -sd' ')" \
	"crm_db:2 shop_db:3" "each manifest records the database its backup is of"

listing=$("$TB" ls acme)
is "$(echo "$listing" | head -1 | awk '{print $3}')" DATABASE "ls has a DATABASE column"
is "$(echo "$listing" | tail -n +2 | awk '{print $3}' | sort | uniq -c | awk '{print $2 ":" $1}' | paste -sd' ')" \
	"crm_db:2 shop_db:3" "ls shows each backup's database"
is "$("$TB" ls acme --json | jq -r '[.backups[].database] | sort | unique | join(",")')" "crm_db,shop_db" \
	"ls --json has the database of each"

# restore-direct --database picks the newest backup of that database, not the newest of all.
into() { echo "dbname=$1 host=$PGHOST port=$PGPORT user=restorer"; }
psql_q "CREATE ROLE restorer LOGIN CREATEDB" >/dev/null
direct() { "$TB" restore-direct --tenant acme --engine postgres --pg-restore "$PG_BIN/pg_restore" --no-owner "$@"; }
out=$(direct --into "$(into crm_back)" --database crm_db 2>&1)
ok $? "restore-direct --database crm_db" || diag "$out"
is "$(PGDATABASE=crm_back psql_q "SELECT v FROM t")" crm "it restored crm_db's backup, though shop_db's is newer"
out=$(direct --into "$(into shop_back)" 2>&1)
is "$(PGDATABASE=shop_back psql_q "SELECT v FROM t")" shop "without --database: the newest backup of all"
out=$(direct --into "$(into none_back)" --database nosuch_db 2>&1)
is "$?" 1 "--database that no manifest names fails"
like "$out" "no complete postgres backup of tenant 'acme' of database nosuch_db in storage" "saying so"
is "$(psql_q "SELECT count(*) FROM pg_database WHERE datname = 'none_back'")" 0 "and creates nothing"

# A manifest from before the field (put writes none): listed, its database unknown.
echo "old bytes" | "$TB" put --tenant acme --engine redis >/dev/null
is "$("$TB" ls acme/redis | tail -n +2 | awk '{print $3}')" "-" "a manifest without a database lists with -"
is "$("$TB" ls acme/redis --json | jq -c '[.backups[].database]')" "[null]" "and null in --json"

# Storage is untrusted: a database field with a terminal escape is refused, not printed.
victim=$(ls "$D"/store/acme/redis/*.json)
jq '.database = "x\u001b]0;owned\u0007"' "$victim" >"$D/forged" && cat "$D/forged" >"$victim"
out=$("$TB" ls acme/redis 2>&1)
is "$?" 1 "ls of a forged database field exits 1"
like "$out" "not a valid tenant-backup manifest: database" "naming the field"
ok "$(printf '%s' "$out" | grep -c $'\033' | grep -qx 0; echo $?)" "and printing no escape"

done_testing
