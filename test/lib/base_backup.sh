# Stand-in base backups of dedicated PostgreSQL tenants on file storage, without a
# cluster (bash, source after tap.sh): what restore-pitr unpacks, made with put.
#
#   stand_in_base STORE TENANT DIR [STAMP [PUT OPTIONS...]]
#       tar of DIR sealed by put for TENANT, then moved with its manifest to
#       TENANT/postgres/base/<STAMP>-<id>.tbk (STAMP: YYYY-MM-DDTHHMMSSZ, default the
#       time put gave it), as the extension names base backups; prints the object key.

stand_in_base() { # STORE TENANT DIR [STAMP [PUT OPTIONS...]]
	local store=$1 tenant=$2 dir=$3 stamp=${4:-} obj name base
	shift 4 2>/dev/null || shift $#
	obj=$(tar -C "$dir" -cf - . | "$TB" put --tenant "$tenant" --engine postgres "$@") || return 1
	name=${obj##*/}
	[ -n "$stamp" ] && name="$stamp-${name#*Z-}"
	base="$tenant/postgres/base/$name"
	mkdir -p "$store/$tenant/postgres/base"
	mv "$store/$obj" "$store/$base"
	sed "s|\"object\": \"$obj\"|\"object\": \"$base\"|" "$store/${obj%.tbk}.json" >"$store/${base%.tbk}.json"
	rm "$store/${obj%.tbk}.json"
	echo "$base"
}
