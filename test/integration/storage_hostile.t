#!/bin/bash
# Storage that cannot make the CLI hang, loop or follow links. S3: a broken endpoint
# of our own (test/lib/hostile_s3.py) repeats or empties its continuation tokens,
# lists keys outside the prefix asked for, trickles its answers, answers PUT and
# CompleteMultipartUpload 200 with an <Error>. File storage: a FIFO or a symbolic link
# in place of a key document, a manifest, an object or a directory. Every command runs
# under timeout, and must fail with a clear error well inside it.
. "$(dirname "$0")/../lib/tap.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)

scratch_dir
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
"$TB" keygen --out "$D/master.key" 2>/dev/null
echo '{"TOP SECRET": "not for any tenant"}' > "$D/secret.json"

# Runs CMD... under `timeout LIMIT`; sets OUT (stdout and stderr), RC and SECS (whole seconds).
bounded() { # LIMIT CMD...
	local limit=$1 start=$SECONDS
	shift
	OUT=$(timeout "$limit" "$@" 2>&1)
	RC=$?
	SECS=$((SECONDS - start))
}

# ok unless the last bounded command succeeded or was killed by its timeout.
failed_in_time() { # NAME
	ok $((RC == 0 || RC == 124)) "$1 (exit $RC after ${SECS}s)"
}

# ---- S3 ----
hostile_start() { # MODE: sets HOSTILE_URL and HOSTILE_LOG
	local port
	port=$(free_port)
	HOSTILE_LOG="$D/hostile-$1.log"
	: > "$HOSTILE_LOG"
	/usr/bin/python3 "$HERE/lib/hostile_s3.py" "$port" "$1" "$HOSTILE_LOG" 2>"$D/hostile-$1.err" &
	HOSTILE_PID=$!
	on_exit "kill $HOSTILE_PID 2>/dev/null"
	for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
	HOSTILE_URL="s3://bucket/hostile?endpoint=http://127.0.0.1:$port&stall_timeout=2&part_size=5MiB"
}
hostile_stop() { kill "$HOSTILE_PID" 2>/dev/null; wait "$HOSTILE_PID" 2>/dev/null; }
list_requests() { grep -c "^GET .*list-type=2" "$HOSTILE_LOG"; }

export AWS_ACCESS_KEY_ID=hostile AWS_SECRET_ACCESS_KEY=hostile-secret AWS_REGION=us-east-1

hostile_start repeat-token
bounded 20 "$TB" ls --storage "$HOSTILE_URL"
failed_in_time "ls: a listing that repeats its continuation token fails"
like "$OUT" "listing of prefix 'hostile/' in bucket 'bucket' gave, on page 2, a repeated continuation token" \
	"the error says the token repeated"
is "$(list_requests)" 2 "after two LIST requests"
: > "$HOSTILE_LOG"
bounded 20 sh -c "echo data | '$TB' put --tenant acme --engine redis --storage '$HOSTILE_URL'"
failed_in_time "put: listing the tenant's keys fails the same way"
like "$OUT" "prefix 'hostile/acme/keys/' .* a repeated continuation token" "naming the keys prefix"
hostile_stop

hostile_start cycle-token
bounded 20 "$TB" verify --tenant acme --storage "$HOSTILE_URL"
failed_in_time "verify: tokens that go round (t0, t1, t2, t0) are refused too"
like "$OUT" "on page 4, a repeated continuation token" "on the first token seen again"
hostile_stop

hostile_start empty-token
bounded 20 "$TB" ls acme --storage "$HOSTILE_URL"
failed_in_time "ls: a truncated page with an empty continuation token fails"
like "$OUT" "on page 1, an empty continuation token" "the error says the token is empty"
is "$(list_requests)" 1 "after one LIST request"
hostile_stop

hostile_start foreign-key
bounded 20 "$TB" ls acme --storage "$HOSTILE_URL"
failed_in_time "ls acme: a listing naming another tenant's key fails"
like "$OUT" "listing of prefix 'hostile/acme/' in bucket 'bucket' returned a key outside that prefix" \
	"the error says the key is outside the prefix"
unlike "$OUT" "globex" "and does not repeat the key"
hostile_stop

hostile_start trickle
bounded 30 "$TB" ls --storage "$HOSTILE_URL&retries=0"
failed_in_time "ls: an answer trickled at 1.1 KB/s (above the stall speed) is cut off"
like "$OUT" "did not finish within its deadline of [0-9]+ s" "the error names the deadline"
ok $((SECS > 12)) "within 2 x stall_timeout plus its size at 128 KiB/s, not the 90 s the trickle takes"
hostile_stop

hostile_start put-error
bounded 20 sh -c "echo data | '$TB' put --tenant acme --engine redis --storage '$HOSTILE_URL&retries=1'"
failed_in_time "put: a PUT answered 200 with an <Error> body fails"
like "$OUT" "S3 PUT 'acme/keys/[0-9a-f]+\.json' failed with HTTP 200 \(InternalError" "the error names the PUT and the code"
unlike "$OUT" "^acme/redis/" "no object key is printed"
like "$OUT" "internal error\.\?FAKE: backup complete" "the server's message is shown on one line, its newline as '?'"
like "$(grep -c '^PUT ' "$HOSTILE_LOG")" "^2$" "the PUT was retried once, as an internal error is"
hostile_stop

