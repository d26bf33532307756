# Shared by the S3 integration scripts (after tap.sh): start a private S3 server
# under the test's scratch dir, stop it at exit, and a clean aws CLI.
# Usage: s3_start DIR PORT   (exports AWS_* from the server's env file)
# Listening ports stay below 32768, out of the kernel's ephemeral range, where an
# outgoing connection could already hold them.
S3SERVER="$(dirname "$0")/../lib/s3server.sh"

s3_start() {
	[ -x /usr/bin/aws ] && /usr/bin/python3 -c 'import swift' 2>/dev/null ||
		skip_all "python3-swift and awscli are needed (make test installs them)"
	on_exit "sh '$S3SERVER' stop '$1/s3'"
	sh "$S3SERVER" start "$1/s3" "$2" >/dev/null || { echo "Bail out! S3 server did not start"; exit 1; }
	. "$1/s3/env"
	export AWS_CONFIG_FILE="$1/s3/aws-config" AWS_SHARED_CREDENTIALS_FILE="$1/s3/aws-credentials"
	export AWS_EC2_METADATA_DISABLED=true
}

aws_s3() { /usr/bin/aws --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }
