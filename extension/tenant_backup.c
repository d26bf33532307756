/*
 * tenant_backup extension: module load, settings, and the bridge from core/ errors,
 * keys and storage to PostgreSQL's idioms.
 */
#include "tenant_backup.h"

#include <sys/stat.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/postmaster.h"
#include "storage/fd.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "check.h"
#include "job.h"
#include "metrics.h"
#include "pool.h"
#include "replicate.h"
#include "request.h"
#include "stream.h"

PG_MODULE_MAGIC;

char *tb_database = NULL;
char *tb_storage_url = NULL;
char *tb_master_key_file = NULL;
char *tb_master_key_command = NULL;
int tb_max_workers = 2;
int tb_naptime_ms = 1000;
char *tb_default_schedule = NULL;
char *tb_retention_interval = NULL;
char *tb_bin_dir = NULL;
char *tb_max_bandwidth = NULL;
/* Read by SQL (tenant_backup._sources_first_backup) through current_setting(). */
static char *tb_first_backup_delay = NULL;
/* Read by SQL (tenant_backup._retry_delay) through current_setting(). */
static char *tb_retry_delays = NULL;
int tb_lease_seconds = 60;
int tb_compression_level = STREAM_LEVEL_DEFAULT;
bool tb_preloaded = false;
char *tb_archive_tenant = NULL;
char *tb_archive_key_command = NULL;
char *tb_janitor_interval = NULL;
/* Read by SQL (tenant_backup._janitor_run) through current_setting(). */
static char *tb_janitor_grace = NULL;

void _PG_init(void);

/* Parses an interval such as '1 day' or '6 hours' without throwing; false if it is not one with no negative part. */
static bool
tb_interval_parse(const char *text, struct pg_itm_in *itm)
{
	char workbuf[MAXDATELEN + MAXDATEFIELDS];
	char *field[MAXDATEFIELDS];
	int ftype[MAXDATEFIELDS];
	int nf, dtype;

	return text != NULL && ParseDateTime(text, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf) == 0 &&
		   DecodeInterval(field, ftype, nf, INTERVAL_FULL_RANGE, &dtype, itm) == 0 && dtype == DTK_DELTA &&
		   itm->tm_usec >= 0 && itm->tm_mday >= 0 && itm->tm_mon >= 0 && itm->tm_year >= 0;
}

/* default_schedule must be a positive interval: checked here, without throwing, not by the launcher later. */
static bool
tb_check_interval(char **newval, void **extra, GucSource source)
{
	struct pg_itm_in itm;

	(void) extra;
	(void) source;
	if (!tb_interval_parse(*newval, &itm) || itm.tm_usec + itm.tm_mday + itm.tm_mon + itm.tm_year == 0)
	{
		GUC_check_errdetail("The value must be a positive interval such as '1 day' or '6 hours'.");
		return false;
	}
	return true;
}

/* retry_delays: a comma-separated list of intervals, none negative ('0' retries at once). */
static bool
tb_check_interval_list(char **newval, void **extra, GucSource source)
{
	char *list = pstrdup(*newval ? *newval : "");
	char *item, *save = NULL;
	int count = 0;

	(void) extra;
	(void) source;
	for (item = strtok_r(list, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save))
	{
		struct pg_itm_in itm;

		if (!tb_interval_parse(item, &itm))
		{
			GUC_check_errdetail("tenant_backup.retry_delays must be intervals separated by commas, such as "
								"'1 min, 5 min, 25 min'.");
			return false;
		}
		count++;
	}
	if (count == 0)
	{
		GUC_check_errdetail("tenant_backup.retry_delays needs at least one interval, such as '1 min'.");
		return false;
	}
	return true;
}

