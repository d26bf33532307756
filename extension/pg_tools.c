/*
 * What the PostgreSQL engine's jobs share: running pg_dump, pg_restore and
 * pg_basebackup as children, admin statements on a libpq connection that keep
 * answering interrupts, and the job's master key.
 */
#include "tenant_backup.h"

#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "common/string.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/builtins.h"

#include "pg_engine.h"

#define TB_TOOL_SEE_LOG " (its messages are in the server log)"
#define TB_TOOL_ERROR_MAX 512

/* 'value' quoted for /bin/sh. */
char *
tb_shell_quote(const char *value)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '\'');
	for (const char *c = value; *c; c++)
	{
		if (*c == '\'')
			appendStringInfoString(&buf, "'\\''");
		else
			appendStringInfoChar(&buf, *c);
	}
	appendStringInfoChar(&buf, '\'');
	return buf.data;
}

char *
tb_tool_command(const char *tool, const char *options, const char *conninfo)
{
	return psprintf("exec %s %s --dbname=%s", tb_shell_quote(psprintf("%s/%s", tb_pg_bin_dir(), tool)), options,
					tb_shell_quote(conninfo));
}

static char *
tb_exit_reason(const char *tool, int status)
{
	return psprintf("%s %s" TB_TOOL_SEE_LOG, tool, status < 0 ? "could not be run" : wait_result_to_str(status));
}

/*
 * Ends a tool's run: after a failure of ours it is killed and that failure stands;
 * otherwise we wait for it (keeping the lease) and its exit status or a lost lease
 * becomes the failure. NULL when all went well.
 */
char *
tb_tool_end(tb_child *child, tb_job *job, const char *tool, char *failure)
{
	int status;

	if (failure != NULL)
	{
		tb_child_kill(child);
		return failure;
	}
	if ((status = tb_child_finish(child, job)) != 0)
		return tb_exit_reason(tool, status);
	return child->lease_lost ? pstrdup(TB_LEASE_LOST) : NULL;
}

char *
tb_tool_messages_file(const tb_job *job, const char *tool)
{
	return psprintf("%s/pg_stat_tmp/tenant_backup_%s_" INT64_FORMAT ".log", DataDir, tool, job->id);
}

char *
tb_tool_messages(const char *messages, const char *tool, char *failure)
{
	FILE *f = AllocateFile(messages, "r");
	char *prefix = psprintf("%s: error: ", tool);
	char line[TB_TOOL_ERROR_MAX];
	char *first_error = NULL;

	if (f == NULL)
		return failure;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		/* A longer line comes in pieces: only the first piece of each counts as its start. */
		pg_strip_crlf(line);
		if (line[0] == '\0')
			continue;
		ereport(LOG, (errmsg("tenant_backup: %s", line)));
		if (first_error == NULL && strncmp(line, prefix, strlen(prefix)) == 0)
			first_error = pstrdup(line);
	}
	FreeFile(f);
	unlink(messages);
	if (failure != NULL && first_error != NULL && strstr(failure, TB_TOOL_SEE_LOG) != NULL)
		return psprintf("%s: %s", pnstrdup(failure, strstr(failure, TB_TOOL_SEE_LOG) - failure), first_error);
	return failure;
}

/* The master key, and the tenant's own key command for keys wrapped by it. */
void
tb_job_master_key(tb_job *job, master_key *out)
{
	tb_master_key(out);
	out->key_command = job->key_command;
}

/*
 * Runs sql on an admin connection and returns its last result (the caller clears it).
 * Asynchronous on purpose: DROP DATABASE on our own cluster waits for every backend,
 * this worker included, to absorb a ProcSignalBarrier, so we must keep answering
 * interrupts while we wait for it.
 */
PGresult *
tb_admin_query(PGconn *conn, const char *sql)
{
	PGresult *last = NULL;
	PGresult *res;

	if (!PQsendQuery(conn, sql))
		return NULL;
	for (;;)
	{
		while (PQisBusy(conn))
		{
			int rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_READABLE | WL_EXIT_ON_PM_DEATH, PQsocket(conn),
									   -1L, PG_WAIT_EXTENSION);

			if (rc & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
			if ((rc & WL_SOCKET_READABLE) && !PQconsumeInput(conn))
				break;
		}
		res = PQgetResult(conn);
		if (res == NULL)
			break;
		PQclear(last);
		last = res;
	}
	return last;
}

/* Runs one admin statement; returns NULL or the server's message. */
char *
tb_admin_exec(PGconn *conn, const char *sql)
{
	PGresult *res = tb_admin_query(conn, sql);
	char *failure = NULL;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		failure = psprintf("%s", pchomp(PQerrorMessage(conn)));
	PQclear(res);
	return failure;
}

/* The first column of the first row of sql, or NULL. */
char *
tb_admin_value(PGconn *conn, const char *sql)
{
	PGresult *res = tb_admin_query(conn, sql);
	char *value = NULL;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

PGconn *
tb_tenant_connect(const char *conninfo, char **failure)
{
	PGconn *conn = PQconnectdb(conninfo);

	*failure = NULL;
	if (PQstatus(conn) != CONNECTION_OK)
		*failure = psprintf("%s", pchomp(PQerrorMessage(conn)));
	else
		*failure = tb_admin_exec(conn, "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)");
	return conn;
}
