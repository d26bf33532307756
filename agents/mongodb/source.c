/*
 * Reaching a tenant's MongoDB database: the locator is a mongodb:// URI naming the
 * database (mongodb://user@host:port/acme?authSource=admin), never admin, local or
 * config, with only the URI options of an allow-list (none that reads a file); the
 * password is the catalog's sealed one or, for servers listed in
 * mongodb_fallback_credentials_hosts, mongodb_password from the agent's configuration.
 * Both go into the driver's URI object, never into a string that is logged or passed on.
 */
#include "mongodb_agent.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
mongo_error(tb_error *err, const bson_error_t *error, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return tb_error_set(err, error->code == MONGOC_ERROR_SERVER_SELECTION_FAILURE ? TB_ERR_IO : TB_ERR_INVALID,
						"%s: %s", what, error->message);
}

char *
mongo_contents_json(const bson_t *collections, tb_error *err)
{
	bson_t doc = BSON_INITIALIZER;
	char *json, *text = NULL;

	BSON_APPEND_DOCUMENT(&doc, "collections", collections);
	/* Relaxed: counts are plain JSON numbers. */
	json = bson_as_relaxed_extended_json(&doc, NULL);
	bson_destroy(&doc);
	if (json == NULL || (text = strdup(json)) == NULL)
		tb_error_set(err, json == NULL ? TB_ERR_INVALID : TB_ERR_NOMEM,
					 json == NULL ? "the collections' names cannot be written as JSON" : "out of memory");
	bson_free(json);
	return text;
}

const char *
mongo_field_utf8(const bson_t *doc, const char *key, const char *otherwise)
{
	bson_iter_t it;

	return bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it) ? bson_iter_utf8(&it, NULL) : otherwise;
}

static int
mongo_compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The hosts of the URI, for messages (never its credentials). */
static char *
uri_hosts(const mongoc_uri_t *uri)
{
	char buf[512] = "";
	size_t len = 0;

	for (const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri); h && len < sizeof(buf) - 1; h = h->next)
		len += (size_t) snprintf(buf + len, sizeof(buf) - len, "%s%s", len ? "," : "", h->host_and_port);
	return bson_strdup(buf);
}

/*
 * The URI options a locator may carry. None reads a file (tlsCAFile, tlsCertificateKeyFile
 * and the like would have the agent read any file it can): TLS material, like any other
 * option, comes only from the agent's side.
 */
static const char *const mongo_allowed_options[] = {"replicaSet",
													"authSource",
													"authMechanism",
													"tls",
													"ssl",
													"readPreference",
													"readPreferenceTags",
													"maxStalenessSeconds",
													"connectTimeoutMS",
													"serverSelectionTimeoutMS",
													"socketTimeoutMS",
													"heartbeatFrequencyMS",
													"localThresholdMS",
													"appname",
													"directConnection",
													"retryReads",
													"retryWrites",
													"w",
													"journal",
													"readConcernLevel",
													"compressors",
													"zlibCompressionLevel",
													"maxPoolSize",
													NULL};

/* A value of one of these options that is itself a way around the rule. */
static int
mongo_option_value_check(const agent_job *job, const char *name, const char *value, tb_error *err)
{
	/* Only the mechanisms that use the locator's own password, never the agent's identity (X.509, Kerberos). */
	if (strcasecmp(name, "authMechanism") == 0 && strcasecmp(value, "SCRAM-SHA-1") != 0 &&
		strcasecmp(value, "SCRAM-SHA-256") != 0)
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" asks for an authentication mechanism other than "
							"SCRAM-SHA-1 or SCRAM-SHA-256; only those are allowed",
							job->tenant);
	if ((strcasecmp(name, "tls") == 0 || strcasecmp(name, "ssl") == 0) && strcmp(value, "true") != 0 &&
		strcmp(value, "false") != 0)
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" gives %s a value other than true or false", job->tenant,
							name);
	return 0;
}

