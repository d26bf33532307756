/*
 * A push parser of pg_dump's custom archive format (version 1.14, PostgreSQL 15's,
 * written with --compress=0): the header and table of contents as it passes by in
 * pieces of any size, and the rows of every TABLE DATA entry counted from its COPY
 * text. Data blocks are never buffered; a single string is capped.
 */
#include "tenant_backup.h"

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "pg_engine.h"

/* What pg_backup_archiver.h calls K_VERS_1_14, archCustom, BLK_DATA, BLK_BLOBS. */
#define TB_ARCHIVE_VMAJ 1
#define TB_ARCHIVE_VMIN 14
#define TB_ARCHIVE_FORMAT_CUSTOM 1
#define TB_ARCHIVE_BLK_DATA 1
#define TB_ARCHIVE_BLK_BLOBS 3
#define TB_ARCHIVE_FIXED_HEADER 11 /* "PGDMP", vmaj, vmin, vrev, intSize, offSize, format */
/* How pg_dump 15 ends a table's COPY text: the end-of-data marker and two empty lines. */
#define TB_ARCHIVE_COPY_END "\\.\n\n\n"
#define TB_ARCHIVE_COPY_END_LEN 5
#define TB_ARCHIVE_COPY_END_NEWLINES 3

/* Where the parser is: the field it reads next. */
typedef enum tb_archive_step
{
	TB_AR_FIXED,
	TB_AR_COMPRESSION,
	TB_AR_TIMESTAMP, /* 7 ints */
	TB_AR_DBNAME,
	TB_AR_SERVER_VERSION,
	TB_AR_DUMP_VERSION,
	TB_AR_TOC_COUNT,
	TB_AR_DUMP_ID,
	TB_AR_HAD_DUMPER,
	TB_AR_TABLEOID,
	TB_AR_OID,
	TB_AR_TAG,
	TB_AR_DESC,
	TB_AR_SECTION,
	TB_AR_DEFN,
	TB_AR_DROP_STMT,
	TB_AR_COPY_STMT,
	TB_AR_NAMESPACE,
	TB_AR_TABLESPACE,
	TB_AR_TABLEAM,
	TB_AR_OWNER,
	TB_AR_WITH_OIDS,
	TB_AR_DEP,    /* strings until a NULL one */
	TB_AR_OFFSET, /* flag byte + offSize bytes */
	TB_AR_BLOCK_TYPE,
	TB_AR_BLOCK_ID,
	TB_AR_BLOB_OID,
	TB_AR_CHUNK_LEN,
	TB_AR_CHUNK,
	TB_AR_TOC_END /* header-only: the TOC is read, the rest is ignored */
} tb_archive_step;

void
tb_archive_init(tb_archive *a, bool toc_only)
{
	memset(a, 0, sizeof(*a));
	a->toc_only = toc_only;
	a->step = TB_AR_FIXED;
	a->need = TB_ARCHIVE_FIXED_HEADER;
}

static bool
tb_archive_fail(tb_archive *a, const char *what)
{
	if (a->error == NULL)
		a->error = psprintf("pg_dump's archive is malformed: %s (at byte " UINT64_FORMAT ")", what, a->offset);
	return false;
}

/*
 * The statements of these entries are run by a restore (pg_dump's own CREATE
 * EXTENSION, GRANT, REVOKE, COMMENT ON EXTENSION; the database's own CREATE DATABASE
 * and properties, retargeted by pg_database_props.c); no other entry's is kept.
 */
static bool
tb_archive_defn_wanted(const char *desc)
{
	return strcmp(desc, "EXTENSION") == 0 || strcmp(desc, "ACL") == 0 || strcmp(desc, "DEFAULT ACL") == 0 ||
		   strcmp(desc, "COMMENT") == 0 || strcmp(desc, "DATABASE") == 0 || strcmp(desc, "DATABASE PROPERTIES") == 0;
}

/*
 * Whether a string field is kept: the names of an entry always; for a restore's
 * header pass also its owner, drop statement and the statements it runs.
 */
static bool
tb_archive_keeps(tb_archive *a)
{
	switch (a->step)
	{
		case TB_AR_TAG:
		case TB_AR_DESC:
		case TB_AR_NAMESPACE:
			return true;
		case TB_AR_DROP_STMT:
		case TB_AR_OWNER:
			return a->toc_only;
		case TB_AR_DEFN:
			return a->toc_only && tb_archive_defn_wanted(a->entries[a->nentries - 1].desc);
		default:
			return false;
	}
}

static bool tb_archive_step_done(tb_archive *a, int64 value, char *str);

