#!/bin/bash
# MariaDB tenants come back exactly (issue 16, items 8-11), through the extension and
# tenant-backup-agent-mysql on a real MariaDB: the dump-option traps of MariaDB 10.11
# (test/fixtures/mariadb_traps.sql: a DEFAULT NEXTVAL(seq) column, invisible columns,
# WITHOUT OVERLAPS, CHECK, partitioning, generated columns, system versioning with its
# history, a trigger, view, function and event, a 30 MiB row) restore to a target, in
# place and in a drill; each compares equal to mariadb-dump | mariadb with the same
# options; the database's character set, collation and COMMENT come back.
. "$(dirname "$0")/../lib/tap.sh"
. "$(dirname "$0")/../lib/pg.sh"
. "$(dirname "$0")/../lib/mariadb.sh"
. "$(dirname "$0")/../lib/agents.sh"
. "$(dirname "$0")/../lib/mysql_tenants.sh"
HERE=$(cd "$(dirname "$0")/.." && pwd)
agent_use tenant-backup-agent-mysql

scratch_dir
mysql_tenants_setup "$(free_port)" "$(free_port)"
# The server's own limit: a row is loaded in one statement of at most this size.
my_q "SET GLOBAL max_allowed_packet = 1073741824"
COMMENT_SQL="'Mandant Ä: ''Tresor'' \\\\ \"alt\"'" # the value: Mandant Ä: 'Tresor' \ "alt"
my_q "CREATE DATABASE vault CHARACTER SET latin1 COLLATE latin1_german2_ci COMMENT $COMMENT_SQL"
is "$(my_q "SELECT HEX(SCHEMA_COMMENT) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'vault'")" \
	"$(printf '%s' "Mandant Ä: 'Tresor' \\ \"alt\"" | xxd -p -u | tr -d '\n')" \
	"the source database has a comment with quotes and a backslash"
my_client vault <"$HERE/fixtures/mariadb_traps.sql"
ok $? "the traps fixture loads into vault"
psql_q "SELECT tenant_backup.tenant_create('vault')" \
	"SELECT tenant_backup.tenant_add_database('vault', 'mysql', 'mysql://tbagent:$MY_PASSWORD_URI@127.0.0.1:$MARIADB_PORT/vault')" >/dev/null

# Every history row of TABLE in DB with its period columns, in UTC.
history() { # DB TABLE PERIOD_COLUMNS
	my_db "$1" "SET time_zone = '+00:00'" "SELECT *, $3 FROM \`$2\` FOR SYSTEM_TIME ALL ORDER BY 1, $3"
}
props() { # DB: character set, collation and comment
	my_q "SELECT CONCAT_WS('|', DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, SCHEMA_COMMENT)
		FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '$1'"
}
accounts_before=$(history vault accounts 'ROW_START, ROW_END')
contracts_before=$(history vault contracts 'valid_from, valid_to')
like "$(echo "$accounts_before" | wc -l)|$(echo "$contracts_before" | wc -l)" '^5\|3$' \
	"vault has history: 5 versions of accounts, 3 of contracts"
big_md5=$(my_db vault "SELECT MD5(body), LENGTH(body) FROM attachments WHERE id = 1")

agent_start worker
psql_q "SELECT tenant_backup.tenant_backup('vault', wait => true)" >/dev/null
ok $? "vault backs up (a 30 MiB row, over Debian's 16 MiB and mariadb-dump's 24 MiB default)"
is "$(psql_q "SELECT status FROM tenant_backup.tenant_backups('vault')")" complete "the backup is complete"
argv=$(cat "$D/dump/argv")
for option in --dump-history --skip-add-locks --max-allowed-packet=1073741824; do
	grep -qx -- "$option" <<<"$argv"
	ok $? "the dump runs with $option"
done

# --- to a target
psql_q "SELECT tenant_backup.tenant_restore('vault', 'mysql', target => 'vault_copy', wait => true)" >/dev/null
ok $? "vault restores to vault_copy (DEFAULT NEXTVAL loads without LOCK TABLES)"
is "$(props vault_copy)" "$(props vault)" "the target has the database's character set, collation and COMMENT"
is "$(history vault_copy accounts 'ROW_START, ROW_END')" "$accounts_before" \
	"accounts' history comes back, ROW_START and ROW_END to the microsecond"
is "$(history vault_copy contracts 'valid_from, valid_to')" "$contracts_before" \
	"contracts' history (explicit period columns, a column without versioning) comes back"
