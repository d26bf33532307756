/*
 * s3://bucket/prefix storage driver: opening a storage from its URL and the
 * environment, and the object operations other than streaming (head, delete, list).
 * Streaming writes are in s3_write.c, streaming reads in s3_read.c.
 */
#include "s3.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORAGE_S3_DEFAULT_PART_SIZE (16 * STORAGE_S3_MIB)
#define STORAGE_S3_DEFAULT_RETRIES 7 /* 8 attempts in all */
#define STORAGE_S3_MAX_RETRIES 100
#define STORAGE_S3_DEFAULT_STALL_TIMEOUT 15L
#define STORAGE_S3_MAX_STALL_TIMEOUT 3600L
#define STORAGE_S3_DEFAULT_REGION "us-east-1"
#define STORAGE_S3_MAX_LIST_PAGES 100000               /* 100 million keys at S3's 1000 a page */
#define STORAGE_S3_MIN_BANDWIDTH ((size_t) 100 * 1000) /* bytes per second */
#define STORAGE_S3_MAX_BANDWIDTH ((size_t) 100 * 1000 * 1000 * 1000)
#define STORAGE_S3_KNOWN_OPTIONS                                                                                       \
	"endpoint, region, style, sse, kms_key_id, storage_class, max_bandwidth, part_size, retries or stall_timeout"

/* Storage classes whose objects read back at once: GLACIER and DEEP_ARCHIVE would need a restore first. */
static const char *const storage_s3_storage_classes[] = {
	"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "REDUCED_REDUNDANCY",
};

static pthread_once_t storage_s3_once = PTHREAD_ONCE_INIT;
static CURLcode storage_s3_init_result;

static void
storage_s3_global_init(void)
{
	storage_s3_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
	s3_xml_init();
}

int
storage_s3_request(storage_s3 *st, const s3_request *req, s3_response *resp, s3_buffer *buf, tb_error *err)
{
	s3_buffer discarded;
	s3_buffer *body = buf ? buf : &discarded;
	s3_request checked = *req;
	int rc;

	/* S3 may answer 200 with an <Error> (CompleteMultipartUpload does): small answers are checked for one */
	checked.error_in_ok_body = true;
	*body = (s3_buffer){.data = malloc(STORAGE_S3_XML_MAX), .max = STORAGE_S3_XML_MAX};
	*resp = (s3_response){.body = body};
	if (body->data == NULL)
		rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory preparing S3 %s '%s'", req->op, req->key);
	else
		rc = s3_request_execute(st, &checked, resp, err);
	if (buf == NULL)
	{
		free(discarded.data);
		resp->body = NULL;
	}
	return rc;
}

static void
storage_s3_close(storage *base)
{
	storage_s3 *st = (storage_s3 *) base;

	s3_credentials_clear(&st->creds);
	free(st->sse);
	free(st->kms_key_id);
	free(st->storage_class);
	free(st->endpoint);
	free(st->host);
	free(st->bucket);
	free(st->prefix);
	free(st->region);
	free(st->base.description);
	curl_easy_cleanup(st->curl);
	free(st);
}

/* A size such as 16777216, 16384KiB, 16MiB or 1GiB. */
static bool
storage_s3_parse_size(const char *text, size_t *size)
{
	static const struct
	{
		const char *suffix;
		size_t factor;
	} units[] = {{"", 1}, {"KiB", 1024}, {"MiB", STORAGE_S3_MIB}, {"GiB", 1024 * STORAGE_S3_MIB}};
	char *end;
	unsigned long long n;

	if (text[0] < '0' || text[0] > '9')
		return false;
	n = strtoull(text, &end, 10);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strcmp(end, units[i].suffix) == 0)
		{
			if (n > SIZE_MAX / units[i].factor)
				return false;
			*size = (size_t) n * units[i].factor;
			return true;
		}
	return false;
}

/* A rate such as 50MB/s, 512KB/s, 1GB/s, 20MiB/s or 1000000 (bytes per second; "/s" may be left out). */
static bool
storage_s3_parse_bandwidth(const char *text, size_t *rate)
{
	static const struct
	{
		const char *suffix;
		size_t factor;
	} units[] = {{"", 1},
				 {"B", 1},
				 {"KB", 1000},
				 {"MB", 1000 * 1000},
				 {"GB", 1000 * 1000 * 1000},
				 {"KiB", 1024},
				 {"MiB", STORAGE_S3_MIB},
				 {"GiB", 1024 * STORAGE_S3_MIB}};
	char *end;
	unsigned long long n;
	size_t unit_len;

	if (text[0] < '0' || text[0] > '9')
		return false;
	n = strtoull(text, &end, 10);
	unit_len = strlen(end) >= 2 && strcmp(end + strlen(end) - 2, "/s") == 0 ? strlen(end) - 2 : strlen(end);
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strlen(units[i].suffix) == unit_len && strncmp(end, units[i].suffix, unit_len) == 0)
		{
			if (n > SIZE_MAX / units[i].factor)
				return false;
			*rate = (size_t) n * units[i].factor;
			return true;
		}
	return false;
}