hostile_start complete-error
openssl enc -aes-128-ctr -nosalt -pass pass:hostile -in /dev/zero 2>/dev/null | head -c 6000000 > "$D/six-mb"
bounded 20 sh -c "'$TB' put --tenant acme --engine redis --storage '$HOSTILE_URL&retries=0' < '$D/six-mb'"
failed_in_time "put: a CompleteMultipartUpload answered 200 with an <Error> body fails"
like "$OUT" "S3 CompleteMultipartUpload '.*' failed with HTTP 200 \(InternalError" "the error names the completion"
like "$(cat "$HOSTILE_LOG")" "DELETE .*uploadId=hostile-upload" "the upload is aborted"
hostile_stop

# ---- file storage ----
export TENANT_BACKUP_STORAGE="file://$D/store"
obj=$(echo "acme canary" | "$TB" put --tenant acme --engine postgres)
ok $? "put acme on file storage"
manifest="${obj%.tbk}.json"
keydoc=$(cd "$D/store" && ls acme/keys/*.json)
mkdir -p "$D/aside"

# Puts KIND (fifo, or link to TARGET) in place of storage path REL, the original kept aside.
replace() { # REL fifo|link [TARGET]
	mv "$D/store/$1" "$D/aside/$(basename "$1")"
	if [ "$2" = fifo ]; then mkfifo "$D/store/$1"; else ln -s "$3" "$D/store/$1"; fi
}
# OUT without the line by which ls may say that the object has no manifest.
without_manifest_note() { printf '%s\n' "$OUT" | grep -v "skipping $obj: a backup object without a manifest"; }
restore_original() { rm -f "$D/store/$1"; mv "$D/aside/$(basename "$1")" "$D/store/$1"; }

replace "$keydoc" fifo
for cmd in cat verify; do
	bounded 20 "$TB" $cmd "$obj"
	failed_in_time "$cmd with a FIFO as the key document fails"
	like "$OUT" "'$keydoc' in file://$D/store is a FIFO, not a regular file" "$cmd: the error names the key document"
done
restore_original "$keydoc"

replace "$keydoc" link "$D/aside/$(basename "$keydoc")"
bounded 20 "$TB" cat "$obj"
failed_in_time "cat with the key document a symbolic link (to the real one, moved away) fails"
like "$OUT" "'$keydoc' in file://$D/store is a symbolic link, not a regular file" "the error says it is a link"
restore_original "$keydoc"

replace "$manifest" link "$D/secret.json"
bounded 20 "$TB" verify "$obj"
failed_in_time "verify with the manifest a symbolic link to a secret file fails"
like "$OUT" "'$manifest' in file://$D/store is a symbolic link, not a regular file" "the error names the manifest"
unlike "$OUT" "TOP SECRET" "and shows nothing of the file it points to"
bounded 20 "$TB" ls acme
ok $((RC == 124)) "ls acme with that manifest returns (exit $RC after ${SECS}s)"
is "$(without_manifest_note)" "" "and lists no backup of it (at most that the object has no manifest, for a link is none)"
restore_original "$manifest"

replace "$manifest" fifo
bounded 20 "$TB" verify "$obj"
failed_in_time "verify with a FIFO as the manifest fails"
like "$OUT" "'$manifest' in file://$D/store is a FIFO, not a regular file" "the error names the manifest"
bounded 20 "$TB" verify --tenant acme
failed_in_time "verify --tenant acme does not hang on it either"
like "$OUT" "FAILED +$obj" "it reports the object as failed"
bounded 20 "$TB" ls
ok $((RC == 124)) "ls does not hang on it (exit $RC after ${SECS}s)"
is "$(without_manifest_note)" "" "and lists no backup of it"
restore_original "$manifest"

replace "$obj" fifo
for cmd in cat verify; do
	bounded 20 "$TB" $cmd "$obj"
	failed_in_time "$cmd of an object that is a FIFO fails"
	like "$OUT" "'$obj' in file://$D/store is a FIFO, not a regular file" "$cmd: the error names the object"
done
restore_original "$obj"

replace "$obj" link "$D/secret.json"
bounded 20 "$TB" cat "$obj"
failed_in_time "cat of an object that is a symbolic link fails"
like "$OUT" "is a symbolic link, not a regular file" "the error says it is a link"
unlike "$OUT" "TOP SECRET" "and shows nothing of its target"
restore_original "$obj"

# The whole acme/postgres directory a link to a copy outside the storage.
cp -a "$D/store/acme/postgres" "$D/outside"
mv "$D/store/acme/postgres" "$D/aside/postgres"
ln -s "$D/outside" "$D/store/acme/postgres"
bounded 20 "$TB" cat "$obj"
failed_in_time "cat through a directory that is a symbolic link fails"
like "$OUT" "'acme/postgres' in file://$D/store is a symbolic link, not a directory" "the error names the directory"
bounded 20 "$TB" ls acme
is "$RC/$OUT" "0/" "ls does not follow it"
bounded 20 sh -c "echo more | '$TB' put --tenant acme --engine postgres"
failed_in_time "put through it fails"
is "$(find "$D/outside" -type f | wc -l)" 2 "and writes nothing outside the storage"
rm "$D/store/acme/postgres"
mv "$D/aside/postgres" "$D/store/acme/postgres"

bounded 20 "$TB" cat "$obj"
is "$RC/$OUT" "0/acme canary" "with everything back in place, the backup reads again"

done_testing