/* Every option of the locator's query must be one of mongo_allowed_options. */
static int
mongo_options_check(const agent_job *job, tb_error *err)
{
	const char *p = strchr(job->locator, '?');

	while (p && *++p)
	{
		size_t len = strcspn(p, "&;"), name_len = strcspn(p, "=&;");
		char name[64] = "", *value = NULL;
		bool allowed = false;
		int rc;

		if (name_len < sizeof(name))
			memcpy(name, p, name_len), name[name_len] = '\0';
		for (const char *const *o = mongo_allowed_options; *o && !allowed; o++)
			allowed = strcasecmp(name, *o) == 0;
		if (!allowed)
			return tb_error_set(
				err, TB_ERR_INVALID,
				"the locator of tenant \"%s\" has a URI option this agent does not take from a "
				"locator (allowed: replicaSet, authSource, authMechanism, tls, readPreference, "
				"the timeouts, appname and write and read concerns; TLS files come from the agent's side)",
				job->tenant);
		if (name_len < len && agent_uri_decode(p + name_len + 1, len - name_len - 1, &value, err) != 0)
			return tb_error_prefix(err, "the locator of tenant \"%s\"", job->tenant);
		rc = mongo_option_value_check(job, name, value ? value : "", err);
		free(value);
		if (rc != 0)
			return -1;
		p += len;
		if (*p == '\0')
			break;
	}
	return 0;
}

bool
mongo_is_reserved_database(const char *name)
{
	return strcasecmp(name, "admin") == 0 || strcasecmp(name, "local") == 0 || strcasecmp(name, "config") == 0;
}

/* The agent's own user and password go only where every host of the URI is in mongodb_fallback_credentials_hosts. */
static bool
mongo_fallback_allowed(const agent_job *job, const mongoc_uri_t *uri)
{
	const mongoc_host_list_t *h = mongoc_uri_get_hosts(uri);

	if (h == NULL)
		return false;
	for (; h; h = h->next)
		if (!agent_fallback_credentials_allowed(job, h->host, h->port))
			return false;
	return true;
}

int
mongo_source_open(const agent_job *job, mongo_source *src, tb_error *err)
{
	bson_error_t error;
	mongoc_uri_t *uri;
	const char *user = NULL, *password = job->password;

	memset(src, 0, sizeof(*src));
	if (mongo_options_check(job, err) != 0)
		return -1;
	uri = mongoc_uri_new_with_error(job->locator, &error);
	if (uri == NULL)
		return tb_error_set(err, TB_ERR_INVALID, "the locator of tenant \"%s\" is not a MongoDB URI: %s", job->tenant,
							error.message);
	if (mongoc_uri_get_database(uri) == NULL || *mongoc_uri_get_database(uri) == '\0')
	{
		mongoc_uri_destroy(uri);
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" names no database (mongodb://host:port/acme)", job->tenant);
	}
	if (mongo_is_reserved_database(mongoc_uri_get_database(uri)))
	{
		mongoc_uri_destroy(uri);
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" names one of the server's own databases (admin, local and "
							"config are no tenant's)",
							job->tenant);
	}
	if (mongo_fallback_allowed(job, uri))
	{
		user = agent_config_get(job->config, "mongodb_user");
		if (password == NULL)
			password = agent_config_get(job->config, "mongodb_password");
	}
	if ((mongoc_uri_get_username(uri) == NULL && user && !mongoc_uri_set_username(uri, user)) ||
		(password && !mongoc_uri_set_password(uri, password)))
	{
		mongoc_uri_destroy(uri);
		return tb_error_set(err, TB_ERR_INVALID, "the MongoDB user or password of tenant \"%s\" is not valid UTF-8",
							job->tenant);
	}
	if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 10000);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS))
		mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, 5000);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME))
		mongoc_uri_set_appname(uri, "tenant-backup-agent-mongodb");
	src->database = bson_strdup(mongoc_uri_get_database(uri));
	src->where = uri_hosts(uri);
	src->client = mongoc_client_new_from_uri_with_error(uri, &error);
	mongoc_uri_destroy(uri);
	if (src->client == NULL)
	{
		mongo_error(err, &error, "MongoDB at %s", src->where);
		mongo_source_close(src);
		return -1;
	}
	mongoc_client_set_error_api(src->client, MONGOC_ERROR_API_VERSION_2);
	return 0;
}

