#!/bin/bash
# S3 under faults, through a loopback proxy of our own (test/lib/faultproxy.py) that
# answers 503 SlowDown / 500 / 429, drops connections and stalls: transient faults are
# retried and the upload succeeds; persistent ones fail the command, leave no object
# and no manifest, and abort the multipart upload.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/s3.sh"

scratch_dir
s3_start "$D" "$(free_port)"
PROXY_PORT=$(free_port)
: > "$D/schedule"
/usr/bin/python3 "$(dirname "$0")/../lib/faultproxy.py" $PROXY_PORT "${AWS_ENDPOINT_URL##*:}" "$D/schedule" \
	"$D/proxy.log" 2>"$D/proxy.err" &
on_exit "kill $!"
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/" && break; sleep 0.1; done
curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/" || {
	echo "Bail out! the fault proxy did not start: $(cat "$D/proxy.err")"
	exit 1
}

export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
"$TB" keygen --out "$D/master.key" 2>/dev/null
PROXIED="s3://$TB_S3_BUCKET/faults?endpoint=http://127.0.0.1:$PROXY_PORT&part_size=5MiB&stall_timeout=2"
export TENANT_BACKUP_STORAGE="$PROXIED&retries=6"

echo seed | "$TB" put --tenant acme --engine redis > /dev/null
ok $? "put through the proxy with no faults"

openssl enc -aes-128-ctr -nosalt -pass pass:faults -in /dev/zero 2>/dev/null | head -c 22000000 > "$D/data"
echo "PUT:503 PUT:drop POST:503 PUT:500 PUT:stall POST:429 GET:503 GET:drop GET:stall HEAD:503" > "$D/schedule"
: > "$D/proxy.log"
obj=$("$TB" put --tenant acme --engine postgres < "$D/data" 2>"$D/err")
ok $? "a 22 MB multipart upload succeeds through 503, 500, 429, dropped and stalled requests"
[ -s "$D/err" ] && diag "$(cat "$D/err")"
log=$(cat "$D/proxy.log")
like "$log" "PUT .*partNumber.* 503" "a part upload was answered 503 SlowDown"
like "$log" "PUT .* drop" "a connection was dropped"
like "$log" "PUT .* stall" "a request stalled"
like "$log" "POST .*uploads.* 503" "CreateMultipartUpload was answered 503"
"$TB" cat "$obj" > "$D/data.out" 2>"$D/err"
ok $? "cat through faulty reads"
cmp -s "$D/data" "$D/data.out"
ok $? "the data comes back identical"
like "$(cat "$D/proxy.log")" "GET .* (drop|stall)" "reads met dropped or stalled requests too"

# Persistent faults: two parts go up, then every PUT fails.
echo "PUT:pass*2 PUT:503*" > "$D/schedule"
: > "$D/proxy.log"
export TENANT_BACKUP_STORAGE="$PROXIED&retries=2"
out=$("$TB" put --tenant acme --engine mysql < "$D/data" 2>&1)
ok $((! $?)) "persistent 503s fail the upload"
like "$out" "SlowDown" "the error names the service's complaint"
unlike "$out" "^acme/mysql/" "no object key is printed"
like "$(cat "$D/proxy.log")" "DELETE .*uploadId=" "the multipart upload is aborted"
: > "$D/schedule"
is "$(aws_s3 s3 ls "s3://$TB_S3_BUCKET/faults/acme/mysql/" --recursive | wc -l)" 0 "no object or manifest left behind"
uploads=$(aws_s3 s3api list-multipart-uploads --bucket "$TB_S3_BUCKET" --query 'Uploads[].Key' --output text)
unlike "$uploads" "acme/mysql" "no multipart upload left open"
is "$("$TB" ls acme/mysql | wc -l)" 0 "ls shows no mysql backup"

# A failure on the manifest, after the object went up: no half-made backup either.
echo "PUT:pass PUT:503*" > "$D/schedule"
: > "$D/proxy.log"
out=$(echo small | "$TB" put --tenant acme --engine mongodb 2>&1)
ok $((! $?)) "a failing manifest upload fails the put"
: > "$D/schedule"
is "$(aws_s3 s3 ls "s3://$TB_S3_BUCKET/faults/acme/mongodb/" --recursive | wc -l)" 0 "and removes the object it had stored"

done_testing
