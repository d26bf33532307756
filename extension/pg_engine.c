/*
 * PostgreSQL tenants: a backup is pg_dump's custom format streamed through core/
 * into storage; a restore loads a backup with pg_restore into a fresh database and,
 * in place, swaps it with the live one only once it loaded completely.
 * No secret reaches a command line: passwords go through a 0600 PGPASSFILE.
 */
#include "tenant_backup.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/string.h"
#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"

#include "child.h"
#include "job.h"
#include "repo.h"
#include "tar_count.h"

#define TB_PIPE_BUFFER (1024 * 1024)
#define TB_SWAP_WAIT_SECONDS 30
#define TB_LEASE_LOST "the job's lease was lost to another worker"

/* A conninfo locator (key=value or URI) names another server; otherwise it is a database here. */
static bool
tb_is_conninfo(const char *locator)
{
	return strchr(locator, '=') != NULL || strncmp(locator, "postgres://", 11) == 0 ||
		   strncmp(locator, "postgresql://", 13) == 0;
}

/* locator with its database replaced by dbname (NULL: as it is), as a conninfo string. */
static char *
tb_source_conninfo(const tb_job *job, const char *dbname)
{
	PQconninfoOption *opts;
	char *parse_error = NULL;
	StringInfoData buf;

	if (!tb_is_conninfo(job->locator))
		return tb_local_conninfo(dbname ? dbname : job->locator);
	opts = PQconninfoParse(job->locator, &parse_error);
	if (opts == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid conninfo for tenant \"%s\": %s", job->tenant, parse_error ? parse_error : "")));
	initStringInfo(&buf);
	for (PQconninfoOption *o = opts; o->keyword; o++)
	{
		const char *value = strcmp(o->keyword, "dbname") == 0 && dbname ? dbname : o->val;

		if (value == NULL || strcmp(o->keyword, "password") == 0)
			continue;
		appendStringInfo(&buf, "%s='", o->keyword);
		for (const char *c = value; *c; c++)
		{
			if (*c == '\'' || *c == '\\')
				appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *c);
		}
		appendStringInfoString(&buf, "' ");
	}
	PQconninfoFree(opts);
	return buf.data;
}

/* Bytes of name that fit with a "_tb_new_<job>" suffix in 63, not splitting a character. */
static int
tb_clip(const char *name)
{
	return pg_mbcliplen(name, strlen(name), 40);
}

/* The database a job's locator names. */
static pg_noinline char *
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

/*
 * Writes the source's password, if it has one, to a 0600 password file for libpq and
 * the PostgreSQL tools, and points PGPASSFILE at it. The file lives among
 * PostgreSQL's temporary files (removed at restart) and is removed when the job ends
 * or the process exits, whatever the way. Call it after anything else that can fail.
 */
