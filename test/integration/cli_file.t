#!/bin/bash
# The tenant-backup CLI end to end on file storage: keygen, put, ls, cat, verify,
# validation errors, wrong keys and tampered objects, and no secret in any output.
. "$(dirname "$0")/../lib/tap.sh"

scratch_dir
export TENANT_BACKUP_STORAGE="file://$D/store"
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"

"$TB" keygen --out "$D/master.key" 2>/dev/null
ok $? "keygen writes a master key"
is "$(stat -c %a "$D/master.key")" 600 "master key file is mode 0600"
SECRET=$(cat "$D/master.key")
out=$("$TB" keygen --out "$D/master.key" 2>&1)
ok $((! $?)) "keygen refuses to overwrite"
like "$out" "refusing to overwrite" "keygen says why"
is "$(cat "$D/master.key")" "$SECRET" "existing key untouched"

head -c 3000000 /dev/urandom > "$D/acme.in"
seq 1 300000 >> "$D/acme.in"
echo "globex canary" > "$D/globex.in"
obj=$("$TB" put --tenant acme --engine postgres < "$D/acme.in" 2>"$D/err")
ok $? "put acme"
like "$obj" '^acme/postgres/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{6}Z-[0-9a-f]{16}\.tbk$' "put prints <tenant>/<engine>/<UTC time>-<id>.tbk"
gobj=$("$TB" put --tenant globex --engine redis < "$D/globex.in")
ok $? "put globex"
test -f "$D/store/$obj" && test -f "$D/store/${obj%.tbk}.json"
ok $? "object and manifest stored at the documented key"
ls "$D"/store/acme/keys/*.json >/dev/null 2>&1
ok $? "acme's wrapped key stored under acme/keys/"

listing=$("$TB" ls)
like "$listing" "postgres .* $obj" "ls lists acme's backup"
like "$listing" "redis .* $gobj" "ls lists globex's backup"
is "$("$TB" ls acme | tail -n +2 | wc -l)" 1 "ls acme lists only acme (below its header)"
is "$("$TB" ls acme/redis | wc -l)" 0 "ls acme/redis lists nothing"

"$TB" cat "$obj" > "$D/acme.out"
ok $? "cat exits 0"
cmp -s "$D/acme.in" "$D/acme.out"
ok $? "cat returns the exact bytes"
"$TB" cat "$gobj" | grep -q "globex canary"
ok $? "cat of globex"
out=$("$TB" verify --tenant acme 2>&1)
ok $? "verify --tenant acme"
like "$out" "^ok +$obj" "verify reports the object"
sha=$(sha256sum "$D/store/$obj" | cut -d' ' -f1)
grep -q "\"sha256\": \"$sha\"" "$D/store/${obj%.tbk}.json"
ok $? "manifest sha256 is the stored object's (checkable with sha256sum, no key)"
grep -qE '"(master_key|wrapped_key|key)":' "$D/store/${obj%.tbk}.json"
ok $((! $?)) "manifest holds no key material"

out=$("$TB" put --tenant Acme --engine postgres < /dev/null 2>&1)
is "$?" 2 "bad tenant name exits 2"
like "$out" "invalid tenant name 'Acme'" "bad tenant name is named"
out=$("$TB" put --tenant acme --engine oracle < /dev/null 2>&1)
like "$out" "unknown engine 'oracle'" "unknown engine is named"
out=$("$TB" put --tenant ../etc --engine redis < /dev/null 2>&1)
like "$out" "invalid tenant name" "path-like tenant refused"
out=$(TENANT_BACKUP_STORAGE= "$TB" ls 2>&1)
like "$out" "no storage URL given" "missing storage explained"
out=$(TENANT_BACKUP_MASTER_KEY_FILE= "$TB" cat "$obj" 2>&1 >/dev/null)
like "$out" "no master key given" "missing master key explained"
out=$("$TB" frobnicate 2>&1)
like "$out" "unknown command 'frobnicate'" "unknown command"
"$TB" put --help | grep -q -- "--tenant"
ok $? "put --help"

"$TB" keygen --out "$D/other.key" 2>/dev/null
out=$("$TB" cat "$obj" --master-key "$D/other.key" 2>&1 >/dev/null)
ok $((! $?)) "cat with the wrong master key fails"
like "$out" "is wrapped by master key [0-9a-f]{16}, but the master key given is [0-9a-f]{16}" "wrong master key explained"

cp "$D/store/$obj" "$D/pristine"
size=$(stat -c %s "$D/store/$obj")
flip_byte "$D/store/$obj" $((size / 2))
out=$("$TB" cat "$obj" 2>&1 >/dev/null)
ok $((! $?)) "cat of a bit-flipped object fails"
like "$out" "object '$obj' is corrupt: chunk [0-9]+ fails authentication" "error names the object and the chunk"
out=$("$TB" verify "$obj" "$gobj" 2>&1)
ok $((! $?)) "verify fails when one object fails"
like "$out" "FAILED +$obj" "verify names the failed object"
like "$out" "ok +$gobj" "and still checks the others"
head -c $((size - 100)) "$D/pristine" > "$D/store/$obj"
out=$("$TB" cat "$obj" 2>&1 >/dev/null)
ok $((! $?)) "cat of a truncated object fails"
like "$out" "truncated|missing" "truncation explained"

# Progress: a line with bytes and rate on a terminal (script gives us one), none otherwise.
head -c 40000000 /dev/zero > "$D/zeros"
tty_out=$(script -qec "'$TB' put --tenant acme --engine redis < '$D/zeros' > /dev/null" /dev/null)
like "$tty_out" "put: [0-9.]+ MiB, [0-9.]+ MiB/s" "a progress line on a terminal"
quiet=$("$TB" put --tenant acme --engine redis < "$D/zeros" 2>&1 >/dev/null)
is "$quiet" "" "quiet when standard error is not a terminal"

all=$(cat "$D"/store/*/keys/*.json "$D"/store/*/*/*.json; "$TB" ls; "$TB" verify --tenant globex 2>&1)
unlike "$all" "$SECRET" "master key never appears in storage or output"

done_testing
