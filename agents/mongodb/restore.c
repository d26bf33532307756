/*
 * A MongoDB tenant's restore, and its restore drill. Every collection of the archive is
 * first loaded into a staging collection beside the live ones, tb_restore_<job>.<name>,
 * created with the backed-up options, filled in ordered bulk batches (documents byte for
 * byte, document validation bypassed as mongorestore does), its CRC checked against the
 * archive's, and given its indexes. Only once the whole backup authenticated and loaded
 * does a restore change live: each staging collection is renamed over its live one
 * (renameCollection with dropTarget, atomic per collection), then the views are created
 * again. Collections of the live database that the backup does not hold are left alone.
 * With a target, the backup goes into that database, which must have no collections yet.
 * A drill loads the same way, counts the documents of each staging collection and never
 * swaps. Whatever ends the job, the staging collections not swapped in are dropped, and
 * nothing else.
 */
#include "mongodb_agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"

#define LOAD_BATCH_DOCS 1000
#define LOAD_BATCH_BYTES (8 * 1024 * 1024)
#define MONGO_NS_MAX 255

/* One collection or view of the backup. */
typedef struct mongo_ns
{
	char *name;
	bool view;
	bson_t *options;
	bson_t *indexes; /* an array of index specs */
	char *staging;
	mongoc_collection_t *coll; /* the staging collection, once created */
	mongoc_bulk_operation_t *bulk;
	size_t pending, pending_bytes;
	uint64_t crc, docs;
	bool eof;
	bool swapped; /* renamed over its live collection: no longer staging */
} mongo_ns;

typedef struct mongo_load
{
	agent_job *job;
	mongo_source *src;
	const char *dest;
	mongoc_database_t *db;
	repo_reader *reader;
	mongo_archive_reader *ar;
	char *archive_db;
	mongo_ns *ns;
	size_t nns;
	uint64_t docs;
} mongo_load;

/* A copy of doc's document or array field key; an empty document if there is none. */
static bson_t *
sub_copy(const bson_t *doc, const char *key)
{
	bson_iter_t it;
	const uint8_t *data;
	uint32_t len;

	if (!bson_iter_init_find(&it, doc, key))
		return bson_new();
	if (BSON_ITER_HOLDS_DOCUMENT(&it))
		bson_iter_document(&it, &len, &data);
	else if (BSON_ITER_HOLDS_ARRAY(&it))
		bson_iter_array(&it, &len, &data);
	else
		return bson_new();
	return bson_new_from_data(data, len);
}

/* The metadata of one collection (a collection-metadata document of the archive). */
static int
add_namespace(mongo_load *l, void *unused, const bson_t *doc, tb_error *err)
{
	bson_error_t error;
	const char *db, *coll, *json;
	bson_t *meta;
	mongo_ns *ns, *grown;

	(void) unused;

	db = mongo_field_utf8(doc, "db", NULL);
	coll = mongo_field_utf8(doc, "collection", NULL);
	json = mongo_field_utf8(doc, "metadata", NULL);
	if (db == NULL || coll == NULL || json == NULL)
		return tb_error_set(err, TB_ERR_CORRUPT,
							"the archive holds collection metadata without db, collection or metadata");
	if (l->archive_db == NULL)
		l->archive_db = bson_strdup(db);
	else if (strcmp(l->archive_db, db) != 0)
		return tb_error_set(err, TB_ERR_CORRUPT, "the archive holds databases \"%s\" and \"%s\"; a tenant's has one",
							l->archive_db, db);
	if ((meta = bson_new_from_json((const uint8_t *) json, -1, &error)) == NULL)
		return tb_error_set(err, TB_ERR_CORRUPT, "the metadata of collection \"%s\" is not extended JSON: %s", coll,
							error.message);
	if ((grown = realloc(l->ns, (l->nns + 1) * sizeof(*grown))) == NULL)
	{
		bson_destroy(meta);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	}
	l->ns = grown;
	ns = &l->ns[l->nns++];
	memset(ns, 0, sizeof(*ns));
	ns->name = bson_strdup(coll);
	ns->view = strcmp(mongo_field_utf8(meta, "type", "collection"), "view") == 0;
	ns->options = sub_copy(meta, "options");
	ns->indexes = sub_copy(meta, "indexes");
	bson_destroy(meta);
	return 0;
}

