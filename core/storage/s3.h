/*
 * What the S3 driver's files share: the driver entry points for streaming writes
 * (s3_write.c) and reads (s3_read.c), and the request helper for small answers.
 */
#ifndef TB_S3_H
#define TB_S3_H

#include "s3_request.h"

#define STORAGE_S3_MIB ((size_t) 1024 * 1024)
#define STORAGE_S3_MIN_PART_SIZE (5 * STORAGE_S3_MIB)    /* S3's minimum but for the last part */
#define STORAGE_S3_MAX_PART_SIZE (5120 * STORAGE_S3_MIB) /* S3's maximum */
#define STORAGE_S3_XML_MAX (4 * STORAGE_S3_MIB)          /* a page of 1000 listed keys fits */

/*
 * Runs a request whose answer is small (empty or XML) with a response buffer of
 * STORAGE_S3_XML_MAX bytes, left in *buf for the caller to free (buf->data)
 * whatever the outcome; with buf NULL the body is discarded. A 2xx answer with an
 * <Error> body is a failure. resp and err as s3_request_execute.
 */
int storage_s3_request(storage_s3 *st, const s3_request *req, s3_response *resp, s3_buffer *buf, tb_error *err);

storage_write *storage_s3_write_open(storage *st, const char *key, tb_error *err);
int storage_s3_write_append(storage_write *w, const void *buf, size_t len, tb_error *err);
int storage_s3_write_commit(storage_write *w, tb_error *err);
void storage_s3_write_abort(storage_write *w);

storage_read *storage_s3_read_open(storage *st, const char *key, uint64_t offset, uint64_t length, tb_error *err);
ssize_t storage_s3_read_next(storage_read *r, void *buf, size_t len, tb_error *err);
void storage_s3_read_close(storage_read *r);

#endif
