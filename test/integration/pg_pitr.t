#!/bin/bash
# Point-in-time recovery of a dedicated PostgreSQL tenant on a real throwaway cluster
# (fsync on): archive_library = 'tenant_backup' ships its WAL, the background worker
# takes a base backup, rows go in across WAL switches, a table is dropped; restore-pitr
# to the moment before the drop gives exactly the rows committed by then; --to-latest
# gives everything archived. The same WAL file archived again succeeds, different
# content under an archived name is refused and reported (status shows the lag), and a
# tampered archived segment stops recovery with an error naming it.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/pitr.sh"
PORT=$(free_port)

scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
pitr_cluster_start $PORT "file://$D/store"
# A new WAL file to archive wakes the archiver, which then finds every .ready file.
wake_archiver() {
	psql_q "CREATE TABLE IF NOT EXISTS wake (n int)" "INSERT INTO wake VALUES (1)" "SELECT pg_switch_wal()" >/dev/null 2>&1
}

archived_up_to_now
ok $? "archive_library tenant_backup archives the cluster's WAL once the tenant exists"
seg=$(psql_q "SELECT last_archived_wal FROM pg_stat_archiver")
[ -f "$D/store/acme/postgres/wal/${seg:0:8}/$seg.tbk" ] && [ -f "$D/store/acme/postgres/wal/${seg:0:8}/$seg.json" ]
ok $? "each WAL file is stored as acme/postgres/wal/<timeline>/<file>.tbk with its manifest"
[ "$("$TB" cat "acme/postgres/wal/${seg:0:8}/$seg.tbk" | wc -c)" = 16777216 ]
ok $? "and decrypts to a whole 16 MB segment"

# --- base backup by the background worker
job=$(psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)")
ok $? "tenant_backup('acme') of a dedicated tenant runs a base backup"
row=$(psql_q "SELECT status, object_key, start_lsn IS NOT NULL AND stop_lsn >= start_lsn, timeline FROM tenant_backup.backups WHERE job_id = $job")
like "$row" '^complete\|acme/postgres/base/.*\.tbk\|t\|1$' "it is complete under acme/postgres/base/, with its WAL range and timeline"
base_obj=$(echo "$row" | cut -d'|' -f2)
"$TB" cat "$base_obj" | tar -t 2>/dev/null | grep -qx backup_label
ok $? "the object is a tar of the data directory with its backup_label"
keep=$(psql_q "SELECT pg_walfile_name(start_lsn) FROM tenant_backup.backups WHERE job_id = $job")
is "$(ls "$D/store/acme/postgres/wal/00000001/" | grep -E '^[0-9A-F]{24}\.(tbk|json)$' | awk -v k="$keep" '$0 < k' | wc -l)" 0 \
	"WAL archived before the base backup's start ($keep), which no base backup needs, is removed"
[ -f "$D/store/acme/postgres/wal/00000001/$keep.tbk" ]
ok $? "the WAL from its start on stays"
like "$(psql_q "SELECT detail FROM tenant_backup.audit WHERE action = 'archived WAL removed'")" "\"kept_from\": \"$keep\"" \
	"the removal is in the audit trail"
files=$("$TB" cat "$base_obj" | tar -tv 2>/dev/null | awk '$1 ~ /^-/ {n++; b += $3} END {print n " " b}')
is "$(psql_q "SELECT (contents->>'files') || ' ' || (contents->>'bytes') FROM tenant_backup.backups WHERE job_id = $job")" \
	"$files" "the base backup recorded its files and bytes as they were written"
drill=$(psql_q "SELECT tenant_backup.tenant_restore_drill('acme')")
like "$drill" '"ok": true' "a restore drill of the base backup unpacks it into scratch and finds every file and byte"
is "$(ls -d "${TMPDIR:-/tmp}"/tenant_backup_drill_"${PGPORT}"_* 2>/dev/null | wc -l)" 0 "and removes the scratch directory"

# --- rows across WAL switches, a moment, more rows, a drop
PGDATABASE=app psql_q "CREATE TABLE orders (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())" >/dev/null
for batch in 0 1 2; do
	PGDATABASE=app psql_q "INSERT INTO orders (id) SELECT g FROM generate_series($((batch * 100 + 1)), $((batch * 100 + 100))) g" >/dev/null
	psql_q "SELECT pg_switch_wal()" >/dev/null
done
sleep 1
target=$(psql_q "SELECT clock_timestamp()")
sleep 1
PGDATABASE=app psql_q "INSERT INTO orders (id) SELECT g FROM generate_series(301, 350) g" >/dev/null
PGDATABASE=app psql_q "DROP TABLE orders" "CREATE TABLE later (note text)" "INSERT INTO later VALUES ('written last')" >/dev/null
archived_up_to_now
ok $? "everything up to the drop and after it is archived"

