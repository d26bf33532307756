/*
 * Writer and reader of the backup object format described in stream.h. The writer
 * can hand chunk compression and sealing to worker threads (stream_pool.c); records
 * still leave in index order, so the output is identical to the inline path.
 */
#include "stream.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "names.h"
#include "stream_internal.h"

#define STREAM_MAGIC "TBAKOBJ\x01"
#define STREAM_MAGIC_LEN 8
#define STREAM_CIPHER_AES256GCM 1
#define STREAM_HEADER_MAX                                                                                              \
	(STREAM_MAGIC_LEN + 4 * 256 + 2 + 4 + STREAM_NONCE_PREFIX_LEN + CRYPTO_NONCE_LEN + CRYPTO_KEY_LEN +                \
	 2 * CRYPTO_TAG_LEN)
#define STREAM_DATA_KEY_AAD_MAX STREAM_HEADER_MAX

struct stream_writer
{
	stream_header hdr;
	char *object_name;
	stream_sink_fn sink;
	void *sink_ctx;
	stream_sealer sealer; /* used inline when there is no pool */
	stream_pool *pool;    /* NULL: seal inline */
	stream_chunk inline_chunk;
	stream_chunk *current; /* the chunk being filled */
	uint64_t index;
	crypto_sha256 *plain_sha;
	crypto_sha256 *stored_sha;
	uint64_t plain_bytes;
	uint64_t stored_bytes;
	bool failed;
};

struct stream_reader
{
	stream_source_fn source;
	void *source_ctx;
	char *object_name;
	stream_header hdr;
	uint8_t header_bytes[STREAM_HEADER_MAX];
	size_t header_len;       /* through the wrapped data key */
	size_t data_key_aad_len; /* bytes before the data key nonce */
	uint8_t header_tag[CRYPTO_TAG_LEN];
	uint8_t nonce_prefix[STREAM_NONCE_PREFIX_LEN];
	uint8_t header_digest[CRYPTO_SHA256_LEN];
	/* the decoding side (stream_reader_decode; the read-ahead thread's when there is one) */
	crypto_gcm *gcm;
	ZSTD_DCtx *dctx;
	uint8_t *record;
	size_t record_cap;
	uint64_t index;
	bool last_seen;
	crypto_sha256 *stored_sha;
	/* the consuming side (stream_reader_read, the caller's thread) */
	bool readahead_wanted;
	stream_readahead *readahead;
	uint8_t *own_plain; /* decode buffer without read-ahead */
	const uint8_t *plain;
	size_t plain_len;
	size_t plain_pos;
	bool done;
	bool failed;
	crypto_sha256 *plain_sha;
	stream_stats stats; /* stored_* and chunks written by the decoding side */
};

void
stream_put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t) (v >> 24);
	p[1] = (uint8_t) (v >> 16);
	p[2] = (uint8_t) (v >> 8);
	p[3] = (uint8_t) v;
}

void
stream_put_u64(uint8_t *p, uint64_t v)
{
	stream_put_u32(p, (uint32_t) (v >> 32));
	stream_put_u32(p + 4, (uint32_t) v);
}

