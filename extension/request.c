/*
 * The request worker of wait => true: queues a request's jobs in a transaction of
 * its own, so that they are committed while the caller's transaction still runs,
 * wakes the launcher so that they start at once, and hands any error back through
 * the request's DSM segment.
 */
#include "tenant_backup.h"

#include <signal.h>

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "request.h"

void
tenant_backup_request_main(Datum arg)
{
	dsm_segment *seg;
	tb_request *req;
	Oid types[7] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID, TEXTOID};
	Datum values[7];
	char nulls[7] = "       ";
	MemoryContext caller;
	char *volatile launcher = NULL;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("tenant_backup request worker: the caller went away")));
	req = dsm_segment_address(seg);
	BackgroundWorkerInitializeConnectionByOid(req->database, InvalidOid, 0);

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

	caller = CurrentMemoryContext;
	PG_TRY();
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		SPI_connect();
		PushActiveSnapshot(GetTransactionSnapshot());
		SPI_execute_with_args("SELECT tenant_backup._enqueue($1, $2, $3, $4, $5, $6, $7)", 7, types, values, nulls,
							  false, 0);
		if (SPI_execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'tenant_backup launcher'", true, 1) ==
				SPI_OK_SELECT &&
			SPI_processed == 1)
			launcher =
				MemoryContextStrdup(TopMemoryContext, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		/* SIGUSR1 sets a background worker's latch: the launcher looks at the queue now, not after naptime. */
		if (launcher != NULL)
			(void) kill(pg_strtoint32(launcher), SIGUSR1);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();

		req->sqlerrcode = edata->sqlerrcode;
		strlcpy(req->error, edata->message, sizeof(req->error));
		if (edata->hint)
			strlcpy(req->hint, edata->hint, sizeof(req->hint));
		FlushErrorState();
		AbortOutOfAnyTransaction();
	}
	PG_END_TRY();
	dsm_detach(seg);
	proc_exit(0);
}
