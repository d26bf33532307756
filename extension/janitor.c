/*
 * Storage upkeep: the SQL functions that list and delete in storage (objects,
 * unfinished writes), in tenant_backup.storage or in the replica storage an intent
 * names, and write a tenant's active key document, and the launcher's pass that
 * finishes the committed storage intents every round and runs the janitor
 * (_janitor_run) every tenant_backup.janitor_interval. Each step is a transaction of
 * its own; a failure is a warning and the step is tried again next time.
 */
#include "tenant_backup.h"

#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "job.h"
#include "repo.h"

PG_FUNCTION_INFO_V1(tenant_backup_storage_list);
PG_FUNCTION_INFO_V1(tenant_backup_storage_unfinished);
PG_FUNCTION_INFO_V1(tenant_backup_storage_unfinished_abort);
PG_FUNCTION_INFO_V1(tenant_backup_active_key_put);
PG_FUNCTION_INFO_V1(tenant_backup_storage_delete);
PG_FUNCTION_INFO_V1(tenant_backup_storage_delete_prefix);

/*
 * The storage a call acts on: the URL in argument argno (a replica's, recorded by the
 * catalog: never a caller's), or tenant_backup.storage when the function has no such
 * argument or it is NULL. The caller closes it.
 */
static storage *
tb_storage_of_arg(FunctionCallInfo fcinfo, int argno)
{
	tb_error err = {0};
	char *url;
	storage *st;

	if (PG_NARGS() <= argno || PG_ARGISNULL(argno))
		return tb_storage();
	url = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	st = storage_open(tb_storage_url_limited(url), &err);
	if (st == NULL)
		tb_raise(&err, "could not open the replica storage");
	return st;
}

/* Closes st; then, if rc failed, raises err with context and the storage named. */
static void
tb_storage_close_or_raise(storage *st, int rc, const tb_error *err, const char *context)
{
	char *where = pstrdup(storage_describe(st));

	storage_close(st);
	if (rc != 0)
		tb_raise(err, psprintf("%s in %s", context, where));
}

/* Refuses a prefix outside a tenant's storage: "<tenant>/" or below. */
static void
tb_tenant_prefix_check(const char *prefix)
{
	if (strchr(prefix, '/') == NULL || prefix[0] == '/' || strstr(prefix, "..") != NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("\"%s\" is not a prefix inside a tenant's storage", prefix),
						errhint("Name a tenant's prefix, such as 'acme/' or 'acme/postgres/'.")));
}

static Datum
tb_storage_time(const storage_info *info, bool *isnull)
{
	*isnull = info->mtime == 0;
	return TimestampTzGetDatum(time_t_to_timestamptz((pg_time_t) info->mtime));
}

static int
tb_storage_list_row(const char *key, const storage_info *info, void *arg)
{
	ReturnSetInfo *rsinfo = arg;
	Datum values[3];
	bool nulls[3] = {false, false, false};

	values[0] = CStringGetTextDatum(key);
	values[1] = Int64GetDatum((int64) info->size);
	values[2] = tb_storage_time(info, &nulls[2]);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return 0;
}

/*
 * _storage_list(prefix [, storage]) -> (key, bytes, modified): every object below a
 * tenant's prefix.
 */
Datum
tenant_backup_storage_list(PG_FUNCTION_ARGS)
{
	char *prefix;
	tb_error err = {0};
	storage *st;
	int rc;

	if (PG_ARGISNULL(0))
		return (Datum) 0;
	prefix = text_to_cstring(PG_GETARG_TEXT_PP(0));
	tb_tenant_prefix_check(prefix);
	InitMaterializedSRF(fcinfo, 0);
	st = tb_storage_of_arg(fcinfo, 1);
	rc = storage_list(st, prefix, tb_storage_list_row, fcinfo->resultinfo, &err);
	tb_storage_close_or_raise(st, rc, &err, psprintf("could not list the objects under \"%s\"", prefix));
	return (Datum) 0;
}

static int
tb_storage_unfinished_row(const char *key, const char *upload, const storage_info *info, void *arg)
{
	ReturnSetInfo *rsinfo = arg;
	Datum values[4];
	bool nulls[4] = {false, false, false, false};

	values[0] = CStringGetTextDatum(key);
	values[1] = CStringGetTextDatum(upload);
	values[2] = Int64GetDatum((int64) info->size);
	values[3] = tb_storage_time(info, &nulls[3]);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return 0;
}

/* _storage_unfinished([storage]) -> (key, upload, bytes, modified): every unfinished write in storage. */
Datum
tenant_backup_storage_unfinished(PG_FUNCTION_ARGS)
{
	tb_error err = {0};
	storage *st;
	int rc;

	InitMaterializedSRF(fcinfo, 0);
	st = tb_storage_of_arg(fcinfo, 0);
	rc = storage_list_unfinished(st, "", tb_storage_unfinished_row, fcinfo->resultinfo, &err);
	tb_storage_close_or_raise(st, rc, &err, "could not list the unfinished writes");
	return (Datum) 0;
}