static void
tb_passfile_create(const tb_job *job)
{
	static bool cleanup_registered = false;
	master_key master;
	tb_error err = {0};
	char *password = NULL;
	StringInfoData line;
	int fd, rc;

	unsetenv("PGPASSFILE");
	if (job->sealed_password == NULL)
		return;
	if (!cleanup_registered)
	{
		on_proc_exit(tb_passfile_cleanup, (Datum) 0);
		cleanup_registered = true;
	}
	tb_master_key(&master);
	rc = keys_secret_open(&master, "source password", job->sealed_password, &password, &err);
	keys_master_wipe(&master);
	if (rc != 0)
		tb_raise(&err, psprintf("could not open the password of tenant \"%s\"", job->tenant));
	initStringInfo(&line);
	appendStringInfoString(&line, "*:*:*:*:");
	for (const char *c = password; *c; c++)
	{
		if (*c == ':' || *c == '\\')
			appendStringInfoChar(&line, '\\');
		appendStringInfoChar(&line, *c);
	}
	appendStringInfoChar(&line, '\n');
	explicit_bzero(password, strlen(password));
	free(password);

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

static void
tb_passfile_remove(void)
{
	tb_passfile_cleanup(0, (Datum) 0);
	unsetenv("PGPASSFILE");
}

/*
 * For a conninfo source added by a non-superuser, the server must ask for the
 * password: with trust or peer authentication the tools would act with this
 * server's own identity (dblink's rule). NULL, or why not. Call after the password
 * file is in place.
 */
static char *
tb_check_password_used(const tb_job *job, const char *conninfo)
{
	PGconn *conn;
	char *failure = NULL;

	if (!job->must_use_password || !tb_is_conninfo(job->locator))
		return NULL;
	conn = PQconnectdb(conninfo);
	if (PQstatus(conn) != CONNECTION_OK)
		failure = psprintf("could not connect for tenant \"%s\": %s", job->tenant, pchomp(PQerrorMessage(conn)));
	else if (!PQconnectionUsedPassword(conn))
		failure = psprintf("the server of tenant \"%s\" did not ask for the password: a database added by a "
						   "non-superuser must authenticate with its password",
						   job->tenant);
	PQfinish(conn);
	return failure;
}

/* 'value' quoted for /bin/sh. */
static char *
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

static char *
tb_tool_command(const char *tool, const char *options, const char *conninfo)
{
	return psprintf("exec %s %s --dbname=%s", tb_shell_quote(psprintf("%s/%s", tb_pg_bin_dir(), tool)), options,
					tb_shell_quote(conninfo));
}

static char *
tb_exit_reason(const char *tool, int status)
{
	return psprintf("%s %s (its messages are in the server log)", tool,
					status < 0 ? "could not be run" : wait_result_to_str(status));
}

/*
 * Ends a tool's run: after a failure of ours it is killed and that failure stands;
 * otherwise we wait for it (keeping the lease) and its exit status or a lost lease
 * becomes the failure. NULL when all went well.
 */
static char *
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

/* The master key, and the tenant's own key command for keys wrapped by it. */
static void
tb_job_master_key(tb_job *job, master_key *out)
{
	tb_master_key(out);
	out->key_command = job->key_command;
}

/* Loads the tenant's active key from the catalog, unwrapped with the master key or the tenant's command. */
static void
tb_active_tenant_key(tb_job *job, tenant_key *out)
{
	const char *tenant = job->tenant;
	const char *args[1] = {tenant};
	char *doc = tb_sql("SELECT wrapped::text FROM tenant_backup.key_store WHERE tenant = $1 AND state = 'active'"
					   " ORDER BY created DESC, key_id DESC LIMIT 1",
					   1, args);
	master_key master;
	tb_error err = {0};
	int rc;

	if (doc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE), errmsg("tenant \"%s\" has no active key", tenant)));
	tb_job_master_key(job, &master);
	rc = keys_tenant_unwrap(&master, doc, tenant, NULL, out, &err);
	keys_master_wipe(&master);
	if (rc != 0)
		tb_raise(&err, psprintf("could not unwrap the key of tenant \"%s\"", tenant));
}

/*
 * Runs sql on an admin connection and returns its last result (the caller clears it).
 * Asynchronous on purpose: DROP DATABASE on our own cluster waits for every backend,
 * this worker included, to absorb a ProcSignalBarrier, so we must keep answering
 * interrupts while we wait for it.
 */
static PGresult *
tb_admin_run(PGconn *conn, const char *sql)
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
static char *
tb_admin_exec(PGconn *conn, const char *sql)
{
	PGresult *res = tb_admin_run(conn, sql);
	char *failure = NULL;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		failure = psprintf("%s", pchomp(PQerrorMessage(conn)));
	PQclear(res);
	return failure;
}

/* The first column of the first row of sql, or NULL. */
static char *
tb_admin_value(PGconn *conn, const char *sql)
{
	PGresult *res = tb_admin_run(conn, sql);
	char *value = NULL;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
		value = pstrdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return value;
}

/*
 * Rows of every table pg_dump dumps the data of (the tenant's own tables, not those
 * of extensions), counted in one statement: {"tables": {"schema.table": rows}}.
 */
#define TB_COUNT_ROWS                                                                                                  \
	"SELECT jsonb_build_object('tables', coalesce(jsonb_object_agg(n.nspname || '.' || c.relname,"                     \
	" (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I', n.nspname, c.relname),"      \
	" false, true, '')))[1]::text::bigint), '{}'))"                                                                    \
	" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"                                                   \
	" WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"                             \
	" AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"            \
	" AND d.deptype = 'e')"

/*
 * Streams pg_dump's output into put, counting it in job->bytes_done; returns NULL or
 * why it failed. put is left for the caller.
 */
