#!/bin/bash
# S3 as production accounts use it, against a real SigV4-checking server (Swift
# s3api): every credential source of the AWS chain (environment with a session
# token, shared credentials and config files with AWS_PROFILE, credential_process
# run as an argv, web identity through STS, IMDSv2), temporary credentials renewed
# during one long upload, virtual-hosted-style URLs, encryption and storage class
# headers, and max_bandwidth. STS and IMDS are local stand-ins
# (test/lib/aws_credentials_server.py) handing out the Swift account's keys; Swift
# does not check session tokens as AWS does, so renewal is shown by the stand-ins'
# request counts, not by the server refusing an expired token.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/s3.sh"
STANDIN="$(cd "$(dirname "$0")/../lib" && pwd)/aws_credentials_server.py"

scratch_dir
S3_PORT=$(free_port)
s3_start "$D" "$S3_PORT"
KEY_ID=$AWS_ACCESS_KEY_ID
SECRET=$AWS_SECRET_ACCESS_KEY
export TENANT_BACKUP_MASTER_KEY_FILE="$D/master.key"
"$TB" keygen --out "$D/master.key" 2>/dev/null
export TENANT_BACKUP_STORAGE="s3://$TB_S3_BUCKET/creds"
head -c 20000000 /dev/urandom > "$D/20mb"

# Runs the CLI with no credentials in the environment and no shared files unless given.
no_env_keys() {
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
		AWS_SHARED_CREDENTIALS_FILE="$D/none" AWS_CONFIG_FILE="$D/none" "$@"
}

# Starts a stand-in (imds or sts) handing out credentials that expire LIFETIME seconds ahead, on port $PORT.
standin_start() { # KIND LIFETIME
	PORT=$(free_port)
	/usr/bin/python3 "$STANDIN" "$1" "$PORT" "$D" "$KEY_ID" "$SECRET" "$2" >/dev/null 2>>"$D/$1.stderr" &
	on_exit "kill $!"
	wait_for 50 0.1 yes sh -c "test -e '$D/$1.ready' && echo yes" >/dev/null
}
count() { [ -e "$D/$1.count" ] && wc -l < "$D/$1.count" || echo 0; }

# ---- the environment, with a session token ----
out=$(AWS_SESSION_TOKEN=env-session-token "$TB" put --tenant acme --engine redis <<< "env" 2>&1)
ok $? "environment keys with AWS_SESSION_TOKEN (sent as x-amz-security-token) store a backup"

# ---- shared credentials file and AWS_PROFILE ----
cat > "$D/credentials" <<EOF
# the default profile has a wrong secret
[default]
aws_access_key_id = $KEY_ID
aws_secret_access_key = wrong-default-secret

[backup]
aws_access_key_id=$KEY_ID
aws_secret_access_key   =   $SECRET
EOF
out=$(no_env_keys AWS_SHARED_CREDENTIALS_FILE="$D/credentials" AWS_PROFILE=backup "$TB" put --tenant acme --engine redis <<< "profile" 2>&1)
ok $? "AWS_PROFILE=backup in the shared credentials file stores a backup"
out=$(no_env_keys AWS_SHARED_CREDENTIALS_FILE="$D/credentials" "$TB" ls acme 2>&1)
ok $((! $?)) "the default profile (a wrong secret) is used without AWS_PROFILE, and fails"
like "$out" "SignatureDoesNotMatch.*profile 'default' in $D/credentials" "the error names the profile and its file"
unlike "$out" "wrong-default-secret|$SECRET" "without the secret"
out=$(no_env_keys AWS_SHARED_CREDENTIALS_FILE="$D/credentials" AWS_PROFILE=nosuch "$TB" ls acme 2>&1)
like "$out" "AWS_PROFILE names profile 'nosuch', which is in neither" "an AWS_PROFILE that is nowhere is an error"
printf '[backup]\naws_access_key_id = %s\n%s\n' "$KEY_ID" "$SECRET" > "$D/broken"
out=$(no_env_keys AWS_SHARED_CREDENTIALS_FILE="$D/broken" AWS_PROFILE=backup "$TB" ls acme 2>&1)
like "$out" "line 3 of $D/broken is neither a \[section\] nor a key = value" "a malformed line is named by its number"
unlike "$out" "$SECRET" "and not quoted"

