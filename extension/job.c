/*
 * A job worker: runs the job the launcher claimed for it (a PostgreSQL tenant's backup
 * or restore), then the next queued backups, waiting idle a while for more (pool.h),
 * and records how each ended. Whatever
 * happens, a job ends succeeded, queued again for another attempt, or failed; its
 * backup is complete only if the object was stored. And the wake-ups of the jobs
 * table: a queued job wakes the launcher, an ended one the caller waiting on it.
 */
#include "tenant_backup.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "job.h"
#include "pool.h"
#include "request.h"

int tb_lock_timeout_ms = 5 * 60 * 1000;
int tb_job_timeout_s = 6 * 3600;
int tb_connect_timeout_s = 30;

/*
 * A worker that finished a job takes the next queued backup itself, sparing a
 * background worker start per job, for at most this many jobs and this long: then it
 * exits, so its memory stays that of one job and settings such as max_workers apply
 * to a fresh worker soon.
 */
#define TB_JOB_WORKER_MAX_JOBS 100
#define TB_JOB_WORKER_MAX_MS (60 * 1000)

/* How long an idle worker waits for a lock while it queues a handed request before it hands it back. */
#define TB_JOB_REQUEST_LOCK_TIMEOUT_MS 2000

PG_FUNCTION_INFO_V1(tenant_backup_jobs_wake);

/*
 * The latches to set once the transaction that queued or ended jobs commits (before,
 * the woken process would not see the rows yet). A few suffice: a process left out
 * only waits for its own next poll.
 */
#define TB_WAKE_MAX 16
static Latch *tb_wake_latches[TB_WAKE_MAX];
static int tb_wake_count;
static bool tb_wake_launcher_looked_up; /* once per transaction */

char *
tb_job_overdue(const tb_job *job)
{
	if (job->deadline == 0 || GetCurrentTimestamp() < job->deadline)
		return NULL;
	return psprintf("job " INT64_FORMAT " of tenant \"%s\" exceeded tenant_backup.job_timeout (%s)", job->id,
					job->tenant, GetConfigOptionByName("tenant_backup.job_timeout", NULL, false));
}

static char *
tb_copy_value(HeapTuple tuple, TupleDesc desc, int column, MemoryContext into)
{
	char *value = SPI_getvalue(tuple, desc, column);

	return value ? MemoryContextStrdup(into, value) : NULL;
}

/* Loads the job and its source, its strings into the job's context; false if it is no longer ours to run. */
static bool
tb_job_load(int64 job_id, tb_job *job, MemoryContext into)
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
		job->locator = tb_copy_value(t, d, 5, into);
		job->sealed_password = tb_copy_value(t, d, 6, into);
		job->backup_id = backup_id ? pg_strtoint64(backup_id) : 0;
		job->restore_target = tb_copy_value(t, d, 8, into);
		job->attempts = pg_strtoint32(SPI_getvalue(t, d, 9));
		job->max_attempts = pg_strtoint32(SPI_getvalue(t, d, 10));
		job->must_use_password = strcmp(SPI_getvalue(t, d, 11), "t") == 0;
		job->key_command = tb_copy_value(t, d, 12, into);
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

/*
 * Runs a job whose lease is ours and records how it ended. Returns false when the
 * attempt raised an ERROR: the worker then exits rather than run another job in a
 * process an error unwound through.
 */
static bool
tb_job_run(tb_job *job, MemoryContext job_context)
{
	char *error = NULL;
	volatile bool clean = true;

	if (tb_job_timeout_s > 0)
		job->deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) tb_job_timeout_s * 1000);
	pgstat_report_appname(psprintf("tenant_backup %s of %s", job->kind, job->tenant));
	PG_TRY();
	{
		error = strcmp(job->kind, "backup") == 0 ? tb_pg_backup(job) : tb_pg_restore(job);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(job_context);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		error = edata->detail ? psprintf("%s (%s)", edata->message, edata->detail) : edata->message;
		clean = false;
	}
	PG_END_TRY();

	if (error != NULL)
		ereport(LOG, (errmsg("tenant_backup: %s of tenant \"%s\" (job " INT64_FORMAT ", attempt %d of %d) failed: %s",
							 job->kind, job->tenant, job->id, job->attempts, job->max_attempts, error)));
	tb_job_finish(job, error);
	/* The server address the job pinned (pg_tools.c keeps it in TopMemoryContext). */
	if (job->pinned_host != NULL)
	{
		pfree(job->pinned_host);
		pfree(job->pinned_port);
		pfree(job->pinned_hostaddr);
	}
	return clean;
}

/* The claim of tb_job_claim_next: $1 the new lease token, $2 the lease's seconds. */
#define TB_JOB_CLAIM_NEXT_BACKUP                                                                                       \
	"UPDATE tenant_backup.jobs SET state = 'running', attempts = attempts + 1, started = now(),"                       \
	" lease_owner = $1, lease_expires = now() + make_interval(secs => $2::int)"                                        \
	" WHERE id = (SELECT tenant_backup._job_next('postgres')) AND kind = 'backup' RETURNING id"