static mongo_ns *
find_namespace(mongo_load *l, const char *name)
{
	for (size_t i = 0; i < l->nns; i++)
		if (strcmp(l->ns[i].name, name) == 0)
			return &l->ns[i];
	return NULL;
}

typedef int (*mongo_doc_fn)(mongo_load *l, void *arg, const bson_t *doc, tb_error *err);

/* Each document up to the next terminator to fn; the archive ending first is damage. */
static int
each_document(mongo_load *l, const char *inside, mongo_doc_fn fn, void *arg, tb_error *err)
{
	mongo_item item;
	bson_t doc;

	for (;;)
	{
		if (mongo_archive_next(l->ar, &item, &doc, err) != 0)
			return -1;
		if (item == MONGO_ITEM_TERMINATOR)
			return 0;
		if (item == MONGO_ITEM_END)
			return tb_error_set(err, TB_ERR_CORRUPT, "the archive ends inside %s", inside);
		if (fn(l, arg, &doc, err) != 0)
			return -1;
	}
}

/* The header and every collection's metadata, up to the terminator. */
static int
read_prelude(mongo_load *l, tb_error *err)
{
	mongo_item item;
	bson_t doc;

	if (mongo_archive_read_magic(l->ar, err) != 0 || mongo_archive_next(l->ar, &item, &doc, err) != 0)
		return -1;
	if (item != MONGO_ITEM_DOC || strcmp(mongo_field_utf8(&doc, "version", ""), "0.1") != 0)
		return tb_error_set(err, TB_ERR_CORRUPT, "the archive's header is missing or not of format version 0.1");
	return each_document(l, "its collection metadata", add_namespace, NULL, err);
}

/* create with the options as they were listed, in their order (a view: viewOn, pipeline). */
static int
create_with_options(mongo_load *l, const char *name, const bson_t *options, bson_error_t *error)
{
	bson_t cmd = BSON_INITIALIZER, reply;
	bool ok;

	BSON_APPEND_UTF8(&cmd, "create", name);
	bson_concat(&cmd, options);
	ok = mongoc_database_write_command_with_opts(l->db, &cmd, NULL, &reply, error);
	bson_destroy(&reply);
	bson_destroy(&cmd);
	return ok ? 0 : -1;
}

/* Staging collections with the backed-up options, before any document arrives. */
static int
create_staging(mongo_load *l, tb_error *err)
{
	bson_error_t error;

	for (size_t i = 0; i < l->nns; i++)
	{
		mongo_ns *ns = &l->ns[i];

		if (ns->view)
			continue;
		ns->staging = bson_strdup_printf("tb_restore_%lld.%s", (long long) l->job->id, ns->name);
		if (strlen(l->dest) + 1 + strlen(ns->staging) > MONGO_NS_MAX)
			return tb_error_set(err, TB_ERR_INVALID, "collection \"%s\" has too long a name to be staged in \"%s\"",
								ns->name, l->dest);
		if (create_with_options(l, ns->staging, ns->options, &error) != 0)
			return mongo_error(err, &error, "creating collection \"%s\" with the options of \"%s\"", ns->staging,
							   ns->name);
		ns->coll = mongoc_database_get_collection(l->db, ns->staging);
	}
	return 0;
}

static int
flush_batch(mongo_ns *ns, tb_error *err)
{
	bson_error_t error;
	bson_t reply;
	uint32_t ok;

	if (ns->bulk == NULL)
		return 0;
	ok = ns->pending ? mongoc_bulk_operation_execute(ns->bulk, &reply, &error) : 1;
	if (ns->pending)
		bson_destroy(&reply);
	mongoc_bulk_operation_destroy(ns->bulk);
	ns->bulk = NULL;
	ns->pending = ns->pending_bytes = 0;
	return ok ? 0 : mongo_error(err, &error, "inserting into collection \"%s\"", ns->staging);
}