/* Decodes the int gathered in a->field: sign byte, then intSize little-endian bytes. */
static bool
tb_archive_int(tb_archive *a, int64 *out)
{
	uint64 v = 0;

	for (int i = a->int_size; i >= 1; i--)
		v = (v << 8) | a->field[i];
	if (v > (uint64) PG_INT64_MAX)
		return tb_archive_fail(a, "an integer out of range");
	*out = a->field[0] ? -(int64) v : (int64) v;
	return true;
}

/* Steps whose field is a string (an int length, -1 for NULL, then its bytes). */
static bool
tb_archive_is_string(tb_archive_step step)
{
	switch (step)
	{
		case TB_AR_DBNAME:
		case TB_AR_SERVER_VERSION:
		case TB_AR_DUMP_VERSION:
		case TB_AR_TABLEOID:
		case TB_AR_OID:
		case TB_AR_TAG:
		case TB_AR_DESC:
		case TB_AR_DEFN:
		case TB_AR_DROP_STMT:
		case TB_AR_COPY_STMT:
		case TB_AR_NAMESPACE:
		case TB_AR_TABLESPACE:
		case TB_AR_TABLEAM:
		case TB_AR_OWNER:
		case TB_AR_WITH_OIDS:
		case TB_AR_DEP:
			return true;
		default:
			return false;
	}
}

/* Sets up the reading of step's field. */
static void
tb_archive_expect(tb_archive *a, tb_archive_step step)
{
	a->step = step;
	a->have = 0;
	a->in_string = false;
	if (step == TB_AR_BLOCK_TYPE)
		a->need = 1;
	else if (step == TB_AR_OFFSET)
		a->need = 1 + a->off_size;
	else
		a->need = 1 + a->int_size; /* an int, or a string's length */
}

static bool
tb_archive_fixed_header(tb_archive *a)
{
	const unsigned char *h = a->field;

	if (memcmp(h, "PGDMP", 5) != 0)
		return tb_archive_fail(a, "it does not start with PGDMP");
	if (h[5] != TB_ARCHIVE_VMAJ || h[6] != TB_ARCHIVE_VMIN)
	{
		a->error = psprintf("pg_dump wrote archive version %d.%d; only %d.%d (PostgreSQL 15's pg_dump) is understood:"
							" set tenant_backup.bin_dir to PostgreSQL 15's binaries",
							h[5], h[6], TB_ARCHIVE_VMAJ, TB_ARCHIVE_VMIN);
		return false;
	}
	if (h[8] < 4 || h[8] > 8 || h[9] < 4 || h[9] > 8)
		return tb_archive_fail(a, "its integer or offset size is not 4 to 8 bytes");
	if (h[10] != TB_ARCHIVE_FORMAT_CUSTOM)
		return tb_archive_fail(a, "it is not in the custom format");
	a->int_size = h[8];
	a->off_size = h[9];
	tb_archive_expect(a, TB_AR_COMPRESSION);
	return true;
}

/* The entry a data block belongs to, searched from the last one found: blocks follow the TOC's order. */
static tb_archive_entry *
tb_archive_entry_of(tb_archive *a, int64 dump_id)
{
	for (int n = 0; n < a->nentries; n++)
	{
		int i = (a->cursor + n) % a->nentries;

		if (a->entries[i].dump_id == dump_id)
		{
			a->cursor = i;
			return &a->entries[i];
		}
	}
	return NULL;
}

