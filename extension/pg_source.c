/*
 * Where a PostgreSQL tenant's database is and how we log in to it: the conninfo the
 * tools get (no password in it: that goes through a 0600 PGPASSFILE), and the rule that
 * a source added by a non-superuser authenticates with its own password.
 */
#include "tenant_backup.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "utils/builtins.h"

#include "pg_engine.h"

/* A conninfo locator (key=value or URI) names another server; otherwise it is a database here. */
bool
tb_is_conninfo(const char *locator)
{
	return strchr(locator, '=') != NULL || strncmp(locator, "postgres://", 11) == 0 ||
		   strncmp(locator, "postgresql://", 13) == 0;
}

/* What a locator added by a non-superuser may say: where its one server is and how to log in there. */
static const char *const tb_locator_keywords[] = {"host",
												  "port",
												  "dbname",
												  "user",
												  "password",
												  "sslmode",
												  "connect_timeout",
												  "application_name",
												  "keepalives",
												  "keepalives_idle",
												  "keepalives_interval",
												  "keepalives_count",
												  NULL};

/*
 * NULL, or why a conninfo added by a non-superuser may not be used: a keyword off the
 * allow-list (service, passfile, hostaddr, ssl key and certificate files, options,
 * target_session_attrs...), no host, a host list or socket directory, a port list.
 * libpq would otherwise fall through to another server, or read our files. The reason
 * names a keyword, never a value.
 */
static char *
tb_locator_refusal(const char *locator)
{
	PQconninfoOption *opts = PQconninfoParse(locator, NULL);
	const char *host = NULL;
	char *refusal = NULL;

	if (opts == NULL)
		return pstrdup("it is not a valid conninfo or URI");
	for (PQconninfoOption *o = opts; o->keyword && refusal == NULL; o++)
	{
		bool allowed = false;

		if (o->val == NULL)
			continue;
		for (const char *const *k = tb_locator_keywords; *k && !allowed; k++)
			allowed = strcmp(*k, o->keyword) == 0;
		if (!allowed)
			refusal = psprintf("the keyword \"%s\" is not allowed", o->keyword);
		else if (strcmp(o->keyword, "host") == 0)
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0 &&
				 (o->val[0] == '\0' || strlen(o->val) > 5 || strspn(o->val, "0123456789") != strlen(o->val)))
			refusal = pstrdup("its port must be one number");
		else if (strcmp(o->keyword, "dbname") == 0 && tb_is_conninfo(o->val))
			refusal = pstrdup("its dbname must be a database name, not another conninfo");
	}
	if (refusal == NULL && (host == NULL || host[0] == '\0'))
		refusal = pstrdup("it names no host");
	else if (refusal == NULL && (host[0] == '/' || host[0] == '@' || strpbrk(host, ", \t\\'") != NULL))
		refusal = pstrdup("its host must be one host name or IP address, not a list or a socket directory");
	PQconninfoFree(opts);
	return refusal;
}

/* Raises unless tb_locator_refusal finds nothing to refuse in the locator of tenant. */
static void
tb_locator_check(const char *tenant, const char *locator)
{
	char *refusal = tb_locator_refusal(locator);

	if (refusal != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the conninfo of tenant \"%s\" is refused: %s", tenant, refusal),
				 errhint("A database added by a non-superuser names one host (a name or an IP address) and port, "
						 "with only dbname, user, password, sslmode, connect_timeout, application_name and "
						 "keepalives settings; a superuser can add any other.")));
}

PG_FUNCTION_INFO_V1(tenant_backup_pg_locator_check);

/* _pg_locator_check(tenant, locator): tb_locator_check at tenant_add_database time. */
Datum
tenant_backup_pg_locator_check(PG_FUNCTION_ARGS)
{
	char *locator = text_to_cstring(PG_GETARG_TEXT_PP(1));

	tb_locator_check(text_to_cstring(PG_GETARG_TEXT_PP(0)), locator);
	explicit_bzero(locator, strlen(locator));
	PG_RETURN_VOID();
}

/*
 * locator with its database replaced by dbname (NULL: as it is), as a conninfo string:
 * once the job's first connection pinned its server, to that host, port and address
 * only; with a connect_timeout, so that a child tool gives up on a server that never
 * answers.
 */
