#!/bin/bash
# The tools a job worker runs (pg_dump, pg_restore) start from an argv, not a shell:
# each argument arrives as one word (the connection string cannot become an option),
# nothing of the backend but stdin, stdout and stderr is open in them (no socket to the
# postmaster, no data file), stderr is the tool's messages file, and each leads a
# process group of its own. Stand-ins in tenant_backup.bin_dir record what they got.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"

scratch_dir
mkdir -p "$D/store" "$D/bin" "$D/seen"
chown postgres "$D/store" "$D/bin" "$D/seen"
"$TB" keygen --out "$D/master.key" 2>/dev/null || { echo "Bail out! tenant-backup keygen failed ($TB)"; exit 1; }
chown postgres "$D/master.key"
pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'
tenant_backup.default_schedule = '100 years'
tenant_backup.naptime = 200"
psql_q "CREATE EXTENSION tenant_backup" >/dev/null || pg_bail "$D/pg/server.log" "CREATE EXTENSION failed"

# Each stand-in (Python: a shell keeps descriptors of its own) writes its arguments
# (one a line), its open descriptors (number -> target) and whether it leads its
# process group, then runs the real tool.
for tool in pg_dump pg_restore; do
	cat >"$D/bin/$tool" <<PY
#!/usr/bin/python3
import os, sys
out = "$D/seen/$tool"
with open(out + ".args", "w") as f:
    f.write("".join(a + "\\n" for a in sys.argv[1:]))
fds = []
for name in os.listdir("/proc/self/fd"):
    try:
        fds.append((int(name), os.readlink("/proc/self/fd/" + name)))
    except OSError:
        pass  # the listing's own descriptor, closed by now
with open(out + ".fds", "w") as f:
    f.write("".join("%d -> %s\\n" % fd for fd in sorted(fds)))
with open(out + ".pgid", "w") as f:
    f.write("leader\\n" if os.getpgrp() == os.getpid() else "member\\n")
os.execv("$PG_BIN/$tool", ["$PG_BIN/$tool"] + sys.argv[1:])
PY
	chmod 755 "$D/bin/$tool"
done
psql_q "ALTER SYSTEM SET tenant_backup.bin_dir = '$D/bin'" "SELECT pg_reload_conf()" >/dev/null

psql_q "CREATE DATABASE acme" >/dev/null
PGDATABASE=acme psql_q "CREATE TABLE items (id int)" "INSERT INTO items SELECT generate_series(1, 5)" >/dev/null
psql_q "SELECT tenant_backup.tenant_create('acme')" \
	"SELECT tenant_backup.tenant_add_database('acme', 'postgres', 'acme')" >/dev/null
out=$(psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" 2>&1)
ok $? "a backup through the stand-in succeeds" || diag "$out"

args=$(cat "$D/seen/pg_dump.args")
like "$args" "^--format=custom$" "pg_dump got its options one a word"
is "$(grep -c '^--dbname=' "$D/seen/pg_dump.args")" 1 "the connection string is one argument, glued to --dbname="
like "$(grep '^--snapshot=' "$D/seen/pg_dump.args")" '^--snapshot=[0-9A-F-]+$' "the snapshot is glued to its option"
is "$(cut -d' ' -f1 "$D/seen/pg_dump.fds" | tr '\n' ' ')" "0 1 2 " "pg_dump has stdin, stdout and stderr open, nothing else"
like "$(grep '^2 ' "$D/seen/pg_dump.fds")" "pg_stat_tmp/tenant_backup_pg_dump_[0-9]+\.log" \
	"its stderr is the messages file"
like "$(grep '^0 ' "$D/seen/pg_dump.fds")" "/dev/null" "its stdin is /dev/null"
is "$(cat "$D/seen/pg_dump.pgid")" leader "it leads a process group of its own"

backup=$(psql_q "SELECT max(id) FROM tenant_backup.backups WHERE tenant = 'acme' AND status = 'complete'")
out=$(psql_q "SELECT tenant_backup.tenant_restore('acme', backup_id => $backup, target => 'acme_copy', wait => true)" 2>&1)
ok $? "a restore through the stand-in succeeds" || diag "$out"
is "$(PGDATABASE=acme_copy psql_q "SELECT count(*) FROM items")" 5 "it restored the rows"
is "$(cut -d' ' -f1 "$D/seen/pg_restore.fds" | tr '\n' ' ')" "0 1 2 " \
	"pg_restore has stdin, stdout and stderr open, nothing else"
like "$(grep '^0 ' "$D/seen/pg_restore.fds")" "pipe:" "its stdin is the pipe of the backup's bytes"
is "$(cat "$D/seen/pg_restore.pgid")" leader "it leads a process group of its own"
psql_q "ALTER SYSTEM RESET tenant_backup.bin_dir" "SELECT pg_reload_conf()" >/dev/null
pg_stop "$D/pg"
done_testing