void
_PG_init(void)
{
	BackgroundWorker launcher;

	DefineCustomStringVariable("tenant_backup.storage", "Where backups are stored: file:///dir or s3://bucket/prefix.",
							   "S3 credentials: the server's AWS_* environment, shared credentials files, web identity "
							   "or the instance metadata service.",
							   &tb_storage_url, "", PGC_SIGHUP, 0, tb_check_storage_url, NULL, NULL);
	DefineCustomStringVariable(
		"tenant_backup.replica_storage",
		"Second storage every complete backup is copied to: file:///dir or s3://bucket/prefix "
		"(empty: no replica).",
		"tenant_set_replica() overrides it per tenant; it must not overlap tenant_backup.storage.",
		&tb_replica_storage_url, "", PGC_SIGHUP, 0, tb_check_replica_storage_url, NULL, NULL);
	DefineCustomStringVariable(
		"tenant_backup.replica_storage_allowed",
		"More replica URLs an operator may give a tenant with tenant_set_replica, comma-separated (exactly these).",
		"Each must be a valid replica URL that overlaps neither tenant_backup.storage nor another replica root.",
		&tb_replica_storage_allowed, "", PGC_SIGHUP, 0, tb_check_replica_storage_allowed, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.master_key_file",
							   "File holding the master key (64 hex digits, mode 0600).", NULL, &tb_master_key_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, tb_check_key_file_path, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.master_key_command",
							   "Command that prints the master key (used when master_key_file is empty).", NULL,
							   &tb_master_key_command, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("tenant_backup.max_workers", "Backups and restores that run at once.", NULL,
							&tb_max_workers, 2, 1, 64, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tenant_backup.naptime", "How often the launcher looks for due and queued work.", NULL,
							&tb_naptime_ms, 1000, 100, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.default_schedule", "Backup interval of tenants without a schedule.", NULL,
							   &tb_default_schedule, "1 day", PGC_SIGHUP, 0, tb_check_interval, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.retention_interval",
							   "How often the launcher applies every tenant's retention policy.", NULL,
							   &tb_retention_interval, "1 hour", PGC_SIGHUP, 0, tb_check_interval, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.first_backup_delay",
							   "How soon after it is added a database that was never backed up is due.",
							   "Read by SQL (the catalog's trigger on new databases) through current_setting().",
							   &tb_first_backup_delay, "5 minutes", PGC_SIGHUP, 0, tb_check_interval, NULL, NULL);
	DefineCustomStringVariable(
		"tenant_backup.retry_delays", "Waits before the 2nd, 3rd, ... attempt of a failed job (the last one repeats).",
		NULL, &tb_retry_delays, "1 min, 5 min, 25 min", PGC_SIGHUP, 0, tb_check_interval_list, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.bin_dir", "Directory of pg_dump and pg_restore (empty: this server's).",
							   NULL, &tb_bin_dir, "", PGC_SIGHUP, 0, tb_check_bin_dir, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.max_bandwidth",
							   "Highest transfer rate of each job's S3 requests, such as 50MB/s (empty: no limit).",
							   "An s3:// storage URL's own max_bandwidth option wins.", &tb_max_bandwidth, "",
							   PGC_SIGHUP, 0, tb_check_max_bandwidth, NULL, NULL);
	DefineCustomIntVariable("tenant_backup.compression_level",
							"zstd level of backups (1: fastest; dumps compress well even so).", NULL,
							&tb_compression_level, STREAM_LEVEL_DEFAULT, 1, 19, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("tenant_backup.agent_wait",
							"How long wait => true waits for a queued job whose engine has no agent seen lately.",
							"Counted from the agents' last heartbeat or the start of the wait, whichever is newer; 0: "
							"forever.",
							&tb_agent_wait_s, 600, 0, PG_INT32_MAX, PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("tenant_backup.lease_timeout", "Seconds without a sign of life before a job is retried.",
							NULL, &tb_lease_seconds, 60, 5, 86400, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable(
		"tenant_backup.lock_timeout", "How long pg_dump waits for a lock on a tenant's table.",
		"A backup that waits longer fails naming the table (pg_dump --lock-wait-timeout); 0: forever.",
		&tb_lock_timeout_ms, 5 * 60 * 1000, 0, PG_INT32_MAX, PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tenant_backup.job_timeout", "How long a backup or restore job may run before it fails.",
							"0: no limit.", &tb_job_timeout_s, 6 * 3600, 0, PG_INT32_MAX, PGC_SIGHUP, GUC_UNIT_S, NULL,
							NULL, NULL);
	DefineCustomIntVariable("tenant_backup.keep_old_copy",
							"How long the database an in-place restore replaced is kept as <name>_tb_old_<job>.",
							"The launcher drops it after that; 0: kept until dropped by hand.", &tb_keep_old_copy_s,
							7 * 86400, 0, PG_INT32_MAX, PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable(
		"tenant_backup.worker_idle_time",
		"How long a job worker with no backup left waits for the next one before it exits.",
		"Meanwhile a queued backup or a wait => true call starts at once, without a background "
		"worker start; an idle worker counts in max_workers. At most 60 s (a worker exits after 60 s "
		"or 100 jobs in any case); 0: workers exit at once.",
		&tb_worker_idle_ms, 10 * 1000, 0, 60 * 1000, PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("tenant_backup.connect_timeout",
							"How long a job waits for a tenant's server to accept its connection.",
							"A locator's own connect_timeout wins.", &tb_connect_timeout_s, 30, 1, 3600, PGC_SIGHUP,
							GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable(
		"tenant_backup.archive_tenant",
		"The dedicated tenant whose WAL this cluster archives (archive_library = 'tenant_backup').", NULL,
		&tb_archive_tenant, "", PGC_SIGHUP, 0, tb_check_tenant_name, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.archive_key_command",
							   "The archived tenant's key command (bring your own key), run by the WAL archiver.",
							   "Set it to the command of tenant_set_key_source() before giving the tenant one.",
							   &tb_archive_key_command, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.janitor_interval",
							   "How often the launcher looks for unfinished writes and unreferenced objects.", NULL,
							   &tb_janitor_interval, "10 min", PGC_SIGHUP, 0, tb_check_interval, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.janitor_grace",
							   "Age from which a complete object no catalog row names is removed from storage.",
							   "Raise it above the age of a control-plane dump before restoring the catalog from it.",
							   &tb_janitor_grace, "1 day", PGC_SIGHUP, 0, tb_check_interval, NULL, NULL);
	if (!process_shared_preload_libraries_in_progress)
	{
		MarkGUCPrefixReserved("tenant_backup");
		return;
	}

	/* Settings that only the postmaster may define, and the launcher. */
	DefineCustomStringVariable("tenant_backup.database", "Database where the tenant_backup worker runs.",
							   "The database holding CREATE EXTENSION tenant_backup.", &tb_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("tenant_backup.metrics_address",
							   "host:port where a worker of its own serves Prometheus metrics (empty: off).",
							   "A numeric address of one interface, such as 127.0.0.1:9187 or [::1]:9187.",
							   &tb_metrics_address, "", PGC_POSTMASTER, 0, tb_check_metrics_address, NULL, NULL);
	MarkGUCPrefixReserved("tenant_backup");
	tb_preloaded = true;
	tb_pool_shmem_request();
	tb_worker_describe(&launcher, "tenant_backup_launcher_main", "tenant_backup launcher", "tenant_backup launcher");
	launcher.bgw_restart_time = 5;
	RegisterBackgroundWorker(&launcher);
	if (tb_metrics_address[0] != '\0')
	{
		BackgroundWorker metrics;

		tb_worker_describe(&metrics, "tenant_backup_metrics_main", "tenant_backup metrics", "tenant_backup metrics");
		metrics.bgw_restart_time = 10;
		RegisterBackgroundWorker(&metrics);
	}
}

void
tb_worker_describe(BackgroundWorker *worker, const char *function, const char *type, const char *name)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	strlcpy(worker->bgw_library_name, "tenant_backup", BGW_MAXLEN);
	strlcpy(worker->bgw_function_name, function, BGW_MAXLEN);
	strlcpy(worker->bgw_type, type, BGW_MAXLEN);
	strlcpy(worker->bgw_name, name, BGW_MAXLEN);
}

void
tb_require_worker(void)
{
	if (!tb_preloaded)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("tenant_backup is not in shared_preload_libraries"),
						errdetail("Backups and restores run in tenant_backup's background workers."),
						errhint("Add tenant_backup to shared_preload_libraries and restart the server.")));
}

static int
tb_sqlstate(tb_errcode code)
{
	switch (code)
	{
		case TB_ERR_INVALID:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case TB_ERR_NOT_FOUND:
			return ERRCODE_UNDEFINED_OBJECT;
		case TB_ERR_EXISTS:
			return ERRCODE_DUPLICATE_OBJECT;
		case TB_ERR_CORRUPT:
			return ERRCODE_DATA_CORRUPTED;
		case TB_ERR_KEY:
			return ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
		case TB_ERR_NOMEM:
			return ERRCODE_OUT_OF_MEMORY;
		case TB_ERR_IO:
		case TB_ERR_STORAGE:
		case TB_ERR_STORAGE_AUTH:
			return ERRCODE_IO_ERROR;
		default:
			return ERRCODE_INTERNAL_ERROR;
	}
}

void
tb_raise(const tb_error *err, const char *context)
{
	ereport(ERROR, (errcode(tb_sqlstate(err->code)), errmsg("%s: %s", context, err->msg),
					err->code == TB_ERR_KEY ? errhint("Check tenant_backup.master_key_file.") : 0,
					err->code == TB_ERR_STORAGE_AUTH ? errhint("Check the server's S3 credentials (AWS_* environment, "
															   "shared files, web identity or instance metadata).")
													 : 0));
}

/* Runs tenant_backup.master_key_command and reads the key it prints. */
static void
tb_master_key_from_command(master_key *out)
{
	char buf[256];
	size_t n;
	FILE *pipe = OpenPipeStream(tb_master_key_command, PG_BINARY_R);
	tb_error err = {0};
	int rc;

	if (pipe == NULL)
		ereport(ERROR, (errcode_for_file_access(), errmsg("could not run tenant_backup.master_key_command: %m")));
	n = fread(buf, 1, sizeof(buf) - 1, pipe);
	buf[n] = '\0';
	rc = ClosePipeStream(pipe);
	if (rc != 0)
	{
		explicit_bzero(buf, sizeof(buf));
		ereport(ERROR, (errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
						errmsg("tenant_backup.master_key_command failed with status %d", rc)));
	}
	rc = keys_master_from_hex(buf, out, &err);
	explicit_bzero(buf, sizeof(buf));
	if (rc != 0)
		tb_raise(&err, "tenant_backup.master_key_command printed no valid key");
}

void
tb_master_key(master_key *out)
{
	tb_error err = {0};

	if (tb_master_key_file && tb_master_key_file[0])
	{
		if (keys_master_load(tb_master_key_file, out, &err) != 0)
			tb_raise(&err, "could not load the master key");
		return;
	}
	if (tb_master_key_command && tb_master_key_command[0])
	{
		tb_master_key_from_command(out);
		return;
	}
	ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR), errmsg("no master key configured"),
					errhint("Set tenant_backup.master_key_file (a 0600 file made by 'tenant-backup keygen') or "
							"tenant_backup.master_key_command.")));
}

const char *
tb_storage_url_limited(const char *url)
{
	if (tb_max_bandwidth == NULL || tb_max_bandwidth[0] == '\0' || strncmp(url, "s3://", 5) != 0 ||
		strstr(url, "max_bandwidth=") != NULL)
		return url;
	return psprintf("%s%cmax_bandwidth=%s", url, strchr(url, '?') ? '&' : '?', tb_max_bandwidth);
}

storage *
tb_storage(void)
{
	tb_error err = {0};
	storage *st;

	if (tb_storage_url == NULL || tb_storage_url[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_CONFIG_FILE_ERROR), errmsg("tenant_backup.storage is not set"),
						errhint("Set it to file:///some/dir or s3://bucket/prefix and reload.")));
	st = storage_open(tb_storage_url_limited(tb_storage_url), &err);
	if (st == NULL)
		tb_raise(&err, "could not open tenant_backup.storage");
	return st;
}

const char *
tb_pg_bin_dir(void)
{
	static char dir[MAXPGPATH];

	if (tb_bin_dir && tb_bin_dir[0])
		return tb_bin_dir;
	strlcpy(dir, my_exec_path, sizeof(dir));
	get_parent_directory(dir);
	return dir;
}

void
tb_conninfo_append(StringInfo buf, const char *key, const char *value)
{
	appendStringInfo(buf, "%s%s='", buf->len > 0 ? " " : "", key);
	for (const char *c = value; *c; c++)
	{
		if (*c == '\'' || *c == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *c);
	}
	appendStringInfoChar(buf, '\'');
}

char *
tb_local_conninfo(const char *dbname)
{
	List *dirs = NIL;
	char *socket_dirs = pstrdup(Unix_socket_directories ? Unix_socket_directories : "");
	StringInfoData buf;

	initStringInfo(&buf);
	/* The first socket directory, parsed as the server parses the setting. */
	if (SplitDirectoriesString(socket_dirs, ',', &dirs) && dirs != NIL)
		tb_conninfo_append(&buf, "host", (char *) linitial(dirs));
	else
		tb_conninfo_append(&buf, "host", "127.0.0.1");
	appendStringInfo(&buf, " port=%d", PostPortNumber);
	tb_conninfo_append(&buf, "user", tb_sql("SELECT rolname FROM pg_authid WHERE oid = 10", 0, NULL));
	tb_conninfo_append(&buf, "dbname", dbname);
	return buf.data;
}
