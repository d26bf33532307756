/*
 * Reaching a tenant's Redis keys: redis://[user@]host:port/db, with the source option
 * key_prefix for a tenant sharing a database; a dedicated tenant's locator names its
 * server, whose whole dataset is backed up as an RDB snapshot (option "format": "keys"
 * asks for the logical format instead). The password is the catalog's sealed one or
 * redis_password from the agent's configuration, the latter only for a server listed in
 * redis_fallback_credentials_hosts; it goes to the server in AUTH only.
 */
#include "redis_agent.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "crypto.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REDIS_TIMEOUT_SECONDS 30

int64_t
redis_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* key_prefix and format from the source's options (a JSON object). */
static int
source_options(const agent_job *job, redis_source *src, tb_error *err)
{
	json_error_t jerr;
	json_t *doc = json_loads(job->options ? job->options : "{}", 0, &jerr), *prefix, *format;
	int rc = 0;

	if (doc == NULL || !json_is_object(doc))
	{
		json_decref(doc);
		return tb_error_set(err, TB_ERR_INVALID, "the options of tenant \"%s\" are not a JSON object", job->tenant);
	}
	prefix = json_object_get(doc, "key_prefix");
	format = json_object_get(doc, "format");
	if (prefix && (!json_is_string(prefix) || json_string_length(prefix) == 0))
		rc = tb_error_set(err, TB_ERR_INVALID, "key_prefix of tenant \"%s\" must be a non-empty string", job->tenant);
	else if (format && (!json_is_string(format) || (strcmp(json_string_value(format), "rdb") != 0 &&
													strcmp(json_string_value(format), "keys") != 0)))
		rc = tb_error_set(err, TB_ERR_INVALID, "format of tenant \"%s\" must be \"rdb\" or \"keys\"", job->tenant);
	else
	{
		src->prefix = strndup(prefix ? json_string_value(prefix) : "", prefix ? json_string_length(prefix) : 0);
		src->rdb = format ? strcmp(json_string_value(format), "rdb") == 0 : job->dedicated;
		if (src->rdb && prefix)
			rc =
				tb_error_set(err, TB_ERR_INVALID,
							 "tenant \"%s\" has a key_prefix, but an RDB snapshot holds the whole server", job->tenant);
	}
	json_decref(doc);
	return rc;
}

int
redis_source_from_job(const agent_job *job, redis_source *src, tb_error *err)
{
	agent_uri uri;
	const char *password, *user;
	bool fallback;
	char *end;

	memset(src, 0, sizeof(*src));
	if (agent_uri_parse(job->locator, &uri, err) != 0)
		return tb_error_prefix(err, "the locator of tenant \"%s\"", job->tenant);
	if (strcmp(uri.scheme, "redis") != 0)
	{
		agent_uri_free(&uri);
		return tb_error_set(err, TB_ERR_INVALID, "the locator of tenant \"%s\" is not a redis:// URI", job->tenant);
	}
	src->db = uri.path && *uri.path ? (int) strtol(uri.path, &end, 10) : 0;
	if (uri.path && *uri.path && (*end != '\0' || src->db < 0 || src->db > 100000))
	{
		agent_uri_free(&uri);
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" names database \"%s\", not a number (redis://host:port/3)",
							job->tenant, uri.path);
	}
	src->host = strdup(uri.host && *uri.host ? uri.host : "127.0.0.1");
	src->port = uri.port ? uri.port : 6379;
	/* The agent's own user and password go only to the servers its configuration lists. */
	fallback = agent_fallback_credentials_allowed(job, src->host, src->port);
	user = uri.user && *uri.user ? uri.user : fallback ? agent_config_get(job->config, "redis_user") : NULL;
	src->user = user ? strdup(user) : NULL;
	password = job->password ? job->password : fallback ? agent_config_get(job->config, "redis_password") : NULL;
	src->password = password ? strdup(password) : NULL;
	agent_uri_free(&uri);
	if (source_options(job, src, err) != 0)
	{
		redis_source_free(src);
		return -1;
	}
	return 0;
}

void
redis_source_free(redis_source *src)
{
	if (src->password)
	{
		explicit_bzero(src->password, strlen(src->password));
		free(src->password);
	}
	free(src->host);
	free(src->user);
	free(src->prefix);
	memset(src, 0, sizeof(*src));
}

int
redis_reply_error(redisContext *c, const redisReply *reply, const char *what, tb_error *err)
{
	if (reply == NULL)
		return tb_error_set(err, TB_ERR_IO, "%s: %s", what, c->errstr[0] ? c->errstr : "connection lost");
	if (reply->type == REDIS_REPLY_ERROR)
		return tb_error_set(err, TB_ERR_INVALID, "%s: %.*s", what, (int) reply->len, reply->str);
	return 0;
}

/* One command whose reply only needs to be no error. */
static int
redis_simple(redisContext *c, const char *what, int argc, const char **argv, const size_t *lens, tb_error *err)
{
	redisReply *reply = redisCommandArgv(c, argc, argv, lens);
	int rc = redis_reply_error(c, reply, what, err);

	freeReplyObject(reply);
	return rc;
}