/* _storage_unfinished_abort(key, upload [, storage]): removes an unfinished write _storage_unfinished listed. */
Datum
tenant_backup_storage_unfinished_abort(PG_FUNCTION_ARGS)
{
	char *key;
	char *upload;
	tb_error err = {0};
	storage *st;
	int rc;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_VOID();
	key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	upload = text_to_cstring(PG_GETARG_TEXT_PP(1));
	st = tb_storage_of_arg(fcinfo, 2);
	rc = storage_abort_unfinished(st, key, upload, &err);
	tb_storage_close_or_raise(st, rc, &err, psprintf("could not remove the unfinished write of \"%s\"", key));
	PG_RETURN_VOID();
}

/*
 * _storage_delete(object [, storage]) -> bytes: deletes a backup object and its
 * manifest; 0 if it was already gone.
 */
Datum
tenant_backup_storage_delete(PG_FUNCTION_ARGS)
{
	char *object;
	storage *st;
	tb_error err = {0};
	uint64_t bytes;
	int rc;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	object = text_to_cstring(PG_GETARG_TEXT_PP(0));
	tb_tenant_prefix_check(object);
	st = tb_storage_of_arg(fcinfo, 1);
	rc = repo_delete_backup(st, object, &bytes, &err);
	tb_storage_close_or_raise(st, rc, &err, psprintf("could not delete backup object \"%s\"", object));
	PG_RETURN_INT64((int64) bytes);
}

/*
 * _storage_delete_prefix(prefix [, storage]) -> (objects, bytes): deletes every object
 * whose key begins with a tenant's prefix.
 */
Datum
tenant_backup_storage_delete_prefix(PG_FUNCTION_ARGS)
{
	char *prefix;
	storage *st;
	tb_error err = {0};
	uint64_t objects, bytes;
	TupleDesc desc;
	Datum values[2];
	bool nulls[2] = {false, false};
	int rc;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	prefix = text_to_cstring(PG_GETARG_TEXT_PP(0));
	tb_tenant_prefix_check(prefix);
	st = tb_storage_of_arg(fcinfo, 1);
	rc = repo_delete_prefix(st, prefix, &objects, &bytes, &err);
	tb_storage_close_or_raise(st, rc, &err, psprintf("could not delete the objects under \"%s\"", prefix));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum((int64) objects);
	values[1] = Int64GetDatum((int64) bytes);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* _active_key_put(tenant, key_id): writes <tenant>/keys/active.json, sealed with the master key. */
Datum
tenant_backup_active_key_put(PG_FUNCTION_ARGS)
{
	char *tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *key_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	master_key master;
	tb_error err = {0};
	storage *st;
	int rc;

	tb_master_key(&master);
	st = tb_storage();
	rc = repo_active_key_put(st, &master, tenant, key_id, &err);
	keys_master_wipe(&master);
	storage_close(st);
	if (rc != 0)
		tb_raise(&err, psprintf("could not record the active key of tenant \"%s\" in storage", tenant));
	PG_RETURN_VOID();
}

/* One step of the pass in a transaction of its own; a failure is a warning (false). */
static bool
tb_janitor_step(const char *sql, const char *what)
{
	MemoryContext ctx = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		tb_sql(sql, 0, NULL);
	}
	PG_CATCH();
	{
		ErrorData *edata;

		MemoryContextSwitchTo(ctx);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		ereport(WARNING, (errmsg("tenant_backup: %s failed: %s", what, edata->message),
						  errhint("The launcher tries again; tenant_backup.storage_intents shows what is pending.")));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

void
tb_janitor_pass(void)
{
	static TimestampTz last_run = 0;
	static char *master_settings = NULL;
	char *settings = psprintf("%s\n%s", tb_master_key_file, tb_master_key_command);
	Interval *every = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(tb_janitor_interval),
															ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));

	/* At start and after the master key changed: every active.json sealed again with it. */
	if ((master_settings == NULL || strcmp(settings, master_settings) != 0) &&
		tb_janitor_step("SELECT tenant_backup._intent_active_keys()", "sealing the tenants' active keys"))
	{
		if (master_settings != NULL)
			pfree(master_settings);
		master_settings = MemoryContextStrdup(TopMemoryContext, settings);
	}
	tb_janitor_step("SELECT tenant_backup._intents_run()", "finishing the storage intents");
	if (last_run != 0 &&
		GetCurrentTimestamp() < DatumGetTimestampTz(DirectFunctionCall2(
									timestamptz_pl_interval, TimestampTzGetDatum(last_run), IntervalPGetDatum(every))))
		return;
	last_run = GetCurrentTimestamp();
	tb_janitor_step("SELECT tenant_backup._janitor_run()", "the storage janitor");
}