/*
 * Claims, under the new lease token lease_owner, the job the launcher would start
 * next (_job_next: its fairness and its one running job per source hold) if it is a
 * backup; 0 otherwise. Anything else, a restore or a drill, waits for the launcher,
 * which starts a fresh worker for it once this one exits.
 */
static int64
tb_job_claim_next(char *lease_owner, size_t size)
{
	char lease[16];
	const char *args[2] = {lease_owner, lease};
	char *id;

	tb_job_lease_token(lease_owner, size);
	snprintf(lease, sizeof(lease), "%d", tb_lease_seconds);
	id = tb_sql(TB_JOB_CLAIM_NEXT_BACKUP, 2, args);
	return id == NULL ? 0 : pg_strtoint64(id);
}

/* tb_job_claim_next inside the transaction that queues a handed request (tb_request_then). */
typedef struct tb_job_claim
{
	char *lease_owner;
	size_t size;
	int64 id;
} tb_job_claim;

static void
tb_job_claim_in_request(void *arg)
{
	tb_job_claim *claim = arg;
	Oid types[2] = {TEXTOID, TEXTOID};
	Datum values[2];

	tb_job_lease_token(claim->lease_owner, claim->size);
	values[0] = CStringGetTextDatum(claim->lease_owner);
	values[1] = CStringGetTextDatum(psprintf("%d", tb_lease_seconds));
	if (SPI_execute_with_args(TB_JOB_CLAIM_NEXT_BACKUP, 2, types, values, NULL, false, 1) == SPI_OK_UPDATE_RETURNING &&
		SPI_processed == 1)
		claim->id = pg_strtoint64(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

/* True while a restore or drill is queued: only the launcher starts those, in a worker of their own. */
static bool
tb_job_launcher_work_waits(void)
{
	return tb_sql("SELECT 1 FROM tenant_backup.jobs WHERE engine = 'postgres' AND state = 'queued'"
				  " AND kind <> 'backup' LIMIT 1",
				  0, NULL) != NULL;
}

/*
 * Queues the jobs of the wait => true request a caller handed this idle worker
 * (request.c) and, in the same transaction, claims the next backup as
 * tb_job_claim_next does (most often the request's own): the launcher, woken by the
 * queued jobs, finds nothing left to start. Returns the claimed job, or 0.
 */
static int64
tb_job_serve_request(dsm_handle handle, char *lease_owner, size_t size)
{
	dsm_segment *seg = dsm_attach(handle);
	tb_job_claim claim = {lease_owner, size, 0};
	tb_request *req;

	/* NULL, or another's segment under a reused handle: the caller went away before we looked. */
	if (seg == NULL)
		return 0;
	req = dsm_segment_address(seg);
	if (dsm_segment_map_length(seg) >= sizeof(tb_request) && req->magic == TB_REQUEST_MAGIC)
	{
		tb_request_enqueue(req, TB_JOB_REQUEST_LOCK_TIMEOUT_MS, tb_job_claim_in_request, &claim);
		/* A transaction that did not commit claimed nothing. */
		if (req->error[0] != '\0' || req->handed_back)
			claim.id = 0;
	}
	dsm_detach(seg);
	return claim.id;
}

/*
 * The next backup for a worker that finished one: claimed at once when one is queued;
 * otherwise the worker waits, listed as idle (pool.h), up to tenant_backup.worker_idle_time
 * and never past until, for a queued job's commit to wake it or a wait => true call to
 * hand it a request, which it queues itself. It looks again every naptime, as the
 * launcher does. 0: none, and the worker exits; at once when a restore or drill waits,
 * whose worker the launcher starts in this one's place.
 */
static int64
tb_job_wait_next(char *lease_owner, size_t size, TimestampTz until)
{
	TimestampTz idle_since = GetCurrentTimestamp();

	for (;;)
	{
		int64 id = tb_job_claim_next(lease_owner, size);
		long wait_ms;
		dsm_handle request;

		if (id != 0 || tb_job_launcher_work_waits())
			return id;
		/* worker_idle_time as it is now: a reload that shortens it counts at once. */
		wait_ms = TimestampDifferenceMilliseconds(
			GetCurrentTimestamp(), Min(until, TimestampTzPlusMilliseconds(idle_since, (int64) tb_worker_idle_ms)));
		if (wait_ms <= 0)
			return 0;
		pgstat_report_appname("tenant_backup job worker");
		pgstat_report_activity(STATE_IDLE, "tenant_backup: waiting for a queued backup");
		tb_pool_idle_enter();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, Min(wait_ms, tb_naptime_ms),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		request = tb_pool_idle_leave();
		pgstat_report_activity(STATE_RUNNING, "tenant_backup: looking for the next backup");
		if (request != DSM_HANDLE_INVALID && (id = tb_job_serve_request(request, lease_owner, size)) != 0)
			return id;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

/* Sets the latches gathered for this transaction if it committed, and forgets them at its end either way. */
static void
tb_wake_at_end(XactEvent event, void *arg)
{
	(void) arg;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		for (int i = 0; i < tb_wake_count; i++)
			SetLatch(tb_wake_latches[i]);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PREPARE)
	{
		tb_wake_count = 0;
		tb_wake_launcher_looked_up = false;
	}
}

/* Gathers a latch to set at commit; one of a process gone by then only costs its next user a look at its work. */
static void
tb_wake_add_latch(Latch *latch)
{
	static bool callback_registered = false;

	if (latch == MyLatch)
		return;
	if (!callback_registered)
	{
		RegisterXactCallback(tb_wake_at_end, NULL);
		callback_registered = true;
	}
	for (int i = 0; i < tb_wake_count; i++)
		if (tb_wake_latches[i] == latch)
			return;
	if (tb_wake_count < TB_WAKE_MAX)
		tb_wake_latches[tb_wake_count++] = latch;
}

/* Gathers the latch of backend pid, if it lives. */
static void
tb_wake_add(int pid)
{
	PGPROC *proc = BackendPidGetProc(pid);

	if (proc != NULL)
		tb_wake_add_latch(&proc->procLatch);
}

/*
 * Trigger of tenant_backup.jobs (jobs_wake_launcher, jobs_wake_waiter): a queued
 * PostgreSQL job wakes the launcher at commit, which then starts it without waiting
 * for its naptime; an ended job wakes the backend waiting on it in wait => true
 * (jobs.waiter_pid), which then returns without waiting for its next poll.
 */
Datum
tenant_backup_jobs_wake(PG_FUNCTION_ARGS)
{
	TriggerData *trigger = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigger->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigger->tg_event))
		ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
						errmsg("tenant_backup._jobs_wake() must be an AFTER ... FOR EACH ROW trigger")));
	if (TRIGGER_FIRED_BY_INSERT(trigger->tg_event) && !tb_wake_launcher_looked_up)
	{
		tb_wake_launcher_looked_up = true;
		SPI_connect();
		if (SPI_execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_backup launcher'", true, 1) ==
				SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			bool isnull;
			Datum pid = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				tb_wake_add(DatumGetInt32(pid));
		}
		SPI_finish();
		/* And the idle job workers, one of which may claim it before the launcher's round. */
		tb_pool_each_idle(tb_wake_add_latch);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigger->tg_event))
	{
		TupleDesc desc = trigger->tg_relation->rd_att;
		int column = SPI_fnumber(desc, "waiter_pid");
		bool isnull = true;
		Datum pid = column > 0 ? heap_getattr(trigger->tg_newtuple, column, desc, &isnull) : (Datum) 0;

		if (!isnull)
			tb_wake_add(DatumGetInt32(pid));
	}
	return PointerGetDatum(NULL);
}

