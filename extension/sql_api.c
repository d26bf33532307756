/*
 * SQL-callable C functions: tenant key creation, secret sealing, and running a
 * request to completion for wait => true.
 */
#include "tenant_backup.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "libpq-fe.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/latch.h"
#include "storage/procarray.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "pool.h"
#include "repo.h"
#include "request.h"

PG_FUNCTION_INFO_V1(tenant_backup_key_create);
PG_FUNCTION_INFO_V1(tenant_backup_seal_secret);
PG_FUNCTION_INFO_V1(tenant_backup_run_request);
PG_FUNCTION_INFO_V1(tenant_backup_master_key_id);
PG_FUNCTION_INFO_V1(tenant_backup_key_rewrap);
PG_FUNCTION_INFO_V1(tenant_backup_secret_reseal);
PG_FUNCTION_INFO_V1(tenant_backup_require_worker);
PG_FUNCTION_INFO_V1(tenant_backup_split_conninfo);
PG_FUNCTION_INFO_V1(tenant_backup_backup_object_check);

/*
 * Splits a PostgreSQL conninfo or URI with libpq's own parser (the one the tools
 * will use, percent-decoding and all) into the conninfo without its password, in
 * key='value' form, and the password. The messages never quote the input.
 */
Datum
tenant_backup_split_conninfo(PG_FUNCTION_ARGS)
{
	char *locator = text_to_cstring(PG_GETARG_TEXT_PP(0));
	PQconninfoOption *opts = PQconninfoParse(locator, NULL);
	StringInfoData clean;
	char *password = NULL;
	TupleDesc desc;
	Datum values[2];
	bool nulls[2] = {false, true};

	explicit_bzero(locator, strlen(locator));
	if (opts == NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("the locator is not a valid PostgreSQL conninfo or URI"),
						errhint("Use key=value pairs or a postgresql:// URI, as libpq takes them.")));
	initStringInfo(&clean);
	for (PQconninfoOption *o = opts; o->keyword; o++)
	{
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "password") == 0)
		{
			password = pstrdup(o->val);
			continue;
		}
		appendStringInfo(&clean, "%s%s='", clean.len ? " " : "", o->keyword);
		for (const char *c = o->val; *c; c++)
		{
			if (*c == '\'' || *c == '\\')
				appendStringInfoChar(&clean, '\\');
			appendStringInfoChar(&clean, *c);
		}
		appendStringInfoChar(&clean, '\'');
	}
	PQconninfoFree(opts);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = CStringGetTextDatum(clean.data);
	if (password != NULL)
	{
		values[1] = CStringGetTextDatum(password);
		nulls[1] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* Refuses an agent's claim about a backup object, naming the tenant, engine and what is wrong. */
static void
tb_object_claim_refuse(const char *tenant, const char *engine, const char *what)
{
	ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					errmsg("the reported %s backup of tenant \"%s\" is refused: %s", engine, tenant, what),
					errhint("Report only an object this job stored; nothing was recorded.")));
}

/*
 * Checks what an agent says it stored against storage itself: the object and its
 * manifest exist, both with the reported size and key id, the manifest with the
 * reported SHA-256 (which a restore checks the bytes against), and the object's header,
 * authenticated with the tenant's key, names this tenant, engine and the backup id in
 * the object's name. ERROR if not; storage is left as it is.
 */
