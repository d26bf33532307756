#!/bin/sh
# make demo: seal a generated file as a tenant backup on the embedded default (file
# storage under a local directory), list it, verify it, restore it and compare.
set -eu
BIN=$1
TB="$BIN/tenant-backup"
DEMO=$(mktemp -d /tmp/tenant-backup-demo.XXXXXX)
trap 'rm -rf "$DEMO"' EXIT
export TENANT_BACKUP_STORAGE="file://$DEMO/storage"
export TENANT_BACKUP_MASTER_KEY_FILE="$DEMO/master.key"

step() { printf '\n== %s\n' "$*"; }

step "master key (kept outside storage; mode 0600)"
"$TB" keygen --out "$TENANT_BACKUP_MASTER_KEY_FILE"
ls -l "$TENANT_BACKUP_MASTER_KEY_FILE"

step "a generated 'dump' of tenant acme: 20 MB of rows"
seq -f "acme,order-%g,2026-11-26,42.00,shipped" 1 500000 > "$DEMO/acme.dump"
ls -l "$DEMO/acme.dump"

step "tenant-backup put --tenant acme --engine postgres < acme.dump"
obj=$("$TB" put --tenant acme --engine postgres < "$DEMO/acme.dump")
echo "$obj"

step "a second tenant, so the isolation shows"
echo "globex,invoice-1" | "$TB" put --tenant globex --engine mysql

step "tenant-backup ls   (finished, engine, bytes in, bytes stored, object)"
"$TB" ls

step "tenant-backup verify --tenant acme"
"$TB" verify --tenant acme

step "tenant-backup cat $obj > acme.restored"
"$TB" cat "$obj" > "$DEMO/acme.restored"
sha256sum "$DEMO/acme.dump" "$DEMO/acme.restored"
cmp "$DEMO/acme.dump" "$DEMO/acme.restored" && echo "restored bytes are identical"

step "storage tree (one prefix per tenant; keys stored wrapped)"
(cd "$DEMO/storage" && find . -type f | sort)

step "the manifest beside the object (no secrets)"
cat "$DEMO/storage/${obj%.tbk}.json"
echo

step "tampering is detected: flip one byte in the middle of the object"
size=$(stat -c %s "$DEMO/storage/$obj")
printf '\125' | dd of="$DEMO/storage/$obj" bs=1 seek=$((size / 2)) conv=notrunc 2>/dev/null
if "$TB" cat "$obj" > /dev/null; then
	echo "demo: tampering went unnoticed" >&2
	exit 1
fi

printf '\ndemo finished; scratch directory removed\n'