# --- restore to the moment before the drop
restore_pitr "$D/restore/r1" --to "$target" 2>"$D/r1.err"
rc=$?
[ $rc = 0 ] || diag "$(cat "$D/r1.err")"
ok $rc "restore-pitr --to '$target' sets up a data directory"
[ -f "$D/restore/r1/recovery.signal" ] && grep -q "wal-fetch --tenant acme" "$D/restore/r1/postgresql.auto.conf"
ok $? "with recovery.signal and a restore_command calling tenant-backup wal-fetch"
R1_PORT=$(free_port)
start_copy "$D/restore/r1" $R1_PORT
ok $? "PostgreSQL started on it recovers and promotes"
is "$(copy_q $R1_PORT "SELECT count(*), min(id), max(id) FROM orders")" "300|1|300" \
	"the table is there with exactly the 300 rows committed before the target"
is "$(copy_q $R1_PORT "SELECT count(*) FROM orders WHERE at > '$target'")" 0 "and none committed after it"

# --- everything archived
restore_pitr "$D/restore/r2" --to-latest 2>"$D/r2.err"
R2_PORT=$(free_port)
start_copy "$D/restore/r2" $R2_PORT
ok $? "restore-pitr --to-latest recovers"
is "$(copy_q $R2_PORT "SELECT note FROM later")" "written last" "to the last archived transaction"
is "$(copy_q $R2_PORT "SELECT count(*) FROM pg_class WHERE relname = 'orders'")" 0 "(after the drop)"

# --- the same WAL file archived twice; different content under an archived name
first=$(ls "$D/store/acme/postgres/wal/00000001/" | grep -E '^[0-9A-F]{24}\.tbk$' | sort | head -1)
first=${first%.tbk}
sum_before=$(sha256sum "$D/store/acme/postgres/wal/00000001/$first.tbk" | cut -d' ' -f1)
rm -f "$D/pg/data/pg_wal/$first"
"$TB" wal-fetch --tenant acme "$first" "$D/pg/data/pg_wal/$first"
ok $? "wal-fetch puts an archived segment back into pg_wal"
chown postgres "$D/pg/data/pg_wal/$first"
rm -f "$D/pg/data/pg_wal/archive_status/$first.done"
touch "$D/pg/data/pg_wal/archive_status/$first.ready"
chown postgres "$D/pg/data/pg_wal/archive_status/$first.ready"
wake_archiver
wait_for 200 0.1 yes bash -c "[ -e '$D/pg/data/pg_wal/archive_status/$first.done' ] && echo yes" >/dev/null
ok $? "the same segment archived again succeeds"
grep -q "WAL file \"$first\" of tenant \"acme\" was archived before with the same content" "$D/pg/server.log"
ok $? "and the server log says it was already there"
second=$(ls "$D/store/acme/postgres/wal/00000001/" | grep -E '^[0-9A-F]{24}\.tbk$' | sort | sed -n 2p)
second=${second%.tbk}
sum_second=$(sha256sum "$D/store/acme/postgres/wal/00000001/$second.tbk" | cut -d' ' -f1)
rm -f "$D/pg/data/pg_wal/$second"
head -c 16777216 /dev/urandom >"$D/pg/data/pg_wal/$second"
chown postgres "$D/pg/data/pg_wal/$second"
rm -f "$D/pg/data/pg_wal/archive_status/$second.done"
touch "$D/pg/data/pg_wal/archive_status/$second.ready"
chown postgres "$D/pg/data/pg_wal/archive_status/$second.ready"
wake_archiver
wait_for 200 0.1 "$second" psql_q "SELECT last_failed_wal FROM pg_stat_archiver" >/dev/null
ok $? "a segment with different content under an archived name fails to archive"
grep -q "could not archive WAL file \"$second\" of tenant \"acme\": .* is already archived with different content" "$D/pg/server.log"
ok $? "and the server log says why"
is "$(sha256sum "$D/store/acme/postgres/wal/00000001/$second.tbk" | cut -d' ' -f1)" "$sum_second" \
	"the stored object is not overwritten"
like "$(psql_q "SELECT wal_pending >= 1, wal_oldest_pending IS NOT NULL, wal_last_failure FROM tenant_backup.status WHERE tenant = 'acme'")" \
	"^t\|t\|$second at " "tenant_backup.status shows the waiting file and the failure"
is "$(sha256sum "$D/store/acme/postgres/wal/00000001/$first.tbk" | cut -d' ' -f1)" "$sum_before" \
	"(the object archived twice is unchanged too)"
rm -f "$D/pg/data/pg_wal/$second" "$D/pg/data/pg_wal/archive_status/$second.ready"
archived_up_to_now
ok $? "archiving goes on once the bad file is gone"
is "$(psql_q "SELECT wal_pending, wal_last_failure IS NULL FROM tenant_backup.status WHERE tenant = 'acme'")" "0|t" \
	"and the status shows no lag"

