#!/bin/bash
# tenant-backup on a real S3-compatible server that checks SigV4 signatures
# (OpenStack Swift s3api on 127.0.0.1): multipart upload of 100 MB, listing past
# 1000 keys, a wrong secret, and the object read by a third-party client (aws s3).
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/s3.sh"

scratch_dir
s3_start "$D" "$(free_port)"
export TENANT_BACKUP_STORAGE="s3://$TB_S3_BUCKET/backups"
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
"$TB" keygen --out "$D/master.key" 2>/dev/null

openssl enc -aes-128-ctr -nosalt -pass pass:s3-test -in /dev/zero 2>/dev/null | head -c 70000000 > "$D/big"
seq 1 4000000 | head -c 30000000 >> "$D/big"
obj=$("$TB" put --tenant acme --engine postgres < "$D/big" 2>"$D/err")
ok $? "put of 100 MB to S3"
[ -s "$D/err" ] && diag "$(cat "$D/err")"
like "$obj" '^acme/postgres/.*\.tbk$' "object key printed"
etag=$(aws_s3 s3api head-object --bucket "$TB_S3_BUCKET" --key "backups/$obj" --query ETag --output text)
like "$etag" '-[2-9]"?$' "stored as a multipart upload of several parts (ETag $etag)"
"$TB" cat "$obj" > "$D/big.out"
ok $? "cat from S3"
cmp -s "$D/big" "$D/big.out"
ok $? "100 MB come back byte-identical"
out=$("$TB" verify --tenant acme 2>&1)
ok $? "verify --tenant acme on S3"

aws_s3 s3 cp "s3://$TB_S3_BUCKET/backups/$obj" "$D/third-party.tbk" --only-show-errors
ok $? "aws s3 cp reads the object at its documented key"
want=$(aws_s3 s3 cp "s3://$TB_S3_BUCKET/backups/${obj%.tbk}.json" - | sed -n 's/.*"sha256": "\([0-9a-f]*\)".*/\1/p')
is "$(sha256sum < "$D/third-party.tbk" | cut -d' ' -f1)" "$want" "third-party copy matches the manifest's sha256"
mkdir -p "$D/local/acme/postgres" "$D/local/acme/keys"
cp "$D/third-party.tbk" "$D/local/$obj"
aws_s3 s3 cp "s3://$TB_S3_BUCKET/backups/${obj%.tbk}.json" "$D/local/${obj%.tbk}.json" --only-show-errors
aws_s3 s3 cp "s3://$TB_S3_BUCKET/backups/acme/keys/" "$D/local/acme/keys/" --recursive --only-show-errors
TENANT_BACKUP_STORAGE="file://$D/local" "$TB" cat "$obj" | cmp -s - "$D/big"
ok $? "the downloaded object and key open with file storage too"

# 1100 more backups (object and manifest, each its own): listing must follow ListObjectsV2 continuation tokens.
mkdir -p "$D/many/globex/redis"
small=$(echo "globex" | "$TB" put --tenant globex --engine redis)
manifest=$(aws_s3 s3 cp "s3://$TB_S3_BUCKET/backups/${small%.tbk}.json" -)
aws_s3 s3 cp "s3://$TB_S3_BUCKET/backups/$small" "$D/small.tbk" --only-show-errors
small_id=${small##*-}
small_id=${small_id%.tbk}
for i in $(seq -w 1 1100); do
	printf '%s' "$manifest" | sed -e "s|$small|globex/redis/2026-01-01T000000Z-copy$i.tbk|" -e "s|\"$small_id\"|\"copy$i\"|" \
		> "$D/many/globex/redis/2026-01-01T000000Z-copy$i.json"
	cp "$D/small.tbk" "$D/many/globex/redis/2026-01-01T000000Z-copy$i.tbk"
done
aws_s3 s3 cp "$D/many/" "s3://$TB_S3_BUCKET/backups/" --recursive --only-show-errors
ok $? "uploaded 1100 backups with aws s3"
is "$("$TB" ls globex | tail -n +2 | wc -l)" 1101 "ls pages past 1000 keys (1101 backups of globex)"
is "$("$TB" ls acme | tail -n +2 | wc -l)" 1 "ls acme is still only acme"

out=$(AWS_SECRET_ACCESS_KEY=not-the-secret "$TB" ls 2>&1)
ok $((! $?)) "a wrong secret fails"
like "$out" "SignatureDoesNotMatch|signature" "the error says the signature was rejected"
like "$out" "AWS_SECRET_ACCESS_KEY" "and names what to check"
unlike "$out" "not-the-secret|$AWS_SECRET_ACCESS_KEY" "without printing the secret"
out=$(AWS_SECRET_ACCESS_KEY=not-the-secret "$TB" put --tenant initech --engine mysql <<< "data" 2>&1)
ok $((! $?)) "put with a wrong secret fails"
is "$(aws_s3 s3 ls "s3://$TB_S3_BUCKET/backups/initech/" --recursive | wc -l)" 0 "and leaves nothing behind"
out=$(env -u AWS_ACCESS_KEY_ID "$TB" ls 2>&1)
like "$out" "AWS_ACCESS_KEY_ID" "missing credentials name the variables"

done_testing