char *
tb_source_conninfo(const tb_job *job, const char *dbname)
{
	PQconninfoOption *opts;
	char *parse_error = NULL;
	bool has_timeout = false;
	StringInfoData buf;

	if (!tb_is_conninfo(job->locator))
		return tb_local_conninfo(dbname ? dbname : job->locator);
	/* Checked again for every connection: the catalog row may predate the rule. */
	if (job->must_use_password)
		tb_locator_check(job->tenant, job->locator);
	opts = PQconninfoParse(job->locator, &parse_error);
	if (opts == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid conninfo for tenant \"%s\": %s", job->tenant, parse_error ? parse_error : "")));
	initStringInfo(&buf);
	for (PQconninfoOption *o = opts; o->keyword; o++)
	{
		const char *value = strcmp(o->keyword, "dbname") == 0 && dbname ? dbname : o->val;
		bool pinned = job->pinned_host != NULL && (strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "port") == 0 ||
												   strcmp(o->keyword, "hostaddr") == 0);

		if (value == NULL || pinned || strcmp(o->keyword, "password") == 0)
			continue;
		has_timeout |= strcmp(o->keyword, "connect_timeout") == 0;
		tb_conninfo_append(&buf, o->keyword, value);
	}
	PQconninfoFree(opts);
	if (job->pinned_host != NULL)
	{
		tb_conninfo_append(&buf, "host", job->pinned_host);
		tb_conninfo_append(&buf, "port", job->pinned_port);
		if (job->pinned_hostaddr[0] != '\0')
			tb_conninfo_append(&buf, "hostaddr", job->pinned_hostaddr);
	}
	if (!has_timeout)
		tb_conninfo_append(&buf, "connect_timeout", psprintf("%d", tb_connect_timeout_s));
	return buf.data;
}

/*
 * Claims for the job's source the identity of database dbname on conn's server
 * (<system identifier>/<database oid>), as the server says, not as the locator names
 * it: another tenant's source that is the same database, or shares a dedicated
 * tenant's cluster, makes _source_identity_claim raise. Nothing is claimed when dbname
 * does not exist there. NULL, or why the identity could not be read.
 */
char *
tb_source_identity_claim(const tb_job *job, PGconn *conn, const char *dbname)
{
	PGresult *res = tb_admin_query(conn, psprintf("SELECT c.system_identifier::text, d.oid::text"
												  " FROM pg_catalog.pg_control_system() c, pg_catalog.pg_database d"
												  " WHERE d.datname OPERATOR(pg_catalog.=) %s",
												  quote_literal_cstr(dbname)));
	char source_id[32];
	const char *args[2] = {source_id, NULL};
	char *failure = NULL;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		failure = psprintf("could not read the identity of database \"%s\" of tenant \"%s\": %s", dbname, job->tenant,
						   pchomp(PQerrorMessage(conn)));
	else if (PQntuples(res) == 1)
	{
		snprintf(source_id, sizeof(source_id), INT64_FORMAT, job->source_id);
		args[1] = psprintf("%s/%s", PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
		tb_sql("SELECT tenant_backup._source_identity_claim($1::bigint, $2) IS NULL", 2, args);
	}
	PQclear(res);
	return failure;
}

/*
 * Opens a repeatable-read transaction on conn, the job's checked connection, and
 * exports its snapshot into *snapshot for pg_dump --snapshot: a snapshot id is valid
 * only on the server that exported it, while conn keeps its transaction open, so a
 * pg_dump connection that something routed to another server fails instead of
 * dumping it. NULL, or why not.
 */
char *
tb_source_snapshot_export(const tb_job *job, PGconn *conn, char **snapshot)
{
	char *id = tb_admin_value(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;"
									" SELECT pg_catalog.pg_export_snapshot()");

	/* The server's answer is untrusted: an id is hex digits and dashes. */
	if (id == NULL || id[0] == '\0' || strlen(id) > 64 || strspn(id, "0123456789ABCDEF-") != strlen(id))
		return psprintf("could not export a snapshot on the database of tenant \"%s\": %s", job->tenant,
						id == NULL ? pchomp(PQerrorMessage(conn)) : "the server answered no snapshot id");
	*snapshot = id;
	return NULL;
}

/*
 * A dedicated tenant's base backup copies its whole cluster: NULL when conn's cluster
 * holds no other tenant's database, otherwise why it is refused. Judged on the
 * cluster's system identifier against every other tenant's recorded identity, and
 * against databases of this cluster whose identity predates its recording.
 */
char *
tb_cluster_shared_refusal(const tb_job *job, PGconn *conn)
{
	char *system_id = tb_admin_value(conn, "SELECT system_identifier::text FROM pg_catalog.pg_control_system()");
	const char *args[2] = {job->tenant, system_id};
	char *other;

	if (system_id == NULL)
		return psprintf("could not read the system identifier of the cluster of dedicated tenant \"%s\": %s",
						job->tenant, pchomp(PQerrorMessage(conn)));
	other = tb_sql("SELECT o.tenant FROM tenant_backup.sources o"
				   " WHERE o.engine = 'postgres' AND o.tenant <> $1"
				   "   AND (split_part(o.identity, '/', 1) = $2"
				   "        OR (o.identity IS NULL AND o.locator !~ '=' AND o.locator !~ '^postgres(ql)?://'"
				   "            AND $2 = (SELECT system_identifier::text FROM pg_control_system())))"
				   " ORDER BY o.tenant LIMIT 1",
				   2, args);
	if (other == NULL)
		return NULL;
	return psprintf("the cluster of dedicated tenant \"%s\" (system identifier %s) also holds a database of tenant "
					"\"%s\": no base backup was taken; a dedicated tenant's cluster must hold no other tenant's "
					"database (remove it from the other tenant, or make this tenant shared)",
					job->tenant, system_id, other);
}

/* Bytes of name that fit with a "_tb_new_<job>" suffix in 63, not splitting a character. */
int
tb_clip(const char *name)
{
	return pg_mbcliplen(name, strlen(name), 40);
}

/* The database a job's locator names. */
char *
tb_source_dbname(const tb_job *job)
{
	PQconninfoOption *opts;
	char *dbname = NULL;

	if (!tb_is_conninfo(job->locator))
		return pstrdup(job->locator);
	opts = PQconninfoParse(job->locator, NULL);
	for (PQconninfoOption *o = opts; opts && o->keyword; o++)
		if (strcmp(o->keyword, "dbname") == 0 && o->val)
			dbname = pstrdup(o->val);
	if (opts)
		PQconninfoFree(opts);
	if (dbname == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("the conninfo of tenant \"%s\" names no database", job->tenant)));
	return dbname;
}

