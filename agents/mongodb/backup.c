/*
 * A MongoDB tenant's backup: its database as a mongodump archive (mongorestore
 * --archive reads the decrypted stream). Every collection's options and indexes, every
 * view as a view, then every collection's documents in natural order through a cursor,
 * streamed into the repository. On a replica set or sharded cluster (5.0 and later)
 * all reads share one snapshot session: the backup is one point in time. A standalone
 * server has no snapshots: each collection is read as it is while its cursor runs.
 * As they are written, each collection's documents are counted: the backup's contents.
 */
#include "mongodb_agent.h"

#include <stdlib.h>
#include <string.h>

#define TICK_EVERY_DOCS 256

typedef struct mongo_dump
{
	agent_job *job;
	mongo_source *src;
	repo_put *put;
	mongoc_database_t *db;
	mongoc_client_session_t *session; /* NULL: the server has no snapshots */
	bson_t **colls;                   /* listCollections entries, by name */
	size_t ncolls;
	uint64_t docs;
	bson_t counts; /* collection name -> documents written */
} mongo_dump;

/* Options for every read: the snapshot session when there is one. */
static int
read_opts(const mongo_dump *d, bson_t *opts, tb_error *err)
{
	bson_error_t error;

	bson_init(opts);
	if (d->session && !mongoc_client_session_append(d->session, opts, &error))
		return mongo_error(err, &error, "joining the snapshot session");
	return 0;
}

/* A replica set member or a mongos of 5.0 or later reads at one snapshot; a standalone cannot. */
static int
start_snapshot(mongo_dump *d, char *version, size_t size, tb_error *err)
{
	bson_t reply, *cmd = BCON_NEW("isMaster", BCON_INT32(1));
	bson_error_t error;
	bson_iter_t it;
	bool replicated = false;
	int32_t wire = 0;

	if (!mongoc_client_command_simple(d->src->client, "admin", cmd, NULL, &reply, &error))
	{
		bson_destroy(cmd);
		bson_destroy(&reply);
		return mongo_error(err, &error, "MongoDB at %s", d->src->where);
	}
	bson_destroy(cmd);
	replicated = bson_iter_init_find(&it, &reply, "setName") ||
				 (bson_iter_init_find(&it, &reply, "msg") && BSON_ITER_HOLDS_UTF8(&it) &&
				  strcmp(bson_iter_utf8(&it, NULL), "isdbgrid") == 0);
	if (bson_iter_init_find(&it, &reply, "maxWireVersion") && BSON_ITER_HOLDS_INT32(&it))
		wire = bson_iter_int32(&it);
	bson_destroy(&reply);

	cmd = BCON_NEW("buildInfo", BCON_INT32(1));
	snprintf(version, size, "unknown");
	if (mongoc_client_command_simple(d->src->client, "admin", cmd, NULL, &reply, &error) &&
		bson_iter_init_find(&it, &reply, "version") && BSON_ITER_HOLDS_UTF8(&it))
		snprintf(version, size, "%s", bson_iter_utf8(&it, NULL));
	bson_destroy(cmd);
	bson_destroy(&reply);

	if (replicated && wire >= 13)
	{
		mongoc_session_opt_t *opts = mongoc_session_opts_new();

		mongoc_session_opts_set_snapshot(opts, true);
		d->session = mongoc_client_start_session(d->src->client, opts, &error);
		mongoc_session_opts_destroy(opts);
		if (d->session == NULL)
			return mongo_error(err, &error, "starting a snapshot session on %s", d->src->where);
	}
	return 0;
}

static int
by_name(const void *a, const void *b)
{
	return strcmp(mongo_field_utf8(*(bson_t *const *) a, "name", ""),
				  mongo_field_utf8(*(bson_t *const *) b, "name", ""));
}

/*
 * The database's collections and views, system.* left out as mongodump does. The
 * catalog is read outside the snapshot (listCollections and listIndexes take no
 * snapshot read concern); the documents are read inside it.
 */
static int
list_collections(mongo_dump *d, tb_error *err)
{
	const bson_t *doc;
	bson_error_t error;
	mongoc_cursor_t *cursor = mongoc_database_find_collections_with_opts(d->db, NULL);
	size_t cap = 0;

	while (mongoc_cursor_next(cursor, &doc))
	{
		if (strncmp(mongo_field_utf8(doc, "name", "system."), "system.", 7) == 0)
			continue;
		if (d->ncolls == cap)
		{
			bson_t **grown = realloc(d->colls, (cap = cap ? cap * 2 : 16) * sizeof(*grown));

			if (grown == NULL)
			{
				mongoc_cursor_destroy(cursor);
				return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
			}
			d->colls = grown;
		}
		d->colls[d->ncolls++] = bson_copy(doc);
	}
	if (mongoc_cursor_error(cursor, &error))
	{
		mongoc_cursor_destroy(cursor);
		return mongo_error(err, &error, "listing the collections");
	}
	mongoc_cursor_destroy(cursor);
	/* An empty database has no array to sort (qsort of NULL is undefined, even for none). */
	if (d->ncolls > 1)
		qsort(d->colls, d->ncolls, sizeof(*d->colls), by_name);
	return 0;
}

