/*
 * tenant_backup.check()'s C parts (storage round trip, master key, pg_dump and
 * pg_restore) and the settings' own checks: a bad value is refused when it is set, what
 * needs the file system is warned about at reload.
 */
#include "tenant_backup.h"

#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/resowner.h"
#include "utils/tuplestore.h"

#include "check.h"
#include "subprocess.h"
#include "storage/check.h"

PG_FUNCTION_INFO_V1(tenant_backup_check_storage);
PG_FUNCTION_INFO_V1(tenant_backup_check_master_key);
PG_FUNCTION_INFO_V1(tenant_backup_check_tools);

#define TB_CHECK_TOOL_TIMEOUT_MS 10000
#define TB_KEY_DOC_MAX 65536

/* ------------------------------------------------------------ settings */

bool
tb_check_storage_url(char **newval, void **extra, GucSource source)
{
	tb_error err = {0};

	(void) extra;
	(void) source;
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	/* Its form and options only: credentials are resolved (a process, the network) when storage is opened. */
	if (storage_check_url(*newval, &err) != 0)
	{
		GUC_check_errdetail("%s.", err.msg);
		GUC_check_errhint("Use file:///absolute/directory, or s3://bucket/prefix with the options endpoint, region, "
						  "part_size, retries, stall_timeout, style, sse, kms_key_id, storage_class and "
						  "max_bandwidth (credentials come from the server's AWS_* environment, shared files, web "
						  "identity or the instance metadata service).");
		return false;
	}
	return true;
}

bool
tb_check_max_bandwidth(char **newval, void **extra, GucSource source)
{
	tb_error err = {0};
	char url[256];

	(void) extra;
	(void) source;
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	/* The S3 driver's own parser decides; the bucket is a stand-in that only makes the URL whole. */
	if (strlen(*newval) > 64 || strpbrk(*newval, "&?#") != NULL ||
		snprintf(url, sizeof(url), "s3://tenant-backup-check/p?max_bandwidth=%s", *newval) >= (int) sizeof(url) ||
		storage_check_url(url, &err) != 0)
	{
		GUC_check_errdetail("The value must be a rate from 100KB/s to 100GB/s.");
		GUC_check_errhint("Give it as a number and a unit, such as 50MB/s (KB, MB, GB decimal; KiB, MiB, GiB binary).");
		return false;
	}
	return true;
}

/* Empty, or an absolute path. */
static bool
tb_check_absolute(const char *value, const char *example)
{
	if (value == NULL || value[0] == '\0' || value[0] == '/')
		return true;
	GUC_check_errdetail("The value must be an absolute path.");
	GUC_check_errhint("Give the full path, such as %s: the server resolves relative paths from its data directory.",
					  example);
	return false;
}

bool
tb_check_key_file_path(char **newval, void **extra, GucSource source)
{
	(void) extra;
	(void) source;
	return tb_check_absolute(*newval, "/etc/tenant_backup/master.key");
}

bool
tb_check_bin_dir(char **newval, void **extra, GucSource source)
{
	(void) extra;
	(void) source;
	return tb_check_absolute(*newval, "/usr/lib/postgresql/15/bin");
}

bool
tb_check_tenant_name(char **newval, void **extra, GucSource source)
{
	const char *name = *newval;
	size_t len = name ? strlen(name) : 0;

	(void) extra;
	(void) source;
	if (len == 0 || (len <= 63 && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") == len && name[0] != '_' &&
					 name[0] != '-'))
		return true;
	GUC_check_errdetail("The value must be a tenant name: 1 to 63 lower-case letters, digits, \"_\" and \"-\", "
						"starting with a letter or digit.");
	return false;
}

/* Why the master key file cannot be used, or NULL; *mode set when the file exists. */
static const char *
tb_key_file_problem(const char *path, mode_t *mode)
{
	struct stat sb;

	if (stat(path, &sb) != 0)
		return errno == ENOENT ? "does not exist" : "cannot be read by the server";
	*mode = sb.st_mode & 07777;
	if (!S_ISREG(sb.st_mode))
		return "is not a regular file";
	if ((sb.st_mode & 077) != 0)
		return "can be read by other users than its owner";
	if (sb.st_uid != geteuid())
		return "is not owned by the server's user";
	return NULL;
}

