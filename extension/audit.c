/*
 * The audit log's keyed chain: each row's MAC is an HMAC-SHA256, under a key derived
 * from the master key with HKDF, over the row's fields length-prefixed; the chain
 * heads are written to storage sealed with the master key (_audit/head-<master key
 * id>.json, so a master key rotation starts a new one), so that removing the newest
 * rows shows. The key never reaches the catalog or SQL.
 */
#include "tenant_backup.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

#include "access/htup_details.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "keys.h"
#include "storage/storage.h"

PG_FUNCTION_INFO_V1(tenant_backup_audit_mac);
PG_FUNCTION_INFO_V1(tenant_backup_audit_head_put);
PG_FUNCTION_INFO_V1(tenant_backup_audit_head_get);

#define TB_AUDIT_HEAD_CONTEXT "audit head"
#define TB_AUDIT_HEAD_MAX (16 * 1024 * 1024)

/* The MAC key of one transaction, derived once: a verification computes a MAC per row. */
typedef struct tb_audit_key
{
	LocalTransactionId lxid;
	uint8 key[32];
	char master_key_id[KEYS_ID_LEN + 1];
} tb_audit_key;

static void
tb_audit_key_derive(tb_audit_key *out)
{
	static const char salt[] = "tenant_backup audit";
	static const char info[] = "audit chain mac v1";
	master_key master;
	EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
	EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
	OSSL_PARAM params[5];
	int rc;

	tb_master_key(&master);
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, master.key, sizeof(master.key));
	params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *) salt, sizeof(salt) - 1);
	params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *) info, sizeof(info) - 1);
	params[4] = OSSL_PARAM_construct_end();
	rc = ctx ? EVP_KDF_derive(ctx, out->key, sizeof(out->key), params) : 0;
	strlcpy(out->master_key_id, master.id, sizeof(out->master_key_id));
	keys_master_wipe(&master);
	EVP_KDF_CTX_free(ctx);
	EVP_KDF_free(kdf);
	if (rc != 1)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not derive the audit log's MAC key"),
						errdetail("OpenSSL's HKDF failed.")));
	out->lxid = MyProc->lxid;
}

/* One field: its length (8 bytes, big-endian; all ones for NULL), then its bytes. */
static void
tb_audit_field(StringInfo msg, const char *value, size_t len)
{
	uint64 n = value ? (uint64) len : PG_UINT64_MAX;

	for (int shift = 56; shift >= 0; shift -= 8)
		appendStringInfoChar(msg, (char) ((n >> shift) & 0xff));
	if (value)
		appendBinaryStringInfo(msg, value, len);
}

static void
tb_audit_text_field(StringInfo msg, FunctionCallInfo fcinfo, int arg)
{
	text *value;

	if (PG_ARGISNULL(arg))
	{
		tb_audit_field(msg, NULL, 0);
		return;
	}
	value = PG_GETARG_TEXT_PP(arg);
	tb_audit_field(msg, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
}

/*
 * _audit_mac(id, chain, prev, at, actor, action, tenant, detail) -> (mac, master_key_id):
 * the row's MAC in hex and the id of the master key its MAC key comes from. Raises if
 * no master key is configured.
 */
Datum
tenant_backup_audit_mac(PG_FUNCTION_ARGS)
{
	tb_audit_key *key = fcinfo->flinfo->fn_extra;
	StringInfoData msg;
	char number[32];
	uint8 mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	TupleDesc desc;
	Datum values[2];
	bool nulls[2] = {false, false};

	if (PG_ARGISNULL(0) || PG_ARGISNULL(3) || PG_ARGISNULL(7))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("an audit row's MAC needs its id, time and detail")));
	if (key == NULL)
		key = fcinfo->flinfo->fn_extra = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(*key));
	/* Derived again in each transaction: a reload may have changed the master key. */
	if (key->lxid != MyProc->lxid || key->master_key_id[0] == '\0')
		tb_audit_key_derive(key);

	initStringInfo(&msg);
	tb_audit_field(&msg, "tenant_backup audit row v1", strlen("tenant_backup audit row v1"));
	snprintf(number, sizeof(number), INT64_FORMAT, PG_GETARG_INT64(0));
	tb_audit_field(&msg, number, strlen(number));
	tb_audit_text_field(&msg, fcinfo, 1);
	tb_audit_text_field(&msg, fcinfo, 2);
	snprintf(number, sizeof(number), INT64_FORMAT, (int64) PG_GETARG_TIMESTAMPTZ(3));
	tb_audit_field(&msg, number, strlen(number));
	tb_audit_text_field(&msg, fcinfo, 4);
	tb_audit_text_field(&msg, fcinfo, 5);
	tb_audit_text_field(&msg, fcinfo, 6);
	{
		/* jsonb's own text form: canonical, so a dump and restore keeps the MAC. */
		char *detail = JsonbToCString(NULL, &PG_GETARG_JSONB_P(7)->root, VARSIZE(PG_GETARG_JSONB_P(7)));

		tb_audit_field(&msg, detail, strlen(detail));
	}
	if (HMAC(EVP_sha256(), key->key, sizeof(key->key), (const unsigned char *) msg.data, msg.len, mac, &mac_len) ==
		NULL)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not compute an audit row's MAC")));
	hex_encode((const char *) mac, mac_len, hex);
	hex[2 * mac_len] = '\0';

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = CStringGetTextDatum(hex);
	values[1] = CStringGetTextDatum(key->master_key_id);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* The storage object of the chain heads sealed with this master key. */
