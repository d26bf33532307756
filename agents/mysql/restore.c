/*
 * A MySQL/MariaDB tenant's restore: the backup is loaded with the server's own client
 * into a fresh database beside the live one; only once all of it authenticated and
 * loaded does the fresh one take the live one's place (my_swap), the previous contents
 * kept as <db>_tb_old_<job>. With a target, the backup goes into that new database and
 * the live one is not touched. Any failure before the swap drops only the fresh database.
 */
#include "mysql_agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOAD_BUFFER (1024 * 1024)
#define MY_NAME_MAX 64

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

/* Streams the authenticated plaintext into the client loading database fresh. */
static int
load_backup(agent_job *job, const mysql_source *src, const char *fresh, tb_error *err)
{
	stream_reader_options options = {.readahead = true};
	repo_reader *reader = repo_reader_open(job->storage, job->master, job->object_key, &options, err);
	const stream_header *hdr;
	char defaults[64];
	const char *argv[6];
	agent_child *child = NULL;
	char *buf = NULL;
	int fd = -1, rc = -1;

	if (reader == NULL)
		return -1;
	hdr = repo_reader_header(reader);
	if (strcmp(hdr->tenant, job->tenant) != 0 || strcmp(hdr->engine, "mysql") != 0)
	{
		tb_error_set(err, TB_ERR_CORRUPT, "backup %s belongs to tenant \"%s\" (%s), not to \"%s\" (mysql)",
					 job->object_key, hdr->tenant, hdr->engine, job->tenant);
		goto done;
	}
	if ((fd = mysql_option_pipe(src, err)) < 0)
		goto done;
	snprintf(defaults, sizeof(defaults), "--defaults-extra-file=/dev/fd/%d", fd);
	argv[0] = src->client_command;
	argv[1] = defaults;
	argv[2] = "--default-character-set=utf8mb4";
	argv[3] = "--batch";
	argv[4] = fresh;
	argv[5] = NULL;
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
done:
	agent_child_kill(child);
	free(buf);
	repo_reader_close(reader);
	return rc;
}

/* Creates fresh like live (or with the server's defaults), loads the backup, drops it on failure. */
static int
restore_into(agent_job *job, const mysql_source *src, MYSQL *conn, const char *fresh, const char *like, tb_error *err)
{
	char *charset = NULL, *collation = NULL, *ident = my_ident(fresh);
	int rc;

	int exists = my_database_defaults(conn, fresh, NULL, NULL, err);

	if (exists != 0)
	{
		free(ident);
		return exists < 0 ? -1
						  : tb_error_set(err, TB_ERR_EXISTS,
										 "database \"%s\" already exists; restore into one that does not", fresh);
	}
	if (like && my_database_defaults(conn, like, &charset, &collation, err) < 0)
	{
		free(ident);
		return -1;
	}
	rc = charset ? my_exec(conn, "creating the database to restore into", err,
						   "CREATE DATABASE %s CHARACTER SET %s COLLATE %s", ident, charset, collation)
				 : my_exec(conn, "creating the database to restore into", err, "CREATE DATABASE %s", ident);
	if (rc == 0 && load_backup(job, src, fresh, err) != 0)
	{
		tb_error drop_err;

		/* Only what this restore created goes. */
		if (my_exec(conn, "dropping the partly restored database", &drop_err, "DROP DATABASE %s", ident) != 0)
			tb_error_prefix(err, "%s; also", drop_err.msg);
		rc = -1;
	}
	free(charset);
	free(collation);
	free(ident);
	return rc;
}

int
mysql_restore(agent_job *job, tb_error *err)
{
	mysql_source src;
	MYSQL *conn = NULL;
	char fresh[MY_NAME_MAX * 4 + 1], old[MY_NAME_MAX * 4 + 1];
	int live_exists, rc = -1;

	if (mysql_source_from_job(job, &src, err) != 0)
		return -1;
	if (job->object_key == NULL)
	{
		tb_error_set(err, TB_ERR_INVALID, "the restore job names no backup object");
		goto done;
	}
	if ((conn = mysql_source_connect(&src, job, err)) == NULL)
		goto done;
	live_exists = my_database_defaults(conn, src.database, NULL, NULL, err);
	if (live_exists < 0)
		goto done;
	if (job->restore_target)
	{
		if (strlen(job->restore_target) == 0 || strlen(job->restore_target) > MY_NAME_MAX)
		{
			tb_error_set(err, TB_ERR_INVALID, "target database name \"%s\" must be 1 to 64 characters",
						 job->restore_target);
			goto done;
		}
		rc = restore_into(job, &src, conn, job->restore_target, live_exists ? src.database : NULL, err);
	}
	else if (!live_exists)
		rc = restore_into(job, &src, conn, src.database, NULL, err);
	else
	{
		snprintf(fresh, sizeof(fresh), "%.*s_tb_new_%lld", clip(src.database), src.database, (long long) job->id);
		snprintf(old, sizeof(old), "%.*s_tb_old_%lld", clip(src.database), src.database, (long long) job->id);
		rc = restore_into(job, &src, conn, fresh, src.database, err);
		/* The whole backup authenticated and loaded: only now does live change. */
		if (rc == 0 && agent_job_tick(job, err) == 0)
			rc = my_swap(conn, src.database, fresh, old, err);
		else if (rc == 0)
		{
			char *ident = my_ident(fresh);
			tb_error drop_err;

			my_exec(conn, "dropping the restored database", &drop_err, "DROP DATABASE %s", ident);
			free(ident);
			rc = -1;
		}
	}
done:
	if (rc != 0)
		tb_error_prefix(err, "restore of database \"%s\" of tenant \"%s\"", src.database ? src.database : "?",
						job->tenant);
	if (conn)
		mysql_close(conn);
	mysql_source_free(&src);
	return rc;
}
