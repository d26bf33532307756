#!/bin/bash
# The CLI believes nothing it reads from storage (file storage, anyone may write there):
# forged manifests, swapped objects, a manifest naming another tenant's object, junk
# and control characters in manifests, crafted recovery targets. Each attack is made
# as an attacker with write access to the storage would make it, and the outcome
# checked: exit status, output, and the files restore-pitr writes.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/base_backup.sh"

scratch_dir
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
"$TB" keygen --out "$D/master.key" 2>/dev/null

# field FILE NAME VALUE: sets one field of a JSON manifest (VALUE is JSON).
field() {
	python3 -c 'import json, sys
doc = json.load(open(sys.argv[1]))
doc[sys.argv[2]] = json.loads(sys.argv[3])
json.dump(doc, open(sys.argv[1], "w"), indent=2)' "$1" "$2" "$3"
}
# get FILE NAME: one field of a JSON manifest.
get() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
ESC=$(printf '\033')

# ---------------------------------------------------------------- ls and verify
S="$D/s1"
export TENANT_BACKUP_STORAGE="file://$S"
echo "acme canary" | "$TB" put --tenant acme --engine postgres >"$D/a.obj"
echo "globex canary" | "$TB" put --tenant globex --engine postgres >"$D/g.obj"
a=$(cat "$D/a.obj")
g=$(cat "$D/g.obj")

# acme's backup gone, and in its place a manifest naming globex's object.
rm "$S/$a" "$S/${a%.tbk}.json"
forged="acme/postgres/${g##*/}"
cp "$S/${g%.tbk}.json" "$S/${forged%.tbk}.json"
"$TB" verify --tenant acme >"$D/out" 2>"$D/err"
is "$?" 1 "verify --tenant acme fails when acme's only manifest names globex's object"
unlike "$(cat "$D/err")" "1 checked, 0 failed" "it does not count globex's object as acme's"
like "$(cat "$D/out")" "^FAILED  ${forged%.tbk}\.json: .*not the manifest's own sibling object" \
	"the forged manifest is reported as a failure"
like "$(cat "$D/err")" "no backups of tenant 'acme' found that could be checked" "and nothing verifiable is said clearly"
"$TB" ls acme >"$D/out" 2>"$D/err"
is "$?" 1 "ls acme exits 1 with a forged manifest"
unlike "$(cat "$D/out")" "globex" "ls acme never lists globex's object"
like "$(cat "$D/err")" "skipping ${forged%.tbk}\.json" "and names the manifest it skipped"
rm "$S/${forged%.tbk}.json"

# A manifest whose object is missing.
echo "acme two" | "$TB" put --tenant acme --engine postgres >"$D/a2.obj"
a2=$(cat "$D/a2.obj")
rm "$S/$a2"
"$TB" verify --tenant acme >"$D/out" 2>"$D/err"
is "$?" 1 "verify --tenant acme fails when a manifest's object is missing"
like "$(cat "$D/out")" "^FAILED  ${a2%.tbk}\.json: its backup object is missing" "naming the manifest"
rm "$S/${a2%.tbk}.json"

