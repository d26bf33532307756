/*
 * A job worker: runs one claimed job (a PostgreSQL tenant's backup or restore) and
 * records how it ended. Whatever happens, the job ends succeeded, queued again for
 * another attempt, or failed; its backup is complete only if the object was stored.
 */
#include "tenant_backup.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "job.h"

int tb_lock_timeout_ms = 5 * 60 * 1000;
int tb_job_timeout_s = 6 * 3600;
int tb_connect_timeout_s = 30;

char *
tb_job_overdue(const tb_job *job)
{
	if (job->deadline == 0 || GetCurrentTimestamp() < job->deadline)
		return NULL;
	return psprintf("job " INT64_FORMAT " of tenant \"%s\" exceeded tenant_backup.job_timeout (%s)", job->id,
					job->tenant, GetConfigOptionByName("tenant_backup.job_timeout", NULL, false));
}

static char *
tb_copy_value(HeapTuple tuple, TupleDesc desc, int column)
{
	char *value = SPI_getvalue(tuple, desc, column);

	return value ? MemoryContextStrdup(TopMemoryContext, value) : NULL;
}

/* Loads the job and its source; false if it is no longer ours to run. */
static bool
tb_job_load(int64 job_id, tb_job *job)
{
	Datum arg = Int64GetDatum(job_id);
	Oid type = INT8OID;
	bool found;

	memset(job, 0, sizeof(*job));
	job->id = job_id;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	SPI_execute_with_args("SELECT j.kind, j.tenant, j.engine, j.source_id, s.locator, s.sealed_password,"
						  "       j.backup_id, j.restore_target, j.attempts, j.max_attempts, NOT s.added_by_superuser,"
						  "       t.key_command"
						  " FROM tenant_backup.jobs j JOIN tenant_backup.sources s ON s.id = j.source_id"
						  " JOIN tenant_backup.tenants t ON t.name = j.tenant"
						  " WHERE j.id = $1 AND j.state = 'running'",
						  1, &type, &arg, NULL, false, 1);
	found = SPI_processed == 1;
	if (found)
	{
		HeapTuple t = SPI_tuptable->vals[0];
		TupleDesc d = SPI_tuptable->tupdesc;
		char *backup_id = SPI_getvalue(t, d, 7);

		strlcpy(job->kind, SPI_getvalue(t, d, 1), sizeof(job->kind));
		job->drill = strcmp(job->kind, "drill") == 0;
		strlcpy(job->tenant, SPI_getvalue(t, d, 2), sizeof(job->tenant));
		strlcpy(job->engine, SPI_getvalue(t, d, 3), sizeof(job->engine));
		job->source_id = pg_strtoint64(SPI_getvalue(t, d, 4));
		job->locator = tb_copy_value(t, d, 5);
		job->sealed_password = tb_copy_value(t, d, 6);
		job->backup_id = backup_id ? pg_strtoint64(backup_id) : 0;
		job->restore_target = tb_copy_value(t, d, 8);
		job->attempts = pg_strtoint32(SPI_getvalue(t, d, 9));
		job->max_attempts = pg_strtoint32(SPI_getvalue(t, d, 10));
		job->must_use_password = strcmp(SPI_getvalue(t, d, 11), "t") == 0;
		job->key_command = tb_copy_value(t, d, 12);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return found;
}

/* Records the outcome (error NULL: success) through _job_finish, only while the lease is ours. */
static void
tb_job_finish(tb_job *job, const char *error)
{
	char id[32];
	const char *args[4] = {id, job->lease_owner, error, error ? NULL : job->result};

	snprintf(id, sizeof(id), INT64_FORMAT, job->id);
	tb_sql("SELECT tenant_backup._job_finish($1::bigint, $2, $3, $4::jsonb)", 4, args);
}

/*
 * This attempt's lease token: pg:<postmaster start>:<random>. The prefix tells the
 * launcher a token of an earlier postmaster; the random part makes it unguessable, so
 * no one else can renew or end the attempt.
 */
static void
tb_job_lease_token(char *out, size_t size)
{
	uint8 random[16];
	char hex[2 * sizeof(random) + 1];

	if (!pg_strong_random(random, sizeof(random)))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate a lease token")));
	hex_encode((const char *) random, sizeof(random), hex);
	hex[sizeof(hex) - 1] = '\0';
	snprintf(out, size, "pg:" INT64_FORMAT ":%s", (int64) timestamptz_to_time_t(PgStartTime), hex);
}

void
tenant_backup_job_main(Datum arg)
{
	int64 job_id = DatumGetInt64(arg);
	MemoryContext job_context;
	char *error = NULL;
	tb_job job;
	char id[32];
	char claim[BGW_EXTRALEN];
	const char *args[3] = {id, job.lease_owner, claim};

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(tb_database, NULL, 0);
	job_context = AllocSetContextCreate(TopMemoryContext, "tenant_backup job", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(job_context);

	if (!tb_job_load(job_id, &job))
		proc_exit(0);
	if (tb_job_timeout_s > 0)
		job.deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) tb_job_timeout_s * 1000);
	tb_job_lease_token(job.lease_owner, sizeof(job.lease_owner));
	snprintf(id, sizeof(id), INT64_FORMAT, job_id);
	/* Only the attempt we were started for: a late start must not take over a newer one. */
	strlcpy(claim, MyBgworkerEntry->bgw_extra, sizeof(claim));
	if (tb_sql("UPDATE tenant_backup.jobs SET lease_owner = $2 WHERE id = $1::bigint AND state = 'running'"
			   " AND lease_owner = $3 RETURNING id",
			   3, args) == NULL)
		proc_exit(0);
	pgstat_report_appname(psprintf("tenant_backup %s of %s", job.kind, job.tenant));

	PG_TRY();
	{
		error = strcmp(job.kind, "backup") == 0 ? tb_pg_backup(&job) : tb_pg_restore(&job);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(job_context);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		error = edata->detail ? psprintf("%s (%s)", edata->message, edata->detail) : edata->message;
	}
	PG_END_TRY();

	if (error != NULL)
		ereport(LOG, (errmsg("tenant_backup: %s of tenant \"%s\" (job " INT64_FORMAT ", attempt %d of %d) failed: %s",
							 job.kind, job.tenant, job.id, job.attempts, job.max_attempts, error)));
	tb_job_finish(&job, error);
	proc_exit(0);
}