void
tb_settings_warn(void)
{
	mode_t mode = 0;
	const char *problem;

	if (tb_master_key_file && tb_master_key_file[0] &&
		(problem = tb_key_file_problem(tb_master_key_file, &mode)) != NULL)
		ereport(WARNING, (errmsg("tenant_backup.master_key_file \"%s\" %s", tb_master_key_file, problem),
						  errdetail("Backups, restores and new tenants fail until the master key loads."),
						  errhint("Make it a file of mode 0600 owned by the server's user (made by 'tenant-backup "
								  "keygen'), then reload.")));
	if (tb_bin_dir && tb_bin_dir[0])
	{
		char *tool = psprintf("%s/pg_dump", tb_bin_dir);

		if (access(tool, X_OK) != 0)
			ereport(WARNING,
					(errmsg("tenant_backup.bin_dir \"%s\" holds no pg_dump the server can run", tb_bin_dir),
					 errhint("Point it at the bin directory of PostgreSQL %d or later.", PG_VERSION_NUM / 10000)));
		pfree(tool);
	}
	if (tb_storage_url && strncmp(tb_storage_url, "file:///", 8) == 0)
	{
		const char *dir = tb_storage_url + strlen("file://");

		if (access(dir, W_OK | X_OK) != 0)
			ereport(WARNING, (errmsg("tenant_backup.storage directory \"%s\" is missing or not writable by the "
									 "server",
									 dir),
							  errhint("Create it and give the server's operating system user write access.")));
	}
}

/* ------------------------------------------------------------ rows of check() */

static void
tb_check_row(ReturnSetInfo *rsinfo, const char *name, const char *status, const char *detail, const char *hint)
{
	Datum values[4];
	bool nulls[4] = {false, false, detail == NULL, hint == NULL};

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(status);
	values[2] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
	values[3] = hint ? CStringGetTextDatum(hint) : (Datum) 0;
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/* ------------------------------------------------------------ storage */

/* What to do about storage the server's user cannot use. */
static const char *
tb_storage_hint(void)
{
	struct passwd *pw = getpwuid(geteuid());

	if (strncmp(tb_storage_url, "file://", 7) == 0)
		return psprintf("The server runs as operating system user \"%s\": give it write access to the storage "
						"directory and everything below it (chown or chmod).",
						pw ? pw->pw_name : "postgres");
	return "The server's AWS_* credentials need s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject on "
		   "the bucket and prefix.";
}

/* A step of the storage round trip as a row of check(). */
static void
tb_check_storage_step(void *ctx, const char *name, const char *status, const char *detail, const char *hint)
{
	tb_check_row((ReturnSetInfo *) ctx, name, status, detail, hint);
}

/* Write, read, list and delete of one probe object (core's round trip), a row per step. */
static void
tb_check_round_trip(ReturnSetInfo *rsinfo, storage *st)
{
	tb_error err = {0};
	char *body = psprintf("tenant_backup.check() probe of server process %d", MyProcPid);

	if (storage_check_round_trip(st, body, tb_storage_hint(), tb_check_storage_step, rsinfo, &err) < 0)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("%s", err.msg)));
}

