/* Manifest (de)serialisation with jansson, and validation of what storage hands back (see manifest.h). */
#include "manifest.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define MANIFEST_FORMAT "tenant-backup-manifest"
#define MANIFEST_HEX "0123456789abcdef"
#define MANIFEST_ID_CHARS "abcdefghijklmnopqrstuvwxyz0123456789-_"
/* YYYY-MM-DDTHHMMSSZ, the time in a backup object's name */
#define MANIFEST_NAME_STAMP_LEN 18

bool
manifest_database_valid(const char *database)
{
	size_t len = strlen(database);

	if (len == 0 || len >= MANIFEST_DATABASE_MAX)
		return false;
	for (const unsigned char *c = (const unsigned char *) database; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return false;
	return true;
}

char *
manifest_to_json(const manifest *m, tb_error *err)
{
	json_t *doc = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:i, s:s, s:s}",
							"format", MANIFEST_FORMAT, "version", 1, "tenant", m->tenant, "engine", m->engine,
							"backup_id", m->backup_id, "object", m->object, "key_id", m->key_id, "started", m->started,
							"finished", m->finished, "plain_bytes", (json_int_t) m->plain_bytes, "stored_bytes",
							(json_int_t) m->stored_bytes, "sha256", m->sha256, "chunks", (json_int_t) m->chunks,
							"chunk_size", (int) m->chunk_size, "compression", "zstd", "cipher", "aes-256-gcm");
	char *text = NULL;

	/* Optional: a manifest without it reads as before. */
	if (doc != NULL && (m->database[0] == '\0' || json_object_set_new(doc, "database", json_string(m->database)) == 0))
		text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	if (text == NULL)
		tb_error_set(err, TB_ERR_NOMEM, "out of memory writing the manifest of '%s'", m->object);
	return text;
}

int
manifest_utc_time(int year, int month, int day, int hour, int minute, int second, time_t *out)
{
	struct tm tm = {.tm_year = year - 1900,
					.tm_mon = month - 1,
					.tm_mday = day,
					.tm_hour = hour,
					.tm_min = minute,
					.tm_sec = second};
	struct tm back;
	time_t t;

	if (year < 1970 || year > 9999)
		return -1;
	t = timegm(&tm);
	/* timegm normalises 31 April to 1 May: a real date comes back as it went in. */
	if (t == (time_t) -1 || gmtime_r(&t, &back) == NULL || back.tm_year != year - 1900 || back.tm_mon != month - 1 ||
		back.tm_mday != day || back.tm_hour != hour || back.tm_min != minute || back.tm_sec != second)
		return -1;
	*out = t;
	return 0;
}

/* Exactly n decimal digits at text, as a number; -1 if not. */
static int
manifest_digits(const char *text, int n)
{
	int value = 0;

	for (int i = 0; i < n; i++)
	{
		if (text[i] < '0' || text[i] > '9')
			return -1;
		value = value * 10 + (text[i] - '0');
	}
	return value;
}

/*
 * A UTC time laid out as layout says: a run of Y, M, D, h, m or s stands for that
 * many digits of the year, month, day, hour, minute or second (in that order), any
 * other character for itself ("YYYY-MM-DDThh:mm:ssZ"); -1 unless text begins exactly
 * so and names a real second.
 */
static int
manifest_parse_stamp(const char *text, const char *layout, time_t *out)
{
	int fields[6], count = 0;
	size_t len = strlen(layout);

	if (strlen(text) < len)
		return -1;
	for (size_t i = 0; i < len;)
	{
		size_t run = 0;

		if (strchr("YMDhms", layout[i]) == NULL)
		{
			if (text[i] != layout[i])
				return -1;
			i++;
			continue;
		}
		while (layout[i + run] == layout[i])
			run++;
		if (count == 6 || (fields[count++] = manifest_digits(text + i, (int) run)) < 0)
			return -1;
		i += run;
	}
	if (count != 6)
		return -1;
	return manifest_utc_time(fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], out);
}

static bool
manifest_is_backup_id(const char *id, size_t len)
{
	return len > 0 && len <= STREAM_BACKUP_ID_MAX && strspn(id, MANIFEST_ID_CHARS) >= len;
}

/* <YYYY-MM-DDTHHMMSSZ>-<id>.tbk into out's time and id. */
static int
manifest_parse_backup_name(const char *name, manifest_object_name *out)
{
	size_t len = strlen(name), id_len;

	if (len <= MANIFEST_NAME_STAMP_LEN + 5 || name[MANIFEST_NAME_STAMP_LEN] != '-' ||
		manifest_parse_stamp(name, "YYYY-MM-DDThhmmssZ", &out->began) != 0)
		return -1;
	id_len = len - MANIFEST_NAME_STAMP_LEN - 1 - 4;
	if (!manifest_is_backup_id(name + MANIFEST_NAME_STAMP_LEN + 1, id_len) || strcmp(name + len - 4, ".tbk") != 0)
		return -1;
	memcpy(out->backup_id, name + MANIFEST_NAME_STAMP_LEN + 1, id_len);
	out->backup_id[id_len] = '\0';
	return 0;
}