redisContext *
redis_connect(const redis_source *src, int db, tb_error *err)
{
	struct timeval connect_timeout = {5, 0}, io_timeout = {REDIS_TIMEOUT_SECONDS, 0};
	redisContext *c = redisConnectWithTimeout(src->host, src->port, connect_timeout);
	char dbtext[16];

	if (c == NULL || c->err)
	{
		tb_error_set(err, TB_ERR_IO, "cannot connect to Redis at %s:%d: %s", src->host, src->port,
					 c ? c->errstr : "out of memory");
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, io_timeout);
	if (src->password)
	{
		const char *argv[3] = {"AUTH", src->user ? src->user : src->password, src->password};
		size_t lens[3] = {4, strlen(argv[1]), strlen(src->password)};

		/* The server's answer never echoes the password; ours must not either. */
		if (redis_simple(c, "AUTH", src->user ? 3 : 2, argv, lens, err) != 0)
			goto fail;
	}
	else if (src->user)
	{
		tb_error_set(err, TB_ERR_INVALID, "Redis user \"%s\" has no password: set redis_password or seal one",
					 src->user);
		goto fail;
	}
	snprintf(dbtext, sizeof(dbtext), "%d", db);
	if (db != 0 &&
		redis_simple(c, "SELECT", 2, (const char *[]){"SELECT", dbtext}, (size_t[]){6, strlen(dbtext)}, err) != 0)
		goto fail;
	return c;
fail:
	tb_error_prefix(err, "Redis at %s:%d", src->host, src->port);
	redisFree(c);
	return NULL;
}

int
redis_claim_identity(redisContext *c, const redis_source *src, agent_job *job, char run_id[REDIS_RUN_ID_LEN + 1],
					 tb_error *err)
{
	redisReply *reply = redisCommand(c, "INFO server");
	const char *at;
	char db[16];
	size_t len;

	if (redis_reply_error(c, reply, "INFO server", err) != 0)
	{
		freeReplyObject(reply);
		return tb_error_prefix(err, "Redis at %s:%d", src->host, src->port);
	}
	at = reply->type == REDIS_REPLY_STRING ? strstr(reply->str, "\nrun_id:") : NULL;
	len = at ? strspn(at + 8, "0123456789abcdef") : 0;
	if (len != REDIS_RUN_ID_LEN)
	{
		freeReplyObject(reply);
		return tb_error_set(err, TB_ERR_INVALID, "Redis at %s:%d tells no run_id in INFO server", src->host, src->port);
	}
	memcpy(run_id, at + 8, REDIS_RUN_ID_LEN);
	run_id[REDIS_RUN_ID_LEN] = '\0';
	snprintf(db, sizeof(db), "%d", src->db);
	freeReplyObject(reply);
	return agent_job_identity(job, run_id, db, err);
}

char *
redis_prefix_pattern(const char *prefix, size_t len)
{
	char *pattern = malloc(len * 2 + 2), *p = pattern;

	if (pattern == NULL)
		return NULL;
	for (size_t i = 0; i < len; i++)
	{
		if (strchr("*?[]\\", prefix[i]) && prefix[i] != '\0')
			*p++ = '\\';
		*p++ = prefix[i];
	}
	*p++ = '*';
	*p = '\0';
	return pattern;
}

void
redis_staging_mark(const master_key *master, int64_t job_id, char *out, size_t size)
{
	static const char domain[] = "tenant-backup redis staging of job ";
	char message[sizeof(domain) + 24];
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	char token[2 * EVP_MAX_MD_SIZE + 1];
	int message_len = snprintf(message, sizeof(message), "%s%lld", domain, (long long) job_id);

	HMAC(EVP_sha256(), master->key, sizeof(master->key), (const unsigned char *) message, (size_t) message_len, mac,
		 &mac_len);
	crypto_hex_encode(mac, REDIS_STAGING_TOKEN_LEN / 2, token);
	snprintf(out, size, "%s%lld:%.*s:", REDIS_STAGING_MARK, (long long) job_id, REDIS_STAGING_TOKEN_LEN, token);
	crypto_wipe(mac, sizeof(mac));
}

bool
redis_is_staging_key(const master_key *master, const char *key, size_t len, size_t prefix_len)
{
	size_t mark_len = strlen(REDIS_STAGING_MARK), digits = 0;
	const char *p = key + prefix_len;
	char expected[96];
	long long job_id = 0;

	if (len < prefix_len + mark_len || memcmp(p, REDIS_STAGING_MARK, mark_len) != 0)
		return false;
	p += mark_len;
	while (p + digits < key + len && digits < 18 && p[digits] >= '0' && p[digits] <= '9')
		job_id = job_id * 10 + (p[digits++] - '0');
	if (digits == 0 || p + digits >= key + len || p[digits] != ':')
		return false;
	redis_staging_mark(master, job_id, expected, sizeof(expected));
	/* The whole mark, token included, as this job's would be. */
	return len - prefix_len >= strlen(expected) && memcmp(key + prefix_len, expected, strlen(expected)) == 0;
}

int
redis_scan(redisContext *c, agent_job *job, const char *prefix, size_t prefix_len, redis_scan_fn fn, void *arg,
		   tb_error *err)
{
	char *pattern = redis_prefix_pattern(prefix, prefix_len);
	char cursor[32] = "0";
	int rc = -1;

	if (pattern == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	do
	{
		const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
		size_t lens[6] = {4, strlen(cursor), 5, strlen(pattern), 5, 4};
		redisReply *reply = redisCommandArgv(c, 6, argv, lens);

		if (redis_reply_error(c, reply, "SCAN", err) != 0)
		{
			freeReplyObject(reply);
			goto done;
		}
		if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 || reply->element[0]->len >= sizeof(cursor))
		{
			freeReplyObject(reply);
			tb_error_set(err, TB_ERR_INVALID, "SCAN answered something else than a cursor and keys");
			goto done;
		}
		memcpy(cursor, reply->element[0]->str, reply->element[0]->len);
		cursor[reply->element[0]->len] = '\0';
		rc = reply->element[1]->elements ? fn(c, reply->element[1]->element, reply->element[1]->elements, arg, err) : 0;
		freeReplyObject(reply);
		if (rc == 0 && job)
			rc = agent_job_tick(job, err);
	} while (rc == 0 && strcmp(cursor, "0") != 0);
done:
	free(pattern);
	return rc;
}
