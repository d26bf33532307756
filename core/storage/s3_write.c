/*
 * Streaming writes to S3. Data is buffered one part at a time: an object that fits
 * in the first part is sent with one PUT, a larger one as a multipart upload that
 * becomes visible only when CompleteMultipartUpload succeeds, and is aborted on any
 * failure.
 */
#include "s3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parts of the URL's size up to here, then the part size doubles every few parts. */
#define STORAGE_S3_GROWTH_AFTER_PART 900
#define STORAGE_S3_PARTS_PER_DOUBLING 10

typedef struct storage_s3_write
{
	storage_write base;
	char *key;
	char *upload_id; /* NULL until the first part is sent */
	char **etags;    /* ETags of parts 1..nparts */
	int nparts;
	int etags_size;
	char *part; /* the part being filled, part_size bytes */
	size_t part_len;
	size_t part_size;
	bool failed; /* a part failed to upload: only abort is left */
} storage_s3_write;

/*
 * The size of part number part (from 1): the URL's part size up to part 900, then
 * doubled every 10 parts, at most S3's maximum, so that an object of unknown size
 * still fits in the 1000 parts some servers allow (AWS allows 10000).
 */
static size_t
storage_s3_part_size(size_t base, int part)
{
	size_t size = base;

	for (int p = STORAGE_S3_GROWTH_AFTER_PART; p < part && size < STORAGE_S3_MAX_PART_SIZE;
		 p += STORAGE_S3_PARTS_PER_DOUBLING)
		size *= 2;
	return size < STORAGE_S3_MAX_PART_SIZE ? size : STORAGE_S3_MAX_PART_SIZE;
}

static void
storage_s3_write_free(storage_s3_write *w)
{
	for (int i = 0; i < w->nparts; i++)
		free(w->etags[i]);
	free(w->etags);
	free(w->upload_id);
	free(w->part);
	free(w->key);
	free(w);
}

storage_write *
storage_s3_write_open(storage *base, const char *key, tb_error *err)
{
	storage_s3 *st = (storage_s3 *) base;
	storage_s3_write *w = calloc(1, sizeof(*w));

	if (w == NULL || (w->key = strdup(key)) == NULL || (w->part = malloc(st->part_size)) == NULL)
	{
		if (w != NULL)
			storage_s3_write_free(w);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory writing '%s'", key);
		return NULL;
	}
	w->base.st = base;
	w->part_size = st->part_size;
	return &w->base;
}

/* Starts the multipart upload: sets w->upload_id. */
static int
storage_s3_create_upload(storage_s3_write *w, tb_error *err)
{
	const s3_sign_pair query[] = {{"uploads", ""}};
	s3_request req = {
		.op = "CreateMultipartUpload",
		.method = "POST",
		.key = w->key,
		.query = query,
		.nquery = 1,
		.creates_object = true,
	};
	s3_response resp;
	s3_buffer buf;
	int rc = storage_s3_request((storage_s3 *) w->base.st, &req, &resp, &buf, err);

	if (rc == 0 && (w->upload_id = s3_xml_parse_upload_id(buf.data, buf.len)) == NULL)
		rc = tb_error_set(err, TB_ERR_STORAGE, "S3 CreateMultipartUpload '%s' returned no UploadId", w->key);
	free(buf.data);
	return rc;
}