static char *
tb_pg_dump_into(tb_job *job, tb_child *dump, repo_put *put, tar_count *files)
{
	char *buf = palloc(TB_PIPE_BUFFER);
	tb_error err = {0};
	ssize_t n;

	while ((n = tb_child_read(dump, job, buf, TB_PIPE_BUFFER)) > 0)
	{
		if (repo_put_write(put, buf, n, &err) != 0)
			return psprintf("could not store the backup: %s", err.msg);
		if (files != NULL)
			tar_count_feed(files, buf, n);
		job->bytes_done += n;
		if (!tb_job_progress(job, job->bytes_done, false))
			return pstrdup(TB_LEASE_LOST);
		CHECK_FOR_INTERRUPTS();
	}
	if (n < 0)
		return dump->lease_lost ? pstrdup(TB_LEASE_LOST) : psprintf("could not read pg_dump's output: %m");
	return NULL;
}

/*
 * A dedicated tenant owns its whole cluster: its backup is a base backup (tar of the
 * data directory, WAL from the archive), the start of point-in-time recovery.
 */
static bool
tb_tenant_dedicated(const char *tenant)
{
	const char *args[1] = {tenant};
	char *tier = tb_sql("SELECT tier FROM tenant_backup.tenants WHERE name = $1", 1, args);

	return tier != NULL && strcmp(tier, "dedicated") == 0;
}

/*
 * The WAL range of a base backup, from pg_basebackup -v's messages ("write-ahead log
 * start point: 0/2000028 on timeline 1", "... end point: 0/2000100"), as JSON members.
 * Every message goes to the server log too.
 */
static char *
tb_base_backup_range(const char *messages_file)
{
	FILE *f = AllocateFile(messages_file, "r");
	char line[1024], start[32] = "", stop[32] = "";
	int timeline = 0;

	if (f == NULL)
		return pstrdup("");
	while (fgets(line, sizeof(line), f) != NULL)
	{
		char *p;

		pg_strip_crlf(line);
		ereport(LOG, (errmsg("tenant_backup: %s", line)));
		if ((p = strstr(line, "write-ahead log start point: ")) != NULL)
			sscanf(p, "write-ahead log start point: %31s on timeline %d", start, &timeline);
		else if ((p = strstr(line, "write-ahead log end point: ")) != NULL)
			sscanf(p, "write-ahead log end point: %31s", stop);
	}
	FreeFile(f);
	unlink(messages_file);
	if (start[0] == '\0' || stop[0] == '\0' || timeline == 0)
		return pstrdup("");
	return psprintf(", \"start_lsn\": \"%s\", \"stop_lsn\": \"%s\", \"timeline\": %d", start, stop, timeline);
}

/*
 * WAL older than what the oldest complete base backup needs serves no recovery: it
 * goes, once this backup (whose range is in range) is recorded as one of them.
 */
static void
tb_base_backup_retire_wal(tb_job *job, const char *range)
{
	const char *args[1] = {job->tenant};
	char *keep, *start = pstrdup(strstr(range, "\"start_lsn\": \"") + 14);
	int timeline = atoi(strstr(range, "\"timeline\": ") + 12), removed;

	*strchr(start, '"') = '\0';
	/* The oldest base backup still kept: complete ones in the catalog, or this one. */
	keep =
		tb_sql(psprintf("SELECT upper(lpad(to_hex(tl), 8, '0') || lpad(to_hex(seg / per_log), 8, '0')"
						" || lpad(to_hex(seg %% per_log), 8, '0'))"
						" FROM (SELECT tl, ((lsn - '0/0'::pg_lsn) / size)::bigint AS seg,"
						"              (4294967296 / size)::bigint AS per_log"
						"       FROM (SELECT coalesce(b.timeline, %d) AS tl, coalesce(b.start_lsn, '%s') AS lsn"
						"             FROM (SELECT 1) one LEFT JOIN LATERAL"
						"             (SELECT timeline, start_lsn FROM tenant_backup.backups"
						"              WHERE tenant = $1 AND status = 'complete' AND start_lsn IS NOT NULL"
						"              ORDER BY start_lsn LIMIT 1) b ON true) o,"
						"       (SELECT setting::bigint AS size FROM pg_settings WHERE name = 'wal_segment_size') s) x",
						timeline, start),
			   1, args);
	removed = tb_wal_cleanup(job->tenant, keep);
	/* Recovery can start from this backup: a gap before it no longer stands in the way. */
	if (unlink(psprintf("%s/%s", DataDir, TB_WAL_GAP_FILE)) == 0)
		ereport(LOG, (errmsg("tenant_backup: the base backup of tenant \"%s\" starts after the WAL gap reported before",
							 job->tenant)));
	if (removed > 0)
	{
		const char *audit[2] = {job->tenant,
								psprintf("{\"removed_objects\": %d, \"kept_from\": \"%s\"}", removed, keep)};

		tb_sql("SELECT tenant_backup._audit('archived WAL removed', $1, $2::jsonb) IS NULL", 2, audit);
		ereport(LOG, (errmsg("tenant_backup: removed %d archived WAL objects of tenant \"%s\" older than %s, which "
							 "no base backup needs",
							 removed, job->tenant, keep)));
	}
}

