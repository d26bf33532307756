/*
 * Replication to a second storage: the replica URL setting and the checks of a
 * tenant's own replica URL (who may send the server's signed requests where), the
 * launcher's pass that starts a replication worker per tenant with copies due, and
 * that worker: raw copies (never decrypted) of the tenant's key documents, complete
 * backups (object, then manifest) and, for a dedicated tenant, archived WAL, each read
 * back from the replica and checked against the catalog's or manifest's SHA-256.
 */
#include "tenant_backup.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/memutils.h"

#include "check.h"
#include "crypto.h"
#include "job.h"
#include "manifest.h"
#include "put_guard.h"
#include "repo.h"
#include "replicate.h"

#define TB_REPLICA_BUFFER (1024 * 1024)
#define TB_REPLICA_MAX_WORKERS 64

PG_FUNCTION_INFO_V1(tenant_backup_replica_url_check);

char *tb_replica_storage_url = NULL;
char *tb_replica_storage_allowed = NULL;

/*
 * Where a storage URL points: for s3://, place is the bucket and the endpoint option
 * (percent-decoded, the last one as the driver takes it; "" without one); for file://
 * it is "". path: the directory or prefix without leading, trailing or doubled '/'.
 */
typedef struct tb_url_place
{
	bool s3;
	char *place;
	char *path;
} tb_url_place;

