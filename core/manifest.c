/* Manifest (de)serialisation with jansson (see manifest.h). */
#include "manifest.h"

#include <jansson.h>
#include <string.h>

#include "names.h"

#define MANIFEST_FORMAT "tenant-backup-manifest"

char *
manifest_to_json(const manifest *m, tb_error *err)
{
	json_t *doc = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:i, s:s, s:s}",
							"format", MANIFEST_FORMAT, "version", 1, "tenant", m->tenant, "engine", m->engine,
							"backup_id", m->backup_id, "object", m->object, "key_id", m->key_id, "started", m->started,
							"finished", m->finished, "plain_bytes", (json_int_t) m->plain_bytes, "stored_bytes",
							(json_int_t) m->stored_bytes, "sha256", m->sha256, "chunks", (json_int_t) m->chunks,
							"chunk_size", (int) m->chunk_size, "compression", "zstd", "cipher", "aes-256-gcm");
	char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;

	json_decref(doc);
	if (text == NULL)
		tb_error_set(err, TB_ERR_NOMEM, "out of memory writing the manifest of '%s'", m->object);
	return text;
}

static int
manifest_copy(char *dst, size_t size, const char *src)
{
	if (strlen(src) >= size)
		return -1;
	strcpy(dst, src);
	return 0;
}

int
manifest_from_json(const char *json, const char *where, manifest *m, tb_error *err)
{
	const char *format, *tenant, *engine, *backup_id, *object, *key_id, *started, *finished, *sha256;
	json_int_t plain, stored, chunks;
	int version, chunk_size;
	json_error_t jerr;
	json_t *doc = json_loads(json, 0, &jerr);
	tb_error name_err = {0};

	memset(m, 0, sizeof(*m));
	if (doc == NULL)
		return tb_error_set(err, TB_ERR_CORRUPT, "manifest '%s' is not valid JSON: %s (line %d)", where, jerr.text,
							jerr.line);
	if (json_unpack(doc, "{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:i}", "format", &format,
					"version", &version, "tenant", &tenant, "engine", &engine, "backup_id", &backup_id, "object",
					&object, "key_id", &key_id, "started", &started, "finished", &finished, "plain_bytes", &plain,
					"stored_bytes", &stored, "sha256", &sha256, "chunks", &chunks, "chunk_size", &chunk_size) != 0 ||
		strcmp(format, MANIFEST_FORMAT) != 0 || version != 1 || plain < 0 || stored < 0 || chunks < 0 ||
		manifest_copy(m->tenant, sizeof(m->tenant), tenant) != 0 ||
		manifest_copy(m->engine, sizeof(m->engine), engine) != 0 ||
		manifest_copy(m->backup_id, sizeof(m->backup_id), backup_id) != 0 ||
		manifest_copy(m->object, sizeof(m->object), object) != 0 ||
		manifest_copy(m->key_id, sizeof(m->key_id), key_id) != 0 ||
		manifest_copy(m->started, sizeof(m->started), started) != 0 ||
		manifest_copy(m->finished, sizeof(m->finished), finished) != 0 ||
		manifest_copy(m->sha256, sizeof(m->sha256), sha256) != 0 || names_check_tenant(m->tenant, &name_err) != 0 ||
		names_check_engine(m->engine, &name_err) != 0)
	{
		json_decref(doc);
		return tb_error_set(err, TB_ERR_CORRUPT, "manifest '%s' is not a valid tenant-backup manifest", where);
	}
	m->plain_bytes = (uint64_t) plain;
	m->stored_bytes = (uint64_t) stored;
	m->chunks = (uint64_t) chunks;
	m->chunk_size = (uint32_t) chunk_size;
	json_decref(doc);
	return 0;
}
