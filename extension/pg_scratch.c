/*
 * Databases restores and drills leave on this cluster (tenant_backup.scratch_databases):
 * the launcher drops the ones an operator asked to remove (tenant_remove_scratch) and
 * previous copies older than tenant_backup.keep_old_copy, each DROP DATABASE in a
 * transaction of its own, as a top-level statement would run it; and it removes the
 * scratch directories of base backup drills whose job is over (a crash left them).
 */
#include "tenant_backup.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "nodes/pg_list.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "job.h"
#include "pg_engine.h"

#define TB_SCRATCH_DROPS_PER_ROUND 4

int tb_keep_old_copy_s = 7 * 86400;

/* Drops database name (connections to it ended); NULL, or the server's message. */
static char *
tb_scratch_drop(const char *name)
{
	MemoryContext caller = CurrentMemoryContext;
	char *volatile failure = NULL;

	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		dropdb(name, true, true);
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		failure = edata->message && edata->message[0] ? edata->message : pstrdup("DROP DATABASE failed");
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	return failure;
}

/* A drill scratch directory: where, of which job, and its own stat. */
typedef struct tb_scratch_dir
{
	char *path;
	char job[32];
	struct stat st;
} tb_scratch_dir;

/*
 * The <parent>/tenant_backup_drill_<port>_<job>_XXXXXX directories of this server's
 * user (never through a link: another user's name-alike is not ours), as a List of
 * tb_scratch_dir. The directory is read and closed before the caller's catalog work.
 */
static List *
tb_scratch_dirs(void)
{
	char *parent = tb_pg_drill_scratch_parent();
	char *prefix = tb_pg_drill_scratch_prefix();
	size_t prefix_len = strlen(prefix);
	List *names = NIL, *dirs = NIL;
	ListCell *lc;
	DIR *dir = AllocateDir(parent);
	struct dirent *de;

	while (dir != NULL && (de = ReadDirExtended(dir, parent, LOG)) != NULL)
		if (strncmp(de->d_name, prefix, prefix_len) == 0)
			names = lappend(names, pstrdup(de->d_name));
	if (dir != NULL)
		FreeDir(dir);
	foreach (lc, names)
	{
		const char *name = lfirst(lc);
		size_t digits = strspn(name + prefix_len, "0123456789");
		tb_scratch_dir *d = palloc0(sizeof(tb_scratch_dir));

		d->path = psprintf("%s/%s", parent, name);
		if (digits == 0 || digits > 18 || name[prefix_len + digits] != '_' || lstat(d->path, &d->st) != 0 ||
			!S_ISDIR(d->st.st_mode) || d->st.st_uid != geteuid())
			continue;
		snprintf(d->job, sizeof(d->job), "%.*s", (int) digits, name + prefix_len);
		dirs = lappend(dirs, d);
	}
	return dirs;
}

/* Drill scratch directories whose job is not queued or running: removed, the removal logged and audited. */
static void
tb_scratch_dirs_sweep(void)
{
	ListCell *lc;

	foreach (lc, tb_scratch_dirs())
	{
		tb_scratch_dir *d = lfirst(lc);
		const char *args[2] = {d->job, d->path};

		if (tb_sql("SELECT 1 FROM tenant_backup.jobs WHERE id = $1::bigint AND state IN ('queued', 'running')", 1,
				   args) != NULL)
			continue;
		if (tb_pg_drill_scratch_remove(d->path) != 0)
		{
			ereport(WARNING, (errmsg("tenant_backup: could not remove drill scratch directory \"%s\": %m", d->path)));
			continue;
		}
		tb_sql("SELECT tenant_backup._audit('scratch directory removed', (SELECT tenant FROM tenant_backup.jobs"
			   " WHERE id = $1::bigint), jsonb_build_object('directory', $2::text, 'job_id', $1::bigint))",
			   2, args);
		ereport(LOG, (errmsg("tenant_backup: removed drill scratch directory \"%s\" of job %s", d->path, d->job)));
	}
}

/* nftw has no argument for its callback: the bytes of the tree being measured. */
static int64 tb_scratch_tree_bytes;

static int
tb_scratch_tree_add(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type == FTW_F)
		tb_scratch_tree_bytes += st->st_size;
	return 0;
}

PG_FUNCTION_INFO_V1(tenant_backup_scratch_directories);

/* tenant_backup._scratch_directories(): directory, job_id, bytes (its files'), modified. */
Datum
tenant_backup_scratch_directories(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ListCell *lc;

	InitMaterializedSRF(fcinfo, 0);
	foreach (lc, tb_scratch_dirs())
	{
		tb_scratch_dir *d = lfirst(lc);
		Datum values[4];
		bool nulls[4] = {false, false, false, false};

		tb_scratch_tree_bytes = 0;
		(void) nftw(d->path, tb_scratch_tree_add, 16, FTW_PHYS);
		values[0] = CStringGetTextDatum(d->path);
		values[1] = Int64GetDatum(pg_strtoint64(d->job));
		values[2] = Int64GetDatum(tb_scratch_tree_bytes);
		values[3] = TimestampTzGetDatum(time_t_to_timestamptz(d->st.st_mtime));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

void
tb_scratch_pass(void)
{
	char keep[32];
	const char *due_args[1] = {keep};

	tb_scratch_dirs_sweep();
	snprintf(keep, sizeof(keep), "%d", tb_keep_old_copy_s);
	for (int i = 0; i < TB_SCRATCH_DROPS_PER_ROUND; i++)
	{
		char *name = tb_sql("SELECT tenant_backup._scratch_due($1::int)", 1, due_args);
		const char *done_args[2];
		char *failure;

		if (name == NULL)
			return;
		failure = tb_scratch_drop(name);
		done_args[0] = name;
		done_args[1] = failure;
		tb_sql("SELECT tenant_backup._scratch_dropped($1, $2)", 2, done_args);
		if (failure != NULL)
			ereport(WARNING, (errmsg("tenant_backup: could not drop scratch database \"%s\": %s", name, failure),
							  errhint("See tenant_backup.scratch_databases; it is tried again in an hour.")));
		else
			ereport(LOG, (errmsg("tenant_backup: dropped scratch database \"%s\"", name)));
	}
}
