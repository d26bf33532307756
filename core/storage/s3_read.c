/*
 * Streaming reads from S3 as ranged GETs of bounded windows: memory stays at one
 * window whatever the object's size, and each window is retried on its own. Later
 * windows are asked with If-Match on the first one's ETag, so a read never splices
 * two versions of an object.
 */
#include "s3.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORAGE_S3_READ_WINDOW (8 * STORAGE_S3_MIB)

typedef struct storage_s3_read
{
	storage_read base;
	char *key;
	uint64_t next; /* object offset of the next window */
	uint64_t end;  /* object offset where reading stops, UINT64_MAX until known */
	char *etag;    /* of the object as first read, NULL if the server sent none */
	s3_buffer window;
	size_t window_pos; /* bytes of the window already returned */
} storage_s3_read;

void
storage_s3_read_close(storage_read *base)
{
	storage_s3_read *r = (storage_s3_read *) base;

	free(r->window.data);
	free(r->etag);
	free(r->key);
	free(r);
}

/* Fetches the window at r->next; an empty window means the end of the object. */
static int
storage_s3_read_window(storage_s3_read *r, tb_error *err)
{
	uint64_t last = r->end - r->next > STORAGE_S3_READ_WINDOW ? r->next + STORAGE_S3_READ_WINDOW - 1 : r->end - 1;
	char range[64];
	s3_request req = {
		.op = "GET",
		.method = "GET",
		.key = r->key,
		.range = range,
		.if_match = r->etag,
	};
	s3_response resp = {.body = &r->window};

	snprintf(range, sizeof(range), "bytes=%" PRIu64 "-%" PRIu64, r->next, last);
	r->window_pos = 0;
	if (s3_request_execute((storage_s3 *) r->base.st, &req, &resp, err) != 0)
	{
		r->window.len = 0;
		if (resp.status == 416) /* offset at or past the end */
		{
			r->end = r->next;
			return 0;
		}
		if (resp.status == 412)
			return tb_error_set(err, TB_ERR_STORAGE,
								"object '%s' was replaced in S3 while it was being read: read it again", r->key);
		return -1;
	}
	if (resp.status == 200 && r->next > 0) /* the whole object, not the range asked for */
		return tb_error_set(err, TB_ERR_STORAGE, "S3 ignored the range asked for in GET '%s'", r->key);
	if (resp.status == 200 || resp.total_size != UINT64_MAX)
	{
		uint64_t size = resp.status == 200 ? r->window.len : resp.total_size;

		if (size < r->end)
			r->end = size;
	}
	if (r->window.len > r->end - r->next)
		r->window.len = (size_t) (r->end - r->next);
	if (r->etag == NULL && resp.etag[0] != '\0' && (r->etag = strdup(resp.etag)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory reading '%s'", r->key);
	r->next += r->window.len;
	if (r->window.len == 0)
		r->end = r->next;
	return 0;
}

/* Fetches the first window at once, so that a missing object fails here. */
storage_read *
storage_s3_read_open(storage *base, const char *key, uint64_t offset, uint64_t length, tb_error *err)
{
	storage_s3_read *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->key = strdup(key)) == NULL || (r->window.data = malloc(STORAGE_S3_READ_WINDOW)) == NULL)
	{
		if (r != NULL)
			storage_s3_read_close(&r->base);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory reading '%s'", key);
		return NULL;
	}
	r->base.st = base;
	r->window.max = STORAGE_S3_READ_WINDOW;
	r->next = offset;
	r->end = length > 0 && length <= UINT64_MAX - offset ? offset + length : UINT64_MAX;
	if (storage_s3_read_window(r, err) != 0)
	{
		storage_s3_read_close(&r->base);
		return NULL;
	}
	return &r->base;
}

ssize_t
storage_s3_read_next(storage_read *base, void *buf, size_t len, tb_error *err)
{
	storage_s3_read *r = (storage_s3_read *) base;
	size_t n;

	while (r->window_pos == r->window.len)
	{
		if (r->next >= r->end)
			return 0;
		if (storage_s3_read_window(r, err) != 0)
			return -1;
	}
	n = r->window.len - r->window_pos < len ? r->window.len - r->window_pos : len;
	memcpy(buf, r->window.data + r->window_pos, n);
	r->window_pos += n;
	return (ssize_t) n;
}
