/*
 * The mongodump archive format's pieces: documents and terminators written into the
 * sealed stream, read back one at a time, and the CRC-64 its EOF headers carry.
 */
#include "mongodb_agent.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The largest document a server sends (16 MiB) and then some: a length beyond is damage. */
#define MONGO_DOC_MAX (48 * 1024 * 1024)

/*
 * CRC-64 with the ECMA-182 polynomial, reflected, inverted in and out (Go's crc64.ECMA),
 * eight bytes a step ("slicing by 8"): it runs over every document of a backup.
 */
static uint64_t crc_table[8][256];

static void
mongo_crc64_init(void)
{
	for (int i = 0; i < 256; i++)
	{
		uint64_t c = (uint64_t) i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0xC96C5795D7870F42ull : c >> 1;
		crc_table[0][i] = c;
	}
	for (int i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint64_t
mongo_crc64(uint64_t crc, const uint8_t *data, size_t len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, mongo_crc64_init);
	crc = ~crc;
	for (; len >= 8; data += 8, len -= 8)
	{
		crc ^= (uint64_t) data[0] | (uint64_t) data[1] << 8 | (uint64_t) data[2] << 16 | (uint64_t) data[3] << 24 |
			   (uint64_t) data[4] << 32 | (uint64_t) data[5] << 40 | (uint64_t) data[6] << 48 |
			   (uint64_t) data[7] << 56;
		crc = crc_table[7][crc & 0xff] ^ crc_table[6][(crc >> 8) & 0xff] ^ crc_table[5][(crc >> 16) & 0xff] ^
			  crc_table[4][(crc >> 24) & 0xff] ^ crc_table[3][(crc >> 32) & 0xff] ^ crc_table[2][(crc >> 40) & 0xff] ^
			  crc_table[1][(crc >> 48) & 0xff] ^ crc_table[0][crc >> 56];
	}
	for (; len > 0; data++, len--)
		crc = crc_table[0][(uint8_t) crc ^ *data] ^ (crc >> 8);
	return ~crc;
}

int
mongo_archive_write_u32(repo_put *put, uint32_t value, tb_error *err)
{
	uint8_t le[4] = {(uint8_t) value, (uint8_t) (value >> 8), (uint8_t) (value >> 16), (uint8_t) (value >> 24)};

	return repo_put_write(put, le, sizeof(le), err);
}

int
mongo_archive_write_doc(repo_put *put, const bson_t *doc, tb_error *err)
{
	return repo_put_write(put, bson_get_data(doc), doc->len, err);
}

struct mongo_archive_reader
{
	agent_bufread *in;
	uint8_t *doc;
	size_t size;
};

mongo_archive_reader *
mongo_archive_reader_open(repo_reader *reader, tb_error *err)
{
	mongo_archive_reader *ar = calloc(1, sizeof(*ar));

	if (ar == NULL || (ar->in = agent_bufread_open(reader, err)) == NULL)
	{
		if (ar == NULL)
			tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		free(ar);
		return NULL;
	}
	return ar;
}

void
mongo_archive_reader_close(mongo_archive_reader *ar)
{
	if (ar == NULL)
		return;
	agent_bufread_close(ar->in);
	free(ar->doc);
	free(ar);
}

int
mongo_archive_read_magic(mongo_archive_reader *ar, tb_error *err)
{
	uint8_t le[4];

	if (agent_bufread_exact(ar->in, le, sizeof(le), err) != 0)
		return -1;
	if ((uint32_t) le[0] + ((uint32_t) le[1] << 8) + ((uint32_t) le[2] << 16) + ((uint32_t) le[3] << 24) !=
		MONGO_ARCHIVE_MAGIC)
		return tb_error_set(err, TB_ERR_CORRUPT, "the backup is not a mongodump archive (no magic number)");
	return 0;
}

int
mongo_archive_next(mongo_archive_reader *ar, mongo_item *item, bson_t *doc, tb_error *err)
{
	uint8_t le[4];
	ssize_t got = agent_bufread_read(ar->in, le, sizeof(le), err);
	uint32_t len;
	bson_error_t error = {0};

	if (got < 0)
		return -1;
	if (got == 0)
	{
		*item = MONGO_ITEM_END;
		return 0;
	}
	if (got < 4)
		return tb_error_set(err, TB_ERR_CORRUPT, "the archive ends inside a document");
	len = (uint32_t) le[0] + ((uint32_t) le[1] << 8) + ((uint32_t) le[2] << 16) + ((uint32_t) le[3] << 24);
	if (len == MONGO_ARCHIVE_TERMINATOR)
	{
		*item = MONGO_ITEM_TERMINATOR;
		return 0;
	}
	if (len < 5 || len > MONGO_DOC_MAX)
		return tb_error_set(err, TB_ERR_CORRUPT, "the archive holds a document of %u bytes", len);
	if (len > ar->size)
	{
		uint8_t *grown = realloc(ar->doc, len);

		if (grown == NULL)
			return tb_error_set(err, TB_ERR_NOMEM, "out of memory for a document of %u bytes", len);
		ar->doc = grown;
		ar->size = len;
	}
	memcpy(ar->doc, le, 4);
	if (agent_bufread_exact(ar->in, ar->doc + 4, len - 4, err) != 0)
		return -1;
	/* Only the structure is checked: the documents are the tenant's, byte for byte. */
	if (!bson_init_static(doc, ar->doc, len) || !bson_validate_with_error(doc, BSON_VALIDATE_NONE, &error))
		return tb_error_set(err, TB_ERR_CORRUPT, "the archive holds a malformed document (%s)",
							error.message[0] ? error.message : "bad length");
	*item = MONGO_ITEM_DOC;
	return 0;
}