Datum
tenant_backup_backup_object_check(PG_FUNCTION_ARGS)
{
	char *tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *engine = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char *object = text_to_cstring(PG_GETARG_TEXT_PP(2));
	int64 bytes_stored = PG_GETARG_INT64(3);
	char *key_id = text_to_cstring(PG_GETARG_TEXT_PP(4));
	char *sha256 = PG_ARGISNULL(5) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(5));
	master_key master;
	storage *st;
	storage_info info;
	tb_error err = {0};
	char manifest_key[MANIFEST_OBJECT_MAX + 8];
	char *json = NULL, *expected_end;
	size_t len;
	manifest m;
	repo_reader *reader;
	stream_header hdr;
	char *problem = NULL;

	if (repo_manifest_key(object, manifest_key, sizeof(manifest_key), &err) != 0)
		tb_object_claim_refuse(tenant, engine, "the object is not named like a backup object");
	st = tb_storage();
	if (storage_head(st, object, &info, &err) != 0)
		problem = err.code == TB_ERR_NOT_FOUND ? "the object does not exist in storage" : err.msg;
	else if ((int64) info.size != bytes_stored)
		problem = psprintf("storage holds " UINT64_FORMAT " bytes, not the " INT64_FORMAT " reported",
						   (uint64) info.size, bytes_stored);
	else if (storage_get(st, manifest_key, MANIFEST_MAX_BYTES, &json, &len, &err) != 0)
		problem = err.code == TB_ERR_NOT_FOUND ? "the object has no manifest" : err.msg;
	else if (manifest_from_json(json, manifest_key, &m, &err) != 0)
		problem = psprintf("its manifest is not valid: %s", err.msg);
	else if (strcmp(m.object, object) != 0 || (int64) m.stored_bytes != bytes_stored || strcmp(m.key_id, key_id) != 0)
		problem = "its manifest describes another object, size or key";
	else if (strcmp(m.sha256, sha256) != 0)
		problem = "its manifest names another SHA-256 than the one reported";
	free(json);
	if (problem == NULL)
	{
		tb_master_key(&master);
		master.key_command = PG_ARGISNULL(6) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(6));
		reader = repo_reader_open(st, &master, object, NULL, &err);
		keys_master_wipe(&master);
		if (reader == NULL)
			problem = psprintf("its header does not authenticate with the tenant's key: %s", err.msg);
		else
		{
			hdr = *repo_reader_header(reader);
			repo_reader_close(reader);
			expected_end = psprintf("-%s.tbk", hdr.backup_id);
			if (strcmp(hdr.tenant, tenant) != 0 || strcmp(hdr.engine, engine) != 0)
				problem = "its header names another tenant or engine";
			else if (strcmp(hdr.key_id, key_id) != 0 || strcmp(hdr.backup_id, m.backup_id) != 0)
				problem = "its header names another key or backup than its manifest";
			else if (strlen(object) < strlen(expected_end) ||
					 strcmp(object + strlen(object) - strlen(expected_end), expected_end) != 0)
				problem = "its header names another backup id than its name";
		}
	}
	storage_close(st);
	if (problem != NULL)
		tb_object_claim_refuse(tenant, engine, problem);
	PG_RETURN_VOID();
}

Datum
tenant_backup_require_worker(PG_FUNCTION_ARGS)
{
	tb_require_worker();
	PG_RETURN_VOID();
}

/* wait => true: a job's end sets the caller's latch (jobs_wake_waiter); this poll is only the fallback. */
#define TB_WAIT_POLL_MS 1000

/*
 * A key document this transaction wrote to storage, put back as it was (previous, or
 * removed when NULL) if the transaction or the subtransaction that wrote it aborts:
 * storage then never holds a key the catalog did not commit. Kept in TopMemoryContext
 * until the end of the top transaction.
 */
typedef struct tb_storage_undo
{
	struct tb_storage_undo *next;
	char *object;
	char *previous;
	SubTransactionId subid;
} tb_storage_undo;

static tb_storage_undo *tb_storage_undos;

/* Best effort and never an ERROR (this runs while aborting): a failure is logged. */
static void
tb_storage_undo_run(const tb_storage_undo *u)
{
	tb_error err = {0};
	storage *st = storage_open(tb_storage_url, &err);
	int rc = -1;

	if (st != NULL)
	{
		rc = u->previous ? storage_put(st, u->object, u->previous, strlen(u->previous), &err)
						 : storage_delete(st, u->object, &err);
		storage_close(st);
	}
	if (rc != 0)
		ereport(WARNING,
				(errmsg("tenant_backup: could not undo the write of %s after a rollback: %s", u->object, err.msg),
				 errhint("No catalog row names it; the active key (keys/active.json) does not either.")));
}