/* Uploads the buffered part as the next part number, starting the upload first if needed. */
static int
storage_s3_upload_part(storage_s3_write *w, tb_error *err)
{
	char number[16];
	s3_sign_pair query[] = {{"partNumber", number}, {"uploadId", NULL}};
	s3_request req = {
		.op = "UploadPart",
		.method = "PUT",
		.key = w->key,
		.query = query,
		.nquery = 2,
		.body = w->part,
		.body_len = w->part_len,
	};
	s3_response resp;

	if (w->upload_id == NULL && storage_s3_create_upload(w, err) != 0)
		return -1;
	if (w->nparts == w->etags_size)
	{
		int size = w->etags_size ? w->etags_size * 2 : 64;
		char **etags = realloc(w->etags, (size_t) size * sizeof(char *));

		if (etags == NULL)
			return tb_error_set(err, TB_ERR_NOMEM, "out of memory writing '%s'", w->key);
		w->etags = etags;
		w->etags_size = size;
	}
	snprintf(number, sizeof(number), "%d", w->nparts + 1);
	query[1].value = w->upload_id;
	if (storage_s3_request((storage_s3 *) w->base.st, &req, &resp, NULL, err) != 0)
		return -1;
	if (resp.etag[0] == '\0')
		return tb_error_set(err, TB_ERR_STORAGE, "S3 UploadPart %d of '%s' returned no ETag", w->nparts + 1, w->key);
	if ((w->etags[w->nparts] = strdup(resp.etag)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory writing '%s'", w->key);
	w->nparts++;
	w->part_len = 0;
	return 0;
}

/* Uploads the full buffered part and sizes the buffer for the part after it. */
static int
storage_s3_next_part(storage_s3_write *w, tb_error *err)
{
	size_t size;

	if (storage_s3_upload_part(w, err) != 0)
		return -1;
	size = storage_s3_part_size(((storage_s3 *) w->base.st)->part_size, w->nparts + 1);
	if (size != w->part_size)
	{
		char *part = realloc(w->part, size);

		if (part == NULL)
			return tb_error_set(err, TB_ERR_NOMEM, "out of memory writing '%s'", w->key);
		w->part = part;
		w->part_size = size;
	}
	return 0;
}

/*
 * A full part is sent only once more data arrives, so that an object of exactly
 * one part is still a single PUT and the last part of an upload is never empty.
 */
int
storage_s3_write_append(storage_write *base, const void *buf, size_t len, tb_error *err)
{
	storage_s3_write *w = (storage_s3_write *) base;
	const char *p = buf;

	if (w->failed)
		return tb_error_set(err, TB_ERR_INTERNAL, "write of '%s' already failed: abort it", w->key);
	while (len > 0)
	{
		size_t n;

		if (w->part_len == w->part_size && storage_s3_next_part(w, err) != 0)
		{
			w->failed = true;
			return -1;
		}
		n = w->part_size - w->part_len < len ? w->part_size - w->part_len : len;
		memcpy(w->part + w->part_len, p, n);
		w->part_len += n;
		p += n;
		len -= n;
	}
	return 0;
}

static int
storage_s3_put_object(storage_s3_write *w, tb_error *err)
{
	s3_request req = {
		.op = "PUT",
		.method = "PUT",
		.key = w->key,
		.body = w->part,
		.body_len = w->part_len,
		.creates_object = true,
	};
	s3_response resp;

	return storage_s3_request((storage_s3 *) w->base.st, &req, &resp, NULL, err);
}

/* CompleteMultipartUpload; a 200 answer with an <Error> body fails it (storage_s3_request). */
static int
storage_s3_complete_upload(storage_s3_write *w, tb_error *err)
{
	size_t body_len = 0;
	char *body = s3_xml_complete_body(w->etags, w->nparts, &body_len);
	const s3_sign_pair query[] = {{"uploadId", w->upload_id}};
	s3_request req = {
		.op = "CompleteMultipartUpload",
		.method = "POST",
		.key = w->key,
		.query = query,
		.nquery = 1,
		.body = body,
		.body_len = body_len,
	};
	s3_response resp;
	int rc;

	if (body == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory writing '%s'", w->key);
	rc = storage_s3_request((storage_s3 *) w->base.st, &req, &resp, NULL, err);
	free(body);
	return rc;
}

/* Best effort: an upload left behind by a failure here stays invisible. */
static void
storage_s3_abort_upload(storage_s3_write *w)
{
	const s3_sign_pair query[] = {{"uploadId", w->upload_id}};
	s3_request req = {
		.op = "AbortMultipartUpload",
		.method = "DELETE",
		.key = w->key,
		.query = query,
		.nquery = 1,
	};
	s3_response resp;
	tb_error ignored;

	storage_s3_request((storage_s3 *) w->base.st, &req, &resp, NULL, &ignored);
}

int
storage_s3_write_commit(storage_write *base, tb_error *err)
{
	storage_s3_write *w = (storage_s3_write *) base;
	int rc;

	if (w->failed)
		rc = tb_error_set(err, TB_ERR_INTERNAL, "write of '%s' already failed: it cannot be committed", w->key);
	else if (w->upload_id == NULL)
		rc = storage_s3_put_object(w, err);
	else if ((rc = storage_s3_upload_part(w, err)) == 0)
		rc = storage_s3_complete_upload(w, err);
	if (rc != 0 && w->upload_id != NULL)
		storage_s3_abort_upload(w);
	storage_s3_write_free(w);
	return rc;
}

void
storage_s3_write_abort(storage_write *base)
{
	storage_s3_write *w = (storage_s3_write *) base;

	if (w->upload_id != NULL)
		storage_s3_abort_upload(w);
	storage_s3_write_free(w);
}