is "$(my_db vault_copy "SELECT MD5(body), LENGTH(body) FROM attachments WHERE id = 1")" "$big_md5" "the 30 MiB row comes back"
is "$(my_db vault_copy "SELECT GROUP_CONCAT(HEX(token_hash) ORDER BY id) = (SELECT GROUP_CONCAT(HEX(token_hash) ORDER BY id)
	FROM vault.api_tokens) FROM api_tokens")" 1 "the invisible column's values come back"
my_db vault_copy "INSERT INTO room_bookings VALUES (101, '2024-05-06', '2024-05-07', 'Next')" &&
	! my_db vault_copy "INSERT INTO room_bookings VALUES (101, '2024-05-03', '2024-05-05', 'Overlap')" 2>/dev/null
ok $? "WITHOUT OVERLAPS still takes an adjacent booking and refuses an overlapping one"
my_db vault_copy "INSERT INTO price_rules VALUES (3, 100, '2024-01-01', NULL)" &&
	! my_db vault_copy "INSERT INTO price_rules VALUES (4, 101, '2024-01-01', NULL)" 2>/dev/null
ok $? "the CHECK constraints still take a good row and refuse a bad one"
my_db vault_copy "DELETE FROM room_bookings WHERE guest = 'Next'" "DELETE FROM price_rules WHERE id = 3"

# The engine's own dump and restore with the options that keep all of it.
my_q "CREATE DATABASE vault_ref CHARACTER SET latin1 COLLATE latin1_german2_ci COMMENT $COMMENT_SQL"
mariadb-dump --no-defaults --socket="$MARIADB_SOCKET" -uroot --single-transaction --routines --triggers --events \
	--hex-blob --dump-history --skip-add-locks --max-allowed-packet=1G vault |
	my_client --max-allowed-packet=1G vault_ref
ok $? "mariadb-dump --dump-history --skip-add-locks | mariadb makes vault_ref"
"$HERE/lib/my_compare.sh" vault vault_copy
ok $? "vault_copy holds exactly what vault holds (definitions, counters, rows, history)"
is "$("$HERE/lib/my_compare.sh" vault_ref vault_copy 2>&1 | grep -E '^  [a-z]|^[-+] ')" \
	"$(printf '%s\n' '  table tickets differs' '-  `id` bigint(20) NOT NULL DEFAULT nextval(`vault`.`ticket_numbers`),' \
		'+  `id` bigint(20) NOT NULL DEFAULT nextval(`<db>`.`ticket_numbers`),')" \
	"and what the engine's own dump and restore give, except that its DEFAULT NEXTVAL still draws from vault"
# --- in place, after changes to data, history, properties and definitions
my_db vault "UPDATE accounts SET balance = 0" "DELETE FROM attachments" "DROP VIEW open_tickets" \
	"ALTER TABLE tickets ALTER COLUMN title SET DEFAULT 'neu'" "INSERT INTO tickets (title) VALUES ('später')"
my_q "ALTER DATABASE vault COMMENT 'changed' COLLATE latin1_swedish_ci"
restore=$(psql_q "SELECT tenant_backup.tenant_restore('vault', 'mysql', wait => true)")
ok $? "vault restores in place"
"$HERE/lib/my_compare.sh" vault_copy vault
ok $? "vault is again what was backed up (definitions, counters, rows, history)"
is "$(history vault accounts 'ROW_START, ROW_END')" "$accounts_before" "with accounts' history as it was"
is "$(props vault)" "$(props vault_copy)" "and the backup's character set, collation and COMMENT"
is "$(props "vault_tb_old_$restore")" "latin1|latin1_swedish_ci|changed" "the previous contents keep the previous properties"
is "$(my_db vault "INSERT INTO tickets (title) VALUES ('  neu  ')" "SELECT id = LASTVAL(ticket_numbers), title
	FROM tickets ORDER BY id DESC LIMIT 1")" "$(printf '1\tneu')" "new tickets draw from vault's sequence and the trigger fires"

vault_next=$(my_db vault "SELECT next_not_cached_value FROM ticket_numbers")
is "$(my_db vault_copy "INSERT INTO tickets (title) VALUES ('in the copy')" \
	"SELECT MAX(id) = LASTVAL(ticket_numbers) FROM tickets")|$(my_db vault "SELECT next_not_cached_value FROM ticket_numbers")" \
	"1|$vault_next" "in vault_copy a new ticket draws from vault_copy's sequence, not vault's"

# --- a drill
is "$(agent_drill vault)" ok "a drill of vault is ok (counts match what the dump counted)"

done_testing
