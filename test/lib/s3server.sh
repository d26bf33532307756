#!/bin/sh
# Starts and stops a private S3 server for tests: OpenStack Swift with its s3api
# middleware (Debian python3-swift), which checks SigV4 signatures and multipart rules.
#
#   s3server.sh start DIR PORT [BUCKET]   everything lives under DIR; listens on 127.0.0.1:PORT
#                                         (Swift's own servers on three ports derived from it);
#                                         writes DIR/env with the AWS_* settings and TB_S3_URL
#                                         and creates BUCKET (default tb-test)
#   s3server.sh stop DIR                  stops the servers started in DIR, by PID, and waits
#
# The access key is "backup:tester" with a fixed test secret, region us-east-1,
# path-style URLs only. Source DIR/env to use it: `. DIR/env`.
set -eu

PY=/usr/bin/python3
AWS=/usr/bin/aws
ACCOUNT=backup
USER_NAME=tester
TEST_SECRET=tb-s3-test-secret

usage()
{
	echo "usage: s3server.sh start DIR PORT [BUCKET] | s3server.sh stop DIR" >&2
	exit 2
}

# Ports of Swift's object, container and account servers: 20000 + 3 * (PORT mod 4000)
# and the next two, below Linux's ephemeral range (32768 up), so that no client
# socket of a busy test run holds one of them when the server binds.
s3server_backend_ports()
{
	b=$((20000 + 3 * ($1 % 4000)))
	echo "$b $((b + 1)) $((b + 2))"
}