static int
load_document(mongo_load *l, void *arg, const bson_t *doc, tb_error *err)
{
	mongo_ns *ns = arg;
	bson_error_t error;
	bson_t no_validation = BSON_INITIALIZER;
	bool added;

	if (ns->bulk == NULL)
	{
		bson_t opts = BSON_INITIALIZER;

		BSON_APPEND_BOOL(&opts, "ordered", true);
		ns->bulk = mongoc_collection_create_bulk_operation_with_opts(ns->coll, &opts);
		bson_destroy(&opts);
		mongoc_bulk_operation_set_bypass_document_validation(ns->bulk, true);
	}
	/* The archive reader checked the structure; the driver's checks (empty keys, UTF-8) would refuse what a server may
	 * hold. */
	BSON_APPEND_BOOL(&no_validation, "validate", false);
	added = mongoc_bulk_operation_insert_with_opts(ns->bulk, doc, &no_validation, &error);
	bson_destroy(&no_validation);
	if (!added)
		return mongo_error(err, &error, "a document of collection \"%s\"", ns->name);
	ns->crc = mongo_crc64(ns->crc, bson_get_data(doc), doc->len);
	ns->docs++;
	l->docs++;
	l->job->bytes_done += doc->len;
	ns->pending_bytes += doc->len;
	if (++ns->pending >= LOAD_BATCH_DOCS || ns->pending_bytes >= LOAD_BATCH_BYTES)
		return flush_batch(ns, err) != 0 || agent_job_tick(l->job, err) != 0 ? -1 : 0;
	return 0;
}

/* A namespace header: the segment's documents, or (EOF) the CRC of them all. */
static int
load_segment(mongo_load *l, const bson_t *header, tb_error *err)
{
	bson_iter_t it;
	const char *name;
	bool eof;
	mongo_ns *ns;
	mongo_item item;
	bson_t doc;

	name = mongo_field_utf8(header, "collection", "");
	eof = bson_iter_init_find(&it, header, "EOF") && BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it);
	if ((ns = find_namespace(l, name)) == NULL || ns->view || ns->eof)
		return tb_error_set(err, TB_ERR_CORRUPT, "the archive holds data of \"%s\", which %s", name,
							ns == NULL ? "its metadata does not name"
							: ns->view ? "is a view"
									   : "had ended");
	if (eof)
	{
		int64_t crc = bson_iter_init_find(&it, header, "CRC") && BSON_ITER_HOLDS_INT64(&it) ? bson_iter_int64(&it) : 0;

		if ((uint64_t) crc != ns->crc)
			return tb_error_set(err, TB_ERR_CORRUPT,
								"the documents of collection \"%s\" do not match the archive's CRC", name);
		ns->eof = true;
		if (flush_batch(ns, err) != 0 || mongo_archive_next(l->ar, &item, &doc, err) != 0)
			return -1;
		return item == MONGO_ITEM_TERMINATOR
				   ? 0
				   : tb_error_set(err, TB_ERR_CORRUPT, "the end of collection \"%s\" is not followed by a terminator",
								  name);
	}
	return each_document(l, "a collection's documents", load_document, ns, err);
}

/* Every index but _id's (which every collection has), on the staging collection. */
static int
create_indexes(mongo_load *l, mongo_ns *ns, tb_error *err)
{
	bson_t cmd = BSON_INITIALIZER, specs, reply;
	bson_iter_t it;
	bson_error_t error;
	uint32_t n = 0;
	bool ok = true;

	BSON_APPEND_UTF8(&cmd, "createIndexes", ns->staging);
	bson_append_array_begin(&cmd, "indexes", -1, &specs);
	if (bson_iter_init(&it, ns->indexes))
		while (bson_iter_next(&it))
		{
			bson_t spec, clean = BSON_INITIALIZER;
			const uint8_t *data;
			uint32_t len;
			char key[16];
			const char *k;

			if (!BSON_ITER_HOLDS_DOCUMENT(&it))
				continue;
			bson_iter_document(&it, &len, &data);
			if (!bson_init_static(&spec, data, len) || strcmp(mongo_field_utf8(&spec, "name", ""), "_id_") == 0)
				continue;
			/* "ns" belongs to the collection it was read from. */
			bson_copy_to_excluding_noinit(&spec, &clean, "ns", NULL);
			bson_uint32_to_string(n++, &k, key, sizeof(key));
			bson_append_document(&specs, k, -1, &clean);
			bson_destroy(&clean);
		}
	bson_append_array_end(&cmd, &specs);
	if (n > 0)
	{
		ok = mongoc_database_write_command_with_opts(l->db, &cmd, NULL, &reply, &error);
		bson_destroy(&reply);
	}
	bson_destroy(&cmd);
	return ok ? 0 : mongo_error(err, &error, "creating the indexes of collection \"%s\"", ns->name);
}

