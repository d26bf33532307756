/*
 * A wait => true request's jobs queued in a transaction of their own, so that they are
 * committed while the caller's transaction still runs (their commit wakes the launcher,
 * and their end the caller: jobs_wake_*), with any error handed back through the
 * request's DSM segment: by an idle job worker, or by the request worker started for
 * it when none is idle; and the caller's check, while it waits, that an agent can take
 * the jobs no launcher worker runs.
 */
#include "tenant_backup.h"

#include <signal.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "request.h"

int tb_agent_wait_s = 600;

/* A duration for a message: seconds, minutes or hours, whichever reads best. */
static char *
tb_request_duration(int64 seconds)
{
	if (seconds < 120)
		return psprintf(INT64_FORMAT " s", seconds);
	if (seconds < 2 * 3600)
		return psprintf(INT64_FORMAT " min", seconds / 60);
	return psprintf(INT64_FORMAT " h", seconds / 3600);
}

void
tb_request_check_agents(const char *token, TimestampTz waiting_since)
{
	Oid types[3] = {TEXTOID, TIMESTAMPTZOID, INT4OID};
	Datum values[3] = {CStringGetTextDatum(token), TimestampTzGetDatum(waiting_since), Int32GetDatum(tb_agent_wait_s)};
	HeapTuple row;
	TupleDesc desc;
	char *job, *tenant, *engine, *unseen;
	bool never_seen;

	if (tb_agent_wait_s == 0)
		return;
	/* clock_timestamp(): the caller's transaction, and so its now(), began before the wait. */
	if (SPI_execute_with_args("SELECT j.id, j.tenant, j.engine, max(r.last_seen) IS NULL,"
							  " floor(extract(epoch FROM clock_timestamp() - coalesce(max(r.last_seen), $2)))::bigint"
							  " FROM tenant_backup.jobs j"
							  " LEFT JOIN tenant_backup.agent_registry r ON j.engine = ANY (r.engines)"
							  " WHERE j.request = $1 AND j.state = 'queued' AND j.engine <> 'postgres'"
							  " GROUP BY j.id, j.tenant, j.engine"
							  " HAVING greatest(max(r.last_seen), $2) < clock_timestamp() - make_interval(secs => $3)"
							  " ORDER BY j.id LIMIT 1",
							  3, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the agents of request %s", token);
	if (SPI_processed == 0)
		return;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	job = SPI_getvalue(row, desc, 1);
	tenant = SPI_getvalue(row, desc, 2);
	engine = SPI_getvalue(row, desc, 3);
	never_seen = strcmp(SPI_getvalue(row, desc, 4), "t") == 0;
	unseen = tb_request_duration(pg_strtoint64(SPI_getvalue(row, desc, 5)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 never_seen ? errmsg("no agent for %s has ever been seen (waited %s)", engine, unseen)
						: errmsg("no agent for %s has been seen for %s", engine, unseen),
			 errdetail("Job %s of tenant \"%s\" stays queued and runs once an agent for %s connects; this call "
					   "stopped waiting after tenant_backup.agent_wait (%s).",
					   job, tenant, engine, tb_request_duration(tb_agent_wait_s)),
			 errhint("Start tenant-backup-agent-%s with a login granted tenant_backup_agent (tenant_backup.agents "
					 "lists the agents seen), or raise tenant_backup.agent_wait.",
					 engine)));
}

void
tb_request_enqueue(tb_request *req, int lock_timeout_ms, tb_request_then then, void *arg)
{
	Oid types[8] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, BOOLOID};
	Datum values[8];
	char nulls[8] = "        ";
	Oid waiter_types[2] = {TEXTOID, INT4OID};
	Datum waiter_values[2];
	MemoryContext caller = CurrentMemoryContext;
	PGPROC *waiter;

	values[0] = CStringGetTextDatum(req->kind);
	values[1] = CStringGetTextDatum(req->tenant);
	values[2] = req->engine[0] ? CStringGetTextDatum(req->engine) : (Datum) 0;
	nulls[2] = req->engine[0] ? ' ' : 'n';
	values[3] = Int64GetDatum(req->backup_id);
	nulls[3] = req->backup_id ? ' ' : 'n';
	values[4] = req->target[0] ? CStringGetTextDatum(req->target) : (Datum) 0;
	nulls[4] = req->target[0] ? ' ' : 'n';
	values[5] = CStringGetTextDatum(req->token);
	values[6] = CStringGetTextDatum(req->actor);
	values[7] = BoolGetDatum(!req->bare_target);
	waiter_values[0] = values[5];
	waiter_values[1] = Int32GetDatum(req->caller_pid);

	PG_TRY();
	{
		if (req->database != MyDatabaseId)
			ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
							errmsg("the request of tenant \"%s\" reached a worker of another database", req->tenant)));
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		if (lock_timeout_ms > 0)
			SPI_execute(psprintf("SET LOCAL lock_timeout = %d", lock_timeout_ms), false, 0);
		SPI_execute_with_args("SELECT tenant_backup._enqueue($1, $2, $3, $4, $5, $6, $7, $8)", 8, types, values, nulls,
							  false, 0);
		/* The caller waits: each job's end wakes it. */
		SPI_execute_with_args("UPDATE tenant_backup.jobs SET waiter_pid = $2 WHERE request = $1", 2, waiter_types,
							  waiter_values, NULL, false, 0);
		if (then != NULL)
			then(arg);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();

		if (lock_timeout_ms > 0 && edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)
			req->handed_back = true;
		else
		{
			req->sqlerrcode = edata->sqlerrcode;
			strlcpy(req->error, edata->message, sizeof(req->error));
			if (edata->hint)
				strlcpy(req->hint, edata->hint, sizeof(req->hint));
		}
		FlushErrorState();
		AbortOutOfAnyTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	/* Everything above before done: the caller reads them once it sees done. */
	pg_write_barrier();
	req->done = true;
	if ((waiter = BackendPidGetProc(req->caller_pid)) != NULL)
		SetLatch(&waiter->procLatch);
}

void
tenant_backup_request_main(Datum arg)
{
	dsm_segment *seg;
	tb_request *req;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("tenant_backup request worker: the caller went away")));
	req = dsm_segment_address(seg);
	if (req->magic != TB_REQUEST_MAGIC)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("tenant_backup request worker: the caller went away")));
	BackgroundWorkerInitializeConnectionByOid(req->database, InvalidOid, 0);
	tb_request_enqueue(req, 0, NULL, NULL);
	dsm_detach(seg);
	proc_exit(0);
}