/* Appends the document (or array) at path in doc to out under key; an empty document if absent. */
static void
append_sub(bson_t *out, const char *key, const bson_t *doc, const char *path)
{
	bson_iter_t it;
	const uint8_t *data;
	uint32_t len;
	bson_t sub;

	if (bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it) && BSON_ITER_HOLDS_DOCUMENT(&it))
	{
		bson_iter_document(&it, &len, &data);
		if (bson_init_static(&sub, data, len))
		{
			bson_append_document(out, key, -1, &sub);
			return;
		}
	}
	bson_init(&sub);
	bson_append_document(out, key, -1, &sub);
	bson_destroy(&sub);
}

/* The collection's metadata as mongodump writes it: options, indexes, uuid, name, type. */
static int
collection_metadata(mongo_dump *d, const bson_t *entry, bson_t *out, tb_error *err)
{
	const char *name = mongo_field_utf8(entry, "name", "");
	const char *type = mongo_field_utf8(entry, "type", "collection");
	bson_t meta = BSON_INITIALIZER, indexes;
	bson_iter_t it;
	bson_error_t error;
	char *json;
	int rc = 0;

	append_sub(&meta, "options", entry, "options");
	bson_append_array_begin(&meta, "indexes", -1, &indexes);
	if (strcmp(type, "collection") == 0)
	{
		mongoc_collection_t *coll = mongoc_database_get_collection(d->db, name);
		mongoc_cursor_t *cursor = mongoc_collection_find_indexes_with_opts(coll, NULL);
		const bson_t *index;
		uint32_t i = 0;

		while (mongoc_cursor_next(cursor, &index))
		{
			char key[16];
			const char *k;

			bson_uint32_to_string(i++, &k, key, sizeof(key));
			bson_append_document(&indexes, k, -1, index);
		}
		if (mongoc_cursor_error(cursor, &error))
			rc = mongo_error(err, &error, "listing the indexes of collection \"%s\"", name);
		mongoc_cursor_destroy(cursor);
		mongoc_collection_destroy(coll);
	}
	bson_append_array_end(&meta, &indexes);
	if (bson_iter_init(&it, entry) && bson_iter_find_descendant(&it, "info.uuid", &it) && BSON_ITER_HOLDS_BINARY(&it))
	{
		const uint8_t *uuid;
		uint32_t len;
		bson_subtype_t subtype;
		char hex[2 * 16 + 1];

		bson_iter_binary(&it, &subtype, &len, &uuid);
		for (uint32_t i = 0; i < len && i < 16; i++)
			snprintf(hex + 2 * i, 3, "%02x", uuid[i]);
		hex[2 * (len < 16 ? len : 16)] = '\0';
		BSON_APPEND_UTF8(&meta, "uuid", hex);
	}
	BSON_APPEND_UTF8(&meta, "collectionName", name);
	BSON_APPEND_UTF8(&meta, "type", type);
	json = bson_as_canonical_extended_json(&meta, NULL);
	bson_destroy(&meta);
	if (rc == 0 && json == NULL)
		rc = tb_error_set(err, TB_ERR_INVALID, "the metadata of collection \"%s\" cannot be written as JSON", name);
	if (rc == 0)
	{
		bson_init(out);
		BSON_APPEND_UTF8(out, "db", d->src->database);
		BSON_APPEND_UTF8(out, "collection", name);
		BSON_APPEND_UTF8(out, "metadata", json);
		BSON_APPEND_INT32(out, "size", 0);
	}
	bson_free(json);
	return rc;
}

static int
write_namespace_header(mongo_dump *d, const char *name, bool eof, uint64_t crc, tb_error *err)
{
	bson_t header = BSON_INITIALIZER;
	int rc;

	BSON_APPEND_UTF8(&header, "db", d->src->database);
	BSON_APPEND_UTF8(&header, "collection", name);
	BSON_APPEND_BOOL(&header, "EOF", eof);
	BSON_APPEND_INT64(&header, "CRC", (int64_t) crc);
	rc = mongo_archive_write_doc(d->put, &header, err);
	bson_destroy(&header);
	return rc;
}

