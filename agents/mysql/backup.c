/*
 * A MySQL/MariaDB tenant's backup: the server's own dump tool in one consistent
 * transaction (--single-transaction: a snapshot, no global lock) with tables, views,
 * routines, triggers and events, streamed as it comes into the repository. The
 * plaintext is an SQL script for the database it is loaded into; its first statement
 * gives that database the dumped one's character set and collation. The rows of every
 * table are counted in the dump as it passes (dump_count.c): the backup's contents.
 */
#include "mysql_agent.h"

#include "dump_count.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DUMP_BUFFER (1024 * 1024)

/* 1 when db has system-versioned tables, 0 when not, -1 on error. */
static int
has_versioned_tables(MYSQL *conn, const char *db, tb_error *err)
{
	MYSQL_RES *res = my_query_about_database(
		conn, db,
		"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'SYSTEM VERSIONED'",
		"list the tables of", err);
	MYSQL_ROW row;
	int found;

	if (res == NULL)
		return -1;
	row = mysql_fetch_row(res);
	found = row != NULL && row[0] != NULL && strcmp(row[0], "0") != 0;
	mysql_free_result(res);
	return found;
}

/*
 * The dumped database's own properties (character set, collation, comment), which the
 * dump tool leaves out without --databases, as the dump's first statement (malloc'd
 * into *preamble); and whether it has system-versioned tables, whose history the dump
 * must then carry. First the database's identity is claimed, before anything is read.
 */
static int
dump_preamble(const mysql_source *src, agent_job *job, char **preamble, bool *history, tb_error *err)
{
	MYSQL *conn = mysql_source_connect(src, job, err);
	char *options = NULL;
	int versioned = -1;

	if (conn == NULL)
		return -1;
	bool own_swap_done;

	/* A restore of this database that a crash interrupted is finished first: the backup is of a working database. */
	if (my_claim_identity(conn, src, job, err) == 0 &&
		my_journal_repair(conn, job, src->database, &own_swap_done, err) == 0)
	{
		options = my_database_options(conn, src->database, err);
		if (options)
			versioned = has_versioned_tables(conn, src->database, err);
		else if (err->code == TB_ERR_NOT_FOUND)
			tb_error_set(err, TB_ERR_NOT_FOUND, "it does not exist on %s:%d", src->host ? src->host : "localhost",
						 src->port);
	}
	mysql_close(conn);
	if (versioned < 0)
	{
		free(options);
		return -1;
	}
	*history = versioned == 1;
	if (asprintf(preamble,
				 "-- tenant_backup: the dumped database's properties, given to the database this is loaded into\n"
				 "ALTER DATABASE %s;\n",
				 options) < 0)
	{
		*preamble = NULL;
		free(options);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	}
	free(options);
	return 0;
}

int
mysql_backup(agent_job *job, repo_put *put, tb_error *err)
{
	mysql_source src;
	char *preamble = NULL, defaults[64];
	const char *argv[20];
	bool history = false;
	agent_child *child = NULL;
	my_dump_count *count = NULL;
	char *buf = NULL;
	int fd = -1, rc = -1, n = 0;

	if (mysql_source_from_job(job, &src, err) != 0)
		return -1;
	if (dump_preamble(&src, job, &preamble, &history, err) != 0 ||
		repo_put_write(put, preamble, strlen(preamble), err) != 0 || (fd = mysql_option_pipe(&src, err)) < 0)
		goto done;
	snprintf(defaults, sizeof(defaults), "--defaults-file=/dev/fd/%d", fd);
	argv[n++] = src.dump_command;
	argv[n++] = defaults;
	argv[n++] = "--single-transaction";
	argv[n++] = "--routines";
	argv[n++] = "--triggers";
	argv[n++] = "--events";
	argv[n++] = "--hex-blob";
	argv[n++] = "--no-tablespaces";
	argv[n++] = "--default-character-set=utf8mb4";
	argv[n++] = "--skip-dump-date";
	/* A table with DEFAULT NEXTVAL(seq) cannot be loaded under LOCK TABLES (error 1100). */
	argv[n++] = "--skip-add-locks";
	argv[n++] = MY_MAX_ALLOWED_PACKET;
	/* Past rows and their ROW_START/ROW_END too; loading them sets system_versioning_insert_history. */
	if (history)
		argv[n++] = "--dump-history";
	argv[n++] = "--";
	argv[n++] = src.database;
	argv[n] = NULL;
	child = agent_child_start(argv, AGENT_CHILD_STDOUT, &fd, 1, err);
	close(fd);
	if (child == NULL || (buf = malloc(DUMP_BUFFER)) == NULL || (count = my_dump_count_new()) == NULL)
	{
		if (child)
			tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		goto done;
	}
	for (;;)
	{
		ssize_t got = agent_child_read(child, job, buf, DUMP_BUFFER, err);

		if (got < 0 || (got > 0 && repo_put_write(put, buf, (size_t) got, err) != 0))
			goto done;
		if (got == 0)
			break;
		my_dump_count_feed(count, buf, (size_t) got);
	}
	rc = agent_child_finish(child, job, err);
	if (rc == 0)
	{
		tb_error count_err;

		/* The backup itself is sound either way; without contents a drill has only its hash to compare. */
		job->contents = my_dump_count_finish(count, job->detail, sizeof(job->detail), &count_err);
		if (job->contents == NULL)
			agent_log("backup of tenant \"%s\": its rows were not counted: %s", job->tenant, count_err.msg);
	}
done:
	if (rc != 0 && job->stop == AGENT_GO)
		tb_error_prefix(err, "dump of database \"%s\" of tenant \"%s\"", src.database, job->tenant);
	agent_child_kill(child);
	my_dump_count_free(count);
	free(buf);
	free(preamble);
	mysql_source_free(&src);
	return rc;
}
