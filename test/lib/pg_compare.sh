#!/bin/bash
# Tells whether two databases of one cluster hold the same thing, for backup/restore
# round-trip tests. Connection from the PG* environment (see pg.sh).
#
#   pg_compare.sh DB_A DB_B
#
# Compares the schemas (pg_dump --schema-only --no-owner, minus the lines that only name
# the database itself and pg_dump's per-run \restrict key), the row count and an md5 of
# the sorted rows of every table, partition and materialized view, every large object's
# contents, and every sequence's last_value/is_called. Exits 0 when all are equal, 1 with
# a description of the differences on stderr, 2 when a database cannot be read.
set -uo pipefail
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

[ $# -eq 2 ] || { echo "usage: pg_compare.sh DB_A DB_B" >&2; exit 2; }
db_a=$1 db_b=$2
work=$(mktemp -d /tmp/pg_compare.XXXXXX) || exit 2
trap 'rm -rf "$work"' EXIT

dump_schema() { # DB OUT
	"$PG_BIN/pg_dump" --schema-only --no-owner --dbname="$1" >"$2.raw" &&
		sed -E -e '/^\\(un)?restrict /d' -e '/^\\connect /d' \
			-e '/^(CREATE|ALTER|COMMENT ON) DATABASE /d' "$2.raw" >"$2"
}

# One line per object: KIND <tab> NAME <tab> FINGERPRINT, in a fixed order. Session
# settings are pinned so that per-database defaults cannot change how values print.
fingerprint_data() { # DB OUT
	"$PG_BIN/psql" -X -A -t -q -F $'\t' -v ON_ERROR_STOP=1 --dbname="$1" -o "$2" -f - <<'SQL'
SET search_path = pg_catalog;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, MDY';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';
SET row_security = off;

SELECT CASE WHEN c.relkind = 'm' AND NOT c.relispopulated
            THEN format('SELECT %L, %L, ''not populated''', kind, name)
            ELSE format('SELECT %L, %L, ''rows='' || count(*) || '' md5='' || '
                        'coalesce(md5(string_agg(t::text, E''\n'' ORDER BY t::text)), ''-'') '
                        'FROM %s AS t', kind, name, name) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT CASE c.relkind WHEN 'm' THEN 'matview' ELSE 'table' END AS kind,
                           format('%I.%I', n.nspname, c.relname) AS name) AS l
WHERE c.relkind IN ('r', 'm') AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
\gexec

SELECT format('SELECT ''sequence'', %L, ''last_value='' || last_value || '' is_called='' || is_called FROM %s',
              name, name)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL (SELECT format('%I.%I', n.nspname, c.relname) AS name) AS l
WHERE c.relkind = 'S' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
\gexec

SELECT 'large objects', 'all', 'count=' || count(*) FROM pg_largeobject_metadata;
SELECT 'large object', oid, 'md5=' || md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY oid;
SQL
}

for side in a b; do
	if [ $side = a ]; then db=$db_a; else db=$db_b; fi
	if ! { dump_schema "$db" "$work/$side.schema" && fingerprint_data "$db" "$work/$side.data"; }; then
		echo "pg_compare: cannot read database $db" >&2
		exit 2
	fi
done

status=0
if ! cmp -s "$work/a.schema" "$work/b.schema"; then
	echo "pg_compare: schemas of $db_a and $db_b differ (first 40 lines of the pg_dump diff):" >&2
	diff -u --label "$db_a" --label "$db_b" "$work/a.schema" "$work/b.schema" | head -n 40 >&2
	status=1
fi
if ! cmp -s "$work/a.data" "$work/b.data"; then
	echo "pg_compare: contents of $db_a and $db_b differ:" >&2
	awk -F'\t' -v a="$db_a" -v b="$db_b" '
		NR == FNR { seen_a[$1 " " $2] = $3; order[++n] = $1 " " $2; next }
		{
			key = $1 " " $2
			seen_b[key] = 1
			if (!(key in seen_a)) print "  " key " only in " b
			else if (seen_a[key] != $3) print "  " key ": " seen_a[key] " in " a ", " $3 " in " b
		}
		END { for (i = 1; i <= n; i++) if (!(order[i] in seen_b)) print "  " order[i] " only in " a }
	' "$work/a.data" "$work/b.data" | head -n 40 >&2
	status=1
fi
exit $status