static int
tb_hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decodes len bytes of text; NULL if an escape is malformed or decodes to NUL. */
static char *
tb_percent_decode(const char *text, size_t len)
{
	StringInfoData out;

	initStringInfo(&out);
	for (size_t i = 0; i < len; i++)
	{
		if (text[i] == '%')
		{
			int hi, lo;

			if (i + 2 >= len)
				return NULL;
			hi = tb_hex_digit(text[i + 1]);
			lo = tb_hex_digit(text[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return NULL;
			appendStringInfoChar(&out, (char) (hi * 16 + lo));
			i += 2;
		}
		else
			appendStringInfoChar(&out, text[i]);
	}
	return out.data;
}

/* Appends the '/'-separated parts of len bytes of path to out, one '/' between them; false on a "." or ".." part. */
static bool
tb_path_normalize(const char *path, size_t len, StringInfo out)
{
	size_t i = 0;

	while (i < len)
	{
		size_t start, part;

		while (i < len && path[i] == '/')
			i++;
		start = i;
		while (i < len && path[i] != '/')
			i++;
		part = i - start;
		if (part == 0)
			continue;
		if ((part == 1 && path[start] == '.') || (part == 2 && path[start] == '.' && path[start + 1] == '.'))
			return false;
		if (out->len > 0)
			appendStringInfoChar(out, '/');
		appendBinaryStringInfo(out, path + start, part);
	}
	return true;
}

/* Splits a URL storage_check_url accepted; false (errdetail in *why) if it cannot be compared safely. */
static bool
tb_url_place_parse(const char *url, tb_url_place *out, const char **why)
{
	StringInfoData path;

	initStringInfo(&path);
	out->s3 = strncmp(url, "s3://", 5) == 0;
	if (!out->s3)
	{
		const char *dir = url + strlen("file://");

		out->place = "";
		if (!tb_path_normalize(dir, strlen(dir), &path))
		{
			*why = "The directory has a \".\" or \"..\" part.";
			return false;
		}
	}
	else
	{
		const char *rest = url + 5;
		const char *query = strchr(rest, '?');
		size_t bucket_len = strcspn(rest, "/?");
		size_t path_end = query ? (size_t) (query - rest) : strlen(rest);
		char *endpoint = "";

		if (!tb_path_normalize(rest + bucket_len, path_end - bucket_len, &path))
		{
			*why = "The prefix has a \".\" or \"..\" part.";
			return false;
		}
		for (const char *opt = query ? query + 1 : NULL; opt != NULL && *opt;)
		{
			size_t opt_len = strcspn(opt, "&");

			if (strncmp(opt, "endpoint=", 9) == 0 && (endpoint = tb_percent_decode(opt + 9, opt_len - 9)) == NULL)
			{
				*why = "Its endpoint option is not percent-encoded correctly.";
				return false;
			}
			opt += opt_len;
			if (*opt == '&')
				opt++;
		}
		/* The host part is case-insensitive; a trailing '/' names the same endpoint. */
		endpoint = asc_tolower(endpoint, strlen(endpoint));
		while (endpoint[0] && endpoint[strlen(endpoint) - 1] == '/')
			endpoint[strlen(endpoint) - 1] = '\0';
		out->place = psprintf("%.*s %s", (int) bucket_len, rest, endpoint);
	}
	out->path = path.data;
	return true;
}

/* Whether path a is path b or below it. */
static bool
tb_path_within(const char *a, const char *b)
{
	size_t len = strlen(b);

	return len == 0 || (strncmp(a, b, len) == 0 && (a[len] == '\0' || a[len] == '/'));
}

/* Whether two parsed URLs name the same place and one's path is within the other's. */
static bool
tb_url_places_overlap(const tb_url_place *a, const tb_url_place *b)
{
	return a->s3 == b->s3 && strcmp(a->place, b->place) == 0 &&
		   (tb_path_within(a->path, b->path) || tb_path_within(b->path, a->path));
}

/* The URLs of a comma-separated list setting, each without the spaces around it. */
static List *
tb_url_list(const char *list)
{
	List *urls = NIL;
	char *save = NULL;

	for (char *url = strtok_r(pstrdup(list), ",", &save); url != NULL; url = strtok_r(NULL, ",", &save))
	{
		size_t len;

		url += strspn(url, " \t");
		len = strlen(url);
		while (len > 0 && (url[len - 1] == ' ' || url[len - 1] == '\t'))
			url[--len] = '\0';
		if (len > 0)
			urls = lappend(urls, url);
	}
	return urls;
}

/* Whether a superuser configured url for operators: tenant_backup.replica_storage or one of replica_storage_allowed. */
static bool
tb_replica_url_configured(const char *url)
{
	ListCell *lc;

	if (tb_replica_storage_url != NULL && strcmp(url, tb_replica_storage_url) == 0)
		return true;
	foreach (lc, tb_url_list(tb_replica_storage_allowed != NULL ? tb_replica_storage_allowed : ""))
		if (strcmp(url, lfirst(lc)) == 0)
			return true;
	return false;
}

/* Whether one URL's root is strictly above or below the other's (the same root is not). */
static bool
tb_url_roots_nested(const char *a, const char *b)
{
	tb_url_place pa, pb;
	const char *why = NULL;

	return tb_url_place_parse(a, &pa, &why) && tb_url_place_parse(b, &pb, &why) && tb_url_places_overlap(&pa, &pb) &&
		   strcmp(pa.path, pb.path) != 0;
}

/*
 * NULL if url may be a replica: storage would open it, it does not overlap
 * tenant_backup.storage and, with restricted (not set by a superuser), it is
 * tenant_backup.replica_storage itself: a sub-path or sibling prefix could be another
 * tenant's replica, which that tenant's drop would then delete. Otherwise why not, as
 * an errdetail.
 */
static const char *
tb_replica_url_refusal(const char *url, bool restricted, const char **hint)
{
	tb_error err = {0};
	tb_url_place mine, primary;
	const char *why = NULL;

	*hint = "Use file:///absolute/directory or s3://bucket/prefix with the options of tenant_backup.storage.";
	if (storage_check_url(url, &err) != 0)
		return psprintf("%s.", err.msg);
	if (!tb_url_place_parse(url, &mine, &why))
		return why;
	if (tb_storage_url != NULL && tb_storage_url[0] != '\0' && tb_url_place_parse(tb_storage_url, &primary, &why) &&
		tb_url_places_overlap(&mine, &primary))
	{
		*hint =
			"Name another bucket, endpoint or directory, or a prefix beside the primary's (not in it, nor above it).";
		return "It overlaps tenant_backup.storage: the replica would hold or remove the primary's own objects.";
	}
	if (restricted && !tb_replica_url_configured(url))
	{
		*hint = "Ask a superuser to set this tenant's replica, or to list the URL in "
				"tenant_backup.replica_storage_allowed.";
		return "A replica URL not set by a superuser must be tenant_backup.replica_storage itself or one of "
			   "tenant_backup.replica_storage_allowed: any other place could hold other tenants' replicas, which "
			   "this tenant's drop would delete.";
	}
	return NULL;
}

/*
 * NULL unless url's root is strictly above or below a replica root in use (the
 * setting, a tenant's own URL, a backup's copy): a drop or expiry under one root would
 * delete the other's objects. Otherwise why not, as an errdetail.
 */
static const char *
tb_replica_url_nesting(const char *url)
{
	const char *refusal =
		"Its root is above or below a replica root in use (tenant_backup.replica_storage, "
		"tenant_backup.replica_storage_allowed, a tenant's replica or a backup's copy): deleting under one would "
		"delete the other's objects.";
	bool nested = false;
	ListCell *lc;

	foreach (lc, tb_url_list(tb_replica_storage_allowed != NULL ? tb_replica_storage_allowed : ""))
		nested = nested || tb_url_roots_nested(url, lfirst(lc));
	SPI_connect();
	if (SPI_execute("SELECT u FROM (SELECT nullif(current_setting('tenant_backup.replica_storage', true), '') u"
					" UNION SELECT replica_storage FROM tenant_backup.tenants WHERE replica_storage <> 'none'"
					" UNION SELECT replica_url FROM tenant_backup.backups) x WHERE u IS NOT NULL",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "tenant_backup: could not read the replica URLs in use");
	for (uint64 i = 0; i < SPI_processed && !nested; i++)
		nested = tb_url_roots_nested(url, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	SPI_finish();
	return nested ? refusal : NULL;
}

bool
tb_check_replica_storage_url(char **newval, void **extra, GucSource source)
{
	const char *hint, *why;
	ListCell *lc;

	(void) extra;
	(void) source;
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	why = tb_replica_url_refusal(*newval, false, &hint);
	foreach (lc, tb_url_list(tb_replica_storage_allowed != NULL ? tb_replica_storage_allowed : ""))
		if (why == NULL && tb_url_roots_nested(*newval, lfirst(lc)))
		{
			why = "It is above or below an entry of tenant_backup.replica_storage_allowed: a drop under one would "
				  "delete the other's replicas.";
			hint = "Name that root itself, or a place beside it.";
		}
	if (why != NULL)
	{
		GUC_check_errdetail("%s", why);
		GUC_check_errhint("%s", hint);
		return false;
	}
	return true;
}

bool
tb_check_replica_storage_allowed(char **newval, void **extra, GucSource source)
{
	List *urls;
	ListCell *lc, *other;
	int entry = 0;

	(void) extra;
	(void) source;
	if (*newval == NULL)
		return true;
	urls = tb_url_list(*newval);
	foreach (lc, urls)
	{
		const char *hint = "Each entry is a file:// or s3:// URL beside the others and beside tenant_backup.storage.";
		const char *why = tb_replica_url_refusal(lfirst(lc), false, &hint);

		entry++;
		if (why == NULL && tb_replica_storage_url != NULL && tb_url_roots_nested(lfirst(lc), tb_replica_storage_url))
			why = "It is above or below tenant_backup.replica_storage: a drop under one would delete the other's "
				  "replicas.";
		foreach (other, urls)
			if (why == NULL && other != lc && tb_url_roots_nested(lfirst(lc), lfirst(other)))
				why = "It is above or below another entry: a drop under one would delete the other's replicas.";
		if (why != NULL)
		{
			GUC_check_errdetail("Entry %d of tenant_backup.replica_storage_allowed is refused: %s", entry, why);
			GUC_check_errhint("%s", hint);
			return false;
		}
	}
	return true;
}

/* _replica_url_check(tenant, url): ERROR unless url may be the tenant's replica for the session user. */
Datum
tenant_backup_replica_url_check(PG_FUNCTION_ARGS)
{
	char *tenant = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char *url = text_to_cstring(PG_GETARG_TEXT_PP(1));
	const char *hint;
	const char *why = tb_replica_url_refusal(url, !superuser_arg(GetSessionUserId()), &hint);

	if (why == NULL && (why = tb_replica_url_nesting(url)) != NULL)
		hint = "Name that root itself, or a place beside it.";
	if (why != NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("the replica storage URL for tenant \"%s\" is refused", tenant), errdetail("%s", why),
						errhint("%s", hint)));
	PG_RETURN_VOID();
}

/* ---------------------------------------------------------------- the launcher's pass */

typedef struct tb_replica_worker
{
	BackgroundWorkerHandle *handle;
	char tenant[NAMEDATALEN];
} tb_replica_worker;

static tb_replica_worker tb_replica_workers[TB_REPLICA_MAX_WORKERS];

/* Forgets workers that ended; true if one for tenant (NULL: any) still runs, *running: how many do. */
static bool
tb_replica_running(const char *tenant, int *running)
{
	bool found = false;

	*running = 0;
	for (int i = 0; i < TB_REPLICA_MAX_WORKERS; i++)
	{
		pid_t pid;

		if (tb_replica_workers[i].handle == NULL)
			continue;
		if (GetBackgroundWorkerPid(tb_replica_workers[i].handle, &pid) == BGWH_STOPPED)
		{
			pfree(tb_replica_workers[i].handle);
			tb_replica_workers[i].handle = NULL;
			continue;
		}
		(*running)++;
		if (tenant != NULL && strcmp(tb_replica_workers[i].tenant, tenant) == 0)
			found = true;
	}
	return found;
}

/* Starts the replication worker of tenant; false when no slot (ours or the postmaster's) is free. */
static bool
tb_replica_start(const char *tenant)
{
	BackgroundWorker worker;
	MemoryContext old;
	bool started;

	for (int i = 0; i < TB_REPLICA_MAX_WORKERS; i++)
	{
		if (tb_replica_workers[i].handle != NULL)
			continue;
		tb_worker_describe(&worker, "tenant_backup_replicate_main", "tenant_backup replication",
						   psprintf("tenant_backup replication of %s", tenant));
		strlcpy(worker.bgw_extra, tenant, BGW_EXTRALEN);
		worker.bgw_notify_pid = MyProcPid;
		/* The handle outlives the round: it is checked on later rounds. */
		old = MemoryContextSwitchTo(TopMemoryContext);
		started = RegisterDynamicBackgroundWorker(&worker, &tb_replica_workers[i].handle);
		MemoryContextSwitchTo(old);
		if (started)
			strlcpy(tb_replica_workers[i].tenant, tenant, sizeof(tb_replica_workers[i].tenant));
		return started;
	}
	return false;
}

void
tb_replicate_pass(void)
{
	static char *backfilled_for = NULL;
	char *tenants, *tenant, *save = NULL;
	int running;

	/* At start and when the setting changed: backups of tenants that gained or lost a replica. */
	if (backfilled_for == NULL || strcmp(backfilled_for, tb_replica_storage_url) != 0)
	{
		tb_sql("SELECT tenant_backup._replica_backfill()", 0, NULL);
		if (backfilled_for != NULL)
			pfree(backfilled_for);
		backfilled_for = MemoryContextStrdup(TopMemoryContext, tb_replica_storage_url);
	}
	tenants = tb_sql("SELECT string_agg(t, ' ' ORDER BY t) FROM tenant_backup._replica_due_tenants() t", 0, NULL);
	for (tenant = tenants ? strtok_r(tenants, " ", &save) : NULL; tenant != NULL; tenant = strtok_r(NULL, " ", &save))
	{
		if (tb_replica_running(tenant, &running))
			continue;
		if (running >= Min(tb_max_workers, TB_REPLICA_MAX_WORKERS))
			break;
		if (!tb_replica_start(tenant))
		{
			ereport(LOG,
					(errmsg("tenant_backup: no background worker slot to replicate tenant \"%s\"; it waits", tenant),
					 errhint("Raise max_worker_processes.")));
			break;
		}
	}
}

/* ---------------------------------------------------------------- the replication worker */

typedef struct tb_replica_run
{
	const char *tenant;
	const char *url; /* as the catalog has it: nothing secret */
	storage *primary;
	storage *replica;
	char *buf;
} tb_replica_run;

static void
tb_sha256_hex(crypto_sha256 *sha, char out[2 * CRYPTO_SHA256_LEN + 1])
{
	uint8_t digest[CRYPTO_SHA256_LEN];

	crypto_sha256_final(sha, digest);
	crypto_sha256_free(sha);
	for (int i = 0; i < CRYPTO_SHA256_LEN; i++)
		snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

/*
 * Streams all of key from the primary to the replica, hashing what was read; the write
 * is aborted on any error, and when expected (NULL: none) is not that hash, so bytes
 * that do not check out never replace a copy in the replica.
 */
static int
tb_replica_stream(tb_replica_run *run, const char *key, const char *expected, char read_hex[2 * CRYPTO_SHA256_LEN + 1],
				  tb_error *err)
{
	storage_read *r = storage_read_open(run->primary, key, 0, 0, err);
	storage_write *w;
	crypto_sha256 *sha;
	ssize_t n;

	if (r == NULL)
		return tb_error_prefix(err, "reading \"%s\" from the primary storage", key);
	if ((sha = crypto_sha256_new(err)) == NULL)
	{
		storage_read_close(r);
		return -1;
	}
	if ((w = tb_write_begin(run->replica, key, err)) == NULL)
	{
		crypto_sha256_free(sha);
		storage_read_close(r);
		return tb_error_prefix(err, "writing \"%s\" to the replica", key);
	}
	while ((n = storage_read_next(r, run->buf, TB_REPLICA_BUFFER, err)) > 0)
	{
		CHECK_FOR_INTERRUPTS();
		crypto_sha256_update(sha, run->buf, (size_t) n);
		if (storage_write_append(w, run->buf, (size_t) n, err) != 0)
			break;
	}
	storage_read_close(r);
	tb_sha256_hex(sha, read_hex);
	if (n != 0)
	{
		tb_write_abort(w);
		return tb_error_prefix(err, "copying \"%s\" to the replica", key);
	}
	if (expected != NULL && pg_strcasecmp(expected, read_hex) != 0)
	{
		tb_write_abort(w);
		return tb_error_set(err, TB_ERR_CORRUPT,
							"the primary copy of \"%s\" does not have the SHA-256 the catalog or its manifest records: "
							"it was not replicated",
							key);
	}
	if (tb_write_commit(w, err) != 0)
		return tb_error_prefix(err, "committing \"%s\" in the replica", key);
	return 0;
}

/* The SHA-256 of the replica's copy of key, read back in full. */
static int
tb_replica_read_back(tb_replica_run *run, const char *key, char hex[2 * CRYPTO_SHA256_LEN + 1], tb_error *err)
{
	storage_read *r = storage_read_open(run->replica, key, 0, 0, err);
	crypto_sha256 *sha;
	ssize_t n;

	if (r == NULL)
		return tb_error_prefix(err, "reading the copy of \"%s\" back from the replica", key);
	if ((sha = crypto_sha256_new(err)) == NULL)
	{
		storage_read_close(r);
		return -1;
	}
	while ((n = storage_read_next(r, run->buf, TB_REPLICA_BUFFER, err)) > 0)
	{
		CHECK_FOR_INTERRUPTS();
		crypto_sha256_update(sha, run->buf, (size_t) n);
	}
	storage_read_close(r);
	tb_sha256_hex(sha, hex);
	return n == 0 ? 0 : tb_error_prefix(err, "reading the copy of \"%s\" back from the replica", key);
}

/*
 * Copies key raw to the replica and reads the copy back. expected (the catalog's or
 * a manifest's SHA-256; NULL: none) must match the bytes read from the primary, and
 * the copy must match them. Leaves no unfinished write on failure; a copy that reads
 * back different stays in the replica (it is replaced by the next attempt).
 */
static int
tb_replica_copy(tb_replica_run *run, const char *key, const char *expected, tb_error *err)
{
	char read_hex[2 * CRYPTO_SHA256_LEN + 1], back_hex[2 * CRYPTO_SHA256_LEN + 1];

	pgstat_report_activity(STATE_RUNNING, psprintf("tenant_backup: replicating %s", key));
	if (tb_replica_stream(run, key, expected, read_hex, err) != 0)
		return -1;
	if (tb_replica_read_back(run, key, back_hex, err) != 0)
		return -1;
	if (strcmp(read_hex, back_hex) != 0)
		return tb_error_set(err, TB_ERR_CORRUPT, "the replica's copy of \"%s\" read back differs from the primary's",
							key);
	return 0;
}

typedef struct tb_listed
{
	char *key;
	uint64 size;
} tb_listed;

typedef struct tb_listing
{
	tb_listed *items;
	int count;
	int capacity;
} tb_listing;

static int
tb_listing_add(const char *key, const storage_info *info, void *arg)
{
	tb_listing *l = arg;

	if (l->count == l->capacity)
	{
		l->capacity = l->capacity ? 2 * l->capacity : 64;
		l->items = l->items ? repalloc_huge(l->items, l->capacity * sizeof(tb_listed))
							: palloc(l->capacity * sizeof(tb_listed));
	}
	l->items[l->count].key = pstrdup(key);
	l->items[l->count].size = info->size;
	l->count++;
	return 0;
}

static int
tb_listed_cmp(const void *a, const void *b)
{
	return strcmp(((const tb_listed *) a)->key, ((const tb_listed *) b)->key);
}

/* Every object below prefix, sorted by key. */
static int
tb_listing_read(storage *st, const char *prefix, tb_listing *out, tb_error *err)
{
	memset(out, 0, sizeof(*out));
	if (storage_list(st, prefix, tb_listing_add, out, err) != 0)
		return -1;
	if (out->count > 1)
		qsort(out->items, out->count, sizeof(tb_listed), tb_listed_cmp);
	return 0;
}

static const tb_listed *
tb_listing_find(const tb_listing *l, const char *key)
{
	tb_listed probe = {(char *) key, 0};

	return l->count == 0 ? NULL : bsearch(&probe, l->items, l->count, sizeof(tb_listed), tb_listed_cmp);
}

/*
 * Whether the catalog vouches for the primary's key document key: <key id>.json equal
 * (as JSON) to that key's wrapped document in key_store, or active.json naming the
 * catalog's active key under the master key's seal. *sha: the SHA-256 of the bytes
 * checked, which the copy must have. Storage is untrusted: nothing else is copied.
 */
static bool
tb_replica_key_vouched(tb_replica_run *run, const char *key, char sha[2 * CRYPTO_SHA256_LEN + 1], tb_error *err)
{
	const char *leaf = key + strlen(run->tenant) + strlen("/keys/");
	size_t leaf_len = strlen(leaf);
	uint8_t digest[CRYPTO_SHA256_LEN];
	char *doc;
	size_t len;
	bool vouched;

	if (leaf_len <= 5 || strcmp(leaf + leaf_len - 5, ".json") != 0 ||
		storage_get(run->primary, key, MANIFEST_MAX_BYTES, &doc, &len, err) != 0)
		return false;
	if (memchr(doc, '\0', len) != NULL)
	{
		free(doc);
		return false;
	}
	if (strcmp(leaf, "active.json") == 0)
	{
		char key_id[KEYS_ID_LEN + 1];
		master_key master;
		const char *args[2] = {run->tenant, key_id};

		tb_master_key(&master);
		vouched = repo_active_key_get(run->primary, &master, run->tenant, key_id, err) == 0 &&
				  tb_sql("SELECT true FROM tenant_backup.key_store k WHERE k.tenant = $1 AND k.state = 'active'"
						 " AND k.key_id = $2",
						 2, args) != NULL;
		keys_master_wipe(&master);
	}
	else
	{
		const char *args[3] = {run->tenant, pnstrdup(leaf, leaf_len - 5), pnstrdup(doc, len)};

		vouched = tb_sql("SELECT tenant_backup._replica_key_vouched($1, $2, $3)", 3, args)[0] == 't';
	}
	crypto_sha256_once(doc, len, digest);
	free(doc);
	for (int i = 0; i < CRYPTO_SHA256_LEN; i++)
		snprintf(sha + 2 * i, 3, "%02x", digest[i]);
	return vouched;
}

/*
 * The tenant's key documents (<tenant>/keys/) the catalog vouches for, each copied
 * again (a master key rotation rewraps them in place); others are left out, so a
 * document forged in the primary never replaces the replica's.
 */
static int
tb_replica_copy_keys(tb_replica_run *run, tb_error *err)
{
	tb_listing keys;

	if (tb_listing_read(run->primary, psprintf("%s/keys/", run->tenant), &keys, err) != 0)
		return tb_error_prefix(err, "listing the key documents in the primary storage");
	for (int i = 0; i < keys.count; i++)
	{
		char sha[2 * CRYPTO_SHA256_LEN + 1];
		tb_error skipped = {0};

		if (!tb_replica_key_vouched(run, keys.items[i].key, sha, &skipped))
			continue;
		if (tb_replica_copy(run, keys.items[i].key, sha, err) != 0)
			return -1;
	}
	return 0;
}

/*
 * Whether the replica has the primary's WAL object (and its manifest, json_key): its
 * object must be listed with the primary's size, so a manifest planted in the replica
 * alone (storage is untrusted) does not stop the file being copied.
 */
static bool
tb_replica_wal_copied(const tb_listing *replica, const char *json_key, const tb_listed *object)
{
	const tb_listed *copy = tb_listing_find(replica, object->key);

	return tb_listing_find(replica, json_key) != NULL && copy != NULL && copy->size == object->size;
}

/*
 * A dedicated tenant's archived WAL: every file the replica does not have (see
 * tb_replica_wal_copied) is copied, object first, checked against its manifest's
 * SHA-256, then its manifest. Archived WAL is never rewritten, so a copy with its
 * manifest and size is never replaced. *copied: how many.
 */
static int
tb_replica_copy_wal(tb_replica_run *run, int *copied, tb_error *err)
{
	char *prefix = psprintf("%s/postgres/wal/", run->tenant);
	tb_listing primary, replica;

	*copied = 0;
	if (tb_listing_read(run->primary, prefix, &primary, err) != 0)
		return tb_error_prefix(err, "listing the archived WAL in the primary storage");
	if (tb_listing_read(run->replica, prefix, &replica, err) != 0)
		return tb_error_prefix(err, "listing the archived WAL in the replica");
	for (int i = 0; i < primary.count; i++)
	{
		const tb_listed *json = &primary.items[i];
		const tb_listed *object;
		char object_key[MANIFEST_OBJECT_MAX];
		char *doc;
		size_t len;
		manifest m;
		int rc;

		if (strlen(json->key) < 5 || strcmp(json->key + strlen(json->key) - 5, ".json") != 0)
			continue;
		snprintf(object_key, sizeof(object_key), "%.*s.tbk", (int) strlen(json->key) - 5, json->key);
		object = tb_listing_find(&primary, object_key);
		if (object == NULL || tb_replica_wal_copied(&replica, json->key, object))
			continue;
		if (storage_get(run->primary, json->key, MANIFEST_MAX_BYTES, &doc, &len, err) != 0)
			return tb_error_prefix(err, "reading the manifest \"%s\" from the primary storage", json->key);
		rc = manifest_from_json(doc, json->key, &m, err);
		free(doc);
		if (rc != 0 || tb_replica_copy(run, object_key, m.sha256, err) != 0 ||
			tb_replica_copy(run, json->key, NULL, err) != 0)
			return -1;
		(*copied)++;
	}
	return 0;
}

/* Records why the copies of the tenant's due backups failed (backup_id NULL: every one due), with their next attempt.
 */
static void
tb_replica_failed(tb_replica_run *run, const char *backup_id, const char *what, const tb_error *err)
{
	char *error = psprintf("tenant \"%s\": %s to the replica %s failed: %s", run->tenant, what,
						   run->replica ? storage_describe(run->replica) : run->url, err->msg);
	const char *args[3] = {run->tenant, backup_id, error};

	ereport(WARNING, (errmsg("tenant_backup: %s", error),
					  errhint("It is tried again after 1, 5 and 25 minutes, then every hour; tenant_backup.status "
							  "shows the replication lag.")));
	tb_sql("SELECT tenant_backup._replica_failed($1, $2::bigint, $3)", 3, args);
}

/* Copies one complete backup (object, then manifest) and records it replicated. */
static void
tb_replica_backup(tb_replica_run *run, char *due)
{
	/* due: "<id> <sha256> <object key>" */
	char *sha = strchr(due, ' ') + 1;
	char *object = strchr(sha, ' ') + 1;
	char manifest_key[MANIFEST_OBJECT_MAX];
	tb_error err = {0};
	const char *args[2] = {due, run->url};

	sha[-1] = '\0';
	object[-1] = '\0';
	if (repo_manifest_key(object, manifest_key, sizeof(manifest_key), &err) != 0 ||
		tb_replica_copy(run, object, sha, &err) != 0 || tb_replica_copy(run, manifest_key, NULL, &err) != 0)
	{
		tb_replica_failed(run, due, psprintf("copying backup %s", due), &err);
		return;
	}
	/* Expired or dropped meanwhile: the copy would be an orphan. */
	if (strcmp(tb_sql("SELECT tenant_backup._replica_done($1::bigint, $2)", 2, args), "t") != 0)
	{
		uint64_t bytes;

		(void) repo_delete_backup(run->replica, object, &bytes, &err);
	}
}

/* Removes the tenant's unfinished writes in the replica older than a lease: a replication worker died mid-copy. */
static int
tb_replica_unfinished_old(const char *key, const char *upload, const storage_info *info, void *arg)
{
	tb_replica_run *run = arg;
	tb_error err = {0};

	if (info->mtime != 0 && info->mtime < (int64_t) time(NULL) - tb_lease_seconds &&
		storage_abort_unfinished(run->replica, key, upload, &err) != 0)
		ereport(WARNING, (errmsg("tenant_backup: could not remove an unfinished write of \"%s\" in the replica %s: %s",
								 key, storage_describe(run->replica), err.msg)));
	return 0;
}

/* One tenant's replication, once: a failure is recorded on the backups it concerns, never raised. */
static void
tb_replicate_tenant(tb_replica_run *run)
{
	const char *args[1] = {run->tenant};
	tb_error err = {0};
	const char *hint, *refusal;
	char *due;
	int copied;

	/* An operator's URL is checked again: the setting may have changed since. */
	refusal = tb_replica_url_refusal(run->url,
									 tb_sql("SELECT true FROM tenant_backup.tenants t WHERE t.name = $1"
											" AND t.replica_storage IS NOT NULL AND NOT t.replica_set_by_superuser",
											1, args) != NULL,
									 &hint);
	if (refusal != NULL)
	{
		tb_error_set(&err, TB_ERR_INVALID, "the replica URL is refused: %s", refusal);
		tb_replica_failed(run, NULL, "replicating", &err);
		return;
	}
	run->primary = tb_storage();
	if ((run->replica = storage_open(tb_storage_url_limited(run->url), &err)) == NULL)
	{
		tb_replica_failed(run, NULL, "opening", &err);
		return;
	}
	(void) storage_list_unfinished(run->replica, psprintf("%s/", run->tenant), tb_replica_unfinished_old, run, &err);
	if (tb_replica_copy_keys(run, &err) != 0)
	{
		tb_replica_failed(run, NULL, "copying the key documents", &err);
		return;
	}
	while ((due = tb_sql("SELECT tenant_backup._replica_next($1)", 1, args)) != NULL)
		tb_replica_backup(run, due);
	if (tb_sql("SELECT tenant_backup._replica_wal_due($1)", 1, args) != NULL)
	{
		char count[16];
		const char *wal_args[3] = {run->tenant, count, NULL};

		if (tb_replica_copy_wal(run, &copied, &err) != 0)
			wal_args[2] = psprintf("tenant \"%s\": copying archived WAL to the replica %s failed: %s", run->tenant,
								   storage_describe(run->replica), err.msg);
		snprintf(count, sizeof(count), "%d", copied);
		tb_sql("SELECT tenant_backup._replica_wal_done($1, $2::int, $3)", 3, wal_args);
	}
}

void
tenant_backup_replicate_main(Datum arg)
{
	tb_replica_run run = {0};
	char tenant[BGW_EXTRALEN];
	const char *args[1] = {tenant};

	(void) arg;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(tb_database, NULL, 0);
	strlcpy(tenant, MyBgworkerEntry->bgw_extra, sizeof(tenant));
	pgstat_report_appname("tenant_backup replication");
	/* One replication of a tenant at a time, whatever a restarted launcher starts; held until exit. */
	if (strcmp(tb_sql("SELECT pg_try_advisory_lock(hashtext('tenant_backup replication'), hashtext($1))", 1, args),
			   "t") != 0)
		proc_exit(0);
	run.tenant = tenant;
	run.url = tb_sql("SELECT tenant_backup._replica_url($1)", 1, args);
	if (run.url == NULL)
	{
		/* The tenant has no replica any more: nothing of it is pending. */
		tb_sql("SELECT tenant_backup._replica_backfill()", 0, NULL);
		proc_exit(0);
	}
	run.buf = palloc(TB_REPLICA_BUFFER);
	PG_TRY();
	{
		tb_replicate_tenant(&run);
	}
	PG_CATCH();
	{
		/* Say, the primary storage cannot be opened: recorded like a failed copy, not retried every round. */
		ErrorData *edata;
		tb_error err = {0};

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		tb_error_set(&err, TB_ERR_INTERNAL, "%s", edata->message);
		tb_replica_failed(&run, NULL, "replicating", &err);
	}
	PG_END_TRY();
	if (run.replica != NULL)
		storage_close(run.replica);
	if (run.primary != NULL)
		storage_close(run.primary);
	proc_exit(0);
}
