#!/bin/bash
# Tells whether two databases of one MariaDB server hold the same thing, for backup/restore
# round-trip tests. Connects as root over $MARIADB_SOCKET (see mariadb.sh).
#
#   my_compare.sh DB_A DB_B
#
# Compares the definitions (SHOW CREATE of the database and of every table, sequence,
# view, routine, trigger and event, with the database's own name taken out where it
# qualifies an object), the AUTO_INCREMENT counters (reported on their own: SHOW CREATE
# TABLE holds them, and a restore should keep them), and the row count and an md5 of the
# sorted per-row md5s of every table and sequence (rows compare as multisets, so tables
# without a primary key work; binary, BIT and spatial columns go through HEX(), FLOAT
# through DOUBLE, TIMESTAMP in UTC). System-versioned tables compare with their history
# (FOR SYSTEM_TIME ALL, with ROW_START and ROW_END). Exits 0 when all are equal, 1 with a description of the differences on
# stderr, 2 when a database cannot be read.
set -uo pipefail

[ $# -eq 2 ] || { echo "usage: my_compare.sh DB_A DB_B" >&2; exit 2; }
[ -n "${MARIADB_SOCKET:-}" ] || { echo "my_compare: MARIADB_SOCKET is not set" >&2; exit 2; }
db_a=$1 db_b=$2
work=$(mktemp -d /tmp/my_compare.XXXXXX) || exit 2
trap 'rm -rf "$work"' EXIT

# SQL from -e or stdin; prints tab-separated rows with \n, \t, \\ and \0 escaped.
my() { # DB [ARGS...]
	mariadb --no-defaults --socket="$MARIADB_SOCKET" -uroot --default-character-set=utf8mb4 -N -B "$@"
}

# KIND <tab> NAME of every object, in a fixed order.
list_objects() { # DB
	my "$1" <<'SQL'
SELECT CASE TABLE_TYPE WHEN 'VIEW' THEN 'view' WHEN 'SEQUENCE' THEN 'sequence' ELSE 'table' END AS kind,
       TABLE_NAME AS name
FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()
UNION ALL
SELECT LOWER(ROUTINE_TYPE), ROUTINE_NAME
FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()
UNION ALL
SELECT 'trigger', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()
UNION ALL
SELECT 'event', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()
ORDER BY BINARY kind, BINARY name
SQL
}

# From DIR/objects, writes DIR/schema (KIND <tab> NAME <tab> DEFINITION, one line per
# object, the database itself first) and DIR/autoinc (table <tab> NAME <tab> counter).
# Each SHOW returns one row; its first column (the name) and a trigger's last (its
# creation time) are left out, the others joined with " | ".
fingerprint_schema() { # DB DIR
	local db=$1 dir=$2 kind name
	{
		printf 'SHOW CREATE DATABASE `%s`;\n' "${db//\`/\`\`}"
		while IFS=$'\t' read -r kind name; do
			printf 'SHOW CREATE %s `%s`;\n' "${kind^^}" "${name//\`/\`\`}"
		done <"$dir/objects"
	} >"$dir/show.sql"
	my "$db" <"$dir/show.sql" >"$dir/show" || return 1
	[ "$(wc -l <"$dir/show")" -eq "$(wc -l <"$dir/show.sql")" ] || return 1
	: >"$dir/autoinc"
	{ printf 'database\t<db>\n'; cat "$dir/objects"; } | paste - "$dir/show" |
		awk -F'\t' -v OFS='\t' -v db="$db" -v autoinc="$dir/autoinc" '
			function replace_all(s, from, to,   i, r) {
				r = ""
				while ((i = index(s, from)) > 0) {
					r = r substr(s, 1, i - 1) to
					s = substr(s, i + length(from))
				}
				return r s
			}
			{
				last = $1 == "trigger" ? NF - 1 : NF
				def = $4
				for (i = 5; i <= last; i++) def = def " | " $i
				# The name alone in CREATE DATABASE, as a qualifier anywhere else.
				suffix = $1 == "database" ? "" : "."
				def = replace_all(def, "`" db "`" suffix, "`<db>`" suffix)
				if ($1 == "table" && match(def, /\\n\) ENGINE=[A-Za-z0-9_]+ AUTO_INCREMENT=[0-9]+/)) {
					opts = substr(def, RSTART, RLENGTH)
					print $1, $2, substr(opts, index(opts, "AUTO_INCREMENT=") + 15) >autoinc
					sub(/ AUTO_INCREMENT=[0-9]+/, "", opts)
					def = substr(def, 1, RSTART - 1) opts substr(def, RSTART + RLENGTH)
				}
				print $1, $2, def
			}' >"$dir/schema"
}

