/*
 * The backup object format: an authenticated header, zstd-compressed chunks sealed
 * with AES-256-GCM under a per-object data key, and a sealed trailer with the
 * plaintext length and SHA-256. Both directions stream with memory bounded by the
 * chunk size.
 *
 *   header  "TBAKOBJ" 0x01, tenant, engine, backup id, key id (each u8 length + bytes),
 *           compression u8, cipher u8, chunk size u32, nonce prefix [4],
 *           data key nonce [12], data key wrapped by the tenant key [32+16],
 *           header tag [16] (GCM over all preceding bytes, under the data key)
 *   record  flags u8, raw length u32, stored length u32, sealed bytes, tag [16]
 *           nonce = prefix || u64 record index; AAD = SHA-256(header) || index ||
 *           the record's 9 header bytes. Data records come first, the last one
 *           flagged LAST; then exactly one TRAILER record (u64 length, SHA-256); then EOF.
 *
 * All integers are big-endian.
 */
#ifndef TB_STREAM_H
#define TB_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "crypto.h"
#include "error.h"
#include "keys.h"

#define STREAM_CHUNK_DEFAULT (1024 * 1024)
#define STREAM_CHUNK_MIN 1024
#define STREAM_CHUNK_MAX (16 * 1024 * 1024)
/* zstd level of every backup unless configured: the extension, the agents and put agree. */
#define STREAM_LEVEL_DEFAULT 1
#define STREAM_COMPRESSION_ZSTD 1
#define STREAM_BACKUP_ID_MAX 64

typedef struct stream_header
{
	char tenant[64];
	char engine[16];
	char backup_id[STREAM_BACKUP_ID_MAX + 1];
	char key_id[KEYS_ID_LEN + 1];
	uint32_t chunk_size;
	uint8_t compression;
} stream_header;

typedef struct stream_stats
{
	uint64_t plain_bytes;
	uint8_t plain_sha256[CRYPTO_SHA256_LEN];
	uint64_t stored_bytes;
	uint8_t stored_sha256[CRYPTO_SHA256_LEN]; /* of the object as stored: checkable without keys */
	bool stored_sha256_known;                 /* readers compute it only when asked */
	uint64_t chunks;
	uint32_t chunk_size;
} stream_stats;

typedef struct stream_writer_options
{
	uint32_t chunk_size; /* 0: STREAM_CHUNK_DEFAULT */
	int level;           /* zstd level; 0: STREAM_LEVEL_DEFAULT */
	int workers;         /* threads that compress and seal chunks; 0 or 1: inline */
} stream_writer_options;

/* Where sealed bytes go; returns 0 or -1 with err set. */
typedef int (*stream_sink_fn)(void *ctx, const void *buf, size_t len, tb_error *err);

/* Where stored bytes come from; returns bytes read, 0 at the end, -1 with err set. */
typedef ssize_t (*stream_source_fn)(void *ctx, void *buf, size_t len, tb_error *err);

typedef struct stream_writer stream_writer;
typedef struct stream_reader stream_reader;

/*
 * Starts an object for hdr's tenant, engine and backup id, sealed under a fresh data
 * key wrapped by tenant_key; writes the header to the sink at once. object_name is
 * used in error messages only.
 */
stream_writer *stream_writer_new(const stream_header *hdr, const tenant_key *key, const stream_writer_options *options,
								 stream_sink_fn sink, void *sink_ctx, const char *object_name, tb_error *err);
int stream_writer_write(stream_writer *w, const void *buf, size_t len, tb_error *err);

/* Seals the last chunk and the trailer. After an error the object is unusable. */
int stream_writer_finish(stream_writer *w, stream_stats *stats, tb_error *err);
void stream_writer_free(stream_writer *w);

typedef struct stream_reader_options
{
	bool hash_stored; /* also SHA-256 the object as stored (to compare with a manifest) */
	bool readahead;   /* a thread authenticates and decompresses the next chunks meanwhile */
} stream_reader_options;

/*
 * Reads and checks the shape of the header; nothing is authenticated until unlock.
 * options may be NULL: no stored hash, no thread.
 */
stream_reader *stream_reader_open(stream_source_fn source, void *source_ctx, const char *object_name,
								  const stream_reader_options *options, tb_error *err);
const stream_header *stream_reader_header(const stream_reader *r);

/* Unwraps the data key and authenticates the header. */
int stream_reader_unlock(stream_reader *r, const tenant_key *key, tb_error *err);

/*
 * Plaintext of authenticated chunks. Returns 0 only once the trailer has been
 * authenticated, the length and SHA-256 matched and the object ended; -1 on error.
 * Callers must not trust what they have read until that 0.
 */
ssize_t stream_reader_read(stream_reader *r, void *buf, size_t len, tb_error *err);

/* Valid after stream_reader_read returned 0. */
void stream_reader_stats(const stream_reader *r, stream_stats *stats);
void stream_reader_free(stream_reader *r);

#endif
