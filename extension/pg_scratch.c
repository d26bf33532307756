/*
 * Databases restores and drills leave on this cluster (tenant_backup.scratch_databases):
 * the launcher drops the ones an operator asked to remove (tenant_remove_scratch) and
 * previous copies older than tenant_backup.keep_old_copy, each DROP DATABASE in a
 * transaction of its own, as a top-level statement would run it.
 */
#include "tenant_backup.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "utils/memutils.h"

#include "job.h"

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

void
tb_scratch_pass(void)
{
	char keep[32];
	const char *due_args[1] = {keep};

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