/* Undoes the writes of subid (every write when subid is InvalidSubTransactionId), or forgets them all. */
static void
tb_storage_undo_finish(bool undo, SubTransactionId subid)
{
	tb_storage_undo **link = &tb_storage_undos;

	while (*link != NULL)
	{
		tb_storage_undo *u = *link;

		if (subid != InvalidSubTransactionId && u->subid != subid)
		{
			link = &u->next;
			continue;
		}
		if (undo)
			tb_storage_undo_run(u);
		*link = u->next;
		pfree(u->object);
		if (u->previous)
			pfree(u->previous);
		pfree(u);
	}
}

static void
tb_storage_undo_xact(XactEvent event, void *arg)
{
	(void) arg;
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		tb_storage_undo_finish(true, InvalidSubTransactionId);
	else if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PREPARE)
		tb_storage_undo_finish(false, InvalidSubTransactionId);
}

static void
tb_storage_undo_subxact(SubXactEvent event, SubTransactionId subid, SubTransactionId parent, void *arg)
{
	(void) arg;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		tb_storage_undo_finish(true, subid);
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		for (tb_storage_undo *u = tb_storage_undos; u != NULL; u = u->next)
			if (u->subid == subid)
				u->subid = parent;
}

/* Registers the undo of a write of object (previous: its content before, NULL if it was new). */
static void
tb_storage_undo_on_abort(const char *object, const char *previous)
{
	static bool registered = false;
	tb_storage_undo *u;

	if (!registered)
	{
		RegisterXactCallback(tb_storage_undo_xact, NULL);
		RegisterSubXactCallback(tb_storage_undo_subxact, NULL);
		registered = true;
	}
	u = MemoryContextAllocZero(TopMemoryContext, sizeof(*u));
	u->object = MemoryContextStrdup(TopMemoryContext, object);
	u->previous = previous ? MemoryContextStrdup(TopMemoryContext, previous) : NULL;
	u->subid = GetCurrentSubTransactionId();
	u->next = tb_storage_undos;
	tb_storage_undos = u;
}

/* Where tenant's key document key_id lives in storage. */
static char *
tb_key_doc_object(const char *tenant, const char *key_id)
{
	return psprintf("%s/keys/%s.json", tenant, key_id);
}

Datum
tenant_backup_key_create(PG_FUNCTION_ARGS)
{
	char *tenant;
	master_key master;
	tenant_key key = {0};
	char key_id[KEYS_ID_LEN + 1];
	tb_error err = {0};
	char *doc = NULL;
	storage *st;
	Datum result;
	int rc;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("a tenant key needs a tenant")));
	tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	tb_master_key(&master);
	/* With the tenant's own command, the new key is wrapped by it, not by the master key. */
	master.key_command = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	st = tb_storage();
	rc = repo_tenant_key_create(st, &master, tenant, &key, &doc, &err);
	strlcpy(key_id, key.id, sizeof(key_id));
	keys_master_wipe(&master);
	keys_tenant_wipe(&key);
	storage_close(st);
	if (rc != 0)
		tb_raise(&err, psprintf("could not create a key for tenant \"%s\"", tenant));
	tb_storage_undo_on_abort(tb_key_doc_object(tenant, key_id), NULL);
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(doc)));
	free(doc);
	PG_RETURN_DATUM(result);
}

/* The master key in path, for rotation; the messages of keys_master_load name the file, never the key. */
static void
tb_master_key_from_file(const char *path, master_key *out)
{
	tb_error err = {0};

	if (keys_master_load(path, out, &err) != 0)
		tb_raise(&err, "could not load the new master key");
}

