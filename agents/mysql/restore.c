/*
 * A MySQL/MariaDB tenant's restore: the backup is loaded with the server's own client
 * into a fresh database beside the live one; only once all of it authenticated and
 * loaded does the fresh one take the live one's place (my_swap), the previous contents
 * kept as <db>_tb_old_<job>. With a target, the backup goes into that new database and
 * the live one is not touched. Any failure before the swap drops only the fresh database.
 *
 * A drill loads the backup the same way into the same fresh database, counts the rows
 * of its base tables (the shape the backup counted at dump time, dump_count.h), and
 * drops it again whatever happened: it never swaps, and nothing live is touched.
 */
#include "mysql_agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto.h"
#include "dump_count.h"

#define LOAD_BUFFER (1024 * 1024)

/* Bytes of name that leave room for a "_tb_new_<job>" suffix, not splitting a UTF-8 character. */
static int
clip(const char *name)
{
	int len = (int) strlen(name);

	if (len <= 40)
		return len;
	len = 40;
	while (len > 0 && ((unsigned char) name[len] & 0xC0) == 0x80)
		len--;
	return len;
}

/*
 * Streams the authenticated plaintext into the client loading database fresh. For a
 * drill, the SHA-256 of the object as stored (what the backup recorded) goes into
 * job->object_sha256.
 */
static int
load_backup(agent_job *job, const mysql_source *src, const char *fresh, tb_error *err)
{
	stream_reader_options options = {.readahead = true, .hash_stored = true};
	repo_reader *reader = repo_reader_open(job->storage, job->master, job->object_key, &options, err);
	const stream_header *hdr;
	char defaults[64], *database = NULL;
	const char *argv[7];
	agent_child *child = NULL;
	char *buf = NULL;
	int fd = -1, rc = -1;

	if (reader == NULL)
		return -1;
	hdr = repo_reader_header(reader);
	if (agent_job_accept_header(job, hdr, err) != 0)
		goto done;
	if (asprintf(&database, "--database=%s", fresh) < 0)
	{
		database = NULL;
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		goto done;
	}
	if ((fd = mysql_option_pipe(src, err)) < 0)
		goto done;
	snprintf(defaults, sizeof(defaults), "--defaults-file=/dev/fd/%d", fd);
	argv[0] = src->client_command;
	argv[1] = defaults;
	argv[2] = "--default-character-set=utf8mb4";
	argv[3] = "--batch";
	argv[4] = MY_MAX_ALLOWED_PACKET;
	argv[5] = database; /* the name as an option's value: never an option itself */
	argv[6] = NULL;
	child = agent_child_start(argv, AGENT_CHILD_STDIN, &fd, 1, err);
	close(fd);
	if (child == NULL || (buf = malloc(LOAD_BUFFER)) == NULL)
		goto done;
	for (;;)
	{
		ssize_t got = repo_reader_read(reader, buf, LOAD_BUFFER, err);

		if (got < 0 || (got > 0 && agent_child_write(child, job, buf, (size_t) got, err) != 0))
			goto done;
		if (got == 0)
			break;
		job->bytes_done += (uint64_t) got;
	}
	rc = agent_child_finish(child, job, err);
	if (rc == 0)
	{
		stream_stats stats;

		/* A drill reports the hash for the catalog to compare; a restore compares it before any swap. */
		repo_reader_stats(reader, &stats);
		if (!stats.stored_sha256_known)
			rc = tb_error_set(err, TB_ERR_INTERNAL, "the SHA-256 of backup %s as stored was not computed",
							  job->object_key);
		else if (job->drill)
			crypto_hex_encode(stats.stored_sha256, sizeof(stats.stored_sha256), job->object_sha256);
		else
			rc = agent_job_check_stored(job, &stats, err);
	}
done:
	agent_child_kill(child);
	free(database);
	free(buf);
	repo_reader_close(reader);
	return rc;
}

/*
 * Drops a database this job created. With rc != 0 (the job failed already), a failed
 * drop is added to err's message; otherwise it becomes the error. Returns 0 only when
 * rc was 0 and the database is gone.
 */
static int
drop_fresh(MYSQL *conn, const char *fresh, int rc, tb_error *err)
{
	char *ident = my_ident(fresh), msg[TB_ERROR_MSG_MAX];
	tb_error drop_err;
	int dropped = ident ? my_exec(conn, "dropping the database", &drop_err, "DROP DATABASE %s", ident)
						: tb_error_set(&drop_err, TB_ERR_NOMEM, "out of memory");

	free(ident);
	if (dropped == 0)
		return rc;
	if (rc == 0)
		return tb_error_set(err, drop_err.code, "database \"%s\" was left behind: %s", fresh, drop_err.msg);
	/* Both messages, the first one whole: the drop's may be cut short. */
	if (snprintf(msg, sizeof(msg), "%s; and database \"%s\" was left behind: %s", err->msg, fresh, drop_err.msg) < 0)
		snprintf(msg, sizeof(msg), "%s", err->msg);
	return tb_error_set(err, err->code, "%s", msg);
}