# ---------------------------------------------------------------- swapped objects (issue 14.5)
echo "backup six" | "$TB" put --tenant acme --engine redis >"$D/r6.obj"
sleep 1
echo "backup eleven" | "$TB" put --tenant acme --engine redis >"$D/r11.obj"
r6=$(cat "$D/r6.obj")
r11=$(cat "$D/r11.obj")
cp "$S/$r11" "$D/r11.keep"
cp "$S/${r11%.tbk}.json" "$D/r11.json.keep"
cp "$S/$r6" "$S/$r11"
rm "$S/${r11%.tbk}.json"
"$TB" cat "$r11" >"$D/cat.out" 2>"$D/err"
is "$?" 1 "cat of backup 6's object copied over backup 11's (manifest removed) fails"
like "$(cat "$D/err")" "has no manifest" "because the object has no manifest"
unlike "$(cat "$D/cat.out")" "backup six" "and backup 6's data is not passed off as backup 11"
"$TB" verify "$r11" >"$D/out" 2>/dev/null
is "$?" 1 "verify of it fails too"
"$TB" verify --tenant acme --engine redis >"$D/out" 2>"$D/err"
is "$?" 1 "verify --tenant acme --engine redis fails"
like "$(cat "$D/out")" "^FAILED  $r11: a backup object without a manifest" "naming the lone object"
like "$(cat "$D/out")" "^ok      $r6" "and still checks backup 6"
# The same swap, with backup 6's manifest copied beside it and its object field rewritten.
sed "s|\"object\": \"$r6\"|\"object\": \"$r11\"|" "$S/${r6%.tbk}.json" >"$S/${r11%.tbk}.json"
"$TB" cat "$r11" >"$D/cat.out" 2>"$D/err"
is "$?" 1 "cat fails with backup 6's manifest rewritten for backup 11's place"
like "$(cat "$D/err")" "backup_id \(not the one in the object's name\)" "the manifest's backup id is not the name's"
# A manifest that says backup 11 but describes backup 6's bytes: the header decides.
cp "$D/r11.json.keep" "$S/${r11%.tbk}.json"
field "$S/${r11%.tbk}.json" sha256 "\"$(sha256sum "$S/$r11" | cut -d' ' -f1)\""
field "$S/${r11%.tbk}.json" stored_bytes "$(stat -c %s "$S/$r11")"
"$TB" cat "$r11" >"$D/cat.out" 2>"$D/err"
is "$?" 1 "cat fails with backup 11's manifest fitted to backup 6's bytes"
like "$(cat "$D/err")" "does not match its manifest \(backup $(get "$D/r11.json.keep" backup_id), .* backup $(get "$S/${r6%.tbk}.json" backup_id)," \
	"naming both backups"
cp "$D/r11.keep" "$S/$r11"
cp "$D/r11.json.keep" "$S/${r11%.tbk}.json"
"$TB" cat "$r11" | grep -qx "backup eleven"
ok $? "the genuine backup 11 still reads"

# ---------------------------------------------------------------- bad manifests (items 6, 7, 8)
echo "hunter2 is the secret" >"$S/globex/postgres/2026-01-01T000000Z-bad.json"
head -c 70000 /dev/zero | tr '\0' ' ' >"$S/globex/postgres/2026-01-01T000000Z-big.json"
"$TB" ls >"$D/out" 2>"$D/err"
is "$?" 1 "ls of every tenant exits 1 with malformed and oversized manifests in globex"
like "$(cat "$D/out")" "$r11" "but still lists acme's backups"
like "$(cat "$D/out")" "$g" "and globex's good one"
like "$(cat "$D/err")" "skipping globex/postgres/2026-01-01T000000Z-bad\.json: .*not valid JSON \(line 1, column" \
	"the malformed manifest is named, with where the JSON broke"
like "$(cat "$D/err")" "skipping globex/postgres/2026-01-01T000000Z-big\.json" "the oversized one too"
unlike "$(cat "$D/out" "$D/err")" "hunter" "no error quotes the manifest's text"
"$TB" ls acme >/dev/null 2>"$D/err"
is "$?" 0 "ls acme is not affected by globex's bad manifests"
"$TB" verify --tenant globex >"$D/out" 2>"$D/err"
is "$?" 1 "verify --tenant globex fails for its bad manifests"
like "$(cat "$D/out")" "^ok      $g" "after checking its good backup"
like "$(cat "$D/err")" "1 checked, 2 failed" "counting each bad manifest as a failure"
"$TB" verify --tenant acme >/dev/null 2>&1
is "$?" 0 "verify --tenant acme passes"
rm "$S/globex/postgres/2026-01-01T000000Z-bad.json" "$S/globex/postgres/2026-01-01T000000Z-big.json"

