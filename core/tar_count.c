/* A tar stream's regular files and their bytes, counted in passing (see tar_count.h). */
#include "tar_count.h"

#include <string.h>

void
tar_count_init(tar_count *t)
{
	memset(t, 0, sizeof(*t));
}

/* A header's size field: octal, or base-256 (first byte 0x80) for large members. */
static int
tar_count_size(const unsigned char *field, uint64_t *size)
{
	uint64_t v = 0;

	if (field[0] & 0x80)
	{
		for (int i = 1; i < 12; i++)
			v = (v << 8) | field[i];
		*size = v;
		return 0;
	}
	for (int i = 0; i < 12 && field[i] != '\0' && field[i] != ' '; i++)
	{
		if (field[i] < '0' || field[i] > '7')
			return -1;
		v = (v << 3) | (uint64_t) (field[i] - '0');
	}
	*size = v;
	return 0;
}

static void
tar_count_header(tar_count *t)
{
	static const unsigned char zeros[512];
	unsigned char type = t->header[156];
	uint64_t size;

	if (memcmp(t->header, zeros, sizeof(zeros)) == 0)
	{
		t->zero_blocks++;
		return;
	}
	if (tar_count_size(t->header + 124, &size) != 0)
	{
		t->broken = 1;
		return;
	}
	/* Regular files; pax and GNU long-name records carry data that is not a file. */
	if (type == '0' || type == '\0' || type == '7')
	{
		t->files++;
		t->bytes += size;
	}
	t->skip = (size + 511) / 512 * 512;
}

void
tar_count_feed(tar_count *t, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0 && !t->broken && t->zero_blocks < 2)
	{
		size_t take;

		if (t->skip > 0)
		{
			take = t->skip < len ? (size_t) t->skip : len;
			t->skip -= take;
		}
		else
		{
			take = sizeof(t->header) - t->have < len ? sizeof(t->header) - t->have : len;
			memcpy(t->header + t->have, p, take);
			t->have += take;
			if (t->have == sizeof(t->header))
			{
				t->have = 0;
				tar_count_header(t);
			}
		}
		p += take;
		len -= take;
	}
}
