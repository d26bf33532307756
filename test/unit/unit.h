/* Helpers shared by the C unit tests: in-memory sinks and sources, temp dirs, random data. */
#ifndef TB_TEST_UNIT_H
#define TB_TEST_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <cmocka.h>

#include "error.h"

typedef struct membuf
{
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t pos; /* read position when used as a source */
} membuf;

static inline void
membuf_append(membuf *b, const void *buf, size_t len)
{
	if (b->len + len > b->cap)
	{
		b->cap = (b->len + len) * 2;
		b->data = realloc(b->data, b->cap);
		assert_non_null(b->data);
	}
	memcpy(b->data + b->len, buf, len);
	b->len += len;
}

static inline int
membuf_sink(void *ctx, const void *buf, size_t len, tb_error *err)
{
	(void) err;
	membuf_append(ctx, buf, len);
	return 0;
}

/* Returns at most 7000 bytes per call, so readers see short reads across boundaries. */
static inline ssize_t
membuf_source(void *ctx, void *buf, size_t len, tb_error *err)
{
	membuf *b = ctx;
	size_t n = b->len - b->pos;

	(void) err;
	if (n > len)
		n = len;
	if (n > 7000)
		n = 7000;
	memcpy(buf, b->data + b->pos, n);
	b->pos += n;
	return (ssize_t) n;
}

static inline void
membuf_free(membuf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
static inline void
fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 2654435761u + 88172645463325252ull;

	for (size_t i = 0; i < len; i++)
	{
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t) x;
	}
}

/* Text-like, highly compressible bytes. */
static inline void
fill_compressible(uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (uint8_t) ("tenant acme row 0123456789 ,;\n"[(i * 7 + i / 31) % 30]);
}

#endif