char *
tb_pg_backup(tb_job *job)
{
	/*
	 * Two sealing threads overlap compression and encryption with pg_dump. They are
	 * safe in a backend: they never call into PostgreSQL, and core starts them with
	 * every signal blocked, so the backend's handlers run on its own thread only.
	 */
	repo_put_options options = {.stream = {.workers = 2, .level = tb_compression_level}};
	char job_id[32], source_id[32];
	tenant_key key;
	tb_error err = {0};
	storage *st;
	repo_put *put;
	manifest m;
	char *backup_id, *conninfo, *command = NULL, *failure = NULL, *range;
	char *volatile messages = NULL;
	bool base = tb_tenant_dedicated(job->tenant);
	const char *tool = base ? "pg_basebackup" : "pg_dump";
	tb_child dump;
	tar_count files;
	PGconn *snapshot = NULL;
	char *contents = NULL;

	snprintf(job_id, sizeof(job_id), INT64_FORMAT, job->id);
	snprintf(source_id, sizeof(source_id), INT64_FORMAT, job->source_id);
	{
		const char *args[3] = {job->tenant, source_id, job_id};

		backup_id = tb_sql("INSERT INTO tenant_backup.backups (tenant, engine, source_id, job_id, status)"
						   " VALUES ($1, 'postgres', $2::bigint, $3::bigint, 'running') RETURNING id",
						   3, args);
	}
	if (base)
	{
		char stamp[32];
		time_t now = time(NULL);

		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H%M%SZ", gmtime(&now));
		options.object_name = psprintf("base/%s-%s.tbk", stamp, backup_id);
	}
	tb_active_tenant_key(job, &key);
	st = tb_storage();
	put = repo_put_begin(st, &key, "postgres", &options, &err);
	keys_tenant_wipe(&key);
	if (put == NULL)
	{
		storage_close(st);
		tb_raise(&err, psprintf("could not start the backup of tenant \"%s\"", job->tenant));
	}

	conninfo = tb_source_conninfo(job, NULL);
	if (base)
	{
		/* The WAL the backup needs goes into its tar too (self-contained); -v says its range, kept aside in a file. */
		messages = psprintf("%s/pg_stat_tmp/tenant_backup_base_%s.log", DataDir, job_id);
		command = psprintf("%s 2>%s",
						   tb_tool_command("pg_basebackup",
										   "--format=tar --pgdata=- --wal-method=fetch --checkpoint=fast "
										   "--no-manifest --verbose --no-password",
										   conninfo),
						   tb_shell_quote(messages));
	}
	tb_passfile_create(job);
	failure = tb_check_password_used(job, conninfo);
	tar_count_init(&files);
	if (!base && failure == NULL)
	{
		/* pg_dump runs in a snapshot we hold, so that its rows can be counted as it saw them. */
		char *name = NULL;

		snapshot = PQconnectdb(conninfo);
		if (PQstatus(snapshot) != CONNECTION_OK ||
			tb_admin_exec(snapshot, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") != NULL ||
			(name = tb_admin_value(snapshot, "SELECT pg_export_snapshot()")) == NULL)
			failure =
				psprintf("could not take a snapshot of the tenant's database: %s", pchomp(PQerrorMessage(snapshot)));
		else
			command = tb_tool_command(
				"pg_dump", psprintf("--format=custom --compress=0 --no-password --snapshot=%s", name), conninfo);
	}
	if (failure == NULL && !tb_child_start(&dump, command, true))
		failure = psprintf("could not run %s: %m", tool);
	else if (failure == NULL)
	{
		/* Best effort: a pipe as large as a chunk lets pg_dump run on while we seal one. */
		(void) fcntl(dump.fd, F_SETPIPE_SZ, TB_PIPE_BUFFER);
		PG_TRY();
		{
			failure = tb_pg_dump_into(job, &dump, put, base ? &files : NULL);
		}
		PG_CATCH();
		{
			tb_child_kill(&dump);
			PQfinish(snapshot);
			tb_passfile_remove();
			repo_put_abort(put);
			storage_close(st);
			PG_RE_THROW();
		}
		PG_END_TRY();
		failure = tb_tool_end(&dump, job, tool, failure);
	}
	if (failure == NULL && snapshot != NULL && (contents = tb_admin_value(snapshot, TB_COUNT_ROWS)) == NULL)
		failure = psprintf("could not count the rows pg_dump saw: %s", pchomp(PQerrorMessage(snapshot)));
	else if (failure == NULL && base && files.broken)
		failure = pstrdup("pg_basebackup's output is not a tar stream");
	else if (failure == NULL && base)
		contents = psprintf("{\"files\": " UINT64_FORMAT ", \"bytes\": " UINT64_FORMAT "}", (uint64) files.files,
							(uint64) files.bytes);
	PQfinish(snapshot);
	tb_passfile_remove();
	range = messages ? tb_base_backup_range(messages) : "";
	if (failure == NULL && base && range[0] == '\0')
		failure = pstrdup("pg_basebackup did not say which WAL its backup needs");
	if (failure != NULL)
	{
		repo_put_abort(put);
		storage_close(st);
		return failure;
	}
	if (repo_put_commit(put, &m, &err) != 0)
	{
		storage_close(st);
		return psprintf("could not store the backup: %s", err.msg);
	}
	storage_close(st);

	job->result =
		psprintf("{\"object\": \"%s\", \"bytes_in\": " UINT64_FORMAT ", \"bytes_stored\": " UINT64_FORMAT
				 ", \"sha256\": \"%s\", \"key_id\": \"%s\", \"contents\": %s%s}",
				 m.object, (uint64) m.plain_bytes, (uint64) m.stored_bytes, m.sha256, m.key_id, contents, range);
	tb_job_progress(job, job->bytes_done, true);
	if (base)
		tb_base_backup_retire_wal(job, range);
	ereport(LOG, (errmsg("tenant_backup: backup %s of tenant \"%s\" (postgres) stored as %s: " UINT64_FORMAT
						 " bytes, " UINT64_FORMAT " stored",
						 backup_id, job->tenant, m.object, (uint64) m.plain_bytes, (uint64) m.stored_bytes)));
	return NULL;
}

/*
 * Creates fresh like live: same owner, encoding, collation, ctype and connection
 * limit, closed to PUBLIC while it loads (the live one's grants follow at the swap).
 * A target with no live database to copy is created with the defaults.
 */
static char *
tb_pg_create_like(PGconn *conn, const char *live, const char *fresh)
{
	char *like = tb_admin_value(
		conn, psprintf("SELECT format(' OWNER %%I ENCODING %%L LC_COLLATE %%L LC_CTYPE %%L CONNECTION LIMIT %%s',"
					   " pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype, datconnlimit)"
					   " FROM pg_database WHERE datname = %s",
					   quote_literal_cstr(live)));
	char *failure = tb_admin_exec(
		conn, psprintf("CREATE DATABASE %s TEMPLATE template0%s", quote_identifier(fresh), like ? like : ""));

	if (failure == NULL)
		failure = tb_admin_exec(conn, psprintf("REVOKE ALL ON DATABASE %s FROM PUBLIC", quote_identifier(fresh)));
	return failure;
}

/* The live database's grants (and PUBLIC's), as statements for another database. */
static char *
tb_pg_grants_of(PGconn *conn, const char *live, const char *onto)
{
	return tb_admin_value(
		conn,
		psprintf("SELECT coalesce(string_agg(format('GRANT %%s ON DATABASE %%I TO %%s', a.privilege_type, %s,"
				 "   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END), '; '),"
				 "   '') || ';'"
				 " FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a"
				 " WHERE d.datname = %s",
				 quote_literal_cstr(onto), quote_literal_cstr(live)));
}

/* Streams the authenticated plaintext of reader into a tool (pg_restore, tar); NULL or why it failed. */
static char *
tb_pg_restore_from(tb_job *job, repo_reader *reader, tb_child *restore, const char *tool)
{
	char *buf = palloc(TB_PIPE_BUFFER);
	tb_error err = {0};
	ssize_t n;

	while ((n = repo_reader_read(reader, buf, TB_PIPE_BUFFER, &err)) > 0)
	{
		if (tb_child_write(restore, job, buf, n) != 0)
			return restore->lease_lost ? pstrdup(TB_LEASE_LOST) : psprintf("could not feed %s: %m", tool);
		job->bytes_done += n;
		CHECK_FOR_INTERRUPTS();
	}
	if (n < 0)
		return psprintf("the backup failed authentication, nothing live was changed: %s", err.msg);
	return NULL;
}

/* Renames fresh over live: connections to live are ended just for the swap; live is kept as old. */
static char *
tb_pg_swap(PGconn *conn, const char *live, const char *fresh, const char *old)
{
	const char *qlive = quote_identifier(live), *qfresh = quote_identifier(fresh), *qold = quote_identifier(old);
	char *failure;
	int waited = 0;

	char *grants = tb_pg_grants_of(conn, live, fresh);

	/* Who may connect comes over from the live database before anyone can. */
	failure = grants ? tb_admin_exec(conn, grants) : psprintf("could not read the grants of database \"%s\"", live);
	if (failure != NULL)
		return failure;

	/*
	 * From here on a cancel or a shutdown must not stop us half-way: the live database
	 * would be left refusing connections, or renamed away.
	 */
	HOLD_INTERRUPTS();
	failure = tb_admin_exec(conn, psprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS false", qlive));
	while (failure == NULL)
	{
		char *left = tb_admin_value(conn, psprintf("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
												   "WHERE datname = %s AND pid <> pg_backend_pid()",
												   quote_literal_cstr(live)));

		if (left != NULL && strcmp(left, "0") == 0)
			break;
		if (++waited > TB_SWAP_WAIT_SECONDS * 10)
			failure = psprintf("sessions of database \"%s\" did not end", live);
		pg_usleep(100 * 1000L);
	}
	if (failure == NULL)
		failure = tb_admin_exec(conn, psprintf("ALTER DATABASE %s RENAME TO %s", qlive, qold));
	if (failure == NULL && (failure = tb_admin_exec(conn, psprintf("ALTER DATABASE %s RENAME TO %s", qfresh, qlive))))
		tb_admin_exec(conn, psprintf("ALTER DATABASE %s RENAME TO %s", qold, qlive));
	tb_admin_exec(conn, psprintf("ALTER DATABASE %s WITH ALLOW_CONNECTIONS true", failure ? qlive : qold));
	RESUME_INTERRUPTS();
	return failure;
}

/* A drill's findings: the stored object's SHA-256 as read, and what it loaded. */
static char *
tb_drill_result(tb_job *job, repo_reader *reader, const char *contents)
{
	stream_stats stats;
	char sha[2 * CRYPTO_SHA256_LEN + 1];

	repo_reader_stats(reader, &stats);
	if (!stats.stored_sha256_known)
		return pstrdup("drill: the object's SHA-256 was not computed");
	crypto_hex_encode(stats.stored_sha256, CRYPTO_SHA256_LEN, sha);
	job->result = psprintf("{\"sha256\": \"%s\", \"contents\": %s}", sha, contents);
	return NULL;
}

/* Counts the rows the drill loaded into its scratch database, as the backup counted them. */
static char *
tb_pg_drill_check(tb_job *job, repo_reader *reader, const char *conninfo)
{
	PGconn *conn = PQconnectdb(conninfo);
	char *contents = PQstatus(conn) == CONNECTION_OK ? tb_admin_value(conn, TB_COUNT_ROWS) : NULL;
	char *failure = contents ? tb_drill_result(job, reader, contents)
							 : psprintf("drill: could not count the restored rows: %s", pchomp(PQerrorMessage(conn)));

	PQfinish(conn);
	return failure;
}

static uint64 tb_scratch_files;
static uint64 tb_scratch_bytes;

static int
tb_scratch_count(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	if (type == FTW_F && S_ISREG(sb->st_mode))
	{
		tb_scratch_files++;
		tb_scratch_bytes += sb->st_size;
	}
	return 0;
}

static int
tb_scratch_remove(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/*
 * A drill of a base backup: unpacked by tar into a scratch directory, its files and
 * bytes counted on disk against the tar the backup was made from, then removed.
 */
static char *
tb_pg_drill_base(tb_job *job, const char *object, const char *backup_id)
{
	stream_reader_options read_options = {.hash_stored = true};
	const char *tmp = getenv("TMPDIR");
	char *scratch = psprintf("%s/tenant_backup_drill_" INT64_FORMAT "_XXXXXX", tmp && tmp[0] ? tmp : "/tmp", job->id);
	char *failure = NULL;
	master_key master;
	tb_error err = {0};
	repo_reader *reader;
	storage *st;
	tb_child tar;

	if (mkdtemp(scratch) == NULL)
		return psprintf("drill: could not create a scratch directory: %m");
	tb_job_master_key(job, &master);
	st = tb_storage();
	reader = repo_reader_open(st, &master, object, &read_options, &err);
	keys_master_wipe(&master);
	if (reader == NULL)
		failure = psprintf("backup %s cannot be read: %s", backup_id, err.msg);
	else if (!tb_child_start(&tar, psprintf("exec tar -x -f - -C %s", tb_shell_quote(scratch)), false))
		failure = psprintf("could not run tar: %m");
	else
	{
		PG_TRY();
		{
			failure = tb_pg_restore_from(job, reader, &tar, "tar");
		}
		PG_CATCH();
		{
			tb_child_kill(&tar);
			nftw(scratch, tb_scratch_remove, 16, FTW_DEPTH | FTW_PHYS);
			repo_reader_close(reader);
			storage_close(st);
			PG_RE_THROW();
		}
		PG_END_TRY();
		failure = tb_tool_end(&tar, job, "tar", failure);
	}
	tb_scratch_files = tb_scratch_bytes = 0;
	if (failure == NULL && nftw(scratch, tb_scratch_count, 16, FTW_PHYS) != 0)
		failure = psprintf("drill: could not walk the scratch directory: %m");
	if (failure == NULL)
		failure = tb_drill_result(job, reader,
								  psprintf("{\"files\": " UINT64_FORMAT ", \"bytes\": " UINT64_FORMAT "}",
										   tb_scratch_files, tb_scratch_bytes));
	if (reader != NULL)
		repo_reader_close(reader);
	storage_close(st);
	if (nftw(scratch, tb_scratch_remove, 16, FTW_DEPTH | FTW_PHYS) != 0)
		ereport(WARNING, (errmsg("tenant_backup: could not remove drill scratch directory \"%s\": %m", scratch)));
	return failure;
}

char *
tb_pg_restore(tb_job *job)
{
	char backup_id[32];
	const char *args[1] = {backup_id};
	char *object, *live, *fresh, *admin_conninfo, *fresh_conninfo, *failure = NULL;
	stream_reader_options read_options = {.hash_stored = job->drill};
	master_key master;
	tb_error err = {0};
	repo_reader *reader;
	storage *st;
	PGconn *admin;
	tb_child restore;

	snprintf(backup_id, sizeof(backup_id), INT64_FORMAT, job->backup_id);
	object =
		tb_sql("SELECT object_key FROM tenant_backup.backups WHERE id = $1::bigint AND status = 'complete'", 1, args);
	if (object == NULL)
		return psprintf("backup %s is not a complete backup", backup_id);
	if (strstr(object, "/postgres/base/") != NULL && job->drill)
		return tb_pg_drill_base(job, object, backup_id);
	if (strstr(object, "/postgres/base/") != NULL)
		return psprintf("backup %s is a base backup of a dedicated cluster: restore it to a point in time with "
						"tenant-backup restore-pitr --tenant %s",
						backup_id, job->tenant);
	if (job->restore_target && strlen(job->restore_target) >= NAMEDATALEN)
		return psprintf("target database name \"%s\" is longer than %d bytes", job->restore_target, NAMEDATALEN - 1);
	live = tb_source_dbname(job);
	fresh = job->restore_target
				? pstrdup(job->restore_target)
				: psprintf("%.*s_tb_%s_" INT64_FORMAT, tb_clip(live), live, job->drill ? "drill" : "new", job->id);

	/* The header authenticates before anything is created. */
	tb_job_master_key(job, &master);
	st = tb_storage();
	reader = repo_reader_open(st, &master, object, &read_options, &err);
	keys_master_wipe(&master);
	if (reader == NULL)
	{
		storage_close(st);
		return psprintf("backup %s cannot be read, nothing live was changed: %s", backup_id, err.msg);
	}
	if (strcmp(repo_reader_header(reader)->tenant, job->tenant) != 0)
	{
		failure = psprintf("backup %s holds tenant \"%s\", not \"%s\"; nothing live was changed", backup_id,
						   repo_reader_header(reader)->tenant, job->tenant);
		repo_reader_close(reader);
		storage_close(st);
		return failure;
	}

	admin_conninfo = tb_source_conninfo(job, "postgres");
	fresh_conninfo = tb_source_conninfo(job, fresh);
	tb_passfile_create(job);
	failure = tb_check_password_used(job, admin_conninfo);
	admin = PQconnectdb(admin_conninfo);
	if (failure == NULL && PQstatus(admin) != CONNECTION_OK)
		failure =
			psprintf("could not connect to the server of database \"%s\": %s", live, pchomp(PQerrorMessage(admin)));
	else if (failure == NULL && tb_admin_value(admin, psprintf("SELECT 1 FROM pg_database WHERE datname = %s",
															   quote_literal_cstr(fresh))) != NULL)
		failure = psprintf("database \"%s\" already exists", fresh);
	else if (failure == NULL)
		failure = tb_pg_create_like(admin, live, fresh);
	if (failure == NULL)
	{
		/*
		 * pg_restore acts as the database's owner (--role), not as a superuser: a
		 * tenant's own functions (CHECK constraints, defaults) run during the load and
		 * must not run with more rights than the tenant has.
		 */
		char *role =
			tb_admin_value(admin, psprintf("SELECT CASE WHEN r.rolsuper THEN '' ELSE r.rolname END FROM pg_database d"
										   " JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = %s",
										   quote_literal_cstr(fresh)));
		char *options = role && role[0] ? psprintf("--exit-on-error --no-password --role=%s", tb_shell_quote(role))
										: "--exit-on-error --no-password";

		if (!tb_child_start(&restore, tb_tool_command("pg_restore", options, fresh_conninfo), false))
			failure = psprintf("could not run pg_restore: %m");
		else
		{
			PG_TRY();
			{
				failure = tb_pg_restore_from(job, reader, &restore, "pg_restore");
			}
			PG_CATCH();
			{
				tb_child_kill(&restore);
				tb_admin_exec(admin, psprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", quote_identifier(fresh)));
				PQfinish(admin);
				tb_passfile_remove();
				repo_reader_close(reader);
				storage_close(st);
				PG_RE_THROW();
			}
			PG_END_TRY();
			failure = tb_tool_end(&restore, job, "pg_restore", failure);
		}
		if (failure != NULL)
			tb_admin_exec(admin, psprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", quote_identifier(fresh)));
	}
	if (failure == NULL && job->drill)
		failure = tb_pg_drill_check(job, reader, fresh_conninfo);
	if (job->drill)
		tb_admin_exec(admin, psprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", quote_identifier(fresh)));
	repo_reader_close(reader);
	storage_close(st);
	if (job->drill)
	{
		PQfinish(admin);
		tb_passfile_remove();
		return failure;
	}
	/* A restore already given up on (its lease taken back) must not replace anything. */
	if (failure == NULL && !tb_job_progress(job, job->bytes_done, true))
	{
		failure = pstrdup("the job's lease was lost before the swap; nothing live was changed");
		tb_admin_exec(admin, psprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", quote_identifier(fresh)));
	}
	if (failure == NULL && job->restore_target == NULL)
		failure = tb_pg_swap(admin, live, fresh, psprintf("%.*s_tb_old_" INT64_FORMAT, tb_clip(live), live, job->id));
	PQfinish(admin);
	tb_passfile_remove();
	if (failure == NULL)
		ereport(LOG, (errmsg("tenant_backup: restored backup %s of tenant \"%s\" into \"%s\"%s", backup_id, job->tenant,
							 job->restore_target ? fresh : live,
							 job->restore_target ? "" : " (the previous database is kept as *_tb_old_*)")));
	return failure;
}