Datum
tenant_backup_check_storage(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	tb_error err = {0};
	storage *st;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (tb_storage_url == NULL || tb_storage_url[0] == '\0')
	{
		tb_check_row(rsinfo, "storage", "error", "tenant_backup.storage is not set",
					 "Set it to file:///some/dir or s3://bucket/prefix and reload.");
		PG_RETURN_VOID();
	}
	st = storage_open(tb_storage_url, &err);
	if (st == NULL)
	{
		tb_check_row(rsinfo, "storage", "error", err.msg, "Fix tenant_backup.storage and reload.");
		PG_RETURN_VOID();
	}
	PG_TRY();
	{
		tb_check_row(rsinfo, "storage", "ok", storage_describe(st), NULL);
		tb_check_round_trip(rsinfo, st);
	}
	PG_FINALLY();
	{
		storage_close(st);
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/* ------------------------------------------------------------ master key */

/* The key file's path is a superuser-only setting: only a superuser's check() names it. */
static const char *
tb_key_file_label(void)
{
	return superuser_arg(GetSessionUserId()) ? tb_master_key_file : "named by tenant_backup.master_key_file";
}

/*
 * Loads the master key into *out; false with an error row when it cannot be. A key
 * command's failure is caught in a subtransaction, so check() goes on to its next rows.
 */
static bool
tb_check_master_key_load(ReturnSetInfo *rsinfo, master_key *out)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool loaded = false;

	if (tb_master_key_file && tb_master_key_file[0])
	{
		mode_t mode = 0;
		const char *problem = tb_key_file_problem(tb_master_key_file, &mode);

		if (problem != NULL)
		{
			tb_check_row(rsinfo, "master key", "error",
						 mode ? psprintf("the master key file %s %s (mode %04o)", tb_key_file_label(), problem, mode)
							  : psprintf("the master key file %s %s", tb_key_file_label(), problem),
						 "Make tenant_backup.master_key_file a file of mode 0600 owned by the server's user (made "
						 "by 'tenant-backup keygen'), then reload.");
			return false;
		}
	}
	else if (tb_master_key_command == NULL || tb_master_key_command[0] == '\0')
	{
		tb_check_row(rsinfo, "master key", "error", "no master key configured",
					 "Set tenant_backup.master_key_file (a 0600 file made by 'tenant-backup keygen') or "
					 "tenant_backup.master_key_command, then reload.");
		return false;
	}
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		tb_master_key(out);
		loaded = true;
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		/* Core's messages about the key file name its path. */
		tb_check_row(rsinfo, "master key", "error",
					 superuser_arg(GetSessionUserId()) ? edata->message : "the master key does not load",
					 tb_master_key_file && tb_master_key_file[0]
						 ? "tenant_backup.master_key_file must hold the 64 hex digits 'tenant-backup keygen' writes."
						 : "tenant_backup.master_key_command must print the master key's 64 hex digits.");
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	if (loaded)
		tb_check_row(rsinfo, "master key", "ok",
					 tb_master_key_file && tb_master_key_file[0]
						 ? psprintf("the master key file %s loads, mode 0600", tb_key_file_label())
						 : "the master key command prints a key",
					 NULL);
	return loaded;
}

/*
 * Reads each named tenant key document from storage and opens it with the master key:
 * one row, an error naming the first key that does not open.
 */
static void
tb_check_storage_keys(ReturnSetInfo *rsinfo, const master_key *master, ArrayType *tenants, ArrayType *key_ids)
{
	Datum *tenant_items, *key_items;
	bool *tenant_nulls, *key_nulls;
	int count, key_count;
	volatile int missing = 0, wrong = 0;
	char *volatile first_problem = NULL;
	tb_error err = {0};
	storage *st;

	deconstruct_array(tenants, TEXTOID, -1, false, TYPALIGN_INT, &tenant_items, &tenant_nulls, &count);
	deconstruct_array(key_ids, TEXTOID, -1, false, TYPALIGN_INT, &key_items, &key_nulls, &key_count);
	if (count == 0 || key_count != count || tb_storage_url == NULL || tb_storage_url[0] == '\0' ||
		(st = storage_open(tb_storage_url, &err)) == NULL)
		return;
	PG_TRY();
	{
		for (int i = 0; i < count; i++)
		{
			char *tenant = TextDatumGetCString(tenant_items[i]);
			char *key_id = TextDatumGetCString(key_items[i]);
			char *object = psprintf("%s/keys/%s.json", tenant, key_id);
			char *doc = NULL;
			size_t len = 0;
			tenant_key key = {0};

			if (storage_get(st, object, TB_KEY_DOC_MAX, &doc, &len, &err) != 0)
			{
				missing++;
				if (first_problem == NULL)
					first_problem = psprintf("%s: %s", object, err.msg);
			}
			else if (keys_tenant_unwrap(master, doc, tenant, key_id, &key, &err) != 0)
			{
				wrong++;
				if (first_problem == NULL)
					first_problem = psprintf("%s: %s", object, err.msg);
			}
			keys_tenant_wipe(&key);
			free(doc);
		}
	}
	PG_FINALLY();
	{
		storage_close(st);
	}
	PG_END_TRY();
	if (wrong > 0)
		tb_check_row(rsinfo, "storage keys", "error",
					 psprintf("%d of %d tenant keys in storage do not open with master key %s; first: %s", wrong, count,
							  master->id, first_problem),
					 "tenant_backup.master_key_file is not the key these tenant keys were wrapped with: point it at "
					 "the right key file (agents and the CLI need the same one), or finish "
					 "tenant_rotate_master_key().");
	else if (missing > 0)
		tb_check_row(
			rsinfo, "storage keys", "error",
			psprintf("%d of %d tenant keys cannot be read from storage; first: %s", missing, count, first_problem),
			"Without its key document in storage a tenant's backups cannot be read without the catalog: "
			"tenant_rotate_key() writes a new key.");
	else
		tb_check_row(rsinfo, "storage keys", "ok",
					 psprintf("the active keys of %d tenants in storage open with master key %s", count, master->id),
					 NULL);
}

Datum
tenant_backup_check_master_key(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	master_key master;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (!tb_check_master_key_load(rsinfo, &master))
		PG_RETURN_VOID();
	PG_TRY();
	{
		tb_check_row(rsinfo, "master key id", "ok", master.id, NULL);
		if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1))
			tb_check_storage_keys(rsinfo, &master, PG_GETARG_ARRAYTYPE_P(0), PG_GETARG_ARRAYTYPE_P(1));
	}
	PG_FINALLY();
	{
		keys_master_wipe(&master);
	}
	PG_END_TRY();
	PG_RETURN_VOID();
}

