/*
 * Pieces of the stream format shared by the writer (stream.c) and its worker pool
 * (stream_pool.c). Not part of the library's interface.
 */
#ifndef TB_STREAM_INTERNAL_H
#define TB_STREAM_INTERNAL_H

#include <pthread.h>
#include <zstd.h>

#include "stream.h"

#define STREAM_NONCE_PREFIX_LEN 4
#define STREAM_RECORD_HEADER_LEN 9
#define STREAM_RECORD_AAD_LEN (CRYPTO_SHA256_LEN + 8 + STREAM_RECORD_HEADER_LEN)
#define STREAM_TRAILER_LEN (8 + CRYPTO_SHA256_LEN)
#define STREAM_FLAG_LAST 0x01
#define STREAM_FLAG_RAW 0x02
#define STREAM_FLAG_TRAILER 0x80
#define STREAM_HEADER_TAG_INDEX UINT64_MAX

/* What sealing a chunk needs; one per thread, since contexts are not shared. */
typedef struct stream_sealer
{
	crypto_gcm *gcm;
	ZSTD_CCtx *cctx;
	uint8_t nonce_prefix[STREAM_NONCE_PREFIX_LEN];
	uint8_t header_digest[CRYPTO_SHA256_LEN];
	int level;
} stream_sealer;

typedef struct stream_chunk
{
	uint64_t index;
	uint8_t flags;
	uint8_t *plain;
	size_t plain_len;
	uint8_t *record;
	size_t record_cap;
	size_t record_len;
} stream_chunk;

typedef struct stream_pool stream_pool;

void stream_put_u32(uint8_t *p, uint32_t v);
void stream_put_u64(uint8_t *p, uint64_t v);
void stream_record_nonce(const uint8_t prefix[STREAM_NONCE_PREFIX_LEN], uint64_t index,
						 uint8_t nonce[CRYPTO_NONCE_LEN]);
void stream_record_aad(const uint8_t digest[CRYPTO_SHA256_LEN], uint64_t index, const uint8_t *record_header,
					   uint8_t aad[STREAM_RECORD_AAD_LEN]);
size_t stream_record_capacity(uint32_t chunk_size);

int stream_sealer_init(stream_sealer *s, const uint8_t data_key[CRYPTO_KEY_LEN],
					   const uint8_t prefix[STREAM_NONCE_PREFIX_LEN], const uint8_t digest[CRYPTO_SHA256_LEN],
					   int level, tb_error *err);
void stream_sealer_free(stream_sealer *s);

/* Compresses (or stores raw) c->plain and seals it into c->record. */
int stream_seal_chunk(stream_sealer *s, stream_chunk *c, tb_error *err);

int stream_chunk_alloc(stream_chunk *c, uint32_t chunk_size);
void stream_chunk_release(stream_chunk *c);

int stream_writer_emit_chunk(stream_writer *w, stream_chunk *c, tb_error *err);

/*
 * Starts one of the library's threads with every signal blocked, so that the host's
 * signal handlers (a PostgreSQL backend's, say) only ever run on its own threads.
 */
int stream_thread_start(pthread_t *thread, void *(*run)(void *), void *arg);

/* One record as decoded by stream_reader_decode. */
typedef struct stream_decoded
{
	size_t len;      /* plaintext bytes of a data chunk */
	bool is_trailer; /* the trailer was authenticated and the object ended after it */
	uint8_t trailer[STREAM_TRAILER_LEN];
} stream_decoded;

/*
 * Reads, authenticates and decompresses the next record into plain (chunk size
 * bytes). Owns the reading side of the reader: the source, record buffer, cipher,
 * decompressor, record index and stored-byte statistics; so in read-ahead mode it
 * runs only in the read-ahead thread.
 */
int stream_reader_decode(stream_reader *r, uint8_t *plain, stream_decoded *out, tb_error *err);
uint32_t stream_reader_chunk_size(const stream_reader *r);

/* A thread that decodes records ahead into a small ring of plaintext buffers. */
typedef struct stream_readahead stream_readahead;

stream_readahead *stream_readahead_start(stream_reader *r, tb_error *err);

/*
 * The next decoded record, in order; its buffer stays valid until the next call.
 * Returns -1 with the decoder's error if decoding failed.
 */
int stream_readahead_next(stream_readahead *ra, const uint8_t **plain, stream_decoded *out, tb_error *err);
void stream_readahead_stop(stream_readahead *ra);

/*
 * A fixed ring of chunks sealed by worker threads and emitted to the writer's sink in
 * index order by the calling thread. Memory: 2 * workers + 1 chunks.
 */
stream_pool *stream_pool_new(stream_writer *w, const uint8_t data_key[CRYPTO_KEY_LEN],
							 const uint8_t prefix[STREAM_NONCE_PREFIX_LEN], const uint8_t digest[CRYPTO_SHA256_LEN],
							 int level, int workers, uint32_t chunk_size, tb_error *err);
stream_chunk *stream_pool_next_free(stream_pool *p, tb_error *err);
int stream_pool_submit(stream_pool *p, stream_chunk *c, tb_error *err);
int stream_pool_drain(stream_pool *p, tb_error *err);
stream_sealer *stream_pool_sealer(stream_pool *p);
void stream_pool_free(stream_pool *p);

#endif
