/*
 * The launcher: one background worker per cluster that wakes every naptime, puts
 * the jobs of dead workers back in the queue, queues the backups of due tenants,
 * and starts a job worker per queued PostgreSQL job up to tenant_backup.max_workers.
 * It decides; job workers do the work.
 */
#include "tenant_backup.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "check.h"
#include "job.h"
#include "pool.h"
#include "replicate.h"

#define TB_MAX_HANDLES 64

static BackgroundWorkerHandle *tb_workers[TB_MAX_HANDLES];

/* Names this postmaster's lifetime: a job leased under another one is certainly dead. */
static char *
tb_lease_prefix(void)
{
	return psprintf("pg:" INT64_FORMAT ":", (int64) timestamptz_to_time_t(PgStartTime));
}

/*
 * Jobs whose lease expired, or that were leased by a job worker of an earlier
 * postmaster (a crash restart), go back to the queue or fail after max_attempts;
 * their backups are marked failed, never complete (_job_reclaim: jobs, then backups).
 */
static void
tb_launcher_reclaim(void)
{
	char *prefix = tb_lease_prefix();
	const char *args[1] = {prefix};

	tb_sql("SELECT tenant_backup._job_reclaim($1)", 1, args);
	pfree(prefix);
}

/* Queues a backup of every database of each due tenant, once, and moves next_due on. */
static void
tb_launcher_schedule(void)
{
	const char *args[1] = {tb_default_schedule};

	tb_sql("WITH due AS ("
		   "  UPDATE tenant_backup.tenants t"
		   "  SET next_due = tenant_backup._next_due(t.name, coalesce(t.schedule, $1::interval), now())"
		   "  FROM (SELECT name, next_due AS was FROM tenant_backup.tenants"
		   "        WHERE next_due IS NULL OR next_due <= now() FOR UPDATE SKIP LOCKED) d"
		   "  WHERE t.name = d.name RETURNING t.name, d.was)"
		   ", queued AS (INSERT INTO tenant_backup.jobs (kind, tenant, source_id, engine)"
		   "  SELECT 'backup', s.tenant, s.id, s.engine FROM due JOIN tenant_backup.sources s ON s.tenant = due.name"
		   "  WHERE due.was IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenant_backup.jobs j"
		   "    WHERE j.source_id = s.id AND j.kind = 'backup' AND j.state IN ('queued', 'running'))"
		   "  RETURNING engine)"
		   " SELECT pg_notify('tenant_backup_jobs', engine) FROM (SELECT DISTINCT engine FROM queued) e",
		   1, args);
}

/*
 * Applies retention, a tenant per transaction (one tenant's failure, say storage being
 * unreachable, neither undoes another's deletions nor stops the launcher), every
 * retention_interval.
 */
static void
tb_launcher_retention(void)
{
	static TimestampTz last_run = 0;
	Interval *every = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(tb_retention_interval),
															ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	char *tenants, *tenant, *save = NULL;

	/* From the last run and the interval as it is now: a reload that shortens it counts at once. */
	if (last_run != 0 &&
		GetCurrentTimestamp() < DatumGetTimestampTz(DirectFunctionCall2(
									timestamptz_pl_interval, TimestampTzGetDatum(last_run), IntervalPGetDatum(every))))
		return;
	last_run = GetCurrentTimestamp();
	tenants = tb_sql("SELECT string_agg(name, ' ' ORDER BY name) FROM tenant_backup.tenants WHERE hold_since IS NULL",
					 0, NULL);
	if (tenants == NULL)
		return;
	for (tenant = strtok_r(tenants, " ", &save); tenant != NULL; tenant = strtok_r(NULL, " ", &save))
	{
		MemoryContext ctx = CurrentMemoryContext;
		const char *who[1] = {tenant};

		PG_TRY();
		{
			tb_sql("SELECT count(*) FROM tenant_backup._expire($1, 'tenant_backup worker')", 1, who);
		}
		PG_CATCH();
		{
			ErrorData *edata;

			MemoryContextSwitchTo(ctx);
			edata = CopyErrorData();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			ereport(WARNING,
					(errmsg("tenant_backup: retention of tenant \"%s\" failed: %s", tenant, edata->message),
					 errhint("It is tried again in tenant_backup.retention_interval; nothing kept was deleted.")));
		}
		PG_END_TRY();
	}
}