s3server_write_config()
{
	base=$1 port=$2
	# shellcheck disable=SC2046
	set -- $(s3server_backend_ports "$port")
	obj=$1 cont=$2 acct=$3
	me=$(id -un)

	mkdir -p "$base/etc" "$base/srv/d1" "$base/run"
	cat >"$base/etc/swift.conf" <<EOF
[swift-hash]
swift_hash_path_suffix = tb-s3-test-suffix
swift_hash_path_prefix = tb-s3-test-prefix
[storage-policy:0]
name = Policy-0
default = yes
EOF

	for spec in object:$obj container:$cont account:$acct; do
		kind=${spec%%:*} kport=${spec##*:}
		cat >"$base/etc/$kind-server.conf" <<EOF
[DEFAULT]
devices = $base/srv
mount_check = false
disable_fallocate = true
bind_ip = 127.0.0.1
bind_port = $kport
workers = 0
user = $me
swift_dir = $base/etc
[pipeline:main]
pipeline = $kind-server
[app:$kind-server]
use = egg:swift#$kind
EOF
	done

	# tempauth wants a memcache client object; no memcached needs to run.
	cat >"$base/etc/proxy-server.conf" <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $port
workers = 0
user = $me
swift_dir = $base/etc
[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
location = us-east-1
storage_domain = s3.localhost
[filter:tempauth]
use = egg:swift#tempauth
user_${ACCOUNT}_${USER_NAME} = $TEST_SECRET .admin
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11211
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
EOF

	# One replica on one device, 2^6 partitions.
	"$PY" - "$base/etc" "$obj" "$cont" "$acct" <<'EOF'
import sys
from swift.common.ring import RingBuilder
etc, o, c, a = sys.argv[1], *map(int, sys.argv[2:])
for name, port in (('object', o), ('container', c), ('account', a)):
    b = RingBuilder(6, 1, 1)
    b.add_dev({'region': 1, 'zone': 1, 'ip': '127.0.0.1', 'port': port,
               'device': 'd1', 'weight': 100})
    b.rebalance()
    b.get_ring().save('%s/%s.ring.gz' % (etc, name))
EOF

	# Swift reads /etc/swift/swift.conf unless told otherwise.
	cat >"$base/swift-server.py" <<'EOF'
import os, sys
from swift.common import utils
utils.SWIFT_CONF_FILE = os.environ['SWIFT_CONF_FILE']
from swift.common import storage_policy, constraints
storage_policy.reload_storage_policies()
constraints.reload_constraints()
from swift.common.wsgi import run_wsgi
kind = sys.argv.pop(1)
conf_file, options = utils.parse_options()
if kind == 'object-server':
    from swift.obj import server
    options['global_conf_callback'] = server.global_conf_callback
sys.exit(run_wsgi(conf_file, kind, **options))
EOF
}

s3server_start()
{
	base=$1 port=$2 bucket=$3

	case $port in
	'' | *[!0-9]*) usage ;;
	esac
	if [ -e "$base/run/proxy.pid" ]; then
		echo "s3server: $base already has a server; stop it first" >&2
		exit 1
	fi
	for p in $port $(s3server_backend_ports "$port"); do
		if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$p/" || [ $? != 7 ]; then
			echo "s3server: port $p on 127.0.0.1 is already in use; pick another PORT" >&2
			exit 1
		fi
	done
	s3server_write_config "$base" "$port"

	for kind in account container object proxy; do
		SWIFT_CONF_FILE="$base/etc/swift.conf" "$PY" "$base/swift-server.py" "$kind-server" \
			"$base/etc/$kind-server.conf" -v >"$base/run/$kind.log" 2>&1 </dev/null &
		echo $! >"$base/run/$kind.pid"
	done

	tries=0
	until [ "$(curl -s "http://127.0.0.1:$port/healthcheck" 2>/dev/null)" = OK ]; do
		tries=$((tries + 1))
		if [ $tries -gt 200 ]; then
			echo "s3server: the Swift proxy did not come up on port $port; logs:" >&2
			tail -n 20 "$base"/run/*.log >&2
			s3server_stop "$base"
			exit 1
		fi
		sleep 0.1
	done

	umask 077
	cat >"$base/env" <<EOF
export AWS_ACCESS_KEY_ID='$ACCOUNT:$USER_NAME'
export AWS_SECRET_ACCESS_KEY='$TEST_SECRET'
export AWS_ENDPOINT_URL='http://127.0.0.1:$port'
export AWS_REGION='us-east-1'
export TB_S3_BUCKET='$bucket'
export TB_S3_URL='s3://$bucket'
EOF

	# A clean aws CLI: no user config, no instance metadata lookups.
	if ! (
		. "$base/env"
		export AWS_CONFIG_FILE="$base/aws-config" AWS_SHARED_CREDENTIALS_FILE="$base/aws-credentials"
		export AWS_EC2_METADATA_DISABLED=true
		# The proxy answers before the account and container servers do: retry. Started
		# again on the same DIR (an outage test), the bucket is there with its objects.
		tries=0
		until "$AWS" --endpoint-url "$AWS_ENDPOINT_URL" s3 mb "s3://$bucket" >"$base/run/mb.log" 2>&1 ||
			grep -q BucketAlreadyOwnedByYou "$base/run/mb.log"; do
			tries=$((tries + 1))
			[ $tries -lt 30 ] || exit 1
			sleep 0.2
		done
	); then
		echo "s3server: unable to create bucket '$bucket':" >&2
		cat "$base/run/mb.log" >&2
		s3server_stop "$base"
		exit 1
	fi
	echo "S3 server at http://127.0.0.1:$port with bucket '$bucket'; settings in $base/env"
}

s3server_stop()
{
	base=$1 pids=

	# Each server takes about 2 s to drain after SIGTERM: signal them all, then wait.
	for kind in proxy object container account; do
		[ -f "$base/run/$kind.pid" ] || continue
		pid=$(cat "$base/run/$kind.pid")
		kill "$pid" 2>/dev/null && pids="$pids $pid"
		rm -f "$base/run/$kind.pid"
	done
	for pid in $pids; do
		tries=0
		while kill -0 "$pid" 2>/dev/null; do
			tries=$((tries + 1))
			if [ $tries -gt 100 ]; then
				kill -9 "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.1
		done
	done
}

[ $# -ge 2 ] || usage
case $1 in
start)
	[ $# -ge 3 ] || usage
	s3server_start "$(realpath -m "$2")" "$3" "${4:-tb-test}"
	;;
stop)
	s3server_stop "$(realpath -m "$2")"
	;;
*)
	usage
	;;
esac