/* A field is complete: value (ints) or str (kept strings, NULL otherwise) moves the parser on. */
static bool
tb_archive_step_done(tb_archive *a, int64 value, char *str)
{
	tb_archive_entry *e =
		a->nentries > 0 && a->step >= TB_AR_DUMP_ID && a->step <= TB_AR_OFFSET ? &a->entries[a->nentries - 1] : NULL;

	switch (a->step)
	{
		case TB_AR_COMPRESSION:
			if (value != 0)
				return tb_archive_fail(a, "its data is compressed (pg_dump must run with --compress=0)");
			a->timestamp_left = 7;
			tb_archive_expect(a, TB_AR_TIMESTAMP);
			return true;
		case TB_AR_TIMESTAMP:
			tb_archive_expect(a, --a->timestamp_left > 0 ? TB_AR_TIMESTAMP : TB_AR_DBNAME);
			return true;
		case TB_AR_TOC_COUNT:
			if (value < 0 || value > PG_INT32_MAX)
				return tb_archive_fail(a, "its TOC count is out of range");
			a->toc_left = value;
			tb_archive_expect(a, value > 0 ? TB_AR_DUMP_ID : TB_AR_BLOCK_TYPE);
			a->toc_done = value == 0;
			return true;
		case TB_AR_DUMP_ID:
			if (value <= 0)
				return tb_archive_fail(a, "a TOC entry has no dump id");
			/* Grown as entries come, not sized by the count the archive claims. */
			if (a->nentries == a->allocated)
			{
				a->allocated = Max(64, 2 * a->allocated);
				a->entries = a->entries ? repalloc(a->entries, sizeof(tb_archive_entry) * a->allocated)
										: palloc(sizeof(tb_archive_entry) * a->allocated);
			}
			e = &a->entries[a->nentries++];
			memset(e, 0, sizeof(*e));
			e->dump_id = value;
			break;
		case TB_AR_SECTION:
		case TB_AR_HAD_DUMPER:
			break;
		case TB_AR_TAG:
			e->tag = str;
			break;
		case TB_AR_DESC:
			if (str == NULL)
				return tb_archive_fail(a, "a TOC entry has no description");
			e->desc = str;
			e->table_data = strcmp(str, "TABLE DATA") == 0;
			break;
		case TB_AR_DEFN:
			e->defn = str;
			break;
		case TB_AR_DROP_STMT:
			e->drop_stmt = str;
			break;
		case TB_AR_NAMESPACE:
			e->namespace = str;
			break;
		case TB_AR_OWNER:
			e->owner = str;
			break;
		case TB_AR_DEP:
			/* A NULL string ends the list of dependencies; each one is skipped. */
			tb_archive_expect(a, a->null_string ? TB_AR_OFFSET : TB_AR_DEP);
			return true;
		case TB_AR_OFFSET:
			if (a->field[0] < 1 || a->field[0] > 3)
				return tb_archive_fail(a, "a TOC entry's data offset flag is not 1, 2 or 3");
			if (e->table_data && (e->namespace == NULL || e->tag == NULL))
				return tb_archive_fail(a, "a TABLE DATA entry names no schema or table");
			if (--a->toc_left > 0)
			{
				tb_archive_expect(a, TB_AR_DUMP_ID);
				return true;
			}
			a->toc_done = true;
			tb_archive_expect(a, a->toc_only ? TB_AR_TOC_END : TB_AR_BLOCK_TYPE);
			return true;
		case TB_AR_BLOCK_TYPE:
			if (a->field[0] != TB_ARCHIVE_BLK_DATA && a->field[0] != TB_ARCHIVE_BLK_BLOBS)
				return tb_archive_fail(a, "a data block of an unknown type");
			a->blobs = a->field[0] == TB_ARCHIVE_BLK_BLOBS;
			tb_archive_expect(a, TB_AR_BLOCK_ID);
			return true;
		case TB_AR_BLOCK_ID:
			if ((a->block = tb_archive_entry_of(a, value)) == NULL)
				return tb_archive_fail(a, "a data block of no TOC entry");
			if (a->blobs != (strcmp(a->block->desc, "BLOBS") == 0))
				return tb_archive_fail(a, "a data block does not match its TOC entry");
			a->block_bytes = 0;
			tb_archive_expect(a, a->blobs ? TB_AR_BLOB_OID : TB_AR_CHUNK_LEN);
			return true;
		case TB_AR_BLOB_OID:
			tb_archive_expect(a, value == 0 ? TB_AR_BLOCK_TYPE : TB_AR_CHUNK_LEN);
			return true;
		case TB_AR_CHUNK_LEN:
			if (value < 0)
				return tb_archive_fail(a, "a data chunk of negative length");
			if (value > 0)
			{
				a->step = TB_AR_CHUNK;
				a->chunk_left = value;
				return true;
			}
			/* A table's COPY text ends with its last whole row, then the end marker, which is no row. */
			if (a->block->table_data)
			{
				if (a->block_bytes < TB_ARCHIVE_COPY_END_LEN ||
					memcmp(a->tail + 1, TB_ARCHIVE_COPY_END, TB_ARCHIVE_COPY_END_LEN) != 0 ||
					(a->block_bytes > TB_ARCHIVE_COPY_END_LEN && a->tail[0] != '\n'))
					return tb_archive_fail(a, "a table's data does not end with whole rows and the end-of-data marker");
				a->block->rows -= TB_ARCHIVE_COPY_END_NEWLINES;
			}
			tb_archive_expect(a, a->blobs ? TB_AR_BLOB_OID : TB_AR_BLOCK_TYPE);
			return true;
		default:
			break;
	}
	/* The fields of a TOC entry, one after the other. */
	tb_archive_expect(a, a->step + 1);
	return true;
}