static char *
tb_audit_head_object(const master_key *master)
{
	return psprintf("_audit/head-%s.json", master->id);
}

/* _audit_head_put(doc): stores the chain heads (a JSON document) sealed with the master key. */
Datum
tenant_backup_audit_head_put(PG_FUNCTION_ARGS)
{
	char *doc = text_to_cstring(PG_GETARG_TEXT_PP(0));
	master_key master;
	tb_error err = {0};
	char *sealed, *object, *name;
	storage *st;
	int rc;

	tb_master_key(&master);
	sealed = keys_secret_seal(&master, TB_AUDIT_HEAD_CONTEXT, doc, &err);
	name = tb_audit_head_object(&master);
	keys_master_wipe(&master);
	if (sealed == NULL)
		tb_raise(&err, "could not seal the audit log's chain heads");
	object = psprintf("{\"sealed\": \"%s\"}\n", sealed);
	free(sealed);
	st = tb_storage();
	rc = storage_put(st, name, object, strlen(object), &err);
	storage_close(st);
	if (rc != 0)
		tb_raise(&err, psprintf("could not store the audit log's chain heads in %s", name));
	PG_RETURN_VOID();
}

/*
 * _audit_head_get() -> the chain heads last stored under this master key, opened with
 * it; NULL if storage has none. Raises if the object is not one this master key sealed.
 */
Datum
tenant_backup_audit_head_get(PG_FUNCTION_ARGS)
{
	master_key master;
	tb_error err = {0};
	char *buf = NULL, *object, *doc = NULL, *name;
	const char *sealed, *end;
	size_t len = 0;
	storage *st;
	text *result;
	int rc;

	tb_master_key(&master);
	name = tb_audit_head_object(&master);
	st = tb_storage();
	rc = storage_get(st, name, TB_AUDIT_HEAD_MAX, &buf, &len, &err);
	storage_close(st);
	if (rc != 0)
	{
		keys_master_wipe(&master);
		if (err.code == TB_ERR_NOT_FOUND)
			PG_RETURN_NULL();
		tb_raise(&err, psprintf("could not read the audit log's chain heads from %s", name));
	}
	object = pnstrdup(buf, len);
	free(buf);
	sealed = strstr(object, "\"sealed\": \"");
	end = sealed ? strchr(sealed + strlen("\"sealed\": \""), '"') : NULL;
	if (end == NULL)
	{
		keys_master_wipe(&master);
		ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED), errmsg("storage object %s is not a sealed audit head", name),
						errhint("Something other than tenant_backup wrote it: the audit log cannot be checked "
								"against it.")));
	}
	sealed += strlen("\"sealed\": \"");
	rc = keys_secret_open(&master, TB_AUDIT_HEAD_CONTEXT, pnstrdup(sealed, end - sealed), &doc, &err);
	keys_master_wipe(&master);
	if (rc != 0)
		tb_raise(&err, psprintf("the audit head in %s does not open with the master key", name));
	result = cstring_to_text(doc);
	free(doc);
	PG_RETURN_TEXT_P(result);
}