void
mongo_source_close(mongo_source *src)
{
	if (src->client)
		mongoc_client_destroy(src->client);
	bson_free(src->database);
	bson_free(src->where);
	memset(src, 0, sizeof(*src));
}

/* The hello reply's replica set: "<set name>:<hosts sorted>", or NULL for a standalone. */
static char *
mongo_replica_set(const bson_t *hello)
{
	bson_iter_t it, hosts;
	const char *set = mongo_field_utf8(hello, "setName", NULL);
	char *names[64], *out;
	size_t n = 0, len;

	if (set == NULL)
		return NULL;
	if (bson_iter_init_find(&it, hello, "hosts") && BSON_ITER_HOLDS_ARRAY(&it) && bson_iter_recurse(&it, &hosts))
		while (n < 64 && bson_iter_next(&hosts))
			if (BSON_ITER_HOLDS_UTF8(&hosts))
				names[n++] = (char *) bson_iter_utf8(&hosts, NULL);
	qsort(names, n, sizeof(names[0]), mongo_compare_names);
	len = strlen(set) + 2;
	for (size_t i = 0; i < n; i++)
		len += strlen(names[i]) + 1;
	out = bson_malloc(len);
	snprintf(out, len, "%s:", set);
	for (size_t i = 0; i < n; i++)
	{
		strcat(out, i ? "," : "");
		strcat(out, names[i]);
	}
	return out;
}

int
mongo_claim_identity(mongo_source *src, agent_job *job, tb_error *err)
{
	bson_t *cmd = BCON_NEW("hello", BCON_INT32(1));
	bson_t reply;
	bson_error_t error;
	char *server = NULL, *lower;
	int rc;

	if (!mongoc_client_command_simple(src->client, "admin", cmd, NULL, &reply, &error))
		mongo_error(err, &error, "asking MongoDB at %s which server it is (hello)", src->where);
	else if ((server = mongo_replica_set(&reply)) == NULL)
	{
		/* A standalone server names itself in serverStatus: its own host name, however it was reached. */
		bson_t *status_cmd = BCON_NEW("serverStatus", BCON_INT32(1));
		bson_t status;

		if (!mongoc_client_command_simple(src->client, "admin", status_cmd, NULL, &status, &error))
			mongo_error(err, &error,
						"asking the standalone MongoDB at %s which server it is (serverStatus; grant the user "
						"that action, or use a replica set)",
						src->where);
		else if (mongo_field_utf8(&status, "host", NULL) == NULL)
			tb_error_set(err, TB_ERR_INVALID, "MongoDB at %s tells no host in serverStatus", src->where);
		else
			server = bson_strdup_printf("standalone:%s", mongo_field_utf8(&status, "host", NULL));
		bson_destroy(&status);
		bson_destroy(status_cmd);
	}
	bson_destroy(&reply);
	bson_destroy(cmd);
	if (server == NULL)
		return tb_error_prefix(err, "tenant \"%s\"", job->tenant);
	/* Database names differ by more than case on one server: one identity for all their spellings. */
	lower = bson_strdup(src->database);
	for (char *c = lower; *c; c++)
		*c = (char) tolower((unsigned char) *c);
	rc = agent_job_identity(job, server, lower, err);
	if (rc == 0 && job->restore_target && !job->drill)
	{
		bson_free(lower);
		lower = bson_strdup(job->restore_target);
		for (char *c = lower; *c; c++)
			*c = (char) tolower((unsigned char) *c);
		rc = agent_job_target_identity(job, server, lower, NULL, err);
	}
	bson_free(lower);
	bson_free(server);
	return rc;
}
