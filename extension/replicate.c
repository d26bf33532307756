/*
 * Replication to a second storage: the replica URL setting and the checks of a
 * tenant's own replica URL (who may send the server's signed requests where).
 */
#include "tenant_backup.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/formatting.h"

#include "check.h"
#include "replicate.h"

PG_FUNCTION_INFO_V1(tenant_backup_replica_url_check);

char *tb_replica_storage_url = NULL;

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

/*
 * NULL if url may be a replica: storage would open it, it does not overlap
 * tenant_backup.storage and, with restricted, it stays where the superuser configured
 * storage (see _replica_url_check). Otherwise why not, as an errdetail.
 */
static const char *
tb_replica_url_refusal(const char *url, bool restricted, const char **hint)
{
	tb_error err = {0};
	tb_url_place mine, primary, replica;
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
	if (!restricted)
		return NULL;
	*hint = "A superuser may set any replica URL; an operator may name another prefix of the same S3 endpoint and "
			"bucket, or a directory under a file:// tenant_backup.replica_storage.";
	if (mine.s3)
	{
		bool same_place = tb_storage_url != NULL && tb_storage_url[0] != '\0' &&
						  tb_url_place_parse(tb_storage_url, &primary, &why) && strcmp(primary.place, mine.place) == 0;

		if (!same_place && tb_replica_storage_url != NULL && tb_replica_storage_url[0] != '\0' &&
			tb_url_place_parse(tb_replica_storage_url, &replica, &why))
			same_place = replica.s3 && strcmp(replica.place, mine.place) == 0;
		if (!same_place)
			return "Its S3 endpoint and bucket are neither those of tenant_backup.storage nor of "
				   "tenant_backup.replica_storage: the server would send its signed requests there.";
		return NULL;
	}
	if (tb_replica_storage_url == NULL || strncmp(tb_replica_storage_url, "file://", 7) != 0 ||
		!tb_url_place_parse(tb_replica_storage_url, &replica, &why) || !tb_path_within(mine.path, replica.path))
		return "Its directory is not under the file:// directory of tenant_backup.replica_storage.";
	return NULL;
}

bool
tb_check_replica_storage_url(char **newval, void **extra, GucSource source)
{
	const char *hint, *why;

	(void) extra;
	(void) source;
	if (*newval == NULL || (*newval)[0] == '\0')
		return true;
	why = tb_replica_url_refusal(*newval, false, &hint);
	if (why != NULL)
	{
		GUC_check_errdetail("%s", why);
		GUC_check_errhint("%s", hint);
		return false;
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

	if (why != NULL)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("the replica storage URL for tenant \"%s\" is refused", tenant), errdetail("%s", why),
						errhint("%s", hint)));
	PG_RETURN_VOID();
}
