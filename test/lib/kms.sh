#!/bin/sh
# A stand-in KMS for the tests: the tenant key command of tenant_backup (README,
# "Bring your own key"). Wraps and unwraps with a key kept in the directory $1;
# `touch $1/fail` makes it refuse, as a KMS that denies access would.
set -eu
dir=$1
if [ -e "$dir/fail" ]; then
	echo "kms: refusing ${TENANT_BACKUP_KEY_OP:-?} for tenant ${TENANT_BACKUP_TENANT:-?}: access denied" >&2
	exit 3
fi
[ -s "$dir/kek" ] || { umask 077; openssl rand -hex 32 > "$dir/kek"; }
case "$TENANT_BACKUP_KEY_OP" in
wrap) openssl enc -aes-256-cbc -pbkdf2 -salt -a -A -pass "file:$dir/kek" ;;
unwrap) openssl enc -d -aes-256-cbc -pbkdf2 -a -A -pass "file:$dir/kek" ;;
*) echo "kms: unknown operation" >&2; exit 2 ;;
esac
echo "$TENANT_BACKUP_TENANT $TENANT_BACKUP_KEY_OP $TENANT_BACKUP_KEY_ID" >> "$dir/calls"
