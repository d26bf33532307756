/*
 * Reaching a tenant's MongoDB database: the locator is a mongodb:// URI naming the
 * database (mongodb://user@host:port/acme?authSource=admin); the password is the
 * catalog's sealed one or mongodb_password from the agent's configuration. Both go
 * into the driver's URI object, never into a string that is logged or passed on.
 */
#include "mongodb_agent.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int
mongo_source_open(const agent_job *job, mongo_source *src, tb_error *err)
{
	bson_error_t error;
	mongoc_uri_t *uri = mongoc_uri_new_with_error(job->locator, &error);
	const char *user = agent_config_get(job->config, "mongodb_user");
	const char *password = job->password ? job->password : agent_config_get(job->config, "mongodb_password");

	memset(src, 0, sizeof(*src));
	if (uri == NULL)
		return tb_error_set(err, TB_ERR_INVALID, "the locator of tenant \"%s\" is not a MongoDB URI: %s", job->tenant,
							error.message);
	if (mongoc_uri_get_database(uri) == NULL || *mongoc_uri_get_database(uri) == '\0')
	{
		mongoc_uri_destroy(uri);
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" names no database (mongodb://host:port/acme)", job->tenant);
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
