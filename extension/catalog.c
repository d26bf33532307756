/*
 * Short catalog transactions for background workers: run one statement in its own
 * transaction and snapshot, and the job-lease bookkeeping built on that.
 */
#include "tenant_backup.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "job.h"

#define TB_PROGRESS_EVERY_MS 2000

char *
tb_sql(const char *sql, int nargs, const char *const *args)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid types[8];
	Datum values[8];
	char nulls[8];
	char *result = NULL;

	Assert(nargs <= 8);
	for (int i = 0; i < nargs; i++)
	{
		types[i] = TEXTOID;
		values[i] = args[i] ? CStringGetTextDatum(args[i]) : (Datum) 0;
		nulls[i] = args[i] ? ' ' : 'n';
	}
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0) < 0)
		elog(ERROR, "tenant_backup: catalog statement failed: %s", sql);
	if (SPI_processed > 0 && SPI_tuptable != NULL)
	{
		char *value = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (value != NULL)
			result = MemoryContextStrdup(caller, value);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(caller);
	return result;
}

bool
tb_job_progress(tb_job *job, int64 bytes, bool force)
{
	TimestampTz now = GetCurrentTimestamp();
	char id[32], done[32], lease[32];
	const char *args[4] = {id, done, job->lease_owner, lease};

	if (!force && !TimestampDifferenceExceeds(job->last_report, now, TB_PROGRESS_EVERY_MS))
		return true;
	job->last_report = now;
	snprintf(id, sizeof(id), INT64_FORMAT, job->id);
	snprintf(done, sizeof(done), INT64_FORMAT, bytes);
	snprintf(lease, sizeof(lease), "%d", tb_lease_seconds);
	return tb_sql("UPDATE tenant_backup.jobs SET bytes_done = $2::bigint, "
				  "lease_expires = now() + make_interval(secs => $4::int) "
				  "WHERE id = $1::bigint AND state = 'running' AND lease_owner = $3 RETURNING id",
				  4, args) != NULL;
}

bool
tb_job_phase(const tb_job *job, const char *phase)
{
	char id[32];
	const char *args[3] = {id, phase, job->lease_owner};

	snprintf(id, sizeof(id), INT64_FORMAT, job->id);
	pgstat_report_activity(STATE_RUNNING, psprintf("tenant_backup: %s of tenant \"%s\" (%s): %s", job->kind,
												   job->tenant, job->engine, phase));
	return tb_sql("UPDATE tenant_backup.jobs SET phase = $2 "
				  "WHERE id = $1::bigint AND state = 'running' AND lease_owner = $3 RETURNING id",
				  3, args) != NULL;
}
