/*
 * The JSON manifest stored beside each backup object: enough to list and select
 * backups without the catalog, and nothing secret.
 */
#ifndef TB_MANIFEST_H
#define TB_MANIFEST_H

#include <stdint.h>

#include "error.h"
#include "keys.h"
#include "stream.h"

#define MANIFEST_OBJECT_MAX 512
#define MANIFEST_MAX_BYTES 65536

typedef struct manifest
{
	char tenant[64];
	char engine[16];
	char backup_id[STREAM_BACKUP_ID_MAX + 1];
	char object[MANIFEST_OBJECT_MAX];
	char key_id[KEYS_ID_LEN + 1];
	char started[32]; /* ISO 8601 UTC, e.g. 2026-11-26T06:00:00Z */
	char finished[32];
	uint64_t plain_bytes;
	uint64_t stored_bytes;
	uint64_t chunks;
	uint32_t chunk_size;
	char sha256[2 * CRYPTO_SHA256_LEN + 1]; /* of the stored object, checkable without keys */
} manifest;

/* Caller frees the result. */
char *manifest_to_json(const manifest *m, tb_error *err);
int manifest_from_json(const char *json, const char *where, manifest *m, tb_error *err);

#endif