/* Reads every segment to the authenticated end, then checks that every collection ended. */
static int
load_archive(mongo_load *l, tb_error *err)
{
	mongo_item item;
	bson_t doc;

	if (read_prelude(l, err) != 0 || create_staging(l, err) != 0)
		return -1;
	for (;;)
	{
		if (mongo_archive_next(l->ar, &item, &doc, err) != 0)
			return -1;
		if (item == MONGO_ITEM_END)
			break;
		if (item != MONGO_ITEM_DOC)
			return tb_error_set(err, TB_ERR_CORRUPT, "the archive has a terminator where a namespace header belongs");
		if (load_segment(l, &doc, err) != 0)
			return -1;
	}
	for (size_t i = 0; i < l->nns; i++)
		if (!l->ns[i].view && !l->ns[i].eof)
			return tb_error_set(err, TB_ERR_CORRUPT, "the archive ends before collection \"%s\" does", l->ns[i].name);
	for (size_t i = 0; i < l->nns; i++)
		if (!l->ns[i].view && create_indexes(l, &l->ns[i], err) != 0)
			return -1;
	return 0;
}

/* Live changes here: each staged collection over its live one, then the views. */
static int
swap_in(mongo_load *l, tb_error *err)
{
	bson_error_t error;

	for (size_t i = 0; i < l->nns; i++)
	{
		mongo_ns *ns = &l->ns[i];

		if (ns->view)
			continue;
		if (!mongoc_collection_rename_with_opts(ns->coll, l->dest, ns->name, true, NULL, &error))
			return mongo_error(err, &error, "renaming \"%s\" over collection \"%s\"", ns->staging, ns->name);
		/* The handle now names the live collection (the driver renames it too): never drop it. */
		ns->swapped = true;
	}
	for (size_t i = 0; i < l->nns; i++)
	{
		mongo_ns *ns = &l->ns[i];
		mongoc_collection_t *old;

		if (!ns->view)
			continue;
		old = mongoc_database_get_collection(l->db, ns->name);
		if (!mongoc_collection_drop_with_opts(old, NULL, &error) && error.code != 26)
		{
			mongoc_collection_destroy(old);
			return mongo_error(err, &error, "dropping the live view \"%s\"", ns->name);
		}
		mongoc_collection_destroy(old);
		if (create_with_options(l, ns->name, ns->options, &error) != 0)
			return mongo_error(err, &error, "creating view \"%s\"", ns->name);
	}
	return 0;
}

/*
 * What this job staged and did not swap in goes; nothing else. Every drop is tried; a
 * failure is logged, and the first one is also err.
 */
static int
drop_staging(mongo_load *l, tb_error *err)
{
	bson_error_t error;
	int rc = 0;

	for (size_t i = 0; i < l->nns; i++)
	{
		mongo_ns *ns = &l->ns[i];

		if (ns->coll == NULL || ns->swapped || mongoc_collection_drop_with_opts(ns->coll, NULL, &error) ||
			error.code == 26)
			continue;
		agent_log("could not drop staging collection \"%s\" of database \"%s\": %s", ns->staging, l->dest,
				  error.message);
		if (rc == 0)
			rc = mongo_error(err, &error, "dropping staging collection \"%s\"", ns->staging);
	}
	return rc;
}

static int
dest_is_empty(mongo_load *l, tb_error *err)
{
	bson_error_t error;
	char **names = mongoc_database_get_collection_names_with_opts(l->db, NULL, &error);
	bool empty;

	if (names == NULL)
		return mongo_error(err, &error, "listing the collections of database \"%s\"", l->dest);
	empty = names[0] == NULL;
	bson_strfreev(names);
	return empty ? 0
				 : tb_error_set(err, TB_ERR_EXISTS,
								"target database \"%s\" already has collections; restore into an "
								"empty one",
								l->dest);
}

/* The backup, authenticated to its end, in staging collections of l->dest (restore and drill alike). */
static int
load_staging(mongo_load *l, tb_error *err)
{
	agent_job *job = l->job;
	/* The SHA-256 of the object as stored: a drill reports it, a restore compares it with the catalog's. */
	stream_reader_options options = {.readahead = true, .hash_stored = true};
	stream_stats stats;

	if (job->object_key == NULL)
		return tb_error_set(err, TB_ERR_INVALID, "the %s job names no backup object", job->kind);
	if ((l->reader = repo_reader_open(job->storage, job->master, job->object_key, &options, err)) == NULL ||
		agent_job_accept_header(job, repo_reader_header(l->reader), err) != 0 ||
		(l->ar = mongo_archive_reader_open(l->reader, err)) == NULL || load_archive(l, err) != 0)
		return -1;
	repo_reader_stats(l->reader, &stats);
	return job->drill ? 0 : agent_job_check_stored(job, &stats, err);
}