/* One collection's documents: a segment (if it has any), then its EOF header with their CRC; counted in counts. */
static int
dump_documents(mongo_dump *d, const char *name, tb_error *err)
{
	mongoc_collection_t *coll = mongoc_database_get_collection(d->db, name);
	mongoc_cursor_t *cursor;
	const bson_t *doc;
	bson_error_t error;
	bson_t opts, filter = BSON_INITIALIZER;
	uint64_t crc = 0, n = 0;
	int rc = 0;

	if (read_opts(d, &opts, err) != 0)
	{
		mongoc_collection_destroy(coll);
		return -1;
	}
	cursor = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
	bson_destroy(&opts);
	while (rc == 0 && mongoc_cursor_next(cursor, &doc))
	{
		if (n == 0)
			rc = write_namespace_header(d, name, false, 0, err);
		if (rc == 0)
			rc = mongo_archive_write_doc(d->put, doc, err);
		crc = mongo_crc64(crc, bson_get_data(doc), doc->len);
		d->job->bytes_done += doc->len;
		if (rc == 0 && ++n % TICK_EVERY_DOCS == 0)
			rc = agent_job_tick(d->job, err);
	}
	if (rc == 0 && mongoc_cursor_error(cursor, &error))
		rc = mongo_error(err, &error, "reading collection \"%s\"", name);
	mongoc_cursor_destroy(cursor);
	mongoc_collection_destroy(coll);
	if (rc == 0 && n > 0)
		rc = mongo_archive_write_u32(d->put, MONGO_ARCHIVE_TERMINATOR, err);
	if (rc == 0)
		rc = write_namespace_header(d, name, true, crc, err);
	if (rc == 0)
		rc = mongo_archive_write_u32(d->put, MONGO_ARCHIVE_TERMINATOR, err);
	d->docs += n;
	if (rc == 0)
		BSON_APPEND_INT64(&d->counts, name, (int64_t) n);
	return rc;
}

static int
dump_database(mongo_dump *d, tb_error *err)
{
	char version[64];
	bson_t header = BSON_INITIALIZER;
	size_t views = 0;
	int rc;

	if (start_snapshot(d, version, sizeof(version), err) != 0 || list_collections(d, err) != 0)
		return -1;
	BSON_APPEND_INT32(&header, "concurrent_collections", 1);
	BSON_APPEND_UTF8(&header, "version", "0.1");
	BSON_APPEND_UTF8(&header, "server_version", version);
	BSON_APPEND_UTF8(&header, "tool_version", "tenant-backup-agent-mongodb 0.1.0");
	rc = mongo_archive_write_u32(d->put, MONGO_ARCHIVE_MAGIC, err);
	if (rc == 0)
		rc = mongo_archive_write_doc(d->put, &header, err);
	bson_destroy(&header);
	for (size_t i = 0; rc == 0 && i < d->ncolls; i++)
	{
		const char *type = mongo_field_utf8(d->colls[i], "type", "collection");
		bson_t meta;

		/* A time-series collection's documents live in its system.buckets collection: not yet handled. */
		if (strcmp(type, "collection") != 0 && strcmp(type, "view") != 0)
		{
			rc = tb_error_set(err, TB_ERR_INVALID, "\"%s\" is a %s collection, which this agent cannot back up yet",
							  mongo_field_utf8(d->colls[i], "name", ""), type);
			break;
		}

		if ((rc = collection_metadata(d, d->colls[i], &meta, err)) == 0)
		{
			rc = mongo_archive_write_doc(d->put, &meta, err);
			bson_destroy(&meta);
		}
	}
	if (rc == 0)
		rc = mongo_archive_write_u32(d->put, MONGO_ARCHIVE_TERMINATOR, err);
	for (size_t i = 0; rc == 0 && i < d->ncolls; i++)
	{
		/* A view is only its definition: no documents of its own. */
		if (strcmp(mongo_field_utf8(d->colls[i], "type", "collection"), "collection") != 0)
			views++;
		else
			rc = dump_documents(d, mongo_field_utf8(d->colls[i], "name", ""), err);
	}
	if (rc == 0 && (d->job->contents = mongo_contents_json(&d->counts, err)) == NULL)
		rc = -1;
	if (rc == 0)
		snprintf(d->job->detail, sizeof(d->job->detail), "%zu collections, %zu views, %llu documents%s",
				 d->ncolls - views, views, (unsigned long long) d->docs,
				 d->session ? ", one snapshot" : " (standalone: no snapshot)");
	return rc;
}

int
mongo_backup(agent_job *job, repo_put *put, tb_error *err)
{
	mongo_source src;
	mongo_dump d = {.job = job, .src = &src, .put = put};
	int rc;

	if (mongo_source_open(job, &src, err) != 0)
		return -1;
	if (mongo_claim_identity(&src, job, err) != 0)
	{
		mongo_source_close(&src);
		return -1;
	}
	bson_init(&d.counts);
	d.db = mongoc_client_get_database(src.client, src.database);
	rc = dump_database(&d, err);
	if (rc != 0 && job->stop == AGENT_GO)
		tb_error_prefix(err, "backup of database \"%s\" on %s for tenant \"%s\"", src.database, src.where, job->tenant);
	for (size_t i = 0; i < d.ncolls; i++)
		bson_destroy(d.colls[i]);
	free(d.colls);
	if (d.session)
		mongoc_client_session_destroy(d.session);
	bson_destroy(&d.counts);
	mongoc_database_destroy(d.db);
	mongo_source_close(&src);
	return rc;
}
