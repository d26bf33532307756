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
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pg_engine.h"

#define TB_TOOL_SEE_LOG " (its messages are in the server log)"
#define TB_TOOL_ERROR_MAX 512
/* How often a connection that waits for its server renews the job's lease. */
#define TB_CONNECT_WAIT_MS 1000

char **
tb_tool_argv(const char *tool, const char *const *options, const char *conninfo)
{
	int n = 0;
	char **argv;

	while (options[n] != NULL)
		n++;
	argv = palloc((n + 3) * sizeof(char *));
	argv[0] = psprintf("%s/%s", tb_pg_bin_dir(), tool);
	for (int i = 0; i < n; i++)
		argv[i + 1] = pstrdup(options[i]);
	/* One word, so that the connection string cannot become an option of its own. */
	argv[n + 1] = psprintf("--dbname=%s", conninfo);
	argv[n + 2] = NULL;
	return argv;
}

static char *
tb_exit_reason(const char *tool, int status)
{
	return psprintf("%s %s" TB_TOOL_SEE_LOG, tool, status < 0 ? "could not be run" : wait_result_to_str(status));
}

/*
 * Ends a tool's run: after a failure of ours it is killed and that failure stands;
 * otherwise we wait for it (keeping the lease) and a lost lease, the job's time limit
 * or its exit status becomes the failure. NULL when all went well.
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
	status = tb_child_finish(child, job);
	if (child->stopped != NULL)
		return child->stopped;
	return status != 0 ? tb_exit_reason(tool, status) : NULL;
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
	char *detail_prefix = psprintf("%s: detail: ", tool);
	char line[TB_TOOL_ERROR_MAX];
	char *first_error = NULL;
	bool after_first_error = false;

	if (f == NULL)
		return failure;
	while (fgets(line, sizeof(line), f) != NULL)
	{
		/* A longer line comes in pieces: only the first piece of each counts as its start. */
		pg_strip_crlf(line);
		if (line[0] == '\0')
			continue;
		ereport(LOG, (errmsg("tenant_backup: %s", line)));
		/* Its detail line names the object (pg_dump: "Query was: LOCK TABLE public.t ..."). */
		if (after_first_error && strncmp(line, detail_prefix, strlen(detail_prefix)) == 0)
			first_error = psprintf("%s (%s)", first_error, line + strlen(detail_prefix));
		after_first_error = first_error == NULL && strncmp(line, prefix, strlen(prefix)) == 0;
		if (after_first_error)
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

/* Seconds a connection may take to be accepted: the conninfo's connect_timeout, or tenant_backup.connect_timeout. */
static int
tb_connect_timeout(const char *conninfo)
{
	PQconninfoOption *opts = PQconninfoParse(conninfo, NULL);
	int seconds = tb_connect_timeout_s;

	for (PQconninfoOption *o = opts; opts && o->keyword; o++)
		if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && atoi(o->val) > 0)
			seconds = Max(atoi(o->val), 2); /* libpq's own minimum */
	if (opts)
		PQconninfoFree(opts);
	return seconds;
}

/* Where conn goes, for pg_stat_activity: its database and host:port, never a password (the conninfo holds none). */
static char *
tb_connect_target(PGconn *conn)
{
	const char *host = PQhost(conn);

	return psprintf("database \"%s\" at %s:%s", PQdb(conn), host && host[0] ? host : "(default)", PQport(conn));
}

/*
 * Drives PQconnectPoll from the latch until conn (started with conninfo) is up, fails
 * or its connect timeout passes, answering interrupts all along (pg_terminate_backend
 * ends us at once) and keeping job's lease (a connect timeout longer than the lease
 * does not make the launcher give the job to another worker meanwhile). NULL, or why
 * it did not connect.
 */
static char *
tb_connect_poll(tb_job *job, PGconn *conn, const char *conninfo)
{
	int timeout = tb_connect_timeout(conninfo);
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) timeout * 1000);
	PostgresPollingStatusType status = PGRES_POLLING_WRITING;

	while (PQstatus(conn) != CONNECTION_BAD && status != PGRES_POLLING_OK && status != PGRES_POLLING_FAILED)
	{
		long left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		int socket_event = status == PGRES_POLLING_READING ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;
		int rc;

		char *overdue;

		if (left <= 0)
			return psprintf("the server did not complete the connection within %d s (connect_timeout)", timeout);
		if (PQsocket(conn) < 0)
			break;
		rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | socket_event, PQsocket(conn),
							   Min(left, TB_CONNECT_WAIT_MS), PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (!tb_job_progress(job, job->bytes_done, false))
			return pstrdup(TB_LEASE_LOST);
		if ((overdue = tb_job_overdue(job)) != NULL)
			return overdue;
		if (rc & socket_event)
			status = PQconnectPoll(conn);
	}
	return PQstatus(conn) == CONNECTION_OK ? NULL : psprintf("%s", pchomp(PQerrorMessage(conn)));
}

/*
 * The job's first connection to a conninfo source pins the address it reached; any
 * later one must reach the same. Then, for a source added by a non-superuser, the
 * server must have asked for the password on this very connection: with trust or
 * peer authentication we would act with this server's own identity (dblink's rule).
 */
static char *
tb_connect_trust(tb_job *job, PGconn *conn)
{
	const char *hostaddr = PQhostaddr(conn) ? PQhostaddr(conn) : "";

	if (!tb_is_conninfo(job->locator))
		return NULL;
	if (job->pinned_host == NULL)
	{
		job->pinned_host = MemoryContextStrdup(TopMemoryContext, PQhost(conn) ? PQhost(conn) : "");
		job->pinned_port = MemoryContextStrdup(TopMemoryContext, PQport(conn) ? PQport(conn) : "");
		job->pinned_hostaddr = MemoryContextStrdup(TopMemoryContext, hostaddr);
	}
	else if (strcmp(job->pinned_hostaddr, hostaddr) != 0)
		return psprintf("a connection for tenant \"%s\" reached another address than the job's first one", job->tenant);
	if (job->must_use_password && !PQconnectionUsedPassword(conn))
		return psprintf("the server of tenant \"%s\" did not ask for the password: a database added by a "
						"non-superuser must authenticate with its password",
						job->tenant);
	return NULL;
}

PGconn *
tb_tenant_connect(tb_job *job, const char *conninfo, char **failure)
{
	/* conninfo is expanded from dbname; nothing that follows it may override it. */
	const char *keywords[] = {"dbname", NULL};
	const char *values[] = {conninfo, NULL};
	PGconn *volatile conn = PQconnectStartParams(keywords, values, true);

	if (conn == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	pgstat_report_activity(STATE_RUNNING, psprintf("tenant_backup: connecting to %s for the %s of tenant \"%s\"",
												   tb_connect_target(conn), job->kind, job->tenant));
	PG_TRY();
	{
		*failure = tb_connect_poll(job, conn, conninfo);
	}
	PG_CATCH();
	{
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (*failure == NULL)
		*failure = tb_connect_trust(job, conn);
	if (*failure == NULL)
		*failure = tb_admin_exec(conn, "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)");
	pgstat_report_activity(STATE_RUNNING, psprintf("tenant_backup: %s of tenant \"%s\"", job->kind, job->tenant));
	return conn;
}