Datum
tenant_backup_master_key_id(PG_FUNCTION_ARGS)
{
	master_key master;
	text *id;

	if (PG_ARGISNULL(0))
		tb_master_key(&master);
	else
		tb_master_key_from_file(text_to_cstring(PG_GETARG_TEXT_PP(0)), &master);
	id = cstring_to_text(master.id);
	keys_master_wipe(&master);
	PG_RETURN_TEXT_P(id);
}

Datum
tenant_backup_key_rewrap(PG_FUNCTION_ARGS)
{
	char *tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *doc = DatumGetCString(DirectFunctionCall1(jsonb_out, PG_GETARG_DATUM(1)));
	master_key old_master, new_master;
	tb_error err = {0};
	char *new_doc = NULL;
	storage *st;
	Datum result;
	int rc;

	tb_master_key(&old_master);
	tb_master_key_from_file(text_to_cstring(PG_GETARG_TEXT_PP(2)), &new_master);
	st = tb_storage();
	rc = repo_tenant_key_rewrap(st, &old_master, &new_master, tenant, doc, &new_doc, &err);
	keys_master_wipe(&old_master);
	keys_master_wipe(&new_master);
	storage_close(st);
	if (rc != 0)
		tb_raise(&err, psprintf("could not re-wrap a key of tenant \"%s\"", tenant));
	/* A rolled-back master key rotation leaves the document wrapped as the catalog has it. */
	tb_storage_undo_on_abort(
		tb_key_doc_object(tenant, TextDatumGetCString(DirectFunctionCall2(jsonb_object_field_text, PG_GETARG_DATUM(1),
																		  CStringGetTextDatum("key_id")))),
		doc);
	result = DirectFunctionCall1(jsonb_in, CStringGetDatum(pstrdup(new_doc)));
	free(new_doc);
	PG_RETURN_DATUM(result);
}

Datum
tenant_backup_secret_reseal(PG_FUNCTION_ARGS)
{
	char *context = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *sealed = text_to_cstring(PG_GETARG_TEXT_PP(1));
	master_key old_master, new_master;
	tb_error err = {0};
	char *secret = NULL;
	char *resealed = NULL;
	text *result;

	tb_master_key(&old_master);
	tb_master_key_from_file(text_to_cstring(PG_GETARG_TEXT_PP(2)), &new_master);
	if (keys_secret_open(&old_master, context, sealed, &secret, &err) == 0)
	{
		resealed = keys_secret_seal(&new_master, context, secret, &err);
		explicit_bzero(secret, strlen(secret));
		free(secret);
	}
	keys_master_wipe(&old_master);
	keys_master_wipe(&new_master);
	if (resealed == NULL)
		tb_raise(&err, psprintf("could not reseal a %s", context));
	result = cstring_to_text(resealed);
	free(resealed);
	PG_RETURN_TEXT_P(result);
}

Datum
tenant_backup_seal_secret(PG_FUNCTION_ARGS)
{
	char *context = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *secret = text_to_cstring(PG_GETARG_TEXT_PP(1));
	master_key master;
	tb_error err = {0};
	char *sealed;
	text *result;

	tb_master_key(&master);
	sealed = keys_secret_seal(&master, context, secret, &err);
	keys_master_wipe(&master);
	explicit_bzero(secret, strlen(secret));
	if (sealed == NULL)
		tb_raise(&err, psprintf("could not seal the %s", context));
	result = cstring_to_text(sealed);
	free(sealed);
	PG_RETURN_TEXT_P(result);
}

/*
 * Waits until the idle job worker handed the request (pid) marked it done; false if
 * that worker exited without doing so (terminated while idle) or handed it back (a
 * lock it would have waited for), when the request is still to be queued.
 */