void
tenant_backup_job_main(Datum arg)
{
	int64 job_id = DatumGetInt64(arg);
	MemoryContext job_context;
	TimestampTz worker_started;
	tb_job job;
	char id[32];
	char claim[BGW_EXTRALEN];
	char lease_owner[sizeof(job.lease_owner)];
	const char *args[3] = {id, lease_owner, claim};
	int jobs_run = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(tb_database, NULL, 0);
	/* Everything of one job goes here, and goes with the next: a worker runs many. */
	job_context = AllocSetContextCreate(TopMemoryContext, "tenant_backup job", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(job_context);

	if (!tb_job_load(job_id, &job, job_context))
		proc_exit(0);
	tb_job_lease_token(lease_owner, sizeof(lease_owner));
	snprintf(id, sizeof(id), INT64_FORMAT, job_id);
	/* Only the attempt we were started for: a late start must not take over a newer one. */
	strlcpy(claim, MyBgworkerEntry->bgw_extra, sizeof(claim));
	if (tb_sql("UPDATE tenant_backup.jobs SET lease_owner = $2 WHERE id = $1::bigint AND state = 'running'"
			   " AND lease_owner = $3 RETURNING id",
			   3, args) == NULL)
		proc_exit(0);
	worker_started = GetCurrentTimestamp();
	for (;;)
	{
		strlcpy(job.lease_owner, lease_owner, sizeof(job.lease_owner));
		if (!tb_job_run(&job, job_context) || ++jobs_run >= TB_JOB_WORKER_MAX_JOBS ||
			TimestampDifferenceExceeds(worker_started, GetCurrentTimestamp(), TB_JOB_WORKER_MAX_MS))
			break;
		MemoryContextReset(job_context);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		job_id = tb_job_wait_next(lease_owner, sizeof(lease_owner),
								  TimestampTzPlusMilliseconds(worker_started, TB_JOB_WORKER_MAX_MS));
		if (job_id == 0 || !tb_job_load(job_id, &job, job_context))
			break;
	}
	proc_exit(0);
}