/*
 * Creates fresh like `like` (or with the server's defaults) and loads the backup into it;
 * on failure only what this created is dropped. The restore and the drill both start here.
 */
static int
load_fresh(agent_job *job, const mysql_source *src, MYSQL *conn, const char *fresh, const char *like, tb_error *err)
{
	char *options = NULL, *ident;
	int rc, exists = my_database_defaults(conn, fresh, NULL, NULL, err);

	if (exists != 0)
		return exists < 0 ? -1
						  : tb_error_set(err, TB_ERR_EXISTS,
										 "database \"%s\" already exists; restore into one that does not", fresh);
	if (like && (options = my_database_options(conn, like, err)) == NULL)
		return -1;
	/* From here a crash leaves a database that the next agent on live drops (my_journal_repair). */
	if (my_journal_begin(conn, job, src->database, fresh, err) != 0)
	{
		free(options);
		return -1;
	}
	ident = my_ident(fresh);
	rc = my_exec(conn, "creating the database to restore into", err, "CREATE DATABASE %s %s", ident,
				 options ? options : "");
	free(options);
	free(ident);
	if (rc == 0 && load_backup(job, src, fresh, err) != 0)
		rc = drop_fresh(conn, fresh, -1, err);
	return rc;
}

/*
 * SHOW CREATE TABLE, hence the dump, qualifies a DEFAULT NEXTVAL(seq) with the dumped
 * database's name: in a target, such a column would draw from the source's sequence.
 * Each default that is exactly NEXTVAL of a sequence of that name in `source` is
 * pointed at target's own sequence.
 */
static int
repoint_sequence_defaults(MYSQL *conn, const char *source, const char *target, tb_error *err)
{
	char *source_ident = my_ident(source), *target_ident = my_ident(target), *qualifier = NULL, *target_name = NULL,
		 *sql = NULL;
	MYSQL_RES *res = NULL;
	MYSQL_ROW row;
	int rc = -1;

	if (source_ident == NULL || target_ident == NULL || (qualifier = my_literal(conn, source_ident)) == NULL ||
		(target_name = my_literal(conn, target)) == NULL ||
		asprintf(&sql,
				 "SELECT c.TABLE_NAME, c.COLUMN_NAME, s.TABLE_NAME FROM information_schema.COLUMNS c"
				 " JOIN information_schema.TABLES s ON s.TABLE_SCHEMA = c.TABLE_SCHEMA AND s.TABLE_TYPE = 'SEQUENCE'"
				 " AND c.COLUMN_DEFAULT = CONCAT('nextval(', %s, '.`', REPLACE(s.TABLE_NAME, '`', '``'), '`)')"
				 " JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME"
				 " AND t.TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') WHERE c.TABLE_SCHEMA = %s",
				 qualifier, target_name) < 0)
	{
		sql = NULL;
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		goto done;
	}
	if (mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL)
	{
		tb_error_set(err, TB_ERR_IO, "cannot list the sequence defaults of database \"%s\": %s", target,
					 mysql_error(conn));
		goto done;
	}
	rc = 0;
	while (rc == 0 && (row = mysql_fetch_row(res)) != NULL)
	{
		char *table = my_ident(row[0]), *column = my_ident(row[1]), *sequence = my_ident(row[2]);

		rc = table && column && sequence ? my_exec(conn, "pointing a default at the restored sequence", err,
												   "ALTER TABLE %s.%s ALTER COLUMN %s SET DEFAULT NEXTVAL(%s.%s)",
												   target_ident, table, column, target_ident, sequence)
										 : tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		free(table);
		free(column);
		free(sequence);
	}
done:
	if (res)
		mysql_free_result(res);
	free(sql);
	free(target_name);
	free(qualifier);
	free(target_ident);
	free(source_ident);
	return rc;
}

/*
 * The rows of every base table of db into job->contents. The tables whose rows the dump
 * tool does not dump (MERGE and FEDERATED: their rows live elsewhere) have none of their
 * own, as at dump time; they are not counted, which would read other tables or servers.
 */
