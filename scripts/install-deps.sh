#!/bin/sh
# Installs what building and testing tenant_backup needs on Debian 12 (run as root).
# Idempotent and quick when everything is present: apt is only called for what is missing.
set -eu

PACKAGES="build-essential pkg-config clang-format
libssl-dev libzstd-dev libcurl4-openssl-dev libjansson-dev libxml2-dev libcmocka-dev
python3-swift awscli curl zstd age openssl hyperfine time perl
postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap postgresql-15-cron libpq-dev
libtap-parser-sourcehandler-pgtap-perl
mariadb-server mariadb-client libmariadb-dev default-libmysqlclient-dev mydumper
redis-server redis-tools libhiredis-dev
libmongoc-dev libbson-dev python3-mockupdb python3-mongomock
prometheus"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing (run as root to install them)" >&2
	exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