/* The password file of this process, if there is one: removed at exit, FATAL included. */
static char tb_passfile_path[MAXPGPATH];

static void
tb_passfile_cleanup(int code, Datum arg)
{
	(void) code;
	(void) arg;
	if (tb_passfile_path[0] != '\0')
		unlink(tb_passfile_path);
	tb_passfile_path[0] = '\0';
}

/* Appends a password file line for user (NULL: any) with password, escaped as libpq reads it. */
static void
tb_passfile_line(StringInfo lines, const char *user, const char *password)
{
	appendStringInfoString(lines, "*:*:*:");
	for (const char *c = user ? user : "*"; *c; c++)
	{
		if (user != NULL && (*c == ':' || *c == '\\'))
			appendStringInfoChar(lines, '\\');
		appendStringInfoChar(lines, *c);
	}
	appendStringInfoChar(lines, ':');
	for (const char *c = password; *c; c++)
	{
		if (*c == ':' || *c == '\\')
			appendStringInfoChar(lines, '\\');
		appendStringInfoChar(lines, *c);
	}
	appendStringInfoChar(lines, '\n');
}

/*
 * Writes the source's password, if it has one, to a 0600 password file for libpq and
 * the PostgreSQL tools, and points PGPASSFILE at it. The file lives among
 * PostgreSQL's temporary files (removed at restart) and is removed when the job ends
 * or the process exits, whatever the way. Call it after anything else that can fail.
 */
void
tb_passfile_create(const tb_job *job)
{
	tb_passfile_create_with_login(job, NULL, NULL);
}

void
tb_passfile_create_with_login(const tb_job *job, const char *login, const char *login_password)
{
	static bool cleanup_registered = false;
	master_key master;
	tb_error err = {0};
	char *password = NULL;
	StringInfoData line;
	int fd, rc;

	unsetenv("PGPASSFILE");
	if (job->sealed_password == NULL && login == NULL)
		return;
	if (!cleanup_registered)
	{
		on_proc_exit(tb_passfile_cleanup, (Datum) 0);
		cleanup_registered = true;
	}
	initStringInfo(&line);
	/* The first matching line wins: the login's own before the source's catch-all. */
	if (login != NULL)
		tb_passfile_line(&line, login, login_password);
	if (job->sealed_password != NULL)
	{
		tb_master_key(&master);
		rc = keys_secret_open(&master, "source password", job->sealed_password, &password, &err);
		keys_master_wipe(&master);
		if (rc != 0)
		{
			explicit_bzero(line.data, line.len);
			tb_raise(&err, psprintf("could not open the password of tenant \"%s\"", job->tenant));
		}
		tb_passfile_line(&line, NULL, password);
		explicit_bzero(password, strlen(password));
		free(password);
	}

	(void) MakePGDirectory("base/" PG_TEMP_FILES_DIR);
	snprintf(tb_passfile_path, sizeof(tb_passfile_path), "%s/base/%s/%s_tenant_backup_XXXXXX", DataDir,
			 PG_TEMP_FILES_DIR, PG_TEMP_FILE_PREFIX);
	fd = mkstemp(tb_passfile_path);
	rc = fd >= 0 && write(fd, line.data, line.len) == line.len ? 0 : -1;
	explicit_bzero(line.data, line.len);
	if (fd >= 0)
		close(fd);
	if (rc != 0)
	{
		int saved = errno;

		tb_passfile_cleanup(0, (Datum) 0);
		errno = saved;
		ereport(ERROR, (errcode_for_file_access(),
						errmsg("could not write a password file for tenant \"%s\": %m", job->tenant)));
	}
	setenv("PGPASSFILE", tb_passfile_path, 1);
}

void
tb_passfile_remove(void)
{
	tb_passfile_cleanup(0, (Datum) 0);
	unsetenv("PGPASSFILE");
}
