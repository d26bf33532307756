/*
 * The JSON manifest stored beside each backup object: enough to list and select
 * backups without the catalog, and nothing secret. Storage is untrusted: a manifest
 * is a hint, checked field by field on parse and against the object's authenticated
 * header when the object is read.
 */
#ifndef TB_MANIFEST_H
#define TB_MANIFEST_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "error.h"
#include "keys.h"
#include "names.h"
#include "stream.h"

#define MANIFEST_OBJECT_MAX 512
#define MANIFEST_MAX_BYTES 65536
#define MANIFEST_DATABASE_MAX 256

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
	/*
	 * Which of the tenant's databases of the engine the backup is of, by name (a
	 * PostgreSQL or MySQL database, a MongoDB database, a Redis database number); ""
	 * when the manifest does not say (older manifests, and objects put by hand).
	 */
	char database[MANIFEST_DATABASE_MAX];
} manifest;

/* Whether database can be a manifest's database: 1 to MANIFEST_DATABASE_MAX - 1 bytes, no control characters. */
bool manifest_database_valid(const char *database);

/* Caller frees the result. */
char *manifest_to_json(const manifest *m, tb_error *err);

/*
 * Parses the manifest read from storage key manifest_key (<...>.json) and validates
 * every field: format and version; tenant and engine names; the object is the
 * manifest's own sibling (<...>.tbk), below that tenant and engine, and its name
 * carries that backup id (manifest_object_parse); key id and sha256 in hex; times in
 * the exact format; sizes non-negative integers; the database, when there is one, 1 to
 * MANIFEST_DATABASE_MAX - 1 bytes without control characters. Error messages name the manifest and
 * the field, never the text read.
 */
int manifest_from_json(const char *json, const char *manifest_key, manifest *m, tb_error *err);

typedef enum manifest_object_kind
{
	MANIFEST_OBJECT_BACKUP, /* <tenant>/<engine>/<time>-<id>.tbk */
	MANIFEST_OBJECT_BASE,   /* <tenant>/postgres/base/<time>-<id>.tbk: a dedicated tenant's base backup */
	MANIFEST_OBJECT_WAL,    /* <tenant>/postgres/wal/<timeline>/<WAL file>.tbk */
} manifest_object_kind;

/* What a backup object's key says about it: hints until its authenticated header agrees. */
typedef struct manifest_object_name
{
	char tenant[NAMES_TENANT_MAX + 1];
	char engine[16];
	manifest_object_kind kind;
	char backup_id[STREAM_BACKUP_ID_MAX + 1]; /* the id its header must carry */
	time_t began;                             /* the time in the name (when the backup began); WAL: 0 */
} manifest_object_name;

/* Parses a backup object key of one of the three forms above; messages never quote it. */
int manifest_object_parse(const char *object, manifest_object_name *out, tb_error *err);

/* The UTC time of those calendar fields in *out; -1 unless they name a real second. */
int manifest_utc_time(int year, int month, int day, int hour, int minute, int second, time_t *out);

#endif
