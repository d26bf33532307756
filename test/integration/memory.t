#!/bin/bash
# Memory stays bounded whatever the size: sealing and opening a 2 GB stream keep
# peak RSS under 64 MB (measured by /usr/bin/time -v), and the bytes survive.
. "$(dirname "$0")/../lib/tap.sh"

scratch_dir
export TENANT_BACKUP_STORAGE="file://$D/store"
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
"$TB" keygen --out "$D/master.key" 2>/dev/null

# 2 GiB: 1.5 GiB of AES-CTR keystream (incompressible) then 0.5 GiB of text.
gen() {
	openssl enc -aes-128-ctr -nosalt -pass pass:tenant-backup-memory-test -in /dev/zero 2>/dev/null |
		head -c $((1536 * 1024 * 1024))
	yes "tenant acme row with some text to compress" | head -c $((512 * 1024 * 1024))
}

obj=$(gen | tee >(sha256sum | cut -d' ' -f1 > "$D/want") |
	/usr/bin/time -v -o "$D/put.time" "$TB" put --tenant acme --engine postgres)
ok $? "put of a 2 GiB stream"
sleep 0.2
want=$(cat "$D/want")
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$D/put.time")
diag "put peak RSS: ${rss} KB"
ok $((rss >= 64 * 1024)) "put peak RSS ${rss} KB is under 64 MB"

got=$(/usr/bin/time -v -o "$D/cat.time" "$TB" cat "$obj" | sha256sum | cut -d' ' -f1)
is "$got" "$want" "cat returns the same 2 GiB"
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$D/cat.time")
diag "cat peak RSS: ${rss} KB"
ok $((rss >= 64 * 1024)) "cat peak RSS ${rss} KB is under 64 MB"

done_testing