# ---- config file: [profile x] with credential_process, an argv and no shell ----
mkdir -p "$D/bin dir"
cat > "$D/bin dir/cred process" <<'EOF'
#!/bin/sh
# prints credentials as the AWS CLI's credential_process contract says; records its argv
log=$1; shift
printf '%s\n' "$@" > "$log.argv"
echo call >> "$log.count"
exp=$(date -u -d "@$(( $(date +%s) + ${LIFETIME:-3600} ))" +%Y-%m-%dT%H:%M:%SZ)
[ -n "$FAIL" ] && { echo "cred process: refusing" >&2; exit 3; }
printf '{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s", "SessionToken": "process-token", "Expiration": "%s"}\n' \
	"$KEY_ID" "$SECRET" "$exp"
EOF
chmod +x "$D/bin dir/cred process"
cat > "$D/config" <<EOF
[default]
region = us-east-1
[profile prod]
credential_process = "$D/bin dir/cred process" $D/process 'two words' \$(touch\ $D/pwned) ;rm -rf "$D/x y"
EOF
export KEY_ID SECRET
out=$(no_env_keys AWS_CONFIG_FILE="$D/config" AWS_PROFILE=prod "$TB" put --tenant acme --engine redis <<< "process" 2>&1)
ok $? "credential_process of [profile prod] in the config file stores a backup"
is "$(cat "$D/process.argv")" "two words
\$(touch $D/pwned)
;rm
-rf
$D/x y" "its command line is split into words as the SDKs do, quotes and backslashes honoured"
ok "$(test ! -e "$D/pwned"; echo $?)" "and no shell ran it (no command substitution)"
out=$(no_env_keys AWS_CONFIG_FILE="$D/config" AWS_PROFILE=prod FAIL=1 "$TB" ls acme 2>&1)
ok $((! $?)) "a failing credential_process fails the command"
like "$out" "credential_process of profile 'prod' in $D/config failed \(exit status 3\)" "naming the profile and the status"
rm -f "$D/process.count"
TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE?max_bandwidth=4MB/s&part_size=5MiB" no_env_keys AWS_CONFIG_FILE="$D/config" \
	AWS_PROFILE=prod LIFETIME=4 "$TB" put --tenant acme --engine redis < "$D/20mb" > "$D/out" 2>&1
ok $? "a 5 s upload with process credentials that expire after 4 s succeeds"
calls=$(wc -l < "$D/process.count")
ok "$([ "$calls" -ge 2 ]; echo $?)" "credential_process ran again before they expired ($calls runs in one put)"

# ---- web identity (STS AssumeRoleWithWebIdentity stand-in) ----
standin_start sts 4
STS_PORT=$PORT
echo "eyJ-web-identity-token" > "$D/expected-token"
echo "eyJ-web-identity-token" > "$D/token"
web_identity() {
	no_env_keys AWS_WEB_IDENTITY_TOKEN_FILE="$D/token" AWS_ROLE_ARN=arn:aws:iam::123456789012:role/tb \
		AWS_ROLE_SESSION_NAME=tb-test AWS_ENDPOINT_URL_STS="http://127.0.0.1:$STS_PORT/" "$@"
}
TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE?max_bandwidth=4MB/s&part_size=5MiB" web_identity \
	"$TB" put --tenant acme --engine redis < "$D/20mb" > "$D/out" 2>&1
ok $? "web identity credentials store a 20 MB backup in about 5 s"
[ $? = 0 ] || diag "$(cat "$D/out")"
ok "$([ "$(count sts)" -ge 2 ]; echo $?)" "STS was asked again when they were due ($(count sts) answers in one run)"
like "$(head -1 "$D/sts.count")" "tb-test" "with AWS_ROLE_SESSION_NAME"
echo "a-forged-token" > "$D/token"
out=$(web_identity "$TB" ls acme 2>&1)
ok $((! $?)) "a token STS refuses fails"
like "$out" "STS refused AssumeRoleWithWebIdentity for role arn:aws:iam::123456789012:role/tb \(HTTP 400, InvalidIdentityToken\)" \
	"with STS's error code and what to check"
unlike "$out" "a-forged-token" "without the token"

