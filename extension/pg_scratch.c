/*
 * Databases restores and drills leave on this cluster (tenant_backup.scratch_databases):
 * the launcher drops the ones an operator asked to remove (tenant_remove_scratch) and
 * previous copies older than tenant_backup.keep_old_copy, each DROP DATABASE in a
 * transaction of its own, as a top-level statement would run it; and it removes the
 * scratch directories of base backup drills whose job is over (a crash left them).
 */
#include "tenant_backup.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "nodes/pg_list.h"
#include "storage/fd.h"
#include "utils/memutils.h"

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

/*
 * <parent>/tenant_backup_drill_<port>_<job>_XXXXXX directories of this server's user whose
 * job is not queued or running: removed, the removal logged and audited.
 */
static void
tb_scratch_dirs_sweep(void)
{
	char *parent = tb_pg_drill_scratch_parent();
	char *prefix = tb_pg_drill_scratch_prefix();
	size_t prefix_len = strlen(prefix);
	List *names = NIL;
	ListCell *lc;
	DIR *dir = AllocateDir(parent);
	struct dirent *de;

	/* The names first: the directory handle must not outlive the catalog transactions below. */
	while (dir != NULL && (de = ReadDirExtended(dir, parent, LOG)) != NULL)
		if (strncmp(de->d_name, prefix, prefix_len) == 0)
			names = lappend(names, pstrdup(de->d_name));
	if (dir != NULL)
		FreeDir(dir);
	foreach (lc, names)
	{
		const char *name = lfirst(lc);
		size_t digits = strspn(name + prefix_len, "0123456789");
		char job[32], *path = psprintf("%s/%s", parent, name);
		const char *args[2] = {job, path};
		struct stat st;

		if (digits == 0 || digits > 18 || name[prefix_len + digits] != '_')
			continue;
		snprintf(job, sizeof(job), "%.*s", (int) digits, name + prefix_len);
		/* Only a directory of ours, never through a link: another user's name-alike stays. */
		if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
			tb_sql("SELECT 1 FROM tenant_backup.jobs WHERE id = $1::bigint AND state IN ('queued', 'running')", 1,
				   args) != NULL)
			continue;
		if (tb_pg_drill_scratch_remove(path) != 0)
		{
			ereport(WARNING, (errmsg("tenant_backup: could not remove drill scratch directory \"%s\": %m", path)));
			continue;
		}
		tb_sql("SELECT tenant_backup._audit('scratch directory removed', (SELECT tenant FROM tenant_backup.jobs"
			   " WHERE id = $1::bigint), jsonb_build_object('directory', $2::text, 'job_id', $1::bigint))",
			   2, args);
		ereport(LOG, (errmsg("tenant_backup: removed drill scratch directory \"%s\" of job %s", path, job)));
	}
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