# Writes DIR/data: KIND <tab> NAME <tab> rows=N md5=X for every table and sequence. The
# server builds each table's query: one md5 per row over its columns as unambiguous
# QUOTE()d literals, taken as bytes so that mixed collations cannot clash.
fingerprint_data() { # DB DIR
	local db=$1 dir=$2 kind name query
	my "$db" >"$dir/queries" <<'SQL' || return 1
SELECT kind, TABLE_NAME,
       CONCAT('SELECT MD5(CONCAT_WS(''|'', ',
              GROUP_CONCAT('CAST(QUOTE(',
                           CASE WHEN DATA_TYPE IN ('binary', 'varbinary', 'tinyblob', 'blob', 'mediumblob',
                                                   'longblob', 'bit', 'geometry', 'point', 'linestring',
                                                   'polygon', 'multipoint', 'multilinestring', 'multipolygon',
                                                   'geometrycollection') THEN CONCAT('HEX(', col, ')')
                                WHEN DATA_TYPE = 'float' THEN CONCAT(col, ' + 0e0')
                                ELSE col END,
                           ') AS BINARY)' ORDER BY ORDINAL_POSITION SEPARATOR ', '),
              ')) FROM `', REPLACE(TABLE_NAME, '`', '``'), '`', IF(versioned, ' FOR SYSTEM_TIME ALL', ''))
FROM (SELECT IF(t.TABLE_TYPE = 'SEQUENCE', 'sequence', 'table') AS kind, t.TABLE_NAME,
             t.TABLE_TYPE = 'SYSTEM VERSIONED' AS versioned,
             c.ORDINAL_POSITION, c.DATA_TYPE, CONCAT('`', REPLACE(c.COLUMN_NAME, '`', '``'), '`') AS col
      FROM information_schema.TABLES t
      JOIN information_schema.COLUMNS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME
      WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE <> 'VIEW'
      UNION ALL
      -- Implicit period columns are not in COLUMNS: a system-versioned table without
      -- explicit ones (GENERATED ALWAYS AS ROW START) has them as ROW_START and ROW_END.
      SELECT 'table', t.TABLE_NAME, 1, p.n, 'timestamp', p.col
      FROM information_schema.TABLES t
      JOIN (SELECT 100000 AS n, 'ROW_START' AS col UNION ALL SELECT 100001, 'ROW_END') AS p
      WHERE t.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE = 'SYSTEM VERSIONED'
        AND NOT EXISTS (SELECT 1 FROM information_schema.COLUMNS c
                        WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME
                          AND c.GENERATION_EXPRESSION = 'ROW START')) AS columns
GROUP BY kind, TABLE_NAME, versioned
ORDER BY BINARY kind, BINARY TABLE_NAME
SQL
	while IFS=$'\t' read -r kind name query; do
		my "$db" -e "SET time_zone = '+00:00'; $query" </dev/null | LC_ALL=C sort >"$dir/rows" || return 1
		printf '%s\t%s\trows=%s md5=%s\n' "$kind" "$name" "$(wc -l <"$dir/rows")" \
			"$(md5sum <"$dir/rows" | cut -d' ' -f1)"
	done <"$dir/queries" >"$dir/data"
}

for side in a b; do
	if [ $side = a ]; then db=$db_a; else db=$db_b; fi
	mkdir "$work/$side"
	if ! { list_objects "$db" >"$work/$side/objects" &&
		fingerprint_schema "$db" "$work/$side" && fingerprint_data "$db" "$work/$side"; }; then
		echo "my_compare: cannot read database $db" >&2
		exit 2
	fi
done

# Prints one line per difference between two KIND <tab> NAME <tab> VALUE files; values
# that differ are printed only when asked for (definitions are too long).
differences() { # FILE_A FILE_B [with-values]
	awk -F'\t' -v a="$db_a" -v b="$db_b" -v with_values="${3:-}" '
		NR == FNR { value_a[$1 " " $2] = $3; order[++n] = $1 " " $2; next }
		{
			key = $1 " " $2
			seen_b[key] = 1
			if (!(key in value_a)) print "  " key " only in " b
			else if (value_a[key] != $3)
				print "  " key (with_values ? ": " value_a[key] " in " a ", " $3 " in " b : " differs")
		}
		END { for (i = 1; i <= n; i++) if (!(order[i] in seen_b)) print "  " order[i] " only in " a }
	' "$1" "$2"
}

# A definition from a schema file with its \n and \t escapes expanded, for diff.
definition() { # SCHEMA_FILE KIND NAME
	awk -F'\t' -v kind="$2" -v name="$3" '
		$1 == kind && $2 == name { gsub(/\\n/, "\n", $3); gsub(/\\t/, "\t", $3); print $3 }' "$1"
}

status=0
if ! cmp -s "$work/a/schema" "$work/b/schema"; then
	echo "my_compare: definitions in $db_a and $db_b differ:" >&2
	differences "$work/a/schema" "$work/b/schema" >&2
	# Show the changed lines of the first few definitions present on both sides.
	awk -F'\t' 'NR == FNR { def[$1 "\t" $2] = $3; next }
		($1 "\t" $2) in def && def[$1 "\t" $2] != $3 { print $1 "\t" $2 }' \
		"$work/a/schema" "$work/b/schema" | head -n 3 |
		while IFS=$'\t' read -r kind name; do
			diff -u --label "$kind $name in $db_a" --label "$kind $name in $db_b" \
				<(definition "$work/a/schema" "$kind" "$name") \
				<(definition "$work/b/schema" "$kind" "$name") | head -n 30
		done >&2
	status=1
fi
if ! cmp -s "$work/a/autoinc" "$work/b/autoinc"; then
	echo "my_compare: AUTO_INCREMENT counters in $db_a and $db_b differ:" >&2
	differences "$work/a/autoinc" "$work/b/autoinc" with-values >&2
	status=1
fi
if ! cmp -s "$work/a/data" "$work/b/data"; then
	echo "my_compare: contents of $db_a and $db_b differ:" >&2
	differences "$work/a/data" "$work/b/data" with-values | head -n 40 >&2
	status=1
fi
exit $status