/* A drill's findings: the documents each staging collection holds, and the SHA-256 of the object as read. */
static int
count_staging(mongo_load *l, tb_error *err)
{
	bson_t collections = BSON_INITIALIZER, filter = BSON_INITIALIZER;
	bson_error_t error;
	stream_stats stats;
	size_t n = 0;
	uint64_t docs = 0;
	int rc = 0;

	for (size_t i = 0; rc == 0 && i < l->nns; i++)
	{
		mongo_ns *ns = &l->ns[i];
		int64_t count;

		if (ns->view)
			continue;
		if ((count = mongoc_collection_count_documents(ns->coll, &filter, NULL, NULL, NULL, &error)) < 0)
			rc = mongo_error(err, &error, "counting the documents of staging collection \"%s\"", ns->staging);
		else
		{
			BSON_APPEND_INT64(&collections, ns->name, count);
			docs += (uint64_t) count;
			n++;
		}
	}
	if (rc == 0 && (l->job->contents = mongo_contents_json(&collections, err)) == NULL)
		rc = -1;
	bson_destroy(&collections);
	bson_destroy(&filter);
	if (rc != 0)
		return -1;
	repo_reader_stats(l->reader, &stats);
	if (!stats.stored_sha256_known)
		return tb_error_set(err, TB_ERR_INVALID, "the SHA-256 of backup %s as stored was not computed",
							l->job->object_key);
	crypto_hex_encode(stats.stored_sha256, sizeof(stats.stored_sha256), l->job->object_sha256);
	snprintf(l->job->detail, sizeof(l->job->detail), "drill: %zu collections, %llu documents staged in \"%s\"", n,
			 (unsigned long long) docs, l->dest);
	return 0;
}

int
mongo_restore(agent_job *job, tb_error *err)
{
	mongo_source src;
	mongo_load l = {.job = job, .src = &src};
	tb_error drop_err;
	int rc = -1;

	if (mongo_source_open(job, &src, err) != 0)
		return -1;
	/* A drill has no target: its staging is beside the live collections, as a restore's in place. */
	l.dest = job->restore_target && !job->drill ? job->restore_target : src.database;
	if (mongo_is_reserved_database(l.dest))
	{
		mongo_source_close(&src);
		return tb_error_set(err, TB_ERR_INVALID,
							"the restore target of tenant \"%s\" is one of the server's own databases (admin, local, "
							"config); give a database of the tenant",
							job->tenant);
	}
	if (mongo_claim_identity(&src, job, err) != 0)
	{
		mongo_source_close(&src);
		return -1;
	}
	l.db = mongoc_client_get_database(src.client, l.dest);
	if ((!job->restore_target || job->drill || dest_is_empty(&l, err) == 0) && load_staging(&l, err) == 0)
	{
		if (job->drill)
			rc = count_staging(&l, err);
		else if (agent_job_tick(job, err) == 0)
			rc = swap_in(&l, err);
	}
	/* A drill that cannot clean up failed: it must leave nothing behind. */
	if (drop_staging(&l, &drop_err) != 0 && rc == 0 && job->drill)
	{
		*err = drop_err;
		rc = -1;
	}
	if (rc == 0 && !job->drill)
		snprintf(job->detail, sizeof(job->detail), "%zu collections and views, %llu documents into \"%s\"", l.nns,
				 (unsigned long long) l.docs, l.dest);
	else if (rc != 0 && job->stop == AGENT_GO)
		tb_error_prefix(err, "%s of database \"%s\" on %s for tenant \"%s\"", job->drill ? "restore drill" : "restore",
						l.dest, src.where, job->tenant);
	for (size_t i = 0; i < l.nns; i++)
	{
		if (l.ns[i].bulk)
			mongoc_bulk_operation_destroy(l.ns[i].bulk);
		if (l.ns[i].coll)
			mongoc_collection_destroy(l.ns[i].coll);
		bson_free(l.ns[i].name);
		bson_free(l.ns[i].staging);
		bson_destroy(l.ns[i].options);
		bson_destroy(l.ns[i].indexes);
	}
	free(l.ns);
	bson_free(l.archive_db);
	mongo_archive_reader_close(l.ar);
	repo_reader_close(l.reader);
	mongoc_database_destroy(l.db);
	mongo_source_close(&src);
	return rc;
}