static int
tb_launcher_running(void)
{
	int running = 0;

	for (int i = 0; i < TB_MAX_HANDLES; i++)
	{
		pid_t pid;

		if (tb_workers[i] == NULL)
			continue;
		if (GetBackgroundWorkerPid(tb_workers[i], &pid) == BGWH_STOPPED)
		{
			pfree(tb_workers[i]);
			tb_workers[i] = NULL;
			continue;
		}
		running++;
	}
	return running;
}

/* Starts a job worker for job_id, handing it the claim token it may take the lease over from. */
static bool
tb_launcher_start_job(int64 job_id, const char *claim)
{
	BackgroundWorker worker;
	MemoryContext old;
	bool started;
	int slot = -1;

	for (int i = 0; i < TB_MAX_HANDLES && slot < 0; i++)
		if (tb_workers[i] == NULL)
			slot = i;
	if (slot < 0)
		return false;
	tb_worker_describe(&worker, "tenant_backup_job_main", "tenant_backup job",
					   psprintf("tenant_backup job " INT64_FORMAT, job_id));
	worker.bgw_main_arg = Int64GetDatum(job_id);
	strlcpy(worker.bgw_extra, claim, BGW_EXTRALEN);
	worker.bgw_notify_pid = MyProcPid;
	/* The handle outlives the round: it is checked on later rounds. */
	old = MemoryContextSwitchTo(TopMemoryContext);
	started = RegisterDynamicBackgroundWorker(&worker, &tb_workers[slot]);
	MemoryContextSwitchTo(old);
	return started;
}

/*
 * Claims queued PostgreSQL jobs and starts a worker for each, up to max_workers, under
 * a random claim token the worker swaps for its own.
 */
static void
tb_launcher_dispatch(void)
{
	char *owner = psprintf("%sclaim:", tb_lease_prefix());
	char lease[16];
	const char *args[2] = {owner, lease};

	snprintf(lease, sizeof(lease), "%d", tb_lease_seconds);
	/* An idle job worker, woken by the same commit, claims the next backup itself. */
	while (tb_launcher_running() < Min(tb_max_workers, TB_MAX_HANDLES) && !tb_pool_any_idle())
	{
		char *id = tb_sql("UPDATE tenant_backup.jobs SET state = 'running', attempts = attempts + 1,"
						  " started = now(), lease_owner = $1 || gen_random_uuid(),"
						  " lease_expires = now() + make_interval(secs => $2::int)"
						  " WHERE id = (SELECT tenant_backup._job_next('postgres'))"
						  " RETURNING id || ' ' || lease_owner",
						  2, args);
		char *claim;
		int64 job_id;

		if (id == NULL)
			break;
		claim = strchr(id, ' ');
		*claim++ = '\0';
		job_id = pg_strtoint64(id);
		if (!tb_launcher_start_job(job_id, claim))
		{
			const char *back[1] = {id};

			ereport(WARNING, (errmsg("tenant_backup: no background worker slot for job %s; it stays queued", id),
							  errhint("Raise max_worker_processes.")));
			tb_sql("UPDATE tenant_backup.jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL,"
				   " lease_expires = NULL WHERE id = $1::bigint",
				   1, back);
			break;
		}
	}
	pfree(owner);
}

void
tenant_backup_launcher_main(Datum arg)
{
	MemoryContext round;

	(void) arg;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(tb_database, NULL, 0);
	pgstat_report_appname("tenant_backup launcher");
	ereport(LOG, (errmsg("tenant_backup launcher started in database \"%s\"", tb_database)));
	/* Everything a round allocates goes here and is freed with the next round: it runs forever. */
	round = AllocSetContextCreate(TopMemoryContext, "tenant_backup launcher round", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		MemoryContextReset(round);
		MemoryContextSwitchTo(round);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			tb_settings_warn();
		}
		/* The catalog this build speaks: after an install, nothing runs until ALTER EXTENSION UPDATE. */
		if (tb_sql("SELECT 1 FROM pg_extension WHERE extname = 'tenant_backup' AND extversion = '0.2.0'", 0, NULL) !=
			NULL)
		{
			tb_launcher_reclaim();
			/* A restore whose worker died: its live database re-opened, its journal finished (pg_swap.c). */
			tb_sql("SELECT tenant_backup._restore_swaps_recover()", 0, NULL);
			tb_scratch_pass();
			tb_launcher_schedule();
			tb_launcher_dispatch();
			tb_replicate_pass();
			tb_launcher_retention();
			tb_janitor_pass();
			tb_sql("SELECT tenant_backup._audit_head_store()", 0, NULL);
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, tb_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
