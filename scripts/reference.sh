#!/bin/bash
# Writes docs/reference.md from the product itself: every tenant_backup.* setting as
# pg_settings describes it, every function and view of the SQL API with its COMMENT, and
# every command of the CLI with its --help. Run after `make install` (as root):
#   bash scripts/reference.sh build/bin > docs/reference.md
set -euo pipefail
BIN=$(cd "$1" && pwd)
HERE=$(cd "$(dirname "$0")/.." && pwd)
. "$HERE/test/lib/tap.sh"
. "$HERE/test/lib/pg.sh"
scratch_dir
mkdir -p "$D/store"
chown postgres "$D/store"
"$BIN/tenant-backup" keygen --out "$D/master.key" 2>/dev/null
chown postgres "$D/master.key"
pg_start "$D/pg" "$(free_port)" "tenant_backup.storage = 'file://$D/store'
tenant_backup.master_key_file = '$D/master.key'" >/dev/null
psql_q "CREATE EXTENSION tenant_backup" >/dev/null

cat <<'MD'
# Reference

Generated from the product by `scripts/reference.sh` (settings from `pg_settings`, the
SQL API from its `COMMENT`s, the commands from `--help`): what it says is what the
build does. The chapters explain how these fit together: [install](install.md),
[operate](operate.md), [restore](restore.md), [disaster recovery](disaster-recovery.md),
[security](security.md), [internals](internals.md).

## Settings

Set in `postgresql.conf` (or `ALTER SYSTEM`); *context* says when a change takes
effect: `postmaster` at a restart, `sighup` at a reload, `superuser`/`user` in a session.
The default is shown as `pg_settings` reports it, in its unit.

| setting | default | unit | context | what it does |
| --- | --- | --- | --- | --- |
MD
psql_q "SELECT format('| \`%s\` | %s | %s | %s | %s |', name, CASE WHEN boot_val = '' THEN '(empty)' ELSE '\`' || boot_val || '\`' END,
			coalesce(unit, ''), context, replace(short_desc || coalesce(' ' || extra_desc, ''), '|', '\\|'))
		FROM pg_settings WHERE name LIKE 'tenant_backup.%' ORDER BY name"

cat <<'MD'

## SQL functions

Every function of the API in schema `tenant_backup`; those whose names begin with `_`
are internal and left out (a few that the operators' views call are granted to
operators). Operators (`tenant_backup_operator`) may call all of these unless the
description says superuser; agents (`tenant_backup_agent`) call the `agent_*` ones.

MD
psql_q "SELECT format(E'### \`%s(%s)\`\n\nReturns %s. %s\n', p.proname, pg_get_function_identity_arguments(p.oid),
			pg_get_function_result(p.oid), coalesce(replace(obj_description(p.oid, 'pg_proc'), E'\n', ' '), ''))
		FROM pg_proc p WHERE p.pronamespace = 'tenant_backup'::regnamespace AND p.proname !~ '^_'
		ORDER BY p.proname, pg_get_function_identity_arguments(p.oid)"

cat <<'MD'

## Views

MD
psql_q "SELECT format(E'### \`tenant_backup.%s\`\n\n%s\n\nColumns: %s.\n', c.relname,
			coalesce(obj_description(c.oid, 'pg_class'), ''),
			(SELECT string_agg('\`' || a.attname || '\`', ', ' ORDER BY a.attnum) FROM pg_attribute a
			 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
		FROM pg_class c WHERE c.relnamespace = 'tenant_backup'::regnamespace AND c.relkind = 'v' ORDER BY c.relname"

printf '\n## The `tenant-backup` command\n\n```\n'
"$BIN/tenant-backup" --help 2>&1
printf '```\n'
for cmd in $("$BIN/tenant-backup" --help 2>&1 | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1} on && /^$/ {exit}'); do
	printf '\n### `tenant-backup %s`\n\n```\n' "$cmd"
	"$BIN/tenant-backup" "$cmd" --help 2>&1 || true
	printf '```\n'
done
printf '\n## Agents\n\n'
for agent in mysql redis mongodb; do
	printf '### `tenant-backup-agent-%s`\n\n```\n' "$agent"
	"$BIN/tenant-backup-agent-$agent" --help 2>&1 || true
	printf '```\n\n'
done