/* Whether value is one of the n words. */
static bool
storage_s3_one_of(const char *value, const char *const *words, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(value, words[i]) == 0)
			return true;
	return false;
}

/* Replaces *field with a copy of value. */
static int
storage_s3_set_string(char **field, const char *value, tb_error *err)
{
	free(*field);
	if ((*field = strdup(value)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	return 0;
}

/* A whole number in [min, max]. */
static bool
storage_s3_parse_number(const char *text, long min, long max, long *value)
{
	char *end;

	if (text[0] < '0' || text[0] > '9')
		return false;
	*value = strtol(text, &end, 10);
	return *end == '\0' && *value >= min && *value <= max;
}

/*
 * Sets st->endpoint (scheme://host[:port]) and st->host from an endpoint URL, which
 * must be http or https with no credentials, path or query. Messages do not repeat
 * the URL, which could hold a password.
 */
static int
storage_s3_set_endpoint(storage_s3 *st, const char *endpoint, tb_error *err)
{
	CURLU *u = curl_url();
	char *scheme = NULL;
	char *host = NULL;
	char *port = NULL;
	char *user = NULL;
	char *path = NULL;
	char *query = NULL;
	int rc = 0;

	free(st->endpoint);
	free(st->host);
	st->endpoint = NULL;
	st->host = NULL;
	if (u == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		rc = tb_error_set(err, TB_ERR_INVALID,
						  "the S3 endpoint (endpoint= in the storage URL, or AWS_ENDPOINT_URL) is not a URL such as "
						  "http://127.0.0.1:9000");
	else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK)
		rc = tb_error_set(err, TB_ERR_INVALID,
						  "the S3 endpoint must not contain credentials: set AWS_ACCESS_KEY_ID and "
						  "AWS_SECRET_ACCESS_KEY instead");
	else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
		rc = tb_error_set(err, TB_ERR_INVALID, "the S3 endpoint must be an http:// or https:// URL, not %s://", scheme);
	else if ((curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0) ||
			 curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK)
		rc = tb_error_set(err, TB_ERR_INVALID,
						  "the S3 endpoint must have no path or query: name the bucket and prefix as "
						  "s3://bucket/prefix");
	else
	{
		curl_url_get(u, CURLUPART_PORT, &port, 0);
		if (asprintf(&st->host, "%s%s%s", host, port ? ":" : "", port ? port : "") < 0)
			st->host = NULL;
		if (st->host == NULL || asprintf(&st->endpoint, "%s://%s", scheme, st->host) < 0)
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(user);
	curl_free(path);
	curl_free(query);
	curl_url_cleanup(u);
	return rc;
}

/*
 * Applies one URL option. Messages name the option and repeat only numeric values,
 * so a secret pasted into a URL by mistake is not echoed.
 */
static int
storage_s3_set_option(storage_s3 *st, const char *name, const char *value, tb_error *err)
{
	static const char *const styles[] = {"path", "virtual"};
	static const char *const encryptions[] = {"AES256", "aws:kms"};
	long number;
	size_t rate;

	if (strcmp(name, "endpoint") == 0)
		return storage_s3_set_endpoint(st, value, err);
	if (strcmp(name, "region") == 0)
		return storage_s3_set_string(&st->region, value, err);
	if (strcmp(name, "style") == 0)
	{
		if (!storage_s3_one_of(value, styles, 2))
			return tb_error_set(err, TB_ERR_INVALID, "S3 storage URL option style= must be path or virtual");
		st->style_given = true;
		st->virtual_host = value[0] == 'v';
		return 0;
	}
	if (strcmp(name, "sse") == 0)
	{
		if (!storage_s3_one_of(value, encryptions, 2))
			return tb_error_set(err, TB_ERR_INVALID, "S3 storage URL option sse= must be AES256 or aws:kms");
		return storage_s3_set_string(&st->sse, value, err);
	}
	if (strcmp(name, "kms_key_id") == 0)
	{
		/* a key id, alias or ARN: it becomes a header value */
		if (value[0] == '\0' || strlen(value) > 2048 ||
			strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:/_-+=,.@") != strlen(value))
			return tb_error_set(err, TB_ERR_INVALID,
								"S3 storage URL option kms_key_id= is not a KMS key id, alias or ARN (letters, digits "
								"and :/_-+=,.@)");
		return storage_s3_set_string(&st->kms_key_id, value, err);
	}
	if (strcmp(name, "storage_class") == 0)
	{
		if (!storage_s3_one_of(value, storage_s3_storage_classes,
							   sizeof(storage_s3_storage_classes) / sizeof(storage_s3_storage_classes[0])))
			return tb_error_set(err, TB_ERR_INVALID,
								"S3 storage URL option storage_class= must be STANDARD, STANDARD_IA, ONEZONE_IA, "
								"INTELLIGENT_TIERING, GLACIER_IR or REDUCED_REDUNDANCY (GLACIER and DEEP_ARCHIVE "
								"objects cannot be read without a restore: move backups there with a lifecycle rule)");
		return storage_s3_set_string(&st->storage_class, value, err);
	}
	if (strcmp(name, "max_bandwidth") == 0)
	{
		if (!storage_s3_parse_bandwidth(value, &rate) || rate < STORAGE_S3_MIN_BANDWIDTH ||
			rate > STORAGE_S3_MAX_BANDWIDTH)
			return tb_error_set(err, TB_ERR_INVALID,
								"S3 storage URL option max_bandwidth= is not a rate from 100KB/s to 100GB/s, such as "
								"50MB/s");
		st->max_bandwidth = (curl_off_t) rate;
		return 0;
	}
	if (strcmp(name, "part_size") == 0)
	{
		if (!storage_s3_parse_size(value, &st->part_size) || st->part_size < STORAGE_S3_MIN_PART_SIZE ||
			st->part_size > STORAGE_S3_MAX_PART_SIZE)
			return tb_error_set(err, TB_ERR_INVALID,
								"S3 storage URL option part_size='%s' is not a size from 5MiB to 5GiB, such as 16MiB",
								value);
		return 0;
	}
	if (strcmp(name, "retries") == 0)
	{
		if (!storage_s3_parse_number(value, 0, STORAGE_S3_MAX_RETRIES, &number))
			return tb_error_set(err, TB_ERR_INVALID, "S3 storage URL option retries='%s' is not a number from 0 to %d",
								value, STORAGE_S3_MAX_RETRIES);
		st->retries = (int) number;
		return 0;
	}
	if (strcmp(name, "stall_timeout") == 0)
	{
		if (!storage_s3_parse_number(value, 1, STORAGE_S3_MAX_STALL_TIMEOUT, &st->stall_timeout))
			return tb_error_set(err, TB_ERR_INVALID,
								"S3 storage URL option stall_timeout='%s' is not a number of seconds from 1 to %ld",
								value, STORAGE_S3_MAX_STALL_TIMEOUT);
		return 0;
	}
	return tb_error_set(err, TB_ERR_INVALID,
						"unknown option '%s' in S3 storage URL: use " STORAGE_S3_KNOWN_OPTIONS
						" (credentials never come from the URL)",
						name);
}

/* Applies the URL's "name=value&..." options, values percent-decoded. */
static int
storage_s3_parse_options(storage_s3 *st, const char *query, tb_error *err)
{
	char *copy = strdup(query);
	char *save = NULL;
	int rc = 0;

	if (copy == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	for (char *item = strtok_r(copy, "&", &save); rc == 0 && item != NULL; item = strtok_r(NULL, "&", &save))
	{
		char *eq = strchr(item, '=');
		char *value;

		if (eq == NULL)
		{
			rc = tb_error_set(err, TB_ERR_INVALID, "option '%s' in S3 storage URL has no value", item);
			break;
		}
		*eq = '\0';
		value = curl_easy_unescape(st->curl, eq + 1, 0, NULL);
		if (value == NULL)
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
		else
			rc = storage_s3_set_option(st, item, value, err);
		curl_free(value);
	}
	free(copy);
	return rc;
}

/* Bucket names as S3 allows them, including the legacy upper case and '_'. */
static bool
storage_s3_bucket_valid(const char *bucket)
{
	size_t len = strlen(bucket);

	return len >= 3 && len <= 255 &&
		   strspn(bucket, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == len;
}

/* Bucket, prefix ("" or ending in '/') and options of s3://bucket/prefix?options. */
static int
storage_s3_parse_url(storage_s3 *st, const char *url, tb_error *err)
{
	const char *rest = url + strlen("s3://");
	const char *query = strchr(rest, '?');
	size_t bucket_len = strcspn(rest, "/?");
	const char *path = rest + bucket_len;
	size_t path_len = (query ? (size_t) (query - rest) : strlen(rest)) - bucket_len;
	char *prefix;

	if ((st->bucket = strndup(rest, bucket_len)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	if (!storage_s3_bucket_valid(st->bucket))
		return tb_error_set(err, TB_ERR_INVALID,
							"S3 storage URL has no valid bucket name ('%s'): use s3://bucket/prefix with a bucket of "
							"3 to 255 letters, digits, '.', '-' or '_'",
							st->bucket);
	while (path_len > 0 && path[0] == '/')
	{
		path++;
		path_len--;
	}
	while (path_len > 0 && path[path_len - 1] == '/')
		path_len--;
	if ((prefix = strndup(path, path_len)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	if (prefix[0] != '\0' && storage_key_check(prefix, err) != 0)
	{
		free(prefix);
		return tb_error_prefix(err, "S3 storage URL has an invalid prefix");
	}
	if (asprintf(&st->prefix, "%s%s", prefix, prefix[0] ? "/" : "") < 0)
		st->prefix = NULL;
	free(prefix);
	if (st->prefix == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	return query != NULL ? storage_s3_parse_options(st, query + 1, err) : 0;
}

/* Whether a bucket name can be a host name label chain: lower case, digits, '-' and (without TLS) '.'. */
static bool
storage_s3_bucket_dns_compatible(const char *bucket, bool tls)
{
	size_t len = strlen(bucket);

	return len >= 3 && len <= 63 &&
		   strspn(bucket, tls ? "abcdefghijklmnopqrstuvwxyz0123456789-" : "abcdefghijklmnopqrstuvwxyz0123456789-.") ==
			   len &&
		   bucket[0] != '-' && bucket[len - 1] != '-' && bucket[0] != '.' && bucket[len - 1] != '.' &&
		   strstr(bucket, "..") == NULL;
}

/*
 * Chooses the URL style: style= if given, else virtual-hosted for AWS's own
 * endpoint (path style for a bucket name that cannot be a host name) and path
 * style for an explicit endpoint. Virtual-hosted style puts the bucket in front
 * of the endpoint's host.
 */
static int
storage_s3_set_style(storage_s3 *st, bool explicit_endpoint, tb_error *err)
{
	bool tls = strncmp(st->endpoint, "https://", 8) == 0;
	char *host;
	char *endpoint;

	if (!st->style_given)
		st->virtual_host = !explicit_endpoint && storage_s3_bucket_dns_compatible(st->bucket, tls);
	if (!st->virtual_host)
		return 0;
	if (!storage_s3_bucket_dns_compatible(st->bucket, tls))
		return tb_error_set(err, TB_ERR_INVALID,
							"S3 bucket '%s' cannot be named in a host name (style=virtual needs 3 to 63 lower-case "
							"letters, digits and '-'%s): use style=path",
							st->bucket, tls ? ", and no '.' over https" : " or '.'");
	if (asprintf(&host, "%s.%s", st->bucket, st->host) < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	if (asprintf(&endpoint, "%s%s", tls ? "https://" : "http://", host) < 0)
	{
		free(host);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	}
	free(st->host);
	free(st->endpoint);
	st->host = host;
	st->endpoint = endpoint;
	return 0;
}

/*
 * Region and endpoint not given in the URL come from the environment, then the
 * defaults; then the URL style and the encryption settings are checked together.
 */
static int
storage_s3_settings(storage_s3 *st, tb_error *err)
{
	const char *endpoint = getenv("AWS_ENDPOINT_URL");
	bool explicit_endpoint = st->endpoint != NULL || (endpoint != NULL && endpoint[0] != '\0');
	char *default_endpoint;
	int rc;

	if (st->region == NULL)
	{
		const char *region = getenv("AWS_REGION");

		if (region == NULL || region[0] == '\0')
			region = getenv("AWS_DEFAULT_REGION");
		if ((st->region = strdup(region && region[0] ? region : STORAGE_S3_DEFAULT_REGION)) == NULL)
			return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	}
	if (st->region[0] == '\0' || strspn(st->region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(st->region))
		return tb_error_set(err, TB_ERR_INVALID, "S3 region '%s' is not a region name such as us-east-1", st->region);
	if (st->kms_key_id != NULL && (st->sse == NULL || strcmp(st->sse, "aws:kms") != 0))
		return tb_error_set(err, TB_ERR_INVALID, "S3 storage URL option kms_key_id= needs sse=aws:kms");
	if (st->endpoint != NULL)
		rc = 0;
	else if (endpoint != NULL && endpoint[0] != '\0')
		rc = storage_s3_set_endpoint(st, endpoint, err);
	else if (asprintf(&default_endpoint, "https://s3.%s.amazonaws.com", st->region) < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
	else
	{
		rc = storage_s3_set_endpoint(st, default_endpoint, err);
		free(default_endpoint);
	}
	return rc != 0 ? rc : storage_s3_set_style(st, explicit_endpoint, err);
}

static int
storage_s3_check_url(const char *url, tb_error *err)
{
	storage_s3 *st = calloc(1, sizeof(*st));
	int rc;

	if (st == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory checking an S3 storage URL");
	st->base.driver = &storage_s3_driver;
	rc = storage_s3_parse_url(st, url, err) != 0 || storage_s3_settings(st, err) != 0 ? -1 : 0;
	storage_s3_close(&st->base);
	return rc;
}

static storage *
storage_s3_open(const char *url, tb_error *err)
{
	storage_s3 *st;

	pthread_once(&storage_s3_once, storage_s3_global_init);
	if (storage_s3_init_result != CURLE_OK)
	{
		tb_error_set(err, TB_ERR_INTERNAL, "unable to initialise libcurl: %s",
					 curl_easy_strerror(storage_s3_init_result));
		return NULL;
	}
	if ((st = calloc(1, sizeof(*st))) == NULL || (st->curl = curl_easy_init()) == NULL)
	{
		free(st);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
		return NULL;
	}
	st->base.driver = &storage_s3_driver;
	st->part_size = STORAGE_S3_DEFAULT_PART_SIZE;
	st->retries = STORAGE_S3_DEFAULT_RETRIES;
	st->stall_timeout = STORAGE_S3_DEFAULT_STALL_TIMEOUT;
	if (storage_s3_parse_url(st, url, err) != 0 || storage_s3_settings(st, err) != 0 ||
		s3_credentials_resolve(&st->creds, st->region, err) != 0)
	{
		storage_s3_close(&st->base);
		return NULL;
	}
	if (asprintf(&st->base.description, "s3://%s/%s (endpoint %s, region %s)", st->bucket, st->prefix, st->endpoint,
				 st->region) < 0)
	{
		st->base.description = NULL;
		storage_s3_close(&st->base);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory opening S3 storage");
		return NULL;
	}
	return &st->base;
}

static int
storage_s3_head(storage *base, const char *key, storage_info *info, tb_error *err)
{
	storage_s3 *st = (storage_s3 *) base;
	s3_request req = {.op = "HEAD", .method = "HEAD", .key = key};
	s3_response resp;
	int rc = storage_s3_request(st, &req, &resp, NULL, err);

	if (rc == 0)
	{
		info->size = resp.length;
		info->mtime = resp.mtime;
	}
	return rc;
}

static int
storage_s3_delete(storage *base, const char *key, tb_error *err)
{
	storage_s3 *st = (storage_s3 *) base;
	s3_request req = {.op = "DELETE", .method = "DELETE", .key = key};
	s3_response resp;
	int rc = storage_s3_request(st, &req, &resp, NULL, err);

	return rc != 0 && s3_response_key_missing(&resp) ? 0 : rc;
}

/* Hands listed keys to the caller relative to the storage prefix. */
typedef struct storage_s3_listing
{
	const char *full_prefix; /* storage prefix and the prefix listed */
	size_t full_prefix_len;
	size_t prefix_len; /* of the storage prefix */
	storage_list_cb cb;
	void *arg;
	bool outside; /* the server listed a key outside full_prefix */
} storage_s3_listing;

/* A key the listing was not asked about is refused: callers act on what they are given. */
static int
storage_s3_list_key(const char *key, const storage_info *info, void *arg)
{
	storage_s3_listing *listing = arg;

	if (strncmp(key, listing->full_prefix, listing->full_prefix_len) != 0)
	{
		listing->outside = true;
		return 1;
	}
	return listing->cb(key + listing->prefix_len, info, listing->arg);
}

/*
 * The continuation tokens a listing was given, as 64-bit hashes in an open-addressed
 * table: a token given twice would make the listing go round for ever.
 */
typedef struct storage_s3_tokens
{
	uint64_t *slots; /* 0: empty */
	size_t cap;      /* a power of two */
	size_t count;
} storage_s3_tokens;

/* FNV-1a, never 0. */
static uint64_t
storage_s3_token_hash(const char *token)
{
	uint64_t h = 14695981039346656037ULL;

	for (const unsigned char *p = (const unsigned char *) token; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return h != 0 ? h : 1;
}

/* The slot holding hash, or the empty one where it would go. */
static size_t
storage_s3_tokens_slot(const uint64_t *slots, size_t cap, uint64_t hash)
{
	size_t i = (size_t) hash & (cap - 1);

	while (slots[i] != 0 && slots[i] != hash)
		i = (i + 1) & (cap - 1);
	return i;
}

/* Records token: 1 if it is new, 0 if it was given before, -1 when out of memory. */
static int
storage_s3_tokens_add(storage_s3_tokens *t, const char *token)
{
	uint64_t hash = storage_s3_token_hash(token);
	size_t i;

	if (2 * (t->count + 1) > t->cap)
	{
		size_t cap = t->cap ? 2 * t->cap : 64;
		uint64_t *slots = calloc(cap, sizeof(*slots));

		if (slots == NULL)
			return -1;
		for (size_t j = 0; j < t->cap; j++)
			if (t->slots[j] != 0)
				slots[storage_s3_tokens_slot(slots, cap, t->slots[j])] = t->slots[j];
		free(t->slots);
		t->slots = slots;
		t->cap = cap;
	}
	i = storage_s3_tokens_slot(t->slots, t->cap, hash);
	if (t->slots[i] == hash)
		return 0;
	t->slots[i] = hash;
	t->count++;
	return 1;
}

/* Checks the token of a truncated page: refused when empty or given before. */
static int
storage_s3_list_next_token(storage_s3 *st, storage_s3_tokens *tokens, const char *token, const char *full_prefix,
						   int page, tb_error *err)
{
	int added = token[0] != '\0' ? storage_s3_tokens_add(tokens, token) : 0;

	if (added < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory listing '%s'", full_prefix);
	if (added == 0)
		return tb_error_set(err, TB_ERR_STORAGE,
							"S3 listing of prefix '%s' in bucket '%s' gave, on page %d, %s continuation token: it "
							"would never end, so it is refused (the endpoint %s does not behave as S3 does)",
							full_prefix, st->bucket, page, token[0] ? "a repeated" : "an empty", st->endpoint);
	return 0;
}

static int
storage_s3_list(storage *base, const char *prefix, storage_list_cb cb, void *arg, tb_error *err)
{
	storage_s3 *st = (storage_s3 *) base;
	storage_s3_listing listing = {.prefix_len = strlen(st->prefix), .cb = cb, .arg = arg};
	storage_s3_tokens tokens = {0};
	char *full_prefix;
	char *token = NULL;
	bool more = true;
	int rc = 0;

	if (asprintf(&full_prefix, "%s%s", st->prefix, prefix ? prefix : "") < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory listing '%s'", prefix ? prefix : "");
	listing.full_prefix = full_prefix;
	listing.full_prefix_len = strlen(full_prefix);
	for (int page = 1; rc == 0 && more; page++)
	{
		s3_sign_pair query[] = {{"list-type", "2"}, {"prefix", full_prefix}, {"continuation-token", token}};
		s3_request req = {
			.op = "LIST",
			.method = "GET",
			.key = full_prefix,
			.bucket_level = true,
			.query = query,
			.nquery = token ? 3 : 2,
		};
		s3_response resp;
		s3_buffer buf;

		if (page > STORAGE_S3_MAX_LIST_PAGES)
		{
			rc = tb_error_set(err, TB_ERR_STORAGE,
							  "S3 listing of prefix '%s' in bucket '%s' did not end within %d pages: refused (check "
							  "the endpoint %s, or list a narrower prefix)",
							  full_prefix, st->bucket, STORAGE_S3_MAX_LIST_PAGES, st->endpoint);
			break;
		}
		rc = storage_s3_request(st, &req, &resp, &buf, err);
		free(token);
		token = NULL;
		if (rc == 0)
		{
			int parsed = s3_xml_parse_list(buf.data, buf.len, storage_s3_list_key, &listing, &more, &token);

			if (parsed < 0)
				rc = tb_error_set(err, TB_ERR_STORAGE, "S3 returned an unreadable listing of prefix '%s'", full_prefix);
			else if (listing.outside)
				rc = tb_error_set(err, TB_ERR_STORAGE,
								  "S3 listing of prefix '%s' in bucket '%s' returned a key outside that prefix: "
								  "refused (the endpoint %s does not behave as S3 does)",
								  full_prefix, st->bucket, st->endpoint);
			else if (parsed > 0) /* the callback stopped the listing */
				more = false;
			else if (more)
				rc = storage_s3_list_next_token(st, &tokens, token, full_prefix, page, err);
		}
		free(buf.data);
	}
	free(tokens.slots);
	free(token);
	free(full_prefix);
	return rc;
}

/*
 * An upload's parts so far (ListParts, paged): their bytes, and the time of the newest
 * one in info->mtime, so that an upload still being written is as young as its last
 * part, not as old as its start (a writer's file on disk ages the same way). Returns
 * 0, 1 when the upload is gone meanwhile (completed or aborted), -1 with err set.
 */
static int
storage_s3_upload_parts(storage_s3 *st, const char *key, const char *upload, storage_info *info, tb_error *err)
{
	char *marker = NULL;
	bool more = true;
	int rc = 0;

	for (int page = 1; rc == 0 && more; page++)
	{
		s3_sign_pair query[] = {{"uploadId", upload}, {"part-number-marker", marker}};
		s3_request req = {.op = "ListParts", .method = "GET", .key = key, .query = query, .nquery = marker ? 2 : 1};
		s3_response resp;
		s3_buffer buf;
		char *next = NULL;

		/* S3 allows 10,000 parts, 1,000 a page. */
		if (page > 10)
		{
			rc = tb_error_set(err, TB_ERR_STORAGE,
							  "S3 listing of the parts of the upload of '%s' did not end within 10 pages: refused "
							  "(the endpoint %s does not behave as S3 does)",
							  key, st->endpoint);
			break;
		}
		rc = storage_s3_request(st, &req, &resp, &buf, err);
		if (rc != 0 && (resp.status == 404 || strcmp(resp.error.code, "NoSuchUpload") == 0))
			rc = 1;
		else if (rc == 0 && s3_xml_parse_parts(buf.data, buf.len, info, &more, &next) != 0)
			rc = tb_error_set(err, TB_ERR_STORAGE, "S3 returned an unreadable list of the parts of the upload of '%s'",
							  key);
		else if (rc == 0 && more && marker != NULL && strtol(next, NULL, 10) <= strtol(marker, NULL, 10))
			rc = tb_error_set(err, TB_ERR_STORAGE,
							  "S3 listing of the parts of the upload of '%s' did not move on: refused (the endpoint %s "
							  "does not behave as S3 does)",
							  key, st->endpoint);
		free(buf.data);
		free(marker);
		marker = next;
	}
	free(marker);
	return rc;
}

/* Hands unfinished uploads to the caller relative to the storage prefix, as storage_s3_listing does keys. */
typedef struct storage_s3_uploads
{
	storage_s3 *st;
	tb_error *err;
	bool failed; /* listing an upload's parts failed: err says why */
	const char *full_prefix;
	size_t full_prefix_len;
	size_t prefix_len;
	storage_unfinished_cb cb;
	void *arg;
	bool outside;
} storage_s3_uploads;

static int
storage_s3_upload_key(const char *key, const char *upload, const storage_info *info, void *arg)
{
	storage_s3_uploads *uploads = arg;
	storage_info written = *info;

	if (strncmp(key, uploads->full_prefix, uploads->full_prefix_len) != 0)
	{
		uploads->outside = true;
		return 1;
	}
	switch (storage_s3_upload_parts(uploads->st, key + uploads->prefix_len, upload, &written, uploads->err))
	{
		case 0:
			break;
		case 1:
			return 0;
		default:
			uploads->failed = true;
			return 1;
	}
	return uploads->cb(key + uploads->prefix_len, upload, &written, uploads->arg);
}

/*
 * The multipart uploads begun and never completed or aborted under prefix
 * (ListMultipartUploads, paged by key and upload id markers): what a writer killed
 * mid-upload leaves, invisible to listings and billed until aborted.
 */
static int
storage_s3_list_unfinished(storage *base, const char *prefix, storage_unfinished_cb cb, void *arg, tb_error *err)
{
	storage_s3 *st = (storage_s3 *) base;
	storage_s3_uploads uploads = {.st = st, .err = err, .prefix_len = strlen(st->prefix), .cb = cb, .arg = arg};
	storage_s3_tokens markers = {0};
	char *full_prefix, *next_key = NULL, *next_upload = NULL;
	bool more = true;
	int rc = 0;

	if (asprintf(&full_prefix, "%s%s", st->prefix, prefix ? prefix : "") < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory listing the uploads of '%s'", prefix ? prefix : "");
	uploads.full_prefix = full_prefix;
	uploads.full_prefix_len = strlen(full_prefix);
	for (int page = 1; rc == 0 && more; page++)
	{
		s3_sign_pair query[] = {
			{"uploads", ""}, {"prefix", full_prefix}, {"key-marker", next_key}, {"upload-id-marker", next_upload}};
		s3_request req = {
			.op = "ListMultipartUploads",
			.method = "GET",
			.key = full_prefix,
			.bucket_level = true,
			.query = query,
			.nquery = next_key ? 4 : 2,
		};
		s3_response resp;
		s3_buffer buf;

		if (page > STORAGE_S3_MAX_LIST_PAGES)
		{
			rc = tb_error_set(err, TB_ERR_STORAGE,
							  "S3 listing of the uploads under '%s' in bucket '%s' did not end within %d pages: "
							  "refused (check the endpoint %s)",
							  full_prefix, st->bucket, STORAGE_S3_MAX_LIST_PAGES, st->endpoint);
			break;
		}
		rc = storage_s3_request(st, &req, &resp, &buf, err);
		free(next_key);
		free(next_upload);
		next_key = next_upload = NULL;
		if (rc == 0)
		{
			int parsed = s3_xml_parse_uploads(buf.data, buf.len, storage_s3_upload_key, &uploads, &more, &next_key,
											  &next_upload);
			char *marker = NULL;

			if (uploads.failed)
				rc = -1;
			else if (parsed < 0)
				rc = tb_error_set(err, TB_ERR_STORAGE, "S3 returned an unreadable listing of the uploads under '%s'",
								  full_prefix);
			else if (uploads.outside)
				rc = tb_error_set(err, TB_ERR_STORAGE,
								  "S3 listing of the uploads under '%s' in bucket '%s' returned a key outside that "
								  "prefix: refused (the endpoint %s does not behave as S3 does)",
								  full_prefix, st->bucket, st->endpoint);
			else if (parsed > 0)
				more = false;
			/* The two markers are one continuation token: given twice, the listing would go round for ever. */
			else if (more && asprintf(&marker, "%s\n%s", next_key, next_upload) < 0)
				rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory listing the uploads of '%s'", full_prefix);
			else if (more)
				rc = storage_s3_list_next_token(st, &markers, marker, full_prefix, page, err);
			free(marker);
		}
		free(buf.data);
	}
	free(markers.slots);
	free(next_key);
	free(next_upload);
	free(full_prefix);
	return rc;
}

/* AbortMultipartUpload of one listed upload; one already gone (NoSuchUpload) succeeds. */
static int
storage_s3_abort_unfinished(storage *base, const char *key, const char *upload, tb_error *err)
{
	const s3_sign_pair query[] = {{"uploadId", upload}};
	s3_request req = {.op = "AbortMultipartUpload", .method = "DELETE", .key = key, .query = query, .nquery = 1};
	s3_response resp;
	int rc;

	if (upload == NULL || upload[0] == '\0')
		return tb_error_set(err, TB_ERR_INVALID, "no upload id given for the unfinished upload of '%s'", key);
	rc = storage_s3_request((storage_s3 *) base, &req, &resp, NULL, err);
	return rc != 0 && (resp.status == 404 || strcmp(resp.error.code, "NoSuchUpload") == 0) ? 0 : rc;
}

const storage_driver storage_s3_driver = {
	.scheme = "s3",
	.open = storage_s3_open,
	.check_url = storage_s3_check_url,
	.close = storage_s3_close,
	.write_open = storage_s3_write_open,
	.write_append = storage_s3_write_append,
	.write_commit = storage_s3_write_commit,
	.write_abort = storage_s3_write_abort,
	.read_open = storage_s3_read_open,
	.read_next = storage_s3_read_next,
	.read_close = storage_s3_read_close,
	.head = storage_s3_head,
	.delete = storage_s3_delete,
	.list = storage_s3_list,
	.list_unfinished = storage_s3_list_unfinished,
	.abort_unfinished = storage_s3_abort_unfinished,
};
