#!/bin/bash
# The CLI's reading commands with --replica, on two file storages: a backup whose
# primary copy is missing or has a byte flipped is listed, verified and read from the
# replica, saying so; without --replica (or with both copies bad) the error stays;
# --storage REPLICA works alone; wal-fetch of a file neither copy archived still exits 1;
# a --replica that cannot be opened is an error.
. "$(dirname "$0")/../lib/tap.sh"

scratch_dir
"$TB" keygen --out "$D/master.key" 2>/dev/null
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key" TENANT_BACKUP_STORAGE="file://$D/primary"
mkdir "$D/primary"
head -c 200000 /dev/urandom >"$D/data"
old=$("$TB" put --tenant acme --engine redis <"$D/data")
new=$("$TB" put --tenant acme --engine redis <"$D/data")
cp -a "$D/primary" "$D/replica"
REPLICA="file://$D/replica"

is "$("$TB" ls --storage "$REPLICA" acme | grep -c '\.tbk')" 2 "--storage REPLICA alone lists both backups"
"$TB" verify --storage "$REPLICA" --tenant acme >/dev/null 2>&1
ok $? "and verifies them with the replica's own key documents"

rm "$D/primary/$old"
out=$("$TB" ls acme 2>&1)
is "$?" 1 "without --replica, ls of the primary flags the backup whose object is missing"
out=$("$TB" ls --replica "$REPLICA" acme 2>"$D/err")
is "$?" 0 "with --replica, ls exits 0"
is "$(echo "$out" | grep -c '\.tbk')" 2 "listing each backup once"
like "$(cat "$D/err")" "in the primary storage, ${old%.tbk}.json: its backup object is missing; the other copy is used" \
	"and noting what the primary lacks"
out=$("$TB" verify --tenant acme --replica "$REPLICA" 2>"$D/err")
is "$?" 0 "verify --tenant --replica checks both backups"
like "$(cat "$D/err")" "$old read from the replica file://$D/replica: the primary copy was missing: " \
	"reading the missing one from the replica, saying so"
TENANT_BACKUP_REPLICA_STORAGE="$REPLICA" "$TB" cat "$old" >"$D/out" 2>"$D/err"
ok $? "cat with TENANT_BACKUP_REPLICA_STORAGE reads it"
cmp -s "$D/out" "$D/data"
ok $? "byte for byte"

flip_byte "$D/primary/$new" $(($(stat -c %s "$D/primary/$new") / 2))
"$TB" cat "$new" >"$D/out" 2>"$D/err"
ok $((! $?)) "a tampered primary copy fails cat without --replica"
"$TB" cat "$new" --replica "$REPLICA" >"$D/out" 2>"$D/err"
ok $? "and is read from the replica with it"
like "$(cat "$D/err")" "the primary copy failed authentication: " "saying why"
cmp -s "$D/out" "$D/data"
ok $? "the replica's plaintext, whole"

flip_byte "$D/replica/$new" $(($(stat -c %s "$D/replica/$new") / 2))
out=$("$TB" verify "$new" --replica "$REPLICA" 2>&1)
is "$?" 1 "both copies tampered: verify fails"
like "$out" "the primary copy failed authentication: .*; the replica file://$D/replica: " "naming both copies"

out=$("$TB" wal-fetch --tenant acme --replica "$REPLICA" --prefetch 0 000000010000000000000001 "$D/wal" 2>&1)
is "$?" 1 "wal-fetch of a file neither copy archived exits 1 (the end of recovery)"
out=$("$TB" ls --replica "file://$D/nosuch" acme 2>&1)
is "$?" 2 "a --replica that cannot be opened is an error"
like "$out" "tenant-backup ls: --replica: .*$D/nosuch" "naming it"

done_testing