/* ------------------------------------------------------------ pg_dump and pg_restore */

/*
 * Runs "path --version" (core's runner: no shell, stdin and stderr on /dev/null) and
 * returns its first line of output, or NULL if it did not run and exit 0 in time.
 */
static char *
tb_tool_version(const char *path)
{
	const char *const argv[] = {path, "--version", NULL};
	subprocess_options opts = {
		.argv = argv, .in = SUBPROCESS_DEVNULL, .out = SUBPROCESS_PIPE, .err = SUBPROCESS_DEVNULL};
	subprocess sp;
	tb_error err;
	char buf[256];
	size_t used = 0;
	bool too_long = false;
	int rc;

	if (subprocess_start(&sp, &opts, &err) != 0)
		return NULL;
	rc = subprocess_communicate(&sp, NULL, 0, buf, sizeof(buf), &used, &too_long, TB_CHECK_TOOL_TIMEOUT_MS);
	subprocess_end(&sp, SIGKILL);
	buf[strcspn(buf, "\n")] = '\0';
	if (rc != 0 || used == 0 || !WIFEXITED(sp.status) || WEXITSTATUS(sp.status) != 0)
		return NULL;
	return pstrdup(buf);
}

static void
tb_check_tool(ReturnSetInfo *rsinfo, const char *tool)
{
	char *path = psprintf("%s/%s", tb_pg_bin_dir(), tool);
	char *name = psprintf("%s version", tool);
	char *hint =
		psprintf("Set tenant_backup.bin_dir to the bin directory of PostgreSQL %d or later.", PG_VERSION_NUM / 10000);
	char *version = tb_tool_version(path);
	const char *number;

	if (version == NULL)
	{
		tb_check_row(rsinfo, name, "error", psprintf("%s does not run (%s --version failed)", path, path), hint);
		return;
	}
	/* "pg_dump (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)": the major version follows ") ". */
	number = strstr(version, ") ");
	if (number == NULL || atoi(number + 2) < PG_VERSION_NUM / 10000)
		tb_check_row(rsinfo, name, "error",
					 psprintf("%s: %s, older than this server (%d)", path, version, PG_VERSION_NUM / 10000), hint);
	else
		tb_check_row(rsinfo, name, "ok", psprintf("%s: %s", path, version), NULL);
}

Datum
tenant_backup_check_tools(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	tb_check_tool(rsinfo, "pg_dump");
	tb_check_tool(rsinfo, "pg_restore");
	PG_RETURN_VOID();
}