/* <timeline>/<WAL file>.tbk: the file's id as names_wal_object derives it. */
static int
manifest_parse_wal_name(const char *timeline, const char *name, manifest_object_name *out)
{
	char file[NAMES_WAL_OBJECT_MAX], object[NAMES_WAL_OBJECT_MAX];
	size_t len = strlen(name);
	tb_error ignored = {0};

	if (len < 5 || len - 4 >= sizeof(file) || strcmp(name + len - 4, ".tbk") != 0)
		return -1;
	memcpy(file, name, len - 4);
	file[len - 4] = '\0';
	if (strlen(timeline) != 8 || strncmp(timeline, file, 8) != 0 ||
		names_wal_object(file, object, sizeof(object), out->backup_id, sizeof(out->backup_id), &ignored) != 0)
		return -1;
	out->began = 0;
	return 0;
}

int
manifest_object_parse(const char *object, manifest_object_name *out, tb_error *err)
{
	char copy[MANIFEST_OBJECT_MAX];
	char *parts[5];
	int count = 0;
	tb_error ignored = {0};
	size_t len = strlen(object);

	memset(out, 0, sizeof(*out));
	if (len >= sizeof(copy) ||
		strspn(object, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/") != len)
		return tb_error_set(err, TB_ERR_INVALID,
							"not a backup object key: too long or characters out of [A-Za-z0-9._/-]");
	memcpy(copy, object, len + 1);
	for (char *p = copy, *slash; count < 5; p = slash + 1)
	{
		parts[count++] = p;
		if ((slash = strchr(p, '/')) == NULL)
			break;
		*slash = '\0';
		if (count == 5)
			return tb_error_set(err, TB_ERR_INVALID, "not a backup object key: too many parts");
	}
	if (count < 3 || names_check_tenant(parts[0], &ignored) != 0 || names_check_engine(parts[1], &ignored) != 0)
		return tb_error_set(err, TB_ERR_INVALID, "not a backup object key: not below <tenant>/<engine>/");
	strcpy(out->tenant, parts[0]);
	strcpy(out->engine, parts[1]);
	if (count == 3 && manifest_parse_backup_name(parts[2], out) == 0)
		out->kind = MANIFEST_OBJECT_BACKUP;
	else if (count == 4 && strcmp(parts[1], "postgres") == 0 && strcmp(parts[2], "base") == 0 &&
			 manifest_parse_backup_name(parts[3], out) == 0)
		out->kind = MANIFEST_OBJECT_BASE;
	else if (count == 5 && strcmp(parts[1], "postgres") == 0 && strcmp(parts[2], "wal") == 0 &&
			 manifest_parse_wal_name(parts[3], parts[4], out) == 0)
		out->kind = MANIFEST_OBJECT_WAL;
	else
		return tb_error_set(err, TB_ERR_INVALID,
							"not a backup object key: the name is not <time>-<id>.tbk, base/<time>-<id>.tbk or "
							"wal/<timeline>/<WAL file>.tbk");
	return 0;
}

/* The text fields of m from values (in the order below); the name of one too long, or NULL. */
static const char *
manifest_copy_texts(manifest *m, const char *const values[8])
{
	const struct
	{
		const char *name;
		char *dst;
		size_t size;
	} fields[8] = {
		{"tenant", m->tenant, sizeof(m->tenant)},          {"engine", m->engine, sizeof(m->engine)},
		{"backup_id", m->backup_id, sizeof(m->backup_id)}, {"object", m->object, sizeof(m->object)},
		{"key_id", m->key_id, sizeof(m->key_id)},          {"started", m->started, sizeof(m->started)},
		{"finished", m->finished, sizeof(m->finished)},    {"sha256", m->sha256, sizeof(m->sha256)},
	};

	for (int i = 0; i < 8; i++)
	{
		if (strlen(values[i]) >= fields[i].size)
			return fields[i].name;
		strcpy(fields[i].dst, values[i]);
	}
	return NULL;
}

static bool
manifest_is_hex(const char *text, size_t len)
{
	return strlen(text) == len && strspn(text, MANIFEST_HEX) == len;
}

/* The first field of m that is not as it must be, or NULL; manifest_key is where m was read from. */
static const char *
manifest_invalid_field(const manifest *m, const char *manifest_key)
{
	manifest_object_name name;
	tb_error ignored = {0};
	size_t key_len = strlen(manifest_key), object_len = strlen(m->object);
	time_t started, finished;

	if (names_check_tenant(m->tenant, &ignored) != 0)
		return "tenant";
	if (names_check_engine(m->engine, &ignored) != 0)
		return "engine";
	if (!manifest_is_backup_id(m->backup_id, strlen(m->backup_id)))
		return "backup_id";
	/* Its own object: <...>.json describes <...>.tbk and nothing else. */
	if (key_len < 6 || strcmp(manifest_key + key_len - 5, ".json") != 0 || object_len != key_len - 1 ||
		strncmp(m->object, manifest_key, key_len - 5) != 0 || strcmp(m->object + object_len - 4, ".tbk") != 0)
		return "object (not the manifest's own sibling object)";
	if (manifest_object_parse(m->object, &name, &ignored) != 0)
		return "object (not a backup object key)";
	if (strcmp(name.tenant, m->tenant) != 0 || strcmp(name.engine, m->engine) != 0)
		return "object (not below the manifest's tenant and engine)";
	if (strcmp(name.backup_id, m->backup_id) != 0)
		return "backup_id (not the one in the object's name)";
	if (!manifest_is_hex(m->key_id, KEYS_ID_LEN))
		return "key_id";
	if (strlen(m->started) != 20 || manifest_parse_stamp(m->started, "YYYY-MM-DDThh:mm:ssZ", &started) != 0)
		return "started";
	if (strlen(m->finished) != 20 || manifest_parse_stamp(m->finished, "YYYY-MM-DDThh:mm:ssZ", &finished) != 0 ||
		finished < started)
		return "finished";
	if (m->chunk_size < STREAM_CHUNK_MIN || m->chunk_size > STREAM_CHUNK_MAX)
		return "chunk_size";
	if (!manifest_is_hex(m->sha256, 2 * CRYPTO_SHA256_LEN))
		return "sha256";
	if (m->database[0] != '\0' && !manifest_database_valid(m->database))
		return "database";
	return NULL;
}

int
manifest_from_json(const char *json, const char *manifest_key, manifest *m, tb_error *err)
{
	const char *format, *tenant, *engine, *backup_id, *object, *key_id, *started, *finished, *sha256;
	json_int_t plain, stored, chunks, chunk_size;
	int version;
	json_error_t jerr;
	json_t *doc = json_loads(json, 0, &jerr);
	json_t *database = NULL;
	const char *invalid = NULL;

	memset(m, 0, sizeof(*m));
	/* jerr.text quotes the input (a manifest may be a link to a secret): only where it went wrong. */
	if (doc == NULL)
		return tb_error_set(err, TB_ERR_CORRUPT, "manifest '%s' is not valid JSON (line %d, column %d)", manifest_key,
							jerr.line, jerr.column);
	if (json_unpack(doc, "{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I}", "format", &format,
					"version", &version, "tenant", &tenant, "engine", &engine, "backup_id", &backup_id, "object",
					&object, "key_id", &key_id, "started", &started, "finished", &finished, "plain_bytes", &plain,
					"stored_bytes", &stored, "sha256", &sha256, "chunks", &chunks, "chunk_size", &chunk_size) != 0)
		invalid = "a field is missing or of the wrong type";
	else if (strcmp(format, MANIFEST_FORMAT) != 0 || version != 1)
		invalid = "format or version";
	else if (plain < 0 || stored < 0 || chunks < 0 || chunk_size < 0 || chunk_size > UINT32_MAX)
		invalid = "a size is negative or too large";
	else if ((database = json_object_get(doc, "database")) != NULL &&
			 (!json_is_string(database) || strlen(json_string_value(database)) != json_string_length(database) ||
			  !manifest_database_valid(json_string_value(database))))
		invalid = "database";
	else
		invalid = manifest_copy_texts(
			m, (const char *[]){tenant, engine, backup_id, object, key_id, started, finished, sha256});
	if (invalid == NULL && database != NULL)
		strcpy(m->database, json_string_value(database));
	if (invalid == NULL)
	{
		m->plain_bytes = (uint64_t) plain;
		m->stored_bytes = (uint64_t) stored;
		m->chunks = (uint64_t) chunks;
		m->chunk_size = (uint32_t) chunk_size;
		invalid = manifest_invalid_field(m, manifest_key);
	}
	json_decref(doc);
	if (invalid != NULL)
	{
		memset(m, 0, sizeof(*m));
		return tb_error_set(err, TB_ERR_CORRUPT, "manifest '%s' is not a valid tenant-backup manifest: %s",
							manifest_key, invalid);
	}
	return 0;
}