/* A field's length prefix or int is complete. */
static bool
tb_archive_field_done(tb_archive *a)
{
	int64 value = 0;

	if (a->step == TB_AR_FIXED)
		return tb_archive_fixed_header(a);
	if (a->step == TB_AR_BLOCK_TYPE || a->step == TB_AR_OFFSET)
		return tb_archive_step_done(a, 0, NULL);
	if (!tb_archive_int(a, &value))
		return false;
	if (!tb_archive_is_string(a->step))
		return tb_archive_step_done(a, value, NULL);
	/* A string's length: -1 is NULL, anything else negative or above the cap is refused. */
	a->null_string = value == -1;
	if (value == -1 || value == 0)
		return tb_archive_step_done(a, 0, value == 0 && tb_archive_keeps(a) ? pstrdup("") : NULL);
	if (value < 0)
		return tb_archive_fail(a, "a string of negative length");
	if (value > TB_ARCHIVE_STRING_MAX)
	{
		a->error = psprintf("pg_dump's archive holds a string of " INT64_FORMAT " bytes at byte " UINT64_FORMAT
							", more than the %d MB a backup reads",
							value, a->offset, TB_ARCHIVE_STRING_MAX / (1024 * 1024));
		return false;
	}
	a->in_string = true;
	a->string_len = value;
	a->string_have = 0;
	a->string = tb_archive_keeps(a) ? palloc(value + 1) : NULL;
	return true;
}

/*
 * The row ends in a piece of COPY text (a newline in a value is escaped there): memchr,
 * not a loop over every byte, which cost the worker more CPU than sealing on a 900 MB dump.
 */
static uint64
tb_archive_count_lines(const unsigned char *p, size_t len)
{
	const unsigned char *end = p + len;
	uint64 lines = 0;

	while ((p = memchr(p, '\n', end - p)) != NULL)
	{
		lines++;
		p++;
	}
	return lines;
}

bool
tb_archive_feed(tb_archive *a, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0 && a->error == NULL)
	{
		size_t take;

		if (a->step == TB_AR_TOC_END)
			return true;
		if (a->step == TB_AR_CHUNK)
		{
			take = Min((uint64) len, a->chunk_left);
			if (a->block->table_data)
			{
				size_t keep = Min(take, sizeof(a->tail));

				a->block->rows += tb_archive_count_lines(p, take);
				memmove(a->tail, a->tail + keep, sizeof(a->tail) - keep);
				memcpy(a->tail + sizeof(a->tail) - keep, p + take - keep, keep);
				a->block_bytes += take;
			}
			if ((a->chunk_left -= take) == 0)
				tb_archive_expect(a, TB_AR_CHUNK_LEN);
		}
		else if (a->in_string)
		{
			take = Min((uint64) len, a->string_len - a->string_have);
			if (a->string != NULL)
				memcpy(a->string + a->string_have, p, take);
			if ((a->string_have += take) == a->string_len)
			{
				a->in_string = false;
				a->null_string = false;
				if (a->string != NULL)
					a->string[a->string_len] = '\0';
				if (!tb_archive_step_done(a, 0, a->string))
					return false;
			}
		}
		else
		{
			take = Min(len, a->need - a->have);
			memcpy(a->field + a->have, p, take);
			if ((a->have += take) == a->need && !tb_archive_field_done(a))
				return false;
		}
		p += take;
		len -= take;
		a->offset += take;
	}
	return a->error == NULL;
}

bool
tb_archive_finish(tb_archive *a)
{
	if (a->error != NULL)
		return false;
	if (!a->toc_done)
		return tb_archive_fail(a, "it ends before its table of contents does");
	if (!a->toc_only && !(a->step == TB_AR_BLOCK_TYPE && a->have == 0))
		return tb_archive_fail(a, "it ends inside a data block");
	return true;
}

char *
tb_archive_table_counts(const tb_archive *a)
{
	StringInfoData json;
	bool first = true;

	initStringInfo(&json);
	appendStringInfoString(&json, "{\"tables\": {");
	for (int i = 0; i < a->nentries; i++)
	{
		const tb_archive_entry *e = &a->entries[i];

		if (!e->table_data)
			continue;
		if (!first)
			appendStringInfoString(&json, ", ");
		first = false;
		escape_json(&json, psprintf("%s.%s", e->namespace, e->tag));
		appendStringInfo(&json, ": " UINT64_FORMAT, e->rows);
	}
	appendStringInfoString(&json, "}}");
	return json.data;
}
