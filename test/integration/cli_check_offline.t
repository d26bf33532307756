#!/bin/bash
# tenant-backup check without a control plane: the storage round trip (a probe under
# _check-, removed again) and the master key against every tenant's key documents,
# on file:// and on S3; an unwritable directory, a wrong master key (naming the
# tenant) and a key file of mode 0644 are errors with exit status 1, as in
# tenant_backup.check().
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/s3.sh"

scratch_dir
unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGSERVICE PGSERVICEFILE
mkdir "$D/store"
"$TB" keygen --out "$D/master.key" 2>/dev/null
"$TB" keygen --out "$D/other.key" 2>/dev/null
export TENANT_BACKUP_STORAGE="file://$D/store" TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
echo acme | "$TB" put --tenant acme --engine postgres >/dev/null
echo globex | "$TB" put --tenant globex --engine redis >/dev/null
status_of() { awk -v n="$2" '{ name = $1; for (i = 2; i < NF; i++) if ($i ~ /^(ok|warning|error)$/) break; else name = name " " $i; if (name == n) print $i }' <<<"$1"; }

# ------------------------------------------------------------ a good file:// storage

out=$("$TB" check --storage "file://$D/store" --master-key "$D/master.key")
is "$?" 0 "check --storage --master-key on good storage exits 0"
for c in storage "storage write" "storage read" "storage list" "storage delete" "master key" "keys of acme" "keys of globex"; do
	is "$(status_of "$out" "$c")" ok "$c: ok"
done
like "$out" "keys of acme +ok +1 key document\(s\) of tenant 'acme' open with master key" "the key line says what opened"
is "$(find "$D/store" -name '_check-*' | wc -l)" 0 "the probe object was removed"
out=$("$TB" check)
is "$?" 0 "without --control or PG*, check runs offline from TENANT_BACKUP_STORAGE and _MASTER_KEY_FILE"
like "$out" "^storage +ok" "and says so line by line"
is "$("$TB" check --offline --json | python3 -c 'import json, sys; rows = json.load(sys.stdin); print(len(rows), sorted({r["status"] for r in rows}), sorted(rows[0]))')" \
	"8 ['ok'] ['detail', 'hint', 'name', 'status']" "--json: one object per check with name, status, detail, hint"
out=$("$TB" check --tenant acme)
is "$?" 0 "--tenant acme"
is "$(grep -c '^keys of' <<<"$out")" 1 "checks only acme's keys"
out=$("$TB" check --tenant initech)
is "$?" 1 "--tenant of a tenant with no key in storage exits 1"
like "$out" "tenant keys +error +tenant 'initech' has no key in storage" "saying so"

# ------------------------------------------------------------ errors

out=$("$TB" check --master-key "$D/other.key")
is "$?" 1 "a wrong master key exits 1"
like "$out" "keys of acme +error +key [0-9a-f]{16} of tenant 'acme' does not open: .*; hint: This is not the master key tenant 'acme''s keys were wrapped with" \
	"naming the tenant whose key does not open, with a hint"
cp "$D/master.key" "$D/loose.key"
chmod 0644 "$D/loose.key"
out=$("$TB" check --master-key "$D/loose.key")
is "$?" 1 "a master key file of mode 0644 exits 1"
like "$out" "master key +error +master key file '$D/loose.key' is accessible by group or others \(mode 0644\)" \
	"an error, as tenant_backup.check() makes it"

# An unprivileged user (the tests run as root, whom no mode stops) and a directory it cannot write.
mkdir "$D/readonly"
chmod 0755 "$D" "$D/readonly"
install -o nobody -m 0600 "$D/master.key" "$D/nobody.key"
out=$(runuser -u nobody -- "$TB" check --storage "file://$D/readonly" --master-key "$D/nobody.key")
is "$?" 1 "an unwritable storage directory exits 1"
like "$out" "storage write +error +.*; hint: This runs as user \"nobody\": give it write access to the storage directory" \
	"the write fails, naming the user that needs access"
is "$(status_of "$out" "storage read")" "" "and the round trip stops there"

out=$("$TB" check --control "host=127.0.0.1 port=1 connect_timeout=2" 2>&1)
is "$?" 3 "with --control, check is the control plane's (unreachable here: exit 3)"

# ------------------------------------------------------------ S3

s3_start "$D" "$(free_port)"
S3="s3://$TB_S3_BUCKET/offline-check"
echo acme | "$TB" put --storage "$S3" --tenant acme --engine postgres >/dev/null
out=$("$TB" check --storage "$S3")
is "$?" 0 "check on S3 exits 0"
for c in "storage write" "storage read" "storage list" "storage delete" "keys of acme"; do
	is "$(status_of "$out" "$c")" ok "S3 $c: ok"
done
is "$(aws_s3 s3 ls "s3://$TB_S3_BUCKET/offline-check/" | grep -c '_check-')" 0 "no probe is left in the bucket"
out=$("$TB" check --storage "$S3" --master-key "$D/other.key")
is "$?" 1 "S3 with a wrong master key exits 1"
like "$out" "keys of acme +error .*tenant 'acme'" "naming the tenant"

done_testing