static uint32_t
stream_get_u32(const uint8_t *p)
{
	return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t
stream_get_u64(const uint8_t *p)
{
	return (uint64_t) stream_get_u32(p) << 32 | stream_get_u32(p + 4);
}

void
stream_record_nonce(const uint8_t prefix[STREAM_NONCE_PREFIX_LEN], uint64_t index, uint8_t nonce[CRYPTO_NONCE_LEN])
{
	memcpy(nonce, prefix, STREAM_NONCE_PREFIX_LEN);
	stream_put_u64(nonce + STREAM_NONCE_PREFIX_LEN, index);
}

void
stream_record_aad(const uint8_t digest[CRYPTO_SHA256_LEN], uint64_t index, const uint8_t *record_header,
				  uint8_t aad[STREAM_RECORD_AAD_LEN])
{
	memcpy(aad, digest, CRYPTO_SHA256_LEN);
	stream_put_u64(aad + CRYPTO_SHA256_LEN, index);
	memcpy(aad + CRYPTO_SHA256_LEN + 8, record_header, STREAM_RECORD_HEADER_LEN);
}

size_t
stream_record_capacity(uint32_t chunk_size)
{
	return STREAM_RECORD_HEADER_LEN + ZSTD_compressBound(chunk_size) + CRYPTO_TAG_LEN;
}

int
stream_seal_chunk(stream_sealer *s, stream_chunk *c, tb_error *err)
{
	uint8_t *body = c->record + STREAM_RECORD_HEADER_LEN;
	uint8_t nonce[CRYPTO_NONCE_LEN];
	uint8_t aad[STREAM_RECORD_AAD_LEN];
	size_t stored = 0;
	uint8_t flags = c->flags;

	if (c->plain_len > 0 && !(flags & STREAM_FLAG_TRAILER))
	{
		stored = ZSTD_compressCCtx(s->cctx, body, c->record_cap - STREAM_RECORD_HEADER_LEN - CRYPTO_TAG_LEN, c->plain,
								   c->plain_len, s->level);
		if (ZSTD_isError(stored))
			return tb_error_set(err, TB_ERR_INTERNAL, "zstd failed on chunk %llu: %s", (unsigned long long) c->index,
								ZSTD_getErrorName(stored));
	}
	/* Incompressible or tiny chunks are stored raw: same size, cheaper to open. */
	if (c->plain_len == 0 || (flags & STREAM_FLAG_TRAILER) || stored >= c->plain_len)
	{
		if (!(flags & STREAM_FLAG_TRAILER))
			flags |= STREAM_FLAG_RAW;
		memcpy(body, c->plain, c->plain_len);
		stored = c->plain_len;
	}
	c->record[0] = flags;
	stream_put_u32(c->record + 1, (uint32_t) c->plain_len);
	stream_put_u32(c->record + 5, (uint32_t) stored);
	stream_record_nonce(s->nonce_prefix, c->index, nonce);
	stream_record_aad(s->header_digest, c->index, c->record, aad);
	if (crypto_gcm_seal(s->gcm, nonce, aad, sizeof(aad), body, stored, body, body + stored, err) != 0)
		return -1;
	c->record_len = STREAM_RECORD_HEADER_LEN + stored + CRYPTO_TAG_LEN;
	return 0;
}

int
stream_sealer_init(stream_sealer *s, const uint8_t data_key[CRYPTO_KEY_LEN],
				   const uint8_t prefix[STREAM_NONCE_PREFIX_LEN], const uint8_t digest[CRYPTO_SHA256_LEN], int level,
				   tb_error *err)
{
	memset(s, 0, sizeof(*s));
	s->gcm = crypto_gcm_new(data_key, err);
	if (s->gcm == NULL)
		return -1;
	s->cctx = ZSTD_createCCtx();
	if (s->cctx == NULL)
	{
		stream_sealer_free(s);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory creating a zstd context");
	}
	memcpy(s->nonce_prefix, prefix, STREAM_NONCE_PREFIX_LEN);
	memcpy(s->header_digest, digest, CRYPTO_SHA256_LEN);
	s->level = level;
	return 0;
}

void
stream_sealer_free(stream_sealer *s)
{
	crypto_gcm_free(s->gcm);
	ZSTD_freeCCtx(s->cctx);
	s->gcm = NULL;
	s->cctx = NULL;
}

int
stream_chunk_alloc(stream_chunk *c, uint32_t chunk_size)
{
	c->plain = malloc(chunk_size);
	c->record_cap = stream_record_capacity(chunk_size);
	c->record = malloc(c->record_cap);
	return c->plain != NULL && c->record != NULL ? 0 : -1;
}

void
stream_chunk_release(stream_chunk *c)
{
	free(c->plain);
	free(c->record);
	c->plain = c->record = NULL;
}

/* Serialises the header through the wrapped data key; returns its length. */
static size_t
stream_header_encode(const stream_header *hdr, const uint8_t prefix[STREAM_NONCE_PREFIX_LEN], uint8_t *out,
					 size_t *data_key_aad_len)
{
	const char *fields[] = {hdr->tenant, hdr->engine, hdr->backup_id, hdr->key_id};
	size_t pos = 0;

	memcpy(out, STREAM_MAGIC, STREAM_MAGIC_LEN);
	pos = STREAM_MAGIC_LEN;
	for (size_t i = 0; i < 4; i++)
	{
		size_t len = strlen(fields[i]);

		out[pos++] = (uint8_t) len;
		memcpy(out + pos, fields[i], len);
		pos += len;
	}
	out[pos++] = hdr->compression;
	out[pos++] = STREAM_CIPHER_AES256GCM;
	stream_put_u32(out + pos, hdr->chunk_size);
	pos += 4;
	memcpy(out + pos, prefix, STREAM_NONCE_PREFIX_LEN);
	pos += STREAM_NONCE_PREFIX_LEN;
	*data_key_aad_len = pos;
	return pos;
}

static int
stream_writer_emit(stream_writer *w, const uint8_t *buf, size_t len, tb_error *err)
{
	if (w->sink(w->sink_ctx, buf, len, err) != 0)
		return tb_error_prefix(err, "unable to store object '%s'", w->object_name);
	crypto_sha256_update(w->stored_sha, buf, len);
	w->stored_bytes += len;
	return 0;
}

/* Emits a sealed chunk; called in index order by the inline path and by the pool. */
int
stream_writer_emit_chunk(stream_writer *w, stream_chunk *c, tb_error *err)
{
	return stream_writer_emit(w, c->record, c->record_len, err);
}

static int
stream_writer_write_header(stream_writer *w, const tenant_key *key, uint8_t data_key[CRYPTO_KEY_LEN],
						   uint8_t prefix[STREAM_NONCE_PREFIX_LEN], uint8_t digest[CRYPTO_SHA256_LEN], tb_error *err)
{
	uint8_t header[STREAM_HEADER_MAX];
	uint8_t tag_nonce[CRYPTO_NONCE_LEN];
	size_t aad_len;
	size_t len;
	crypto_gcm *gcm;
	int rc;

	if (crypto_random(data_key, CRYPTO_KEY_LEN, err) != 0 || crypto_random(prefix, STREAM_NONCE_PREFIX_LEN, err) != 0)
		return -1;
	len = stream_header_encode(&w->hdr, prefix, header, &aad_len);
	if (crypto_random(header + len, CRYPTO_NONCE_LEN, err) != 0)
		return -1;
	gcm = crypto_gcm_new(key->key, err);
	if (gcm == NULL)
		return -1;
	rc = crypto_gcm_seal(gcm, header + len, header, aad_len, data_key, CRYPTO_KEY_LEN, header + len + CRYPTO_NONCE_LEN,
						 header + len + CRYPTO_NONCE_LEN + CRYPTO_KEY_LEN, err);
	crypto_gcm_free(gcm);
	if (rc != 0)
		return -1;
	len += CRYPTO_NONCE_LEN + CRYPTO_KEY_LEN + CRYPTO_TAG_LEN;

	gcm = crypto_gcm_new(data_key, err);
	if (gcm == NULL)
		return -1;
	stream_record_nonce(prefix, STREAM_HEADER_TAG_INDEX, tag_nonce);
	rc = crypto_gcm_seal(gcm, tag_nonce, header, len, NULL, 0, NULL, header + len, err);
	crypto_gcm_free(gcm);
	if (rc != 0)
		return -1;
	len += CRYPTO_TAG_LEN;
	crypto_sha256_once(header, len, digest);
	return stream_writer_emit(w, header, len, err);
}

static int
stream_writer_check_header(const stream_header *hdr, const tenant_key *key, tb_error *err)
{
	if (names_check_tenant(hdr->tenant, err) != 0 || names_check_engine(hdr->engine, err) != 0)
		return -1;
	if (hdr->backup_id[0] == '\0' || strlen(hdr->backup_id) > STREAM_BACKUP_ID_MAX)
		return tb_error_set(err, TB_ERR_INVALID, "backup id must be 1 to %d characters", STREAM_BACKUP_ID_MAX);
	if (strcmp(key->tenant, hdr->tenant) != 0 || strcmp(key->id, hdr->key_id) != 0)
		return tb_error_set(err, TB_ERR_INVALID, "tenant key %s of tenant '%s' cannot seal a backup of tenant '%s'",
							key->id, key->tenant, hdr->tenant);
	if (hdr->chunk_size < STREAM_CHUNK_MIN || hdr->chunk_size > STREAM_CHUNK_MAX)
		return tb_error_set(err, TB_ERR_INVALID, "chunk size %u is outside %d..%d", hdr->chunk_size, STREAM_CHUNK_MIN,
							STREAM_CHUNK_MAX);
	return 0;
}

stream_writer *
stream_writer_new(const stream_header *hdr, const tenant_key *key, const stream_writer_options *options,
				  stream_sink_fn sink, void *sink_ctx, const char *object_name, tb_error *err)
{
	stream_writer *w = calloc(1, sizeof(*w));
	uint8_t data_key[CRYPTO_KEY_LEN];
	uint8_t prefix[STREAM_NONCE_PREFIX_LEN];
	uint8_t digest[CRYPTO_SHA256_LEN];
	int level = options && options->level ? options->level : STREAM_LEVEL_DEFAULT;
	int workers = options ? options->workers : 0;
	int rc;

	if (w == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	w->hdr = *hdr;
	w->hdr.compression = STREAM_COMPRESSION_ZSTD;
	if (w->hdr.chunk_size == 0)
		w->hdr.chunk_size = options && options->chunk_size ? options->chunk_size : STREAM_CHUNK_DEFAULT;
	strcpy(w->hdr.key_id, key->id);
	w->sink = sink;
	w->sink_ctx = sink_ctx;
	w->object_name = strdup(object_name ? object_name : "(unnamed)");
	if (w->object_name == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		goto fail;
	}
	if ((w->plain_sha = crypto_sha256_new(err)) == NULL || (w->stored_sha = crypto_sha256_new(err)) == NULL ||
		stream_writer_check_header(&w->hdr, key, err) != 0)
		goto fail;
	rc = stream_writer_write_header(w, key, data_key, prefix, digest, err);
	if (rc == 0)
	{
		if (workers > 1)
			rc =
				(w->pool = stream_pool_new(w, data_key, prefix, digest, level, workers, w->hdr.chunk_size, err)) != NULL
					? 0
					: -1;
		else if ((rc = stream_sealer_init(&w->sealer, data_key, prefix, digest, level, err)) == 0 &&
				 stream_chunk_alloc(&w->inline_chunk, w->hdr.chunk_size) != 0)
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory for a %u-byte chunk", w->hdr.chunk_size);
	}
	crypto_wipe(data_key, sizeof(data_key));
	if (rc != 0)
		goto fail;
	w->current = w->pool ? stream_pool_next_free(w->pool, err) : &w->inline_chunk;
	if (w->current == NULL)
		goto fail;
	w->current->plain_len = 0;
	return w;

fail:
	stream_writer_free(w);
	return NULL;
}

/* Hands the current chunk to be sealed (and emitted), then takes a fresh one. */
static int
stream_writer_submit(stream_writer *w, uint8_t flags, tb_error *err)
{
	stream_chunk *c = w->current;

	c->index = w->index++;
	c->flags = flags;
	crypto_sha256_update(w->plain_sha, c->plain, c->plain_len);
	w->plain_bytes += c->plain_len;
	w->current = NULL;
	if (w->pool != NULL)
	{
		if (stream_pool_submit(w->pool, c, err) != 0)
			return -1;
		if (flags & STREAM_FLAG_LAST)
			return 0;
		w->current = stream_pool_next_free(w->pool, err);
		if (w->current == NULL)
			return -1;
	}
	else
	{
		if (stream_seal_chunk(&w->sealer, c, err) != 0 || stream_writer_emit_chunk(w, c, err) != 0)
			return -1;
		w->current = c;
	}
	w->current->plain_len = 0;
	return 0;
}

int
stream_writer_write(stream_writer *w, const void *buf, size_t len, tb_error *err)
{
	const uint8_t *p = buf;

	if (w->failed || w->current == NULL)
		return tb_error_set(err, TB_ERR_INTERNAL, "object '%s' already failed or finished", w->object_name);
	while (len > 0)
	{
		stream_chunk *c = w->current;
		size_t space;

		/* A full chunk is sealed only once more data proves it is not the last. */
		if (c->plain_len == w->hdr.chunk_size)
		{
			if (stream_writer_submit(w, 0, err) != 0)
			{
				w->failed = true;
				return -1;
			}
			continue;
		}
		space = w->hdr.chunk_size - c->plain_len;
		if (space > len)
			space = len;
		memcpy(c->plain + c->plain_len, p, space);
		c->plain_len += space;
		p += space;
		len -= space;
	}
	return 0;
}

int
stream_writer_finish(stream_writer *w, stream_stats *stats, tb_error *err)
{
	stream_chunk trailer = {0};
	uint8_t trailer_plain[STREAM_TRAILER_LEN];
	uint8_t trailer_record[STREAM_RECORD_HEADER_LEN + STREAM_TRAILER_LEN + CRYPTO_TAG_LEN];
	stream_sealer *sealer;

	if (w->failed || w->current == NULL)
		return tb_error_set(err, TB_ERR_INTERNAL, "object '%s' already failed or finished", w->object_name);
	if (stream_writer_submit(w, STREAM_FLAG_LAST, err) != 0 || (w->pool && stream_pool_drain(w->pool, err) != 0))
	{
		w->failed = true;
		return -1;
	}
	memset(stats, 0, sizeof(*stats));
	stats->plain_bytes = w->plain_bytes;
	crypto_sha256_final(w->plain_sha, stats->plain_sha256);

	stream_put_u64(trailer_plain, w->plain_bytes);
	memcpy(trailer_plain + 8, stats->plain_sha256, CRYPTO_SHA256_LEN);
	trailer.index = w->index;
	trailer.flags = STREAM_FLAG_TRAILER;
	trailer.plain = trailer_plain;
	trailer.plain_len = sizeof(trailer_plain);
	trailer.record = trailer_record;
	trailer.record_cap = sizeof(trailer_record);
	sealer = w->pool ? stream_pool_sealer(w->pool) : &w->sealer;
	if (stream_seal_chunk(sealer, &trailer, err) != 0 || stream_writer_emit_chunk(w, &trailer, err) != 0)
	{
		w->failed = true;
		return -1;
	}
	stats->chunks = w->index;
	stats->chunk_size = w->hdr.chunk_size;
	stats->stored_bytes = w->stored_bytes;
	crypto_sha256_final(w->stored_sha, stats->stored_sha256);
	stats->stored_sha256_known = true;
	return 0;
}

void
stream_writer_free(stream_writer *w)
{
	if (w == NULL)
		return;
	if (w->pool)
		stream_pool_free(w->pool);
	stream_sealer_free(&w->sealer);
	stream_chunk_release(&w->inline_chunk);
	crypto_sha256_free(w->plain_sha);
	crypto_sha256_free(w->stored_sha);
	free(w->object_name);
	free(w);
}

/* ---- reader ---- */

/* Reads exactly len bytes unless the object ends; returns bytes read or -1. */
static ssize_t
stream_reader_fill(stream_reader *r, uint8_t *buf, size_t len, tb_error *err)
{
	size_t got = 0;

	while (got < len)
	{
		ssize_t n = r->source(r->source_ctx, buf + got, len - got, err);

		if (n < 0)
			return tb_error_prefix(err, "unable to read object '%s'", r->object_name);
		if (n == 0)
			break;
		got += (size_t) n;
	}
	if (r->stored_sha != NULL)
		crypto_sha256_update(r->stored_sha, buf, got);
	r->stats.stored_bytes += got;
	return (ssize_t) got;
}

static int
stream_reader_corrupt(stream_reader *r, tb_error *err, const char *what)
{
	return tb_error_set(err, TB_ERR_CORRUPT, "object '%s' is corrupt: %s", r->object_name, what);
}

/* Reads exactly len bytes of the header; a short object is corrupt with the reason given. */
static int
stream_reader_need(stream_reader *r, uint8_t *buf, size_t len, const char *short_reason, tb_error *err)
{
	ssize_t n = stream_reader_fill(r, buf, len, err);

	if (n < 0)
		return -1;
	if ((size_t) n != len)
		return stream_reader_corrupt(r, err, short_reason);
	return 0;
}

static int
stream_reader_header_field(stream_reader *r, char *out, size_t size, tb_error *err)
{
	uint8_t *p = r->header_bytes + r->header_len;
	size_t len;

	if (stream_reader_need(r, p, 1, "the header is truncated", err) != 0)
		return -1;
	len = p[0];
	if (len == 0 || len >= size)
		return stream_reader_corrupt(r, err, "a header field has an invalid length");
	if (stream_reader_need(r, p + 1, len, "the header is truncated", err) != 0)
		return -1;
	memcpy(out, p + 1, len);
	out[len] = '\0';
	r->header_len += 1 + len;
	return 0;
}

static int
stream_reader_parse_header(stream_reader *r, tb_error *err)
{
	stream_header *hdr = &r->hdr;
	uint8_t *p;
	tb_error name_err = {0};
	const size_t fixed = 2 + 4 + STREAM_NONCE_PREFIX_LEN;
	const size_t key_part = CRYPTO_NONCE_LEN + CRYPTO_KEY_LEN + CRYPTO_TAG_LEN;

	if (stream_reader_need(r, r->header_bytes, STREAM_MAGIC_LEN, "too short to be a backup object", err) != 0)
		return -1;
	if (memcmp(r->header_bytes, STREAM_MAGIC, STREAM_MAGIC_LEN - 1) != 0)
		return stream_reader_corrupt(r, err, "not a tenant_backup object (bad magic)");
	if (r->header_bytes[STREAM_MAGIC_LEN - 1] != 1)
		return tb_error_set(err, TB_ERR_CORRUPT, "object '%s' has format version %d; this build reads version 1",
							r->object_name, r->header_bytes[STREAM_MAGIC_LEN - 1]);
	r->header_len = STREAM_MAGIC_LEN;
	if (stream_reader_header_field(r, hdr->tenant, sizeof(hdr->tenant), err) != 0 ||
		stream_reader_header_field(r, hdr->engine, sizeof(hdr->engine), err) != 0 ||
		stream_reader_header_field(r, hdr->backup_id, sizeof(hdr->backup_id), err) != 0 ||
		stream_reader_header_field(r, hdr->key_id, sizeof(hdr->key_id), err) != 0)
		return -1;
	p = r->header_bytes + r->header_len;
	if (stream_reader_need(r, p, fixed + key_part + CRYPTO_TAG_LEN, "the header is truncated", err) != 0)
		return -1;
	hdr->compression = p[0];
	hdr->chunk_size = stream_get_u32(p + 2);
	memcpy(r->nonce_prefix, p + 6, STREAM_NONCE_PREFIX_LEN);
	r->data_key_aad_len = r->header_len + fixed;
	r->header_len += fixed + key_part;
	memcpy(r->header_tag, r->header_bytes + r->header_len, CRYPTO_TAG_LEN);
	if (hdr->compression != STREAM_COMPRESSION_ZSTD || p[1] != STREAM_CIPHER_AES256GCM)
		return stream_reader_corrupt(r, err, "unknown compression or cipher in the header");
	if (hdr->chunk_size < STREAM_CHUNK_MIN || hdr->chunk_size > STREAM_CHUNK_MAX)
		return stream_reader_corrupt(r, err, "the chunk size in the header is out of range");
	if (names_check_tenant(hdr->tenant, &name_err) != 0 || names_check_engine(hdr->engine, &name_err) != 0)
		return stream_reader_corrupt(r, err, name_err.msg);
	return 0;
}

stream_reader *
stream_reader_open(stream_source_fn source, void *source_ctx, const char *object_name,
				   const stream_reader_options *options, tb_error *err)
{
	stream_reader *r = calloc(1, sizeof(*r));

	if (r == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	r->source = source;
	r->source_ctx = source_ctx;
	r->readahead_wanted = options && options->readahead;
	r->object_name = strdup(object_name ? object_name : "(unnamed)");
	if (r->object_name == NULL)
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	if (r->object_name == NULL || (r->plain_sha = crypto_sha256_new(err)) == NULL ||
		(options && options->hash_stored && (r->stored_sha = crypto_sha256_new(err)) == NULL) ||
		stream_reader_parse_header(r, err) != 0)
	{
		stream_reader_free(r);
		return NULL;
	}
	return r;
}

const stream_header *
stream_reader_header(const stream_reader *r)
{
	return &r->hdr;
}

int
stream_reader_unlock(stream_reader *r, const tenant_key *key, tb_error *err)
{
	uint8_t data_key[CRYPTO_KEY_LEN];
	uint8_t tag_nonce[CRYPTO_NONCE_LEN];
	const uint8_t *wrapped = r->header_bytes + r->data_key_aad_len;
	crypto_gcm *gcm;
	int ok;

	if (strcmp(key->tenant, r->hdr.tenant) != 0 || strcmp(key->id, r->hdr.key_id) != 0)
		return tb_error_set(err, TB_ERR_KEY, "object '%s' is sealed with key %s of tenant '%s', not key %s of '%s'",
							r->object_name, r->hdr.key_id, r->hdr.tenant, key->id, key->tenant);
	gcm = crypto_gcm_new(key->key, err);
	if (gcm == NULL)
		return -1;
	ok = crypto_gcm_open(gcm, wrapped, r->header_bytes, r->data_key_aad_len, wrapped + CRYPTO_NONCE_LEN, CRYPTO_KEY_LEN,
						 data_key, wrapped + CRYPTO_NONCE_LEN + CRYPTO_KEY_LEN, err);
	crypto_gcm_free(gcm);
	if (ok != 1)
	{
		crypto_wipe(data_key, sizeof(data_key));
		if (ok < 0)
			return -1;
		r->failed = true;
		return tb_error_set(err, TB_ERR_KEY,
							"object '%s': the data key does not unwrap with key %s of tenant '%s': "
							"the header was tampered with or the tenant key is wrong",
							r->object_name, key->id, key->tenant);
	}
	r->gcm = crypto_gcm_new(data_key, err);
	crypto_wipe(data_key, sizeof(data_key));
	if (r->gcm == NULL)
		return -1;
	stream_record_nonce(r->nonce_prefix, STREAM_HEADER_TAG_INDEX, tag_nonce);
	ok = crypto_gcm_open(r->gcm, tag_nonce, r->header_bytes, r->header_len, NULL, 0, NULL, r->header_tag, err);
	if (ok != 1)
		return ok < 0 ? -1 : stream_reader_corrupt(r, err, "the header fails authentication");
	memcpy(r->header_bytes + r->header_len, r->header_tag, CRYPTO_TAG_LEN);
	crypto_sha256_once(r->header_bytes, r->header_len + CRYPTO_TAG_LEN, r->header_digest);

	r->record_cap = stream_record_capacity(r->hdr.chunk_size);
	r->record = malloc(r->record_cap);
	r->dctx = ZSTD_createDCtx();
	if (!r->readahead_wanted)
		r->own_plain = malloc(r->hdr.chunk_size);
	if (r->record == NULL || r->dctx == NULL || (!r->readahead_wanted && r->own_plain == NULL))
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory reading object '%s'", r->object_name);
	if (r->readahead_wanted && (r->readahead = stream_readahead_start(r, err)) == NULL)
		return -1;
	return 0;
}

uint32_t
stream_reader_chunk_size(const stream_reader *r)
{
	return r->hdr.chunk_size;
}

static int
stream_reader_chunk_error(stream_reader *r, tb_error *err, const char *what)
{
	return tb_error_set(err, TB_ERR_CORRUPT, "object '%s' is corrupt: chunk %llu %s", r->object_name,
						(unsigned long long) r->index, what);
}

/* After the trailer: the object must end here. Decoding side. */
static int
stream_reader_expect_end(stream_reader *r, tb_error *err)
{
	uint8_t extra;
	ssize_t n = stream_reader_fill(r, &extra, 1, err);

	if (n != 0)
		return n < 0 ? -1 : stream_reader_corrupt(r, err, "there are bytes after the trailer");
	r->stats.chunks = r->index - 1;
	r->stats.chunk_size = r->hdr.chunk_size;
	if (r->stored_sha != NULL)
	{
		crypto_sha256_final(r->stored_sha, r->stats.stored_sha256);
		r->stats.stored_sha256_known = true;
	}
	return 0;
}

int
stream_reader_decode(stream_reader *r, uint8_t *plain, stream_decoded *out, tb_error *err)
{
	uint8_t *rh = r->record;
	uint8_t nonce[CRYPTO_NONCE_LEN];
	uint8_t aad[STREAM_RECORD_AAD_LEN];
	uint8_t *body = r->record + STREAM_RECORD_HEADER_LEN;
	uint8_t flags;
	uint32_t raw_len, stored_len;
	ssize_t n;
	int ok;

	n = stream_reader_fill(r, rh, STREAM_RECORD_HEADER_LEN, err);
	if (n < 0)
		return -1;
	if (n == 0)
		return stream_reader_chunk_error(r, err,
										 r->last_seen ? "is missing: the trailer is gone (truncated object)"
													  : "is missing: the object is truncated");
	if (n != STREAM_RECORD_HEADER_LEN)
		return stream_reader_chunk_error(r, err, "is truncated");
	flags = rh[0];
	raw_len = stream_get_u32(rh + 1);
	stored_len = stream_get_u32(rh + 5);
	if (r->last_seen ? (flags != STREAM_FLAG_TRAILER || raw_len != STREAM_TRAILER_LEN || stored_len != raw_len)
					 : ((flags & ~(STREAM_FLAG_LAST | STREAM_FLAG_RAW)) != 0 || raw_len > r->hdr.chunk_size ||
						stored_len > r->record_cap - STREAM_RECORD_HEADER_LEN - CRYPTO_TAG_LEN ||
						((flags & STREAM_FLAG_RAW) && stored_len != raw_len)))
		return stream_reader_chunk_error(r, err, "has an invalid record header (tampered or out of order)");
	n = stream_reader_fill(r, body, stored_len + CRYPTO_TAG_LEN, err);
	if (n < 0)
		return -1;
	if ((size_t) n != stored_len + CRYPTO_TAG_LEN)
		return stream_reader_chunk_error(r, err, "is truncated");
	stream_record_nonce(r->nonce_prefix, r->index, nonce);
	stream_record_aad(r->header_digest, r->index, rh, aad);
	ok = crypto_gcm_open(r->gcm, nonce, aad, sizeof(aad), body, stored_len, body, body + stored_len, err);
	if (ok < 0)
		return -1;
	if (ok == 0)
		return stream_reader_chunk_error(r, err,
										 "fails authentication (tampered, reordered, dropped, duplicated "
										 "or spliced from another object)");
	memset(out, 0, sizeof(*out));
	if (flags & STREAM_FLAG_TRAILER)
	{
		r->index++;
		memcpy(out->trailer, body, STREAM_TRAILER_LEN);
		out->is_trailer = true;
		return stream_reader_expect_end(r, err);
	}
	if (flags & STREAM_FLAG_RAW)
		memcpy(plain, body, raw_len);
	else
	{
		size_t got = ZSTD_decompressDCtx(r->dctx, plain, r->hdr.chunk_size, body, stored_len);

		if (ZSTD_isError(got) || got != raw_len)
			return stream_reader_chunk_error(r, err, "does not decompress to its recorded length");
	}
	r->index++;
	r->last_seen = (flags & STREAM_FLAG_LAST) != 0;
	out->len = raw_len;
	return 0;
}

/* Takes the next decoded record: hashes its plaintext, or checks the trailer against what was read. */
static int
stream_reader_next(stream_reader *r, tb_error *err)
{
	stream_decoded decoded;
	const uint8_t *plain = r->own_plain;

	if (r->readahead ? stream_readahead_next(r->readahead, &plain, &decoded, err) != 0
					 : stream_reader_decode(r, r->own_plain, &decoded, err) != 0)
		return -1;
	if (decoded.is_trailer)
	{
		crypto_sha256_final(r->plain_sha, r->stats.plain_sha256);
		if (stream_get_u64(decoded.trailer) != r->stats.plain_bytes ||
			memcmp(decoded.trailer + 8, r->stats.plain_sha256, CRYPTO_SHA256_LEN) != 0)
			return tb_error_set(err, TB_ERR_CORRUPT,
								"object '%s' is corrupt: the trailer's length or SHA-256 does not match the data",
								r->object_name);
		r->done = true;
		return 0;
	}
	crypto_sha256_update(r->plain_sha, plain, decoded.len);
	r->stats.plain_bytes += decoded.len;
	r->plain = plain;
	r->plain_len = decoded.len;
	r->plain_pos = 0;
	return 0;
}

ssize_t
stream_reader_read(stream_reader *r, void *buf, size_t len, tb_error *err)
{
	if (r->failed)
		return tb_error_set(err, TB_ERR_CORRUPT, "object '%s' already failed", r->object_name);
	if (r->gcm == NULL)
		return tb_error_set(err, TB_ERR_INTERNAL, "object '%s' read before it was unlocked", r->object_name);
	while (r->plain_pos == r->plain_len)
	{
		if (r->done)
			return 0;
		if (stream_reader_next(r, err) != 0)
		{
			r->failed = true;
			return -1;
		}
	}
	if (len > r->plain_len - r->plain_pos)
		len = r->plain_len - r->plain_pos;
	memcpy(buf, r->plain + r->plain_pos, len);
	r->plain_pos += len;
	return (ssize_t) len;
}

void
stream_reader_stats(const stream_reader *r, stream_stats *stats)
{
	*stats = r->stats;
}

void
stream_reader_free(stream_reader *r)
{
	if (r == NULL)
		return;
	stream_readahead_stop(r->readahead);
	crypto_gcm_free(r->gcm);
	ZSTD_freeDCtx(r->dctx);
	crypto_sha256_free(r->plain_sha);
	crypto_sha256_free(r->stored_sha);
	free(r->record);
	free(r->own_plain);
	free(r->object_name);
	free(r);
}
