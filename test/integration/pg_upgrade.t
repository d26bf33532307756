#!/bin/bash
# An installed 0.1.0 with data, updated as a user would: the 0.1.0 extension (built from
# the last commit that shipped it) makes real backups; then the current build is
# installed, the server restarted and `ALTER EXTENSION tenant_backup UPDATE` run. The
# old rows, objects and audit chain must still work: old backups restore, new backups run.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
HERE=$(cd "$(dirname "$0")/../.." && pwd)

# The commit that made 0.2.0 the default; its parent is the last 0.1.0.
bump=$(git -C "$HERE" log -1 --format=%H -S"default_version = '0.2.0'" -- extension/tenant_backup.control 2>/dev/null)
[ -n "$bump" ] || skip_all "no git history here to build 0.1.0 from"

scratch_dir
mkdir -p "$D/old" "$D/store"
chown postgres "$D/store"
git -C "$HERE" archive "$bump^" | tar -x -C "$D/old"
make -C "$D/old" --no-print-directory build/libtbcore.a extension >"$D/old-build.log" 2>&1 ||
	pg_bail "$D/old-build.log" "could not build tenant_backup 0.1.0"
# 0.1.0, then the current build, go into a copy of the installation: the other tests
# (which may run at the same time) keep the current build.
pg_private_install "$D/root"
(umask 022 && make -C "$D/old" --no-print-directory install DESTDIR="$D/root" >"$D/old-install.log" 2>&1) ||
	pg_bail "$D/old-install.log" "could not install tenant_backup 0.1.0"

"$TB" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"
pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200"
in_db() { local db=$1; shift; PGDATABASE=$db psql_q "$@"; }

psql_q "CREATE EXTENSION tenant_backup"
is "$(psql_q "SELECT extversion FROM pg_extension WHERE extname = 'tenant_backup'")" 0.1.0 "0.1.0 is installed"
for t in acme globex; do
	psql_q "CREATE DATABASE $t"
	in_db $t "CREATE TABLE canary (id int PRIMARY KEY, v text)" "INSERT INTO canary VALUES (1, '$t at 0.1.0')"
	psql_q "SELECT tenant_backup.tenant_create('$t')" >/dev/null
	psql_q "SELECT tenant_backup.tenant_add_database('$t', 'postgres', '$t')" >/dev/null
	like "$(psql_q "SELECT tenant_backup.tenant_backup('$t', wait => true)")" '^[0-9]+$' "0.1.0 backs up $t"
done
old_acme=$(psql_q "SELECT id FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")
before=$(psql_q "SELECT count(*) FROM tenant_backup.backups" "SELECT count(*) FROM tenant_backup.audit" \
	"SELECT count(*) FROM tenant_backup.key_store" | tr '\n' ' ')

(umask 022 && make -C "$HERE" --no-print-directory install DESTDIR="$D/root" >"$D/new-install.log" 2>&1)
ok $? "the current build installs over 0.1.0"
pg_restart "$D/pg"
psql_q "ALTER EXTENSION tenant_backup UPDATE"
ok $? "ALTER EXTENSION tenant_backup UPDATE runs"
is "$(psql_q "SELECT extversion FROM pg_extension WHERE extname = 'tenant_backup'")" 0.2.0 "0.2.0 is installed"
is "$(psql_q "SELECT count(*) FROM tenant_backup.backups" "SELECT count(*) FROM tenant_backup.audit" \
	"SELECT count(*) FROM tenant_backup.key_store" | tr '\n' ' ')" "$before" \
	"backups, audit rows and keys are all still there"
is "$(psql_q "SELECT ok FROM tenant_backup.tenant_audit_verify()")" t "the audit chain verifies after the update"
is "$(psql_q "SELECT count(*) FROM tenant_backup.tenant_backups('acme') WHERE status = 'complete'")" 1 \
	"tenant_backups lists acme's 0.1.0 backup"

in_db acme "UPDATE canary SET v = 'changed after the update'"
psql_q "SELECT tenant_backup.tenant_restore('acme', backup_id => $old_acme)" >/dev/null
ok $? "the 0.1.0 backup of acme restores with the updated extension"
is "$(in_db acme "SELECT v FROM canary")" "acme at 0.1.0" "acme holds what the 0.1.0 backup saved"
in_db globex "INSERT INTO canary VALUES (2, 'after the update')"
like "$(psql_q "SELECT tenant_backup.tenant_backup('globex', wait => true)")" '^[0-9]+$' "a new backup of globex runs"
is "$(psql_q "SELECT count(*) FROM tenant_backup.tenant_backups('globex') WHERE status = 'complete'")" 2 \
	"globex has its 0.1.0 backup and the new one"
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('globex')")
like "$drill" '"ok": true' "a drill of the new backup passes"
done_testing