static int
count_tables(agent_job *job, MYSQL *conn, const char *db, tb_error *err)
{
	char *name = my_literal(conn, db), *db_ident = my_ident(db), *sql = NULL, counted[64];
	my_contents *contents = my_contents_new();
	MYSQL_RES *tables = NULL;
	MYSQL_ROW row;
	int rc = -1;

	if (name == NULL || db_ident == NULL || contents == NULL ||
		asprintf(&sql,
				 "SELECT TABLE_NAME, IFNULL(ENGINE IN ('MRG_MyISAM', 'MRG_ISAM', 'FEDERATED'), 0) FROM "
				 "information_schema.TABLES"
				 " WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')",
				 name) < 0)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		goto done;
	}
	if (mysql_query(conn, sql) != 0 || (tables = mysql_store_result(conn)) == NULL)
	{
		tb_error_set(err, TB_ERR_IO, "cannot list the tables of database \"%s\": %s", db, mysql_error(conn));
		goto done;
	}
	while ((row = mysql_fetch_row(tables)) != NULL)
	{
		char *table = my_ident(row[0]), *count_sql = NULL;
		MYSQL_RES *res = NULL;
		MYSQL_ROW count;
		long long rows = 0;

		if (agent_job_tick(job, err) != 0)
		{
			free(table);
			goto done;
		}
		if (strcmp(row[1], "0") == 0 &&
			(table == NULL || asprintf(&count_sql, "SELECT COUNT(*) FROM %s.%s", db_ident, table) < 0 ||
			 mysql_query(conn, count_sql) != 0 || (res = mysql_store_result(conn)) == NULL ||
			 (count = mysql_fetch_row(res)) == NULL || sscanf(count[0], "%lld", &rows) != 1))
		{
			tb_error_set(err, TB_ERR_IO, "cannot count the rows of table \"%s\": %s", row[0], mysql_error(conn));
			rows = -1;
		}
		if (res)
			mysql_free_result(res);
		free(count_sql);
		free(table);
		if (rows < 0 || my_contents_add(contents, row[0], rows, err) != 0)
			goto done;
	}
	job->contents = my_contents_json(contents, counted, sizeof(counted), err);
	if (job->contents)
	{
		snprintf(job->detail, sizeof(job->detail), "drill: %s", counted);
		rc = 0;
	}
done:
	if (tables)
		mysql_free_result(tables);
	my_contents_free(contents);
	free(sql);
	free(db_ident);
	free(name);
	return rc;
}

/* Loads the backup into fresh, counts what is there, drops fresh: nothing else is touched. */
static int
drill(agent_job *job, const mysql_source *src, MYSQL *conn, const char *fresh, const char *like, tb_error *err)
{
	int counted;

	if (load_fresh(job, src, conn, fresh, like, err) != 0)
		return -1;
	agent_job_phase(job, "compare");
	counted = count_tables(job, conn, fresh, err);
	if (counted == 0)
		agent_job_phase(job, "cleanup");
	return drop_fresh(conn, fresh, counted, err);
}

int
mysql_restore(agent_job *job, tb_error *err)
{
	mysql_source src;
	MYSQL *conn = NULL;
	char fresh[MY_NAME_MAX * 4 + 1], old[MY_NAME_MAX * 4 + 1];
	bool own_swap_done = false, keep_journal = false;
	int live_exists, rc = -1;

	if (mysql_source_from_job(job, &src, err) != 0)
		return -1;
	if (job->object_key == NULL)
	{
		tb_error_set(err, TB_ERR_INVALID, "the restore job names no backup object");
		goto done;
	}
	if (job->restore_target && !job->drill && my_name_check("the restore target", job->restore_target, err) != 0)
		goto done;
	if ((conn = mysql_source_connect(&src, job, err)) == NULL || my_claim_identity(conn, &src, job, err) != 0)
		goto done;
	if (my_journal_repair(conn, job, src.database, &own_swap_done, err) != 0)
		goto done;
	if (own_swap_done && !job->drill && !job->restore_target)
	{
		/* This job's own swap, interrupted by a crash, is now finished: the restore is done. */
		snprintf(job->detail, sizeof(job->detail), "restored: the swap interrupted in an earlier attempt was finished");
		rc = 0;
		goto done;
	}
	live_exists = my_database_defaults(conn, src.database, NULL, NULL, err);
	if (live_exists < 0)
		goto done;
	snprintf(fresh, sizeof(fresh), "%.*s_tb_new_%lld", clip(src.database), src.database, (long long) job->id);
	if (job->drill)
		rc = drill(job, &src, conn, fresh, live_exists ? src.database : NULL, err);
	else if (job->restore_target)
	{
		rc = load_fresh(job, &src, conn, job->restore_target, live_exists ? src.database : NULL, err);
		if (rc == 0 && repoint_sequence_defaults(conn, src.database, job->restore_target, err) != 0)
			rc = tb_error_prefix(err, "restored into \"%s\", but a column still draws from \"%s\"'s sequence",
								 job->restore_target, src.database);
	}
	else if (!live_exists)
		rc = load_fresh(job, &src, conn, src.database, NULL, err);
	else
	{
		snprintf(old, sizeof(old), "%.*s_tb_old_%lld", clip(src.database), src.database, (long long) job->id);
		rc = load_fresh(job, &src, conn, fresh, src.database, err);
		/* The whole backup authenticated and loaded: only now does live change. */
		if (rc == 0 && agent_job_tick(job, err) == 0)
		{
			agent_job_phase(job, "swap");
			keep_journal = (rc = my_swap(conn, job, src.database, fresh, old, err)) != 0;
		}
		else if (rc == 0)
			rc = drop_fresh(conn, fresh, -1, err);
	}
	my_journal_end(conn, job, keep_journal);
done:
	if (rc != 0)
		tb_error_prefix(err, "%s of database \"%s\" of tenant \"%s\"", job->drill ? "restore drill" : "restore",
						src.database ? src.database : "?", job->tenant);
	if (conn)
		mysql_close(conn);
	mysql_source_free(&src);
	return rc;
}
