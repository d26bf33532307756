/*
 * A PostgreSQL tenant's backup: pg_dump's custom format (a dedicated tenant's cluster:
 * pg_basebackup's tar) streamed through core/ into storage, with what it held counted
 * for the drill.
 */
#include "tenant_backup.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "access/xlog.h"
#include "common/string.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/guc.h"

#include "pg_engine.h"
#include "pitr.h"
#include "put_guard.h"
#include "tar_count.h"

/* Loads the tenant's active key from the catalog, unwrapped with the master key or the tenant's command. */
static void
tb_active_tenant_key(tb_job *job, tenant_key *out)
{
	const char *tenant = job->tenant;
	const char *args[1] = {tenant};
	char *doc = tb_sql("SELECT (tenant_backup._active_key($1)).wrapped::text", 1, args);
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
 * Streams the tool's output into put, counting it in job->bytes_done, and through
 * the counter of its kind (a tar's files or an archive's rows); returns NULL or why
 * it failed. put is left for the caller.
 */
static char *
tb_pg_dump_into(tb_job *job, tb_child *dump, repo_put *put, tar_count *files, tb_archive *archive)
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
		else if (!tb_archive_feed(archive, buf, n))
			return pstrdup(archive->error);
		job->bytes_done += n;
		if (!tb_job_progress(job, job->bytes_done, false))
			return pstrdup(TB_LEASE_LOST);
		CHECK_FOR_INTERRUPTS();
	}
	if (n < 0)
		return dump->stopped ? dump->stopped : psprintf("could not read pg_dump's output: %m");
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
	char *start = pstrdup(strstr(range, "\"start_lsn\": \"") + 14), *oldest, keep[PITR_WAL_NAME_LEN + 1];
	int timeline = atoi(strstr(range, "\"timeline\": ") + 12), removed;
	const char *args[3] = {job->tenant, start, psprintf("%d", timeline)};
	unsigned int oldest_timeline;
	uint64 oldest_lsn;

	*strchr(start, '"') = '\0';
	/* The oldest base backup still kept: complete ones in the catalog, or this one. */
	oldest = tb_sql("SELECT coalesce(b.timeline, $3::int) || ' ' || coalesce(b.start_lsn, $2::pg_lsn)"
					" FROM (SELECT 1) one LEFT JOIN LATERAL"
					" (SELECT timeline, start_lsn FROM tenant_backup.backups"
					"  WHERE tenant = $1 AND status = 'complete' AND start_lsn IS NOT NULL"
					"  ORDER BY start_lsn LIMIT 1) b ON true",
					3, args);
	if (oldest == NULL || sscanf(oldest, "%u", &oldest_timeline) != 1 ||
		pitr_parse_lsn(strchr(oldest, ' ') + 1, &oldest_lsn) != 0)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
						errmsg("the oldest base backup of tenant \"%s\" has no WAL position", job->tenant)));
	pitr_wal_name_format(oldest_timeline, oldest_lsn / wal_segment_size, wal_segment_size, keep, sizeof(keep));
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
	char *backup_id, *conninfo, *failure = NULL, *range;
	char **command = NULL;
	char *volatile messages = NULL;
	bool base = tb_tenant_dedicated(job->tenant);
	const char *tool = base ? "pg_basebackup" : "pg_dump";
	tb_child dump;
	PGconn *volatile work;
	char *snapshot = NULL;
	tar_count files;
	tb_archive archive;
	char *contents = NULL;

	snprintf(job_id, sizeof(job_id), INT64_FORMAT, job->id);
	snprintf(source_id, sizeof(source_id), INT64_FORMAT, job->source_id);
	{
		const char *args[3] = {job->tenant, source_id, job_id};

		backup_id = tb_sql("INSERT INTO tenant_backup.backups (tenant, engine, source_id, job_id, status)"
						   " VALUES ($1, 'postgres', $2::bigint, $3::bigint, 'running') RETURNING id",
						   3, args);
	}
	/* The object's header names its catalog row: a restore refuses an object copied over another. */
	options.backup_id = backup_id;
	/* Its manifest says which of the tenant's databases it is of; a base backup is the whole cluster. */
	options.database = base ? NULL : tb_source_dbname(job);
	if (base)
	{
		char stamp[32];
		time_t now = time(NULL);

		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H%M%SZ", gmtime(&now));
		options.object_name = psprintf("base/%s-%s.tbk", stamp, backup_id);
	}
	/*
	 * Our own connection, before anything is stored: it pins the server's address for
	 * the tool, checks the password was asked for, claims the database's identity, and
	 * stays open while the tool works, its exported snapshot binding pg_dump to this
	 * very server (what we checked is what the tool reaches).
	 */
	tb_job_phase(job, "connect");
	tb_passfile_create(job);
	work = tb_tenant_connect(job, tb_source_conninfo(job, NULL), &failure);
	if (failure != NULL)
		failure = psprintf("could not connect to the database of tenant \"%s\": %s", job->tenant, failure);
	if (failure == NULL)
		failure = tb_source_identity_claim(job, work, tb_source_dbname(job));
	if (failure == NULL && base)
		failure = tb_cluster_shared_refusal(job, work);
	else if (failure == NULL)
		failure = tb_source_snapshot_export(job, work, &snapshot);
	if (failure != NULL)
	{
		PQfinish(work);
		tb_passfile_remove();
		return failure;
	}
	tb_active_tenant_key(job, &key);
	st = tb_storage();
	put = tb_put_begin(st, &key, "postgres", &options, &err);
	keys_tenant_wipe(&key);
	if (put == NULL)
	{
		PQfinish(work);
		storage_close(st);
		tb_raise(&err, psprintf("could not start the backup of tenant \"%s\"", job->tenant));
	}

	conninfo = tb_source_conninfo(job, NULL);
	if (base)
	{
		/* The WAL the backup needs goes into its tar too (self-contained); -v says its range, kept aside in a file. */
		messages = psprintf("%s/pg_stat_tmp/tenant_backup_base_%s.log", DataDir, job_id);
		command =
			tb_tool_argv("pg_basebackup",
						 (const char *const[]){"--format=tar", "--pgdata=-", "--wal-method=fetch", "--checkpoint=fast",
											   "--no-manifest", "--verbose", "--no-password", NULL},
						 conninfo);
	}
	tar_count_init(&files);
	tb_archive_init(&archive, false);
	if (!base)
	{
		/* Uncompressed, so that the rows are counted from the stream as it passes (core compresses). */
		messages = tb_tool_messages_file(job, "pg_dump");
		/* Our snapshot exists only on the server we checked: pg_dump fails anywhere else. */
		command = tb_tool_argv(
			"pg_dump",
			(const char *const[]){
				"--format=custom", "--compress=0", "--no-password", psprintf("--snapshot=%s", snapshot),
				tb_lock_timeout_ms > 0 ? psprintf("--lock-wait-timeout=%d", tb_lock_timeout_ms) : NULL, NULL},
			conninfo);
	}
	/* The tool's output is sealed and stored as it comes: dumping is uploading. */
	tb_job_phase(job, "dump");
	if (failure == NULL && !tb_child_start(&dump, (const char *const *) command, messages, true))
		failure = psprintf("could not run %s: %m", tool);
	else if (failure == NULL)
	{
		/* Best effort: a pipe as large as a chunk lets pg_dump run on while we seal one. */
		(void) fcntl(dump.fd, F_SETPIPE_SZ, TB_PIPE_BUFFER);
		PG_TRY();
		{
			failure = tb_pg_dump_into(job, &dump, put, base ? &files : NULL, base ? NULL : &archive);
		}
		PG_CATCH();
		{
			tb_child_kill(&dump);
			unlink(messages);
			PQfinish(work);
			tb_passfile_remove();
			tb_put_abort(put);
			storage_close(st);
			PG_RE_THROW();
		}
		PG_END_TRY();
		failure = tb_tool_end(&dump, job, tool, failure);
	}
	PQfinish(work);
	if (!base)
		failure = tb_tool_messages(messages, tool, failure);
	/* pg_dump takes its table locks first, with --lock-wait-timeout as their statement timeout. */
	if (failure != NULL && strstr(failure, "(Query was: LOCK TABLE ") != NULL)
		failure = psprintf("%s: waited longer than tenant_backup.lock_timeout (%s) for a lock", failure,
						   GetConfigOptionByName("tenant_backup.lock_timeout", NULL, false));
	/* Only once pg_dump said it succeeded: before that, its own error explains a short archive. */
	if (failure == NULL && !base && !tb_archive_finish(&archive))
		failure = pstrdup(archive.error);
	else if (failure == NULL && !base)
		contents = tb_archive_table_counts(&archive);
	else if (failure == NULL && base && files.broken)
		failure = pstrdup("pg_basebackup's output is not a tar stream");
	else if (failure == NULL && base)
		contents = psprintf("{\"files\": " UINT64_FORMAT ", \"bytes\": " UINT64_FORMAT "}", (uint64) files.files,
							(uint64) files.bytes);
	tb_passfile_remove();
	range = base ? tb_base_backup_range(messages) : "";
	if (failure == NULL && base && range[0] == '\0')
		failure = pstrdup("pg_basebackup did not say which WAL its backup needs");
	if (failure != NULL)
	{
		tb_put_abort(put);
		storage_close(st);
		return failure;
	}
	tb_job_phase(job, "commit");
	if (tb_put_commit(put, &m, &err) != 0)
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
