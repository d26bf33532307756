#!/bin/bash
# The tenant-backup CLI's keys on file storage: rotate-master (re-wraps every tenant key
# with a new master key, idempotent, leaves BYOK keys alone, fails clearly on a key
# wrapped by neither), and --key-command: a tenant whose keys its own key command wraps
# (test/lib/kms.sh, a stand-in KMS) is read with it, through cat, verify, wal-fetch and
# restore-pitr's restore_command. No key material in any output.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/base_backup.sh"
command -v openssl >/dev/null || skip_all "openssl (for the stand-in KMS) not installed"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
scratch_dir
export TENANT_BACKUP_STORAGE="file://$D/store"
export TENANT_BACKUP_MASTER_KEY_FILE="$D/old.key"
unset TENANT_BACKUP_KEY_COMMAND
LOG="$D/log" # every message the CLI printed, searched for key material at the end

# Runs tenant-backup with its standard output and error in OUT (and the log); its status.
run() {
	OUT=$("$TB" "$@" 2>&1)
	local rc=$?
	printf '%s\n' "$OUT" >>"$LOG"
	return $rc
}
# As run, with the standard output (data) into FILE instead: only messages in OUT.
run_to() { # FILE ARGS...
	local file=$1
	shift
	OUT=$("$TB" "$@" 2>&1 >"$file")
	local rc=$?
	printf '%s\n' "$OUT" >>"$LOG"
	return $rc
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
# The master key id a key document names.
doc_master() { sed -n 's/.*"master_key_id": "\([0-9a-f]*\)".*/\1/p' "$1"; }

for k in old new stranger; do "$TB" keygen --out "$D/$k.key" 2>/dev/null; done
ok $? "three master keys"

# --- two tenants under the old master key
head -c 2000000 /dev/urandom >"$D/acme.in"
seq 1 100000 >>"$D/acme.in"
echo "globex canary" >"$D/globex.in"
run put --tenant acme --engine postgres <"$D/acme.in"
ok $? "put acme"
acme=$OUT
run put --tenant globex --engine redis <"$D/globex.in"
ok $? "put globex"
globex=$OUT
acme_doc=$(ls "$D"/store/acme/keys/*.json)
acme_key=$(basename "$acme_doc" .json)
OLD_ID=$(doc_master "$acme_doc")
like "$OLD_ID" '^[0-9a-f]{16}$' "acme's key document names the old master key"

# --- a BYOK tenant: its first key wrapped by its own key command
KMS="$D/kms dir'50%" # a space, a quote and a percent sign: quoting is tested all the way
mkdir "$KMS"
KC="sh $(printf %q "$ROOT/test/lib/kms.sh") $(printf %q "$KMS")"
echo "initech canary" >"$D/initech.in"
run put --tenant initech --engine mysql --key-command "$KC" <"$D/initech.in"
ok $? "put --key-command creates a tenant's first key wrapped by its key command"
initech=$OUT
initech_doc=$(ls "$D"/store/initech/keys/*.json)
grep -q '"wrap": "command"' "$initech_doc"
ok $? "initech's key document is command-wrapped"
grep -q master_key_id "$initech_doc"
ok $((!$?)) "and names no master key"
grep -q "^initech wrap " "$KMS/calls"
ok $? "the KMS was asked to wrap it"
run put --tenant hooli --engine redis <"$D/globex.in"
echo hooli | TENANT_BACKUP_KEY_COMMAND="$KC" "$TB" put --tenant hooli2 --engine redis >/dev/null 2>>"$LOG"
grep -q '"wrap": "aes-256-gcm"' "$D"/store/hooli2/keys/*.json
ok $? "TENANT_BACKUP_KEY_COMMAND alone does not make a new tenant BYOK"

run_to "$D/initech.out" cat "$initech"
is "$?" 1 "cat of a BYOK tenant's backup without its key command fails"
like "$OUT" "tenant 'initech' is wrapped by the tenant's own key command, which is not known here.*--key-command" \
	"and says the key command is needed"
run_to "$D/initech.out" cat "$initech" --key-command "$KC"
ok $? "cat with --key-command"
is "$(sha "$D/initech.out")" "$(sha "$D/initech.in")" "gives the same bytes"
OUT=$(TENANT_BACKUP_KEY_COMMAND="$KC" "$TB" cat "$initech" 2>&1 >"$D/initech.out2")
ok $? "cat with TENANT_BACKUP_KEY_COMMAND"
cmp -s "$D/initech.out2" "$D/initech.in"
ok $? "gives the same bytes"
run verify --tenant initech --key-command "$KC"
ok $? "verify --tenant initech with the key command"
echo more | "$TB" put --tenant initech --engine mysql >/dev/null 2>"$D/err"
ok $((!$?)) "put to a BYOK tenant without its key command fails"
like "$(cat "$D/err")" "own key command" "and says why"

touch "$KMS/fail"
run_to "$D/initech.out" cat "$initech" --key-command "$KC"
is "$?" 1 "cat fails when the key command refuses"
like "$OUT" "key command" "the error names the key command"
like "$OUT" "kms: refusing unwrap for tenant initech: access denied" "and carries the KMS's own message"
is "$(wc -c <"$D/initech.out")" 0 "and writes no data"
rm "$KMS/fail"

# --- rotate-master: old -> new
keys_before=$(cat "$D"/store/*/keys/*.json | sha256sum)
run rotate-master --master-key "$D/old.key" --new-master-key "$D/new.key"
ok $? "rotate-master old -> new"
like "$OUT" "^acme: rewrapped 1, already 0, byok 0$" "acme re-wrapped"
like "$OUT" "^globex: rewrapped 1, already 0, byok 0$" "globex re-wrapped"
like "$OUT" "^initech: rewrapped 0, already 0, byok 1$" "initech's BYOK key left alone"
like "$OUT" "^total: rewrapped 4, already 0, byok 1$" "total"
NEW_ID=$(doc_master "$acme_doc")
like "$NEW_ID" '^[0-9a-f]{16}$' "acme's key document names a master key"
isnt_old=$([ "$NEW_ID" != "$OLD_ID" ] && echo yes)
is "$isnt_old" yes "the new one"
is "$(basename "$(ls "$D"/store/acme/keys/*.json)")" "$acme_key.json" "same tenant key id, same place"
grep -q '"wrap": "command"' "$initech_doc"
ok $? "initech's document still command-wrapped"

run_to "$D/acme.out" cat "$acme"
is "$?" 1 "cat with the old master key fails after rotation"
like "$OUT" "tenant key $acme_key of tenant 'acme' is wrapped by master key $NEW_ID, but the master key given is $OLD_ID" \
	"naming the tenant key and both master key ids"
run_to "$D/acme.out" cat "$acme" --master-key "$D/new.key"
ok $? "cat acme with the new master key"
is "$(sha "$D/acme.out")" "$(sha "$D/acme.in")" "same bytes (sha256)"
run_to "$D/globex.out" cat "$globex" --master-key "$D/new.key"
is "$(sha "$D/globex.out")" "$(sha "$D/globex.in")" "globex: same bytes (sha256)"
run verify --tenant acme --master-key "$D/new.key"
ok $? "verify acme with the new master key"
run_to "$D/initech.out" cat "$initech" --master-key "$D/new.key" --key-command "$KC"
is "$(sha "$D/initech.out")" "$(sha "$D/initech.in")" "initech still reads with its key command"

# --- again: nothing to do, nothing rewritten
keys_after=$(cat "$D"/store/*/keys/*.json | sha256sum)
run rotate-master --master-key "$D/old.key" --new-master-key "$D/new.key"
ok $? "rotate-master again succeeds"
like "$OUT" "^total: rewrapped 0, already 4, byok 1$" "and counts everything as already done"
is "$(cat "$D"/store/*/keys/*.json | sha256sum)" "$keys_after" "no key document rewritten"
isnt_before=$([ "$keys_after" != "$keys_before" ] && echo yes)
is "$isnt_before" yes "(the first run did rewrite them)"
run rotate-master --master-key "$D/old.key" --new-master-key "$D/new.key" --tenant acme
ok $? "rotate-master --tenant acme"
is "$OUT" "acme: rewrapped 0, already 1, byok 0
total: rewrapped 0, already 1, byok 0" "only acme"

# --- failures
echo umbrella | "$TB" put --tenant umbrella --engine redis --master-key "$D/stranger.key" >/dev/null 2>>"$LOG"
umbrella_doc=$(ls "$D"/store/umbrella/keys/*.json)
umbrella_key=$(basename "$umbrella_doc" .json)
STRANGER_ID=$(doc_master "$umbrella_doc")
run rotate-master --master-key "$D/old.key" --new-master-key "$D/new.key"
is "$?" 1 "a key document wrapped by neither master key fails the rotation"
like "$OUT" "key $umbrella_key of tenant 'umbrella' is wrapped by master key $STRANGER_ID, which is neither the old master key $OLD_ID nor the new master key $NEW_ID" \
	"naming the tenant, its key id and all three master key ids"
like "$OUT" "^umbrella: rewrapped 0, already 0, byok 0, FAILED 1$" "counted as failed"
like "$OUT" "^acme: rewrapped 0, already 1, byok 0$" "the other tenants are still handled"
like "$OUT" "keep the old master key $OLD_ID" "and the old master key is to be kept"
is "$(doc_master "$umbrella_doc")" "$STRANGER_ID" "the document is left as it was"
rm -r "$D/store/umbrella"

run rotate-master --master-key "$D/new.key" --new-master-key "$D/new.key"
is "$?" 2 "rotate-master to the same key is refused"
like "$OUT" "the new master key is the old one" "and says so"
run rotate-master --master-key "$D/old.key"
is "$?" 2 "--new-master-key is required"
run rotate-master --master-key "$D/old.key" --new-master-key "$D/new.key" --tenant nosuch
is "$?" 1 "an unknown tenant fails"
like "$OUT" "tenant 'nosuch' has no key in storage" "and is named"
run rotate-master --master-key "$D/old.key" --new-master-key "$D/new.key" --tenant ../x
is "$?" 2 "a bad tenant name is refused"
run rotate-master --help
like "$OUT" "--new-master-key" "rotate-master --help"
run --help
like "$OUT" "rotate-master" "the command list names rotate-master"
like "$OUT" "--key-command" "and --key-command"
run cat --help
like "$OUT" "--key-command CMD" "cat --help names --key-command"

# --- PITR of a BYOK tenant: wal-fetch and the restore_command restore-pitr writes
export TENANT_BACKUP_MASTER_KEY_FILE="$D/new.key"
mkdir -p "$D/base" && echo 15 >"$D/base/PG_VERSION"
stand_in_base "$D/store" initech "$D/base" "" --key-command "$KC" >"$D/base.obj" 2>>"$LOG"
ok $? "a stand-in base backup of initech"
base=$(cat "$D/base.obj")
mkdir -p "$D/store/initech/postgres/wal/00000001"
# An object sealed for another name: once its key opened, wal-fetch refuses it as another file's.
cp "$D/store/$base" "$D/store/initech/postgres/wal/00000001/000000010000000000000001.tbk"
mkdir "$D/wal"
run wal-fetch --tenant initech 000000010000000000000001 "$D/wal/x"
is "$?" 255 "wal-fetch of a BYOK tenant without its key command fails"
like "$OUT" "own key command" "because of the key command"
run wal-fetch --tenant initech --key-command "$KC" 000000010000000000000001 "$D/wal/x"
like "$OUT" "holds WAL file" "with --key-command the key opens (and the misplaced object is caught)"

cd "$D" || exit 1
run restore-pitr --tenant initech --to-latest --pgdata "$D/pgdata" --key-command "$KC" --master-key new.key
ok $? "restore-pitr of a BYOK tenant with --key-command (and a relative master key file name)"
cd - >/dev/null || exit 1
is "$(cat "$D/pgdata/PG_VERSION" 2>/dev/null)" 15 "unpacks the base backup"
conf=$(grep '^restore_command' "$D/pgdata/postgresql.auto.conf")
like "$conf" "--key-command" "the restore_command carries the key command"
# The restore_command as PostgreSQL runs it: the quoted value read ('' and \\), then %f and %p.
restore_cmd() { # FILE PATH
	printf '%s\n' "$conf" | perl -e 'my ($f, $p) = @ARGV; my $line = <STDIN>;
		$line =~ /^restore_command = \x27(.*)\x27$/ or die "no restore_command"; my $v = $1;
		$v =~ s/\\(.)|\x27\x27/defined $1 ? $1 : "\x27"/ge;
		$v =~ s/%([fp%])/$1 eq "f" ? $f : $1 eq "p" ? $p : "%"/ge; print $v' "$1" "$2"
}
OUT=$(cd "$D/pgdata" && env -u TENANT_BACKUP_STORAGE -u TENANT_BACKUP_MASTER_KEY_FILE \
	sh -c "$(restore_cmd 000000010000000000000001 pg_wal/RECOVERYXLOG)" 2>&1)
is "$?" 255 "restore_command run by sh, without our environment, reaches wal-fetch"
like "$OUT" "holds WAL file" "and opens the tenant key with the quoted key command"
printf '%s\n' "$OUT" >>"$LOG"
OUT=$(cd "$D/pgdata" && env -u TENANT_BACKUP_STORAGE -u TENANT_BACKUP_MASTER_KEY_FILE \
	sh -c "$(restore_cmd 000000010000000000000002 pg_wal/RECOVERYXLOG)" 2>&1)
is "$?" 1 "a segment never archived: exit 1, the end of recovery"

# --- no key material anywhere: master keys, and initech's tenant key as its KMS gives it
initech_tk=$(sed -n 's/.*"wrapped_key": "\([^"]*\)".*/\1/p' "$initech_doc" |
	TENANT_BACKUP_KEY_OP=unwrap TENANT_BACKUP_TENANT=initech TENANT_BACKUP_KEY_ID=x sh "$ROOT/test/lib/kms.sh" "$KMS")
like "$initech_tk" '^[0-9a-f]{64}$' "initech's tenant key, from the KMS"
for k in old new stranger; do
	secret=$(cat "$D/$k.key")
	grep -rqF "$secret" "$LOG" "$D/store" "$D/pgdata/postgresql.auto.conf"
	ok $((!$?)) "the $k master key appears in no output, storage object or config"
done
grep -rqF "$initech_tk" "$LOG" "$D/store" "$D/pgdata/postgresql.auto.conf"
ok $((!$?)) "initech's tenant key appears in no output, storage object or config"
grep -qF "U2FsdGVk" "$LOG"
ok $((!$?)) "nor does the key command's wrapped output"

done_testing
