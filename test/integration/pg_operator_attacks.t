#!/bin/bash
# What an operator (a non-superuser member of tenant_backup_operator) cannot reach
# through the catalog: another server or a socket through a locator's keywords, the
# local superuser through a server that does not ask for the password, another
# tenant's database, a shared cluster as a dedicated tenant's, server files through
# tenant_rotate_master_key; and a failing tenant_add_database with its locator bound
# as a parameter logs no password.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

tb_scratch_storage
PORT=$(free_port)
pg_start "$D/pg" "$PORT" "$TB_CONF
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup" "CREATE DATABASE globex_db" "CREATE DATABASE acme_db" \
	"CREATE ROLE op LOGIN" "GRANT tenant_backup_operator TO op" \
	"SELECT tenant_backup.tenant_create(t) FROM unnest('{acme,globex,initech}'::text[]) t" \
	"SELECT tenant_backup.tenant_create('ded', 'dedicated')" >/dev/null ||
	pg_bail "$D/pg/server.log" "could not set up the catalog"
# Runs SQL as the operator; prints the first error line, or the result.
as_op() { PGUSER=op psql_q "$1" 2>&1 | grep -m1 -E '^ERROR|^[^ ]' ; }

# ------------------------------------------------------------ locators: one host, listed keywords
refused='ERROR:  the conninfo of tenant "acme" is refused'
like "$(as_op "SELECT tenant_backup.tenant_add_database('acme', 'postgres',
	'host=127.0.0.1,$D/pg port=$PORT,$PORT dbname=acme_db user=postgres password=x')")" \
	"$refused: its port must be one number" "a multi-host locator with a port list is refused"
like "$(as_op "SELECT tenant_backup.tenant_add_database('acme', 'postgres',
	'host=127.0.0.1,$D/pg port=$PORT dbname=acme_db user=postgres password=x')")" \
	"$refused: its host must be one host name or IP address" "a host list falling through to a socket is refused"
like "$(as_op "SELECT tenant_backup.tenant_add_database('acme', 'postgres',
	'host=$D/pg port=$PORT dbname=acme_db user=postgres password=x')")" \
	"$refused: its host must be one host name or IP address, not a list or a socket directory" \
	"a socket directory as host is refused"
like "$(as_op "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'service=local dbname=acme_db password=x')")" \
	"$refused: the keyword \"service\" is not allowed" "a service locator is refused"
like "$(as_op "SELECT tenant_backup.tenant_add_database('acme', 'postgres',
	'host=127.0.0.1 dbname=acme_db password=x options=''-c search_path=evil''')")" \
	"$refused: the keyword \"options\" is not allowed" "options are refused"
for kw in hostaddr=127.0.0.1 passfile=/etc/passwd sslkey=/etc/ssl/private/k sslrootcert=/etc/x \
	target_session_attrs=any krbsrvname=x; do
	like "$(as_op "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'host=127.0.0.1 dbname=acme_db password=x $kw')")" \
		"$refused: the keyword \"${kw%%=*}\" is not allowed" "${kw%%=*} is refused"
done
like "$(as_op "SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'postgresql://u:p@h1,h2/acme_db')")" \
	"$refused" "a URI with two hosts is refused"
is "$(psql_q "SELECT count(*) FROM tenant_backup.sources")" 0 "no refused locator was stored"

# A plain locator whose server does not ask for the password (trust): the job fails.
is "$(as_op "SELECT locator FROM tenant_backup.tenant_add_database('acme', 'postgres',
	'host=127.0.0.1 port=$PORT dbname=acme_db user=postgres password=guess')")" \
	"user='postgres' dbname='acme_db' host='127.0.0.1' port='$PORT'" "a plain one-host locator is accepted"
# Prints the error of acme's last job after running a backup of it to its end.
acme_backup_error() {
	PGUSER=op psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null 2>&1
	psql_q "SELECT error FROM tenant_backup.jobs WHERE tenant = 'acme' ORDER BY id DESC LIMIT 1"
}
like "$(acme_backup_error)" 'did not ask for the password' "its backup fails: the server did not ask for the password"
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")" 0 \
	"and no backup of it is complete"
# A row from before the rule (or written by hand) is checked again at job time.
psql_q "UPDATE tenant_backup.sources SET locator = 'host=127.0.0.1,$D/pg port=$PORT,$PORT dbname=acme_db user=postgres'
	WHERE tenant = 'acme'" >/dev/null
like "$(acme_backup_error)" 'the conninfo of tenant "acme" is refused: its port must be one number' \
	"a stored multi-host locator is refused again when the job runs"

# ------------------------------------------------------------ one database, one tenant
is "$(as_op "SELECT identity ~ '^[0-9]+/[0-9]+$' FROM tenant_backup.tenant_add_database('globex', 'postgres', 'globex_db')")" t \
	"globex adds globex_db; its identity is <system identifier>/<oid>"
like "$(as_op "SELECT tenant_backup.tenant_add_database('initech', 'postgres', 'globex_db')")" \
	'ERROR:  the postgres database "globex_db" of tenant "initech" is already a database of tenant "globex"' \
	"initech cannot add globex's database"
like "$(as_op "SELECT tenant_backup.tenant_add_database('ded', 'postgres', 'acme_db')")" \
	'ERROR:  the postgres server of database "acme_db" of tenant "ded" also holds a database of tenant "globex", and tenant "ded" is dedicated' \
	"a dedicated tenant cannot take a database of the shared cluster"
is "$(psql_q "SELECT string_agg(tenant, ',' ORDER BY tenant) FROM tenant_backup.sources WHERE locator !~ '='")" globex \
	"only globex's source of this cluster was recorded"
like "$(as_op "SELECT * FROM tenant_backup.tenant_add_database('initech', 'mysql', 'mysql://app:pw@db.example/i')")" \
	'^[0-9]+\|initech\|mysql\|mysql://app@db.example/i\|\{\}\|f\|' "tenant_add_database's result has no sealed password"

# ------------------------------------------------------------ rotate_master_key is no file oracle
a=$(as_op "SELECT tenant_backup.tenant_rotate_master_key('/etc/passwd')")
b=$(as_op "SELECT tenant_backup.tenant_rotate_master_key('/no/such/file')")
is "$a" "ERROR:  only a superuser can rotate the master key" "an operator is refused before any file is read"
is "$b" "$a" "an existing and a missing file give the same answer"

# ------------------------------------------------------------ a bound locator is not logged
secret=S3cr3t-bound-$$
cc -o "$D/pq_exec_params" "$(dirname "$0")/../lib/pq_exec_params.c" -I"$("$PG_BIN/pg_config" --includedir)" -lpq ||
	echo "Bail out! could not build test/lib/pq_exec_params.c"
PGUSER=op "$D/pq_exec_params" "SELECT tenant_backup.tenant_add_database('nosuch', 'postgres', \$1)" \
	"host=db.example dbname=x password=$secret" >/dev/null 2>&1
grep -q 'tenant "nosuch" does not exist' "$D/pg/server.log"
ok $? "a failing tenant_add_database with a bound locator is logged"
grep -qF "$secret" "$D/pg/server.log"
ok $((!$?)) "its password is not in the server log"
# Why the README says bind: a literal in a call that fails before the function runs is.
PGUSER=op psql_q "SELECT tenant_backup.tenant_add_databse('acme', 'postgres', 'host=h password=${secret}lit')" >/dev/null 2>&1
grep -qF "${secret}lit" "$D/pg/server.log"
ok $? "a literal locator in a malformed call is in the server log (STATEMENT)"
done_testing
