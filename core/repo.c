/* The backup repository: tenant keys, backup objects and manifests in storage (see repo.h). */
#include "repo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "names.h"

#define REPO_IO_BUFFER (1024 * 1024)
#define REPO_KEY_DOC_MAX 4096
#define REPO_PROGRESS_EVERY (8 * 1024 * 1024)

struct repo_put
{
	storage *st;
	storage_write *write;
	stream_writer *writer;
	manifest m;
	repo_progress_fn progress;
	void *progress_ctx;
	uint64_t written;
	uint64_t last_progress;
};

struct repo_reader
{
	storage_read *read;
	stream_reader *stream;
};

static void
repo_utc_now(char *out, size_t size, time_t now)
{
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int
repo_key_doc_key(const char *tenant, const char *key_id, char *out, size_t size)
{
	return snprintf(out, size, "%s/keys/%s.json", tenant, key_id) < (int) size ? 0 : -1;
}

int
repo_tenant_key_create(storage *st, const master_key *master, const char *tenant, tenant_key *out, char **wrapped_doc,
					   tb_error *err)
{
	char key[256];
	char *doc;
	int rc;

	if (keys_tenant_generate(tenant, out, err) != 0)
		return -1;
	doc = master->key_command ? keys_tenant_wrap_command(master->key_command, out, err)
							  : keys_tenant_wrap(master, out, err);
	if (doc == NULL)
	{
		keys_tenant_wipe(out);
		return -1;
	}
	repo_key_doc_key(tenant, out->id, key, sizeof(key));
	rc = storage_put(st, key, doc, strlen(doc), err);
	if (rc != 0)
	{
		free(doc);
		keys_tenant_wipe(out);
		return tb_error_prefix(err, "unable to store new key of tenant '%s'", tenant);
	}
	if (wrapped_doc != NULL)
		*wrapped_doc = doc;
	else
		free(doc);
	return 0;
}

int
repo_tenant_key_rewrap(storage *st, const master_key *old_master, const master_key *new_master, const char *tenant,
					   const char *doc, char **new_doc, tb_error *err)
{
	char key[256];
	tenant_key tk;
	int rc;

	*new_doc = NULL;
	if (names_check_tenant(tenant, err) != 0)
		return -1;
	/* A document the new key wraps already (a rerun after a failure) is stored as it is. */
	rc = keys_tenant_unwrap(new_master, doc, tenant, NULL, &tk, err);
	if (rc != 0)
		rc = keys_tenant_unwrap(old_master, doc, tenant, NULL, &tk, err);
	if (rc != 0)
		return -1;
	*new_doc = keys_tenant_wrap(new_master, &tk, err);
	repo_key_doc_key(tenant, tk.id, key, sizeof(key));
	keys_tenant_wipe(&tk);
	if (*new_doc == NULL)
		return -1;
	if (storage_put(st, key, *new_doc, strlen(*new_doc), err) != 0)
	{
		free(*new_doc);
		*new_doc = NULL;
		return tb_error_prefix(err, "unable to store the re-wrapped key of tenant '%s'", tenant);
	}
	return 0;
}

int
repo_delete_backup(storage *st, const char *object, uint64_t *bytes, tb_error *err)
{
	char manifest_key[1024];
	storage_info info;

	*bytes = 0;
	if (repo_manifest_key(object, manifest_key, sizeof(manifest_key), err) != 0)
		return -1;
	if (storage_head(st, object, &info, err) == 0)
		*bytes = info.size;
	else if (err->code != TB_ERR_NOT_FOUND)
		return -1;
	if (storage_delete(st, manifest_key, err) != 0 || storage_delete(st, object, err) != 0)
		return tb_error_prefix(err, "unable to delete backup object '%s'", object);
	return 0;
}

#define REPO_DELETE_BATCH 1000

typedef struct repo_delete_batch
{
	char *keys[REPO_DELETE_BATCH];
	int n;
	bool out_of_memory;
	uint64_t bytes;
} repo_delete_batch;

static int
repo_delete_collect(const char *key, const storage_info *info, void *arg)
{
	repo_delete_batch *b = arg;

	b->keys[b->n] = strdup(key);
	if (b->keys[b->n] == NULL)
	{
		b->out_of_memory = true;
		return 1;
	}
	b->n++;
	b->bytes += info->size;
	return b->n == REPO_DELETE_BATCH;
}

int
repo_delete_prefix(storage *st, const char *prefix, uint64_t *objects, uint64_t *bytes, tb_error *err)
{
	repo_delete_batch *b = calloc(1, sizeof(*b));
	int rc = 0;

	*objects = *bytes = 0;
	if (b == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	/* In batches, listing again after each: memory stays bounded whatever the count. */
	do
	{
		b->n = 0;
		b->bytes = 0;
		if (storage_list(st, prefix, repo_delete_collect, b, err) != 0)
			rc = tb_error_prefix(err, "unable to list '%s'", prefix);
		else if (b->out_of_memory)
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory listing '%s'", prefix);
		for (int i = 0; i < b->n && rc == 0; i++)
			if (storage_delete(st, b->keys[i], err) != 0)
				rc = tb_error_prefix(err, "unable to delete '%s'", b->keys[i]);
		if (rc == 0)
		{
			*objects += (uint64_t) b->n;
			*bytes += b->bytes;
		}
		for (int i = 0; i < b->n; i++)
			free(b->keys[i]);
	} while (rc == 0 && b->n == REPO_DELETE_BATCH);
	free(b);
	return rc;
}

int
repo_tenant_key_load(storage *st, const master_key *master, const char *tenant, const char *key_id, tenant_key *out,
					 tb_error *err)
{
	char key[256];
	char *doc;
	size_t len;
	int rc;

	if (names_check_tenant(tenant, err) != 0)
		return -1;
	if (strlen(key_id) != KEYS_ID_LEN || strspn(key_id, "0123456789abcdef") != KEYS_ID_LEN)
		return tb_error_set(err, TB_ERR_INVALID, "invalid key id '%s' for tenant '%s'", key_id, tenant);
	repo_key_doc_key(tenant, key_id, key, sizeof(key));
	if (storage_get(st, key, REPO_KEY_DOC_MAX, &doc, &len, err) != 0)
	{
		if (err->code == TB_ERR_NOT_FOUND)
			return tb_error_set(err, TB_ERR_KEY,
								"key %s of tenant '%s' is not in storage %s (destroyed, or wrong storage)", key_id,
								tenant, storage_describe(st));
		return tb_error_prefix(err, "unable to load key %s of tenant '%s'", key_id, tenant);
	}
	rc = keys_tenant_unwrap(master, doc, tenant, key_id, out, err);
	free(doc);
	return rc;
}

typedef struct repo_newest_key
{
	char id[KEYS_ID_LEN + 1];
} repo_newest_key;

static int
repo_newest_key_cb(const char *key, const storage_info *info, void *arg)
{
	repo_newest_key *newest = arg;
	const char *name = strrchr(key, '/');
	size_t len;

	(void) info;
	name = name ? name + 1 : key;
	len = strlen(name);
	if (len == KEYS_ID_LEN + 5 && strcmp(name + KEYS_ID_LEN, ".json") == 0 &&
		strncmp(name, newest->id, KEYS_ID_LEN) > 0)
	{
		memcpy(newest->id, name, KEYS_ID_LEN);
		newest->id[KEYS_ID_LEN] = '\0';
	}
	return 0;
}

int
repo_tenant_key_current(storage *st, const master_key *master, const char *tenant, bool create, tenant_key *out,
						tb_error *err)
{
	repo_newest_key newest = {{0}};
	char prefix[128];

	if (repo_active_key_get(st, master, tenant, newest.id, err) == 0)
		return repo_tenant_key_load(st, master, tenant, newest.id, out, err);
	if (err->code != TB_ERR_NOT_FOUND)
		return -1;
	tb_error_clear(err);
	snprintf(prefix, sizeof(prefix), "%s/keys/", tenant);
	if (storage_list(st, prefix, repo_newest_key_cb, &newest, err) != 0)
		return tb_error_prefix(err, "unable to list keys of tenant '%s'", tenant);
	if (newest.id[0] != '\0')
		return repo_tenant_key_load(st, master, tenant, newest.id, out, err);
	if (!create)
		return tb_error_set(err, TB_ERR_NOT_FOUND, "tenant '%s' has no key in storage %s", tenant,
							storage_describe(st));
	return repo_tenant_key_create(st, master, tenant, out, NULL, err);
}

int
repo_manifest_key(const char *object, char *out, size_t size, tb_error *err)
{
	size_t len = strlen(object);

	if (len < 5 || strcmp(object + len - 4, ".tbk") != 0 || len + 2 > size)
		return tb_error_set(err, TB_ERR_INVALID, "'%s' is not a backup object key (*.tbk)", object);
	memcpy(out, object, len - 4);
	strcpy(out + len - 4, ".json");
	return 0;
}

static int
repo_put_sink(void *ctx, const void *buf, size_t len, tb_error *err)
{
	return storage_write_append(ctx, buf, len, err);
}

repo_put *
repo_put_begin(storage *st, const tenant_key *key, const char *engine, const repo_put_options *options, tb_error *err)
{
	repo_put *put;
	stream_header hdr = {0};
	uint8_t rnd[8];
	char stamp[32];
	struct tm tm;
	time_t now = time(NULL);

	if (names_check_tenant(key->tenant, err) != 0 || names_check_engine(engine, err) != 0)
		return NULL;
	put = calloc(1, sizeof(*put));
	if (put == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	put->st = st;
	strcpy(put->m.tenant, key->tenant);
	strcpy(put->m.engine, engine);
	strcpy(put->m.key_id, key->id);
	if (options && options->backup_id)
	{
		if (options->backup_id[0] == '\0' || strlen(options->backup_id) > STREAM_BACKUP_ID_MAX ||
			strspn(options->backup_id, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(options->backup_id))
		{
			tb_error_set(err, TB_ERR_INVALID, "invalid backup id '%s'", options->backup_id);
			free(put);
			return NULL;
		}
		strcpy(put->m.backup_id, options->backup_id);
	}
	else
	{
		if (crypto_random(rnd, sizeof(rnd), err) != 0)
		{
			free(put);
			return NULL;
		}
		crypto_hex_encode(rnd, sizeof(rnd), put->m.backup_id);
	}
	repo_utc_now(put->m.started, sizeof(put->m.started), now);
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H%M%SZ", &tm);
	if (options && options->object_name)
	{
		const char *name = options->object_name;
		size_t len = strlen(name);

		/* Names below the tenant's engine, from plain parts: never out of it, never hidden. */
		if (len < 5 || len > 200 || strcmp(name + len - 4, ".tbk") != 0 || name[0] == '/' || name[0] == '.' ||
			strstr(name, "/.") != NULL || strstr(name, "//") != NULL ||
			strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/") != len)
		{
			tb_error_set(err, TB_ERR_INVALID, "invalid object name '%s'", name);
			free(put);
			return NULL;
		}
		snprintf(put->m.object, sizeof(put->m.object), "%s/%s/%s", key->tenant, engine, name);
	}
	else
		snprintf(put->m.object, sizeof(put->m.object), "%s/%s/%s-%s.tbk", key->tenant, engine, stamp, put->m.backup_id);
	if (options)
	{
		put->progress = options->progress;
		put->progress_ctx = options->progress_ctx;
	}
	if (options && options->database && manifest_database_valid(options->database))
		strcpy(put->m.database, options->database);

	put->write = storage_write_open(st, put->m.object, err);
	if (put->write == NULL)
	{
		free(put);
		return NULL;
	}
	strcpy(hdr.tenant, key->tenant);
	strcpy(hdr.engine, engine);
	strcpy(hdr.backup_id, put->m.backup_id);
	put->writer =
		stream_writer_new(&hdr, key, options ? &options->stream : NULL, repo_put_sink, put->write, put->m.object, err);
	if (put->writer == NULL)
	{
		storage_write_abort(put->write);
		free(put);
		return NULL;
	}
	return put;
}

int
repo_put_write(repo_put *put, const void *buf, size_t len, tb_error *err)
{
	if (stream_writer_write(put->writer, buf, len, err) != 0)
		return -1;
	put->written += len;
	if (put->progress && put->written - put->last_progress >= REPO_PROGRESS_EVERY)
	{
		put->progress(put->progress_ctx, put->written);
		put->last_progress = put->written;
	}
	return 0;
}

void
repo_put_abort(repo_put *put)
{
	if (put == NULL)
		return;
	stream_writer_free(put->writer);
	storage_write_abort(put->write);
	free(put);
}

int
repo_put_commit(repo_put *put, manifest *out, tb_error *err)
{
	stream_stats stats;
	char manifest_key[MANIFEST_OBJECT_MAX + 8];
	char *json;
	int rc;

	if (stream_writer_finish(put->writer, &stats, err) != 0)
	{
		repo_put_abort(put);
		return -1;
	}
	stream_writer_free(put->writer);
	put->writer = NULL;
	rc = storage_write_commit(put->write, err);
	put->write = NULL;
	if (rc != 0)
	{
		tb_error_prefix(err, "backup of tenant '%s' not stored", put->m.tenant);
		free(put);
		return -1;
	}
	put->m.plain_bytes = stats.plain_bytes;
	put->m.stored_bytes = stats.stored_bytes;
	put->m.chunks = stats.chunks;
	put->m.chunk_size = stats.chunk_size;
	crypto_hex_encode(stats.stored_sha256, CRYPTO_SHA256_LEN, put->m.sha256);
	repo_utc_now(put->m.finished, sizeof(put->m.finished), time(NULL));
	if (put->progress)
		put->progress(put->progress_ctx, put->written);

	repo_manifest_key(put->m.object, manifest_key, sizeof(manifest_key), err);
	json = manifest_to_json(&put->m, err);
	rc = json ? storage_put(put->st, manifest_key, json, strlen(json), err) : -1;
	free(json);
	if (rc != 0)
	{
		/* An object without its manifest is not a backup: take it away again. */
		tb_error cleanup = {0};

		storage_delete(put->st, put->m.object, &cleanup);
		tb_error_prefix(err, "unable to store the manifest of '%s'", put->m.object);
		free(put);
		return -1;
	}
	*out = put->m;
	free(put);
	return 0;
}

int
repo_put_fd(storage *st, const tenant_key *key, const char *engine, int fd, const repo_put_options *options,
			manifest *out, tb_error *err)
{
	repo_put *put = repo_put_begin(st, key, engine, options, err);
	char *buf = malloc(REPO_IO_BUFFER);

	if (put == NULL || buf == NULL)
	{
		free(buf);
		repo_put_abort(put);
		return put ? tb_error_set(err, TB_ERR_NOMEM, "out of memory") : -1;
	}
	for (;;)
	{
		ssize_t n = read(fd, buf, REPO_IO_BUFFER);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
		{
			tb_error_set(err, TB_ERR_IO, "unable to read input for tenant '%s': %s", key->tenant, strerror(errno));
			break;
		}
		if (n == 0)
		{
			free(buf);
			return repo_put_commit(put, out, err);
		}
		if (repo_put_write(put, buf, (size_t) n, err) != 0)
			break;
	}
	free(buf);
	repo_put_abort(put);
	return -1;
}

static ssize_t
repo_reader_source(void *ctx, void *buf, size_t len, tb_error *err)
{
	return storage_read_next(ctx, buf, len, err);
}

/* The object key must be <tenant>/<engine>/... of the tenant and engine in its header. */
static int
repo_reader_check_place(const char *object, const stream_header *hdr, tb_error *err)
{
	size_t tlen = strlen(hdr->tenant);
	size_t elen = strlen(hdr->engine);

	if (strncmp(object, hdr->tenant, tlen) != 0 || object[tlen] != '/' ||
		strncmp(object + tlen + 1, hdr->engine, elen) != 0 || object[tlen + 1 + elen] != '/')
		return tb_error_set(err, TB_ERR_CORRUPT,
							"object '%s' holds a %s backup of tenant '%s': it was moved or swapped from elsewhere",
							object, hdr->engine, hdr->tenant);
	return 0;
}

repo_reader *
repo_reader_open(storage *st, const master_key *master, const char *object, const stream_reader_options *options,
				 tb_error *err)
{
	repo_reader *r = calloc(1, sizeof(*r));
	const stream_header *hdr;
	tenant_key key;
	int rc;

	if (r == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	r->read = storage_read_open(st, object, 0, 0, err);
	if (r->read == NULL)
		goto fail;
	r->stream = stream_reader_open(repo_reader_source, r->read, object, options, err);
	if (r->stream == NULL)
		goto fail;
	hdr = stream_reader_header(r->stream);
	if (repo_reader_check_place(object, hdr, err) != 0 ||
		repo_tenant_key_load(st, master, hdr->tenant, hdr->key_id, &key, err) != 0)
		goto fail;
	rc = stream_reader_unlock(r->stream, &key, err);
	keys_tenant_wipe(&key);
	if (rc != 0)
		goto fail;
	return r;

fail:
	repo_reader_close(r);
	return NULL;
}

ssize_t
repo_reader_read(repo_reader *r, void *buf, size_t len, tb_error *err)
{
	return stream_reader_read(r->stream, buf, len, err);
}

const stream_header *
repo_reader_header(const repo_reader *r)
{
	return stream_reader_header(r->stream);
}

void
repo_reader_stats(const repo_reader *r, stream_stats *stats)
{
	stream_reader_stats(r->stream, stats);
}

void
repo_reader_close(repo_reader *r)
{
	if (r == NULL)
		return;
	stream_reader_free(r->stream);
	storage_read_close(r->read);
	free(r);
}

static int
repo_write_all(int fd, const char *buf, size_t len, tb_error *err)
{
	while (len > 0)
	{
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return tb_error_set(err, TB_ERR_IO, "unable to write output: %s", strerror(errno));
		buf += n;
		len -= (size_t) n;
	}
	return 0;
}

/*
 * The object's manifest (expected, or the one in storage when it has one) must be this
 * object's: an old object renamed over a newer one is not.
 */
static int
repo_check_manifest(storage *st, const char *object, const manifest *expected, const stream_header *hdr,
					const stream_stats *stats, tb_error *err)
{
	char key[MANIFEST_OBJECT_MAX + 8];
	char sha[2 * CRYPTO_SHA256_LEN + 1];
	manifest m;
	char *json;
	size_t len;
	int rc;

	if (expected != NULL)
		m = *expected;
	else
	{
		if (repo_manifest_key(object, key, sizeof(key), err) != 0)
			return -1;
		if (storage_get(st, key, MANIFEST_MAX_BYTES, &json, &len, err) != 0)
		{
			if (err->code != TB_ERR_NOT_FOUND)
				return -1;
			tb_error_clear(err);
			return 0;
		}
		rc = manifest_from_json(json, key, &m, err);
		free(json);
		if (rc != 0)
			return -1;
	}
	if (strcmp(m.object, object) != 0 || strcmp(m.backup_id, hdr->backup_id) != 0 ||
		strcmp(m.key_id, hdr->key_id) != 0 || m.stored_bytes != stats->stored_bytes)
		return tb_error_set(err, TB_ERR_CORRUPT,
							"object '%s' does not match its manifest (backup %s, %llu bytes recorded; backup %s, "
							"%llu bytes read)",
							object, m.backup_id, (unsigned long long) m.stored_bytes, hdr->backup_id,
							(unsigned long long) stats->stored_bytes);
	if (!stats->stored_sha256_known)
		return 0;
	crypto_hex_encode(stats->stored_sha256, CRYPTO_SHA256_LEN, sha);
	if (strcmp(m.sha256, sha) != 0)
		return tb_error_set(err, TB_ERR_CORRUPT, "object '%s' does not match its manifest: sha256 %s recorded, %s read",
							object, m.sha256, sha);
	return 0;
}

/* Where repo_read_plain puts the plaintext: a descriptor, a storage write, or nowhere. */
typedef struct repo_sink
{
	int fd;
	storage_write *w;
} repo_sink;

/* Authenticates all of object, handing its plaintext to sink; 0 once object and manifest checked out. */
static int
repo_read_plain(storage *st, const master_key *master, const char *object, const repo_sink *sink,
				const repo_read_options *options, stream_stats *stats, tb_error *err)
{
	repo_read_options none = {0};
	stream_reader_options stream_options;
	repo_reader *r;
	char *buf = malloc(REPO_IO_BUFFER);
	uint64_t total = 0, last_progress = 0;
	int rc = -1;

	if (options == NULL)
		options = &none;
	stream_options = (stream_reader_options){.hash_stored = options->check_sha256, .readahead = options->readahead};
	r = repo_reader_open(st, master, object, &stream_options, err);
	if (r == NULL || buf == NULL)
	{
		if (r != NULL)
			tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		goto done;
	}
	for (;;)
	{
		ssize_t n = repo_reader_read(r, buf, REPO_IO_BUFFER, err);

		if (n < 0 || (options->keep_going && options->keep_going(options->progress_ctx, err) != 0))
			goto done;
		if (n == 0)
			break;
		if (sink->fd >= 0 && repo_write_all(sink->fd, buf, (size_t) n, err) != 0)
			goto done;
		if (sink->w && storage_write_append(sink->w, buf, (size_t) n, err) != 0)
			goto done;
		total += (uint64_t) n;
		if (options->progress && total - last_progress >= REPO_PROGRESS_EVERY)
		{
			options->progress(options->progress_ctx, total);
			last_progress = total;
		}
	}
	repo_reader_stats(r, stats);
	rc = repo_check_manifest(st, object, options->manifest, repo_reader_header(r), stats, err);
	if (rc == 0 && options->progress)
		options->progress(options->progress_ctx, total);

done:
	free(buf);
	repo_reader_close(r);
	return rc;
}

int
repo_read_to_fd(storage *st, const master_key *master, const char *object, int fd, const repo_read_options *options,
				stream_stats *stats, tb_error *err)
{
	return repo_read_plain(st, master, object, &(repo_sink){.fd = fd}, options, stats, err);
}

int
repo_read_to_file(storage *st, const master_key *master, const char *object, const char *dir, const char *name,
				  const repo_read_options *options, stream_stats *stats, tb_error *err)
{
	char *url = NULL;
	storage *out;
	storage_info info;
	tb_error missing = {0};
	repo_sink sink = {.fd = -1};
	int rc = -1;

	if (dir[0] != '/')
		return tb_error_set(err, TB_ERR_INVALID, "directory '%s' is not an absolute path", dir);
	if (asprintf(&url, "file://%s", dir) < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	out = storage_open(url, err);
	free(url);
	if (out == NULL)
		return -1;
	if (storage_head(out, name, &info, &missing) == 0 || missing.code != TB_ERR_NOT_FOUND)
	{
		if (missing.code == TB_OK)
			tb_error_set(err, TB_ERR_EXISTS, "'%s/%s' already exists: move it away or restore into another directory",
						 dir, name);
		else
			*err = missing;
		goto done;
	}
	if ((sink.w = storage_write_open(out, name, err)) == NULL)
		goto done;
	rc = repo_read_plain(st, master, object, &sink, options, stats, err);
	if (rc == 0)
		rc = storage_write_commit(sink.w, err);
	else
		storage_write_abort(sink.w);
done:
	storage_close(out);
	return rc;
}

typedef struct repo_listing
{
	storage *st;
	manifest *items;
	size_t count;
	size_t cap;
	bool failed; /* a callback error stops the listing without failing storage_list */
	tb_error *err;
} repo_listing;

/* Keeps <tenant>/<engine>/<name>.json manifests: exactly three parts, valid names. */
static int
repo_listing_add(const char *key, const storage_info *info, void *arg)
{
	repo_listing *l = arg;
	const char *first = strchr(key, '/');
	const char *second = first ? strchr(first + 1, '/') : NULL, *name;
	size_t len = strlen(key);
	char engine[16];
	char *json;
	size_t json_len;
	tb_error skip = {0};

	(void) info;
	if (second == NULL)
		return 0;
	/* <tenant>/<engine>/<name>.json, and base backups of dedicated clusters: <tenant>/postgres/base/<name>.json */
	name = strncmp(second + 1, "base/", 5) == 0 ? second + 6 : second + 1;
	if (strchr(name, '/') != NULL || len < 6 || strcmp(key + len - 5, ".json") != 0 ||
		(size_t) (second - first - 1) >= sizeof(engine))
		return 0;
	memcpy(engine, first + 1, (size_t) (second - first - 1));
	engine[second - first - 1] = '\0';
	if (names_check_engine(engine, &skip) != 0)
		return 0;
	if (l->count == l->cap)
	{
		size_t cap = l->cap ? l->cap * 2 : 32;
		manifest *items = realloc(l->items, cap * sizeof(manifest));

		if (items == NULL)
		{
			l->failed = true;
			return tb_error_set(l->err, TB_ERR_NOMEM, "out of memory listing backups");
		}
		l->items = items;
		l->cap = cap;
	}
	if (storage_get(l->st, key, MANIFEST_MAX_BYTES, &json, &json_len, l->err) != 0)
	{
		if (l->err->code == TB_ERR_NOT_FOUND)
			return 0; /* removed while listing */
		l->failed = true;
		return -1;
	}
	if (manifest_from_json(json, key, &l->items[l->count], l->err) != 0)
	{
		free(json);
		l->failed = true;
		return -1;
	}
	free(json);
	l->count++;
	return 0;
}

static int
repo_listing_newest_first(const void *a, const void *b)
{
	const manifest *ma = a, *mb = b;
	int c = strcmp(mb->started, ma->started);

	return c != 0 ? c : strcmp(mb->object, ma->object);
}

int
repo_list(storage *st, const char *tenant, const char *engine, repo_list_cb cb, void *arg, tb_error *err)
{
	repo_listing l = {.st = st, .err = err};
	char prefix[128] = "";
	int rc;

	if (tenant && names_check_tenant(tenant, err) != 0)
		return -1;
	if (engine && names_check_engine(engine, err) != 0)
		return -1;
	if (tenant)
		snprintf(prefix, sizeof(prefix), "%s/%s%s", tenant, engine ? engine : "", engine ? "/" : "");
	rc = storage_list(st, prefix, repo_listing_add, &l, err);
	if (l.failed)
		rc = -1;
	if (rc == 0 && l.count > 0)
	{
		qsort(l.items, l.count, sizeof(manifest), repo_listing_newest_first);
		for (size_t i = 0; i < l.count; i++)
			if (engine == NULL || strcmp(l.items[i].engine, engine) == 0)
				if (cb(&l.items[i], arg) != 0)
					break;
	}
	free(l.items);
	return rc;
}