static bool
tb_queue_wait_idle_worker(volatile tb_request *shared, int pid)
{
	for (;;)
	{
		bool gone = BackendPidGetProc(pid) == NULL;

		pg_read_barrier();
		if (shared->done)
		{
			/* What the worker wrote before done, read after it. */
			pg_read_barrier();
			return !shared->handed_back;
		}
		if (gone)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Has the request's jobs queued in a committed transaction of their own: by an idle
 * job worker (pool.h), which then usually runs them too, or else by a request worker
 * started for it, whose exit it waits for. Raises the worker's error, if it had one.
 */
static void
tb_queue_request(const tb_request *req)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	BgwHandleStatus status;
	dsm_segment *seg = dsm_create(sizeof(tb_request), 0);
	tb_request *shared = dsm_segment_address(seg);
	int idle_worker;
	pid_t pid;

	memcpy(shared, req, sizeof(*req));
	shared->magic = TB_REQUEST_MAGIC;
	shared->caller_pid = MyProcPid;
	/* A call cancelled while it waits takes its request back from a worker that has not taken it yet. */
	on_dsm_detach(seg, tb_pool_revoke_request, UInt32GetDatum(dsm_segment_handle(seg)));
	idle_worker = tb_pool_hand_request(dsm_segment_handle(seg));
	if (idle_worker == 0 || !tb_queue_wait_idle_worker(shared, idle_worker))
	{
		shared->done = shared->handed_back = false;
		tb_worker_describe(&worker, "tenant_backup_request_main", "tenant_backup request",
						   psprintf("tenant_backup request of %s", req->tenant));
		worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
		worker.bgw_notify_pid = MyProcPid;
		if (!RegisterDynamicBackgroundWorker(&worker, &handle))
			ereport(ERROR, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
							errmsg("could not start a tenant_backup worker for tenant \"%s\"", req->tenant),
							errhint("Raise max_worker_processes.")));
		status = WaitForBackgroundWorkerStartup(handle, &pid);
		if (status == BGWH_STARTED)
			status = WaitForBackgroundWorkerShutdown(handle);
		if (status == BGWH_POSTMASTER_DIED)
			ereport(FATAL, (errcode(ERRCODE_ADMIN_SHUTDOWN), errmsg("postmaster exited")));
	}
	if (shared->error[0] != '\0')
	{
		tb_request failed = *shared;

		dsm_detach(seg);
		ereport(ERROR, (errcode(failed.sqlerrcode), errmsg("%s", failed.error),
						failed.hint[0] ? errhint("%s", failed.hint) : 0));
	}
	dsm_detach(seg);
}