# --- wal-fetch fetches ahead: the next segments are waiting, authenticated, for the next calls
mkdir -p "$D/fetch"
"$TB" wal-fetch --tenant acme --prefetch 2 "$first" "$D/fetch/RECOVERYXLOG"
ok $? "wal-fetch of one segment"
next1=$(ls "$D/store/acme/postgres/wal/00000001/" | grep -E '^[0-9A-F]{24}\.tbk$' | sort | sed -n 2p)
next2=$(ls "$D/store/acme/postgres/wal/00000001/" | grep -E '^[0-9A-F]{24}\.tbk$' | sort | sed -n 3p)
wait_for 100 0.1 yes bash -c "[ -f '$D/fetch/tenant_backup_prefetch/${next2%.tbk}' ] && echo yes" >/dev/null
ok $? "fetches the next two into the spool beside DEST meanwhile"
TENANT_BACKUP_STORAGE="file://$D/nowhere" "$TB" wal-fetch --tenant acme "${next1%.tbk}" "$D/fetch/RECOVERYXLOG" 2>/dev/null
ok $? "the next call is served from the spool (storage not even reachable)"
"$TB" cat "acme/postgres/wal/00000001/$next1" | cmp -s - "$D/fetch/RECOVERYXLOG"
ok $? "with the segment's exact bytes"

# --- the archive checked from storage alone: every file, and no missing segment
"$TB" verify --tenant acme --wal >"$D/verify.out" 2>"$D/verify.err"
ok $? "tenant-backup verify --tenant acme --wal passes"
like "$(cat "$D/verify.err")" '[1-9][0-9]* checked, 0 failed' "having checked every archived file"
middle=$(ls "$D/store/acme/postgres/wal/00000001/" | grep -E '^[0-9A-F]{24}\.tbk$' | sort | sed -n 4p)
before=$(ls "$D/store/acme/postgres/wal/00000001/" | grep -E '^[0-9A-F]{24}\.tbk$' | sort | sed -n 3p)
mv "$D/store/acme/postgres/wal/00000001/$middle" "$D/middle.tbk"
"$TB" verify --tenant acme --wal >"$D/verify.out" 2>/dev/null
is "$?" 1 "with one segment gone from the archive, verify --wal fails"
like "$(grep GAP "$D/verify.out")" "GAP     timeline 00000001: 1 segment\(s\) missing after ${before%.tbk}" \
	"and names where the gap is"
mv "$D/middle.tbk" "$D/store/acme/postgres/wal/00000001/$middle"
"$TB" ls acme | grep -q "acme/postgres/base/"
ok $? "tenant-backup ls lists the base backups too"

# --- a tampered archived segment stops recovery, naming it
victim=$(ls "$D/store/acme/postgres/wal/00000001/" | grep -E '^[0-9A-F]{24}\.tbk$' | sort | tail -3 | head -1)
victim=${victim%.tbk}
flip_byte "$D/store/acme/postgres/wal/00000001/$victim.tbk" 5000
restore_pitr "$D/restore/r3" --to-latest 2>/dev/null
R3_PORT=$(free_port)
start_copy "$D/restore/r3" $R3_PORT
ok $((! $?)) "recovery through a tampered segment does not complete"
grep -qE "WAL file $victim of tenant 'acme': .*(fails authentication|is corrupt)" "$D/restore/r3.log"
ok $? "the server log names the segment that failed authentication"
grep -q "FATAL:  could not restore file \"$victim\" from archive" "$D/restore/r3.log"
ok $? "and recovery stops there with a FATAL error, not taken for the end of the archive"

# --- a gap the archiver notices: tenant_backup.status shows it until the next base backup
last=$(psql_q "SELECT last_archived_wal FROM pg_stat_archiver")
mv "$D/store/acme/postgres/wal/00000001/$last.tbk" "$D/last.tbk"
archived_up_to_now
after=${last:0:16}$(printf '%08X' $((16#${last:16:8} + 1)))
is "$(psql_q "SELECT wal_gap FROM tenant_backup.status WHERE tenant = 'acme'")" "$last missing before $after" \
	"an archived segment gone from storage shows as a gap in tenant_backup.status"
grep -q "the archived WAL of tenant \"acme\" has a gap: $last is missing" "$D/pg/server.log"
ok $? "and as a WARNING in the server log"
mv "$D/last.tbk" "$D/store/acme/postgres/wal/00000001/$last.tbk"
psql_q "SELECT tenant_backup.tenant_backup('acme', wait => true)" >/dev/null
is "$(psql_q "SELECT wal_gap IS NULL FROM tenant_backup.status WHERE tenant = 'acme'")" t \
	"a new base backup, from which recovery can start, clears it"

# --- usage errors
"$TB" restore-pitr --tenant acme --pgdata "$D/restore/r1" --to-latest 2>"$D/err"
is "$?" 1 "restore-pitr into a non-empty directory fails"
like "$(cat "$D/err")" "exists and is not empty" "saying so"
"$TB" restore-pitr --tenant acme --pgdata "$D/restore/r9" --to "yesterday" 2>"$D/err"
is "$?" 2 "a target time that is not a time is a usage error"
restore_pitr "$D/restore/r9" --to "2000-01-01 00:00:00+00" 2>"$D/err"
like "$(cat "$D/err")" "has no base backup that ended before 2000-01-01" "a target before every base backup is refused"
[ ! -e "$D/restore/r9" ]
ok $? "and leaves no directory behind"
"$TB" wal-fetch --tenant acme 000000010000000000000099 "$D/nope" 2>/dev/null
is "$?" 1 "wal-fetch of a segment never archived exits 1 (the end of the archive)"

done_testing