# ---- EC2 instance metadata (IMDSv2 stand-in) ----
standin_start imds 4
IMDS_PORT=$PORT
imds() { no_env_keys AWS_EC2_METADATA_DISABLED=false AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$IMDS_PORT" "$@"; }
TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE?max_bandwidth=4MB/s&part_size=5MiB" imds \
	"$TB" put --tenant acme --engine redis < "$D/20mb" > "$D/out" 2>&1
ok $? "instance metadata credentials (token first) store a 20 MB backup"
[ $? = 0 ] || diag "$(cat "$D/out")"
ok "$([ "$(count imds)" -ge 2 ]; echo $?)" "the metadata service was asked again when they were due ($(count imds) answers)"
is "$(grep -c 'refused: no valid IMDSv2 token' "$D/imds.log")" 0 "every metadata request carried the IMDSv2 token"
out=$(imds AWS_EC2_METADATA_DISABLED=true "$TB" ls acme 2>&1)
like "$out" "S3 credentials are missing" "AWS_EC2_METADATA_DISABLED=true skips it"
start=$(date +%s%N)
out=$(no_env_keys AWS_EC2_METADATA_DISABLED=false AWS_EC2_METADATA_SERVICE_ENDPOINT="http://127.0.0.1:$(free_port)" \
	"$TB" ls acme 2>&1)
ms=$((($(date +%s%N) - start) / 1000000))
like "$out" "S3 credentials are missing.*instance metadata" "no metadata service: the missing-credentials error lists every source"
ok "$([ "$ms" -lt 10000 ]; echo $?)" "and comes without waiting for a timeout (${ms} ms)"

# ---- URL style, encryption, storage class ----
virtual="s3://$TB_S3_BUCKET/creds?endpoint=http://s3.localhost:$S3_PORT&style=virtual"
obj=$(TENANT_BACKUP_STORAGE="$virtual" "$TB" put --tenant globex --engine redis <<< "virtual" 2>&1)
ok $? "style=virtual stores a backup with the bucket in the host name"
is "$(TENANT_BACKUP_STORAGE="$virtual" "$TB" cat "$obj")" "virtual" "and reads it back"
out=$(TENANT_BACKUP_STORAGE="s3://$TB_S3_BUCKET/creds?endpoint=http://other.localhost:$S3_PORT&style=virtual&retries=0" \
	"$TB" cat "$obj" 2>&1)
like "$out" "NoSuchBucket" "the bucket is not in the path: through a host that is not the server's domain, no bucket is found"
obj=$(TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE?storage_class=STANDARD" "$TB" put --tenant globex --engine redis <<< "std" 2>&1)
ok $? "storage_class=STANDARD is accepted by the server"
out=$(TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE?storage_class=STANDARD_IA" "$TB" put --tenant globex --engine redis <<< "ia" 2>&1)
like "$out" "InvalidStorageClass.*check storage_class=" "storage_class=STANDARD_IA reaches the server as x-amz-storage-class (Swift has no such class)"
out=$(TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE?sse=aws:kms&kms_key_id=alias/tenant-backups" "$TB" put --tenant globex --engine redis <<< "kms" 2>&1)
like "$out" "NotImplemented: Server-side encryption is not supported" "sse=aws:kms reaches the server (Swift does not implement SSE)"
unlike "$out" "gave up after" "and 501 is not retried"

# ---- max_bandwidth ----
start=$(date +%s%N)
TENANT_BACKUP_STORAGE="$TENANT_BACKUP_STORAGE?max_bandwidth=10MB/s" "$TB" put --tenant initech --engine redis < "$D/20mb" > /dev/null
ok $? "a 20 MB put with max_bandwidth=10MB/s"
limited=$((($(date +%s%N) - start) / 1000000))
ok "$([ "$limited" -ge 1800 ]; echo $?)" "takes at least 1.8 s (${limited} ms)"
start=$(date +%s%N)
"$TB" put --tenant initech --engine redis < "$D/20mb" > /dev/null
ok $? "the same put without a limit"
free=$(($(date +%s%N) - start))
free=$((free / 1000000))
ok "$([ "$free" -lt "$limited" ]; echo $?)" "is faster (${free} ms)"

done_testing