Datum
tenant_backup_run_request(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	tb_request req = {0};
	uint8 token[8];
	bool done = false;
	char *failure = NULL;
	MemoryContext outer;
	MemoryContext poll;
	Oid argtypes[1] = {TEXTOID};
	TimestampTz waiting_since;

	if (IsTransactionBlock())
		ereport(ERROR, (errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
						errmsg("wait => true cannot be used inside a transaction block"),
						errdetail("The work runs in background workers, which only see committed changes."),
						errhint("Call it outside BEGIN/COMMIT, or use wait => false: the jobs then run once the "
								"transaction commits, and tenant_backup.status shows them.")));
	if (IsSubTransaction())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION), errmsg("wait => true cannot be used inside a subtransaction"),
				 errdetail("An EXCEPTION block or a SAVEPOINT is a subtransaction."),
				 errhint("Call it in a statement of its own, or use wait => false.")));
	if (GetTopTransactionIdIfAny() != InvalidTransactionId)
		ereport(ERROR, (errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
						errmsg("wait => true must not follow changes in the same transaction"),
						errdetail("The background workers could not see those changes, and could wait for the "
								  "locks they hold."),
						errhint("Call it in a statement of its own, or use wait => false.")));
	if (XactIsoLevel != XACT_READ_COMMITTED)
		ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						errmsg("wait => true needs the READ COMMITTED isolation level")));
	tb_require_worker();
	if (strcmp(get_database_name(MyDatabaseId), tb_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wait => true only works in database \"%s\", where tenant_backup's worker runs", tb_database),
				 errhint("Connect to \"%s\" (tenant_backup.database).", tb_database)));

	strlcpy(req.kind, text_to_cstring(PG_GETARG_TEXT_PP(0)), sizeof(req.kind));
	strlcpy(req.tenant, text_to_cstring(PG_GETARG_TEXT_PP(1)), sizeof(req.tenant));
	if (!PG_ARGISNULL(2))
		strlcpy(req.engine, text_to_cstring(PG_GETARG_TEXT_PP(2)), sizeof(req.engine));
	req.backup_id = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT64(3);
	if (!PG_ARGISNULL(4))
		strlcpy(req.target, text_to_cstring(PG_GETARG_TEXT_PP(4)), sizeof(req.target));
	/* The 0.1.0 declaration has no privileges argument. */
	req.bare_target = PG_NARGS() > 5 && !PG_ARGISNULL(5) && !PG_GETARG_BOOL(5);
	if (!pg_strong_random(token, sizeof(token)))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate a request id")));
	hex_encode((char *) token, sizeof(token), req.token);
	req.database = MyDatabaseId;
	strlcpy(req.actor, GetUserNameFromId(GetSessionUserId(), false), sizeof(req.actor));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	tb_queue_request(&req);
	waiting_since = GetCurrentTimestamp();

	/*
	 * Poll the jobs in a context reset every round (a long wait must not grow), and
	 * keep the failure in the caller's context: SPI_finish frees SPI's memory.
	 */
	outer = CurrentMemoryContext;
	poll = AllocSetContextCreate(outer, "tenant_backup wait", ALLOCSET_SMALL_SIZES);
	SPI_connect();
	while (!done)
	{
		Datum arg;
		int rc;

		MemoryContextSwitchTo(poll);
		arg = CStringGetTextDatum(req.token);
		rc = SPI_execute_with_args("SELECT id, state, error, result->>'notice' FROM tenant_backup.jobs"
								   " WHERE request = $1 ORDER BY id",
								   1, argtypes, &arg, NULL, false, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read the jobs of request %s", req.token);
		if (SPI_processed == 0)
			ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
							errmsg("the %s of tenant \"%s\" could not be queued", req.kind, req.tenant),
							errhint("The server log has the reason.")));
		done = true;
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple tuple = SPI_tuptable->vals[i];
			TupleDesc desc = SPI_tuptable->tupdesc;
			char *state = SPI_getvalue(tuple, desc, 2);

			if (strcmp(state, "succeeded") != 0 && strcmp(state, "failed") != 0)
				done = false;
			else if (strcmp(state, "failed") == 0 && failure == NULL)
			{
				char *id = SPI_getvalue(tuple, desc, 1);
				char *error = SPI_getvalue(tuple, desc, 3);

				failure = MemoryContextStrdup(outer, psprintf("job %s: %s", id, error ? error : "(no message)"));
			}
		}
		/* What a job that succeeded wants said (a restore read from the replica), once it is done. */
		for (uint64 i = 0; done && i < SPI_processed; i++)
		{
			char *notice = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4);

			if (notice != NULL)
				ereport(NOTICE,
						(errmsg("job %s of tenant \"%s\": %s",
								SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), req.tenant, notice)));
		}
		/* A drill's failed checks are its result, not an error: the caller reports them. */
		if (done && (failure == NULL || strcmp(req.kind, "drill") == 0))
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				bool isnull;
				Datum id = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

				tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
			}
		SPI_freetuptable(SPI_tuptable);
		if (!done)
			tb_request_check_agents(req.token, waiting_since);
		MemoryContextReset(poll);
		if (done)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, TB_WAIT_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_finish();
	MemoryContextDelete(poll);
	if (failure != NULL && strcmp(req.kind, "drill") != 0)
		ereport(ERROR, (errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
						errmsg("%s of tenant \"%s\" failed", req.kind, req.tenant), errdetail("%s", failure),
						errhint("tenant_backup.status and tenant_backup.tenant_backups() show every attempt.")));
	return (Datum) 0;
}