# Control characters: in a manifest's fields, and in a key's name.
cp "$S/${g%.tbk}.json" "$D/g.json.keep"
field "$S/${g%.tbk}.json" finished "\"2026-01-01T00:00:00Z\u001b]0;owned\u0007\u001b[2J\""
evil="$S/globex/postgres/2026-01-01T000000Z-${ESC}[31mred.json"
printf '{}' >"$evil"
"$TB" ls globex >"$D/out" 2>"$D/err"
is "$?" 1 "ls globex exits 1 with a manifest holding control characters"
unlike "$(cat "$D/out" "$D/err")" "$ESC" "no escape character reaches the terminal"
like "$(cat "$D/err")" "skipping ${g%.tbk}\.json: .*finished" "the manifest is skipped, naming the bad field"
like "$(cat "$D/err")" 'skipping globex/postgres/2026-01-01T000000Z-\\x1b\[31mred\.json' \
	"a key with an escape character in its name is printed escaped"
cp "$D/g.json.keep" "$S/${g%.tbk}.json"
rm "$evil"

# ---------------------------------------------------------------- restore-pitr (items 1, 3)
S="$D/s2"
export TENANT_BACKUP_STORAGE="file://$S"
for who in acme-old acme-new globex; do
	mkdir -p "$D/tree-$who"
	echo "$who" >"$D/tree-$who/PG_VERSION"
	echo "# the base backup's own settings ($who)" >"$D/tree-$who/postgresql.auto.conf"
done
A1=$(stand_in_base "$S" acme "$D/tree-acme-old" 2026-01-01T000000Z)
A2=$(stand_in_base "$S" acme "$D/tree-acme-new" 2026-01-02T000000Z)
G1=$(stand_in_base "$S" globex "$D/tree-globex" 2026-01-03T000000Z)
for b in "$A1" "$A2" "$G1"; do
	stamp=${b##*/}
	stamp=${stamp:0:4}-${stamp:5:2}-${stamp:8:2}T${stamp:11:2}:${stamp:13:2}:${stamp:15:2}Z
	field "$S/${b%.tbk}.json" started "\"$stamp\""
	field "$S/${b%.tbk}.json" finished "\"$stamp\""
done
restore() { # DIR OPTIONS...
	local dir=$1
	shift
	"$TB" restore-pitr --tenant acme --pgdata "$dir" "$@" 2>"$dir.err"
}

restore "$D/r0" --to-latest
is "$?" 0 "restore-pitr --to-latest of acme's stand-in base backups"
is "$(cat "$D/r0/PG_VERSION")" acme-new "unpacks the newest"
restore "$D/r1" --to "2026-01-01 12:00:00+00"
is "$(cat "$D/r1/PG_VERSION" 2>/dev/null)" acme-old "--to between the two picks the older, by the time in its name"

# A manifest under acme/postgres/base/ naming globex's base backup, finishing last.
forged="acme/postgres/base/2026-01-04T000000Z-${G1##*-}"
cp "$S/${G1%.tbk}.json" "$S/${forged%.tbk}.json"
field "$S/${forged%.tbk}.json" finished '"2030-01-01T00:00:00Z"'
restore "$D/r2" --to-latest
is "$?" 0 "restore-pitr --tenant acme with a forged manifest naming globex's base backup"
is "$(cat "$D/r2/PG_VERSION" 2>/dev/null)" acme-new "restores acme's newest base backup, not globex's cluster"
unlike "$(cat "$D/r2"/* 2>/dev/null)" globex "nothing of globex's in the restored directory"
like "$(cat "$D/r2.err")" "skipping ${forged%.tbk}\.json: .*sibling" "the forged manifest is skipped, named"
rm "$S/${forged%.tbk}.json"

# globex's object itself put among acme's base backups, with a manifest made for the place.
forged="acme/postgres/base/2026-01-05T000000Z-${G1##*-}"
cp "$S/$G1" "$S/$forged"
sed -e "s|\"object\": \"$G1\"|\"object\": \"$forged\"|" -e 's|"tenant": "globex"|"tenant": "acme"|' \
	"$S/${G1%.tbk}.json" >"$S/${forged%.tbk}.json"
restore "$D/r3" --to-latest
is "$?" 0 "restore-pitr --tenant acme with globex's object copied among acme's base backups"
is "$(cat "$D/r3/PG_VERSION" 2>/dev/null)" acme-new "restores acme's own newest base backup"
like "$(cat "$D/r3.err")" "skipping $forged: .*tenant 'globex'" "the copy is skipped: its header says globex"
rm "$S/$forged" "$S/${forged%.tbk}.json"

# finished chosen by the attacker: the newer base "ends" after the target, the older "ends" last.
cp "$S/${A1%.tbk}.json" "$D/a1.json.keep"
cp "$S/${A2%.tbk}.json" "$D/a2.json.keep"
field "$S/${A2%.tbk}.json" finished '"2030-01-01T00:00:00Z"'
restore "$D/r4" --to "2026-01-02 12:00:00+00"
is "$(cat "$D/r4/PG_VERSION" 2>/dev/null)" acme-new "a later finished forged into the newer base does not pick the older"
field "$S/${A1%.tbk}.json" finished '"2031-01-01T00:00:00Z"'
restore "$D/r5" --to-latest
is "$(cat "$D/r5/PG_VERSION" 2>/dev/null)" acme-new "nor does the older base forged to have finished last"
cp "$D/a1.json.keep" "$S/${A1%.tbk}.json"
cp "$D/a2.json.keep" "$S/${A2%.tbk}.json"

# Recovery targets that carry settings into postgresql.auto.conf.
restore "$D/r6" --to-lsn "0/3000060'
restore_command = 'touch $D/pwned %p'"
is "$?" 2 "an --to-lsn carrying a second line is a usage error"
like "$(cat "$D/r6.err")" "is not an LSN" "saying so"
[ ! -e "$D/r6" ] && [ ! -e "$D/pwned" ]
ok $? "no directory made, nothing run"
restore "$D/r7" --to "2026-01-02 12:00:00+
01"
is "$?" 2 "an --to with a line break in its zone is a usage error"
restore "$D/r8" --to "2026-01-02 12:00:00.5e3+00"
is "$?" 2 "an --to with trailing garbage in its fraction is a usage error"
restore "$D/r9" --to-lsn 0/3a00060
is "$?" 0 "a well-formed --to-lsn"
is "$(grep -c '^restore_command' "$D/r9/postgresql.auto.conf")" 1 "one restore_command in auto.conf"
like "$(grep '^restore_command' "$D/r9/postgresql.auto.conf")" "wal-fetch --tenant acme " "ours"
is "$(grep '^recovery_target_lsn' "$D/r9/postgresql.auto.conf")" "recovery_target_lsn = '0/3A00060'" \
	"the LSN is written as we format it"
restore "$D/r10" --to "2026-01-03T01:30:00.25+01:30"
is "$(grep '^recovery_target_time' "$D/r10/postgresql.auto.conf")" "recovery_target_time = '2026-01-03 00:00:00.250000+00'" \
	"the time is written as we format it, in UTC"
# A master key file whose name holds a quote and a backslash: quoted for the file and the shell.
cp "$D/master.key" "$D/it's\\a.key"
restore "$D/r11" --to-latest --master-key "$D/it's\\a.key"
is "$?" 0 "restore-pitr with a master key file name holding ' and \\"
line=$(grep '^restore_command' "$D/r11/postgresql.auto.conf")
value=$(printf '%s\n' "$line" | perl -ne '/^restore_command = \x27(.*)\x27$/ or die; $v = $1;
	$v =~ s/\\(.)|\x27\x27/defined $1 ? $1 : "\x27"/ge; print $v')
like "$value" "--master-key '$D/it'\\\\''s\\\\a\.key'" "postgresql.conf quoting and shell quoting both hold"

done_testing
