/*
 * The XML the S3 driver reads (Error, InitiateMultipartUploadResult,
 * ListBucketResult, ListMultipartUploadsResult, ListPartsResult, STS AssumeRoleWithWebIdentityResponse) and writes
 * (CompleteMultipartUpload), through libxml2.
 */
#ifndef TB_S3_XML_H
#define TB_S3_XML_H

#include <stdbool.h>
#include <stddef.h>

#include "storage.h"

typedef struct s3_xml_error
{
	char code[64];
	char message[256];
} s3_xml_error;

/* Call once per process before parsing (the driver does, with curl_global_init). */
void s3_xml_init(void);

/* true and *error filled (truncated if long) if body is an S3 <Error> document. */
bool s3_xml_parse_error(const char *body, size_t len, s3_xml_error *error);

/* The UploadId of an InitiateMultipartUploadResult, malloc'd; NULL if missing or malformed. */
char *s3_xml_parse_upload_id(const char *body, size_t len);

/*
 * Calls cb for each <Contents> of a ListBucketResult (full S3 key, Size,
 * LastModified), in document order, and sets *truncated and *next_token (malloc'd,
 * NULL when absent). Returns 0 when done, 1 when cb returned non-zero (the rest is
 * skipped), -1 if the body is malformed or memory ran out.
 */
int s3_xml_parse_list(const char *body, size_t len, storage_list_cb cb, void *arg, bool *truncated, char **next_token);

/*
 * Calls cb for each <Upload> of a ListMultipartUploadsResult (full S3 key, UploadId,
 * Initiated as info->mtime; size 0: S3 does not say), in document order, and sets
 * *truncated, and *next_key and *next_upload (NextKeyMarker, NextUploadIdMarker,
 * malloc'd; NULL when not truncated or malformed). Returns as s3_xml_parse_list.
 */
int s3_xml_parse_uploads(const char *body, size_t len, storage_unfinished_cb cb, void *arg, bool *truncated,
						 char **next_key, char **next_upload);

/*
 * Adds the <Part>s of a ListPartsResult to *info: their sizes to info->size, the
 * newest LastModified to info->mtime (left as it was when older); sets *truncated and
 * *next_marker (NextPartNumberMarker, malloc'd; NULL when not truncated or
 * malformed). Returns 0, or -1 if the body is malformed or memory ran out.
 */
int s3_xml_parse_parts(const char *body, size_t len, storage_info *info, bool *truncated, char **next_marker);

/* Credentials of an STS AssumeRoleWithWebIdentity answer, each malloc'd (free()). */
typedef struct s3_xml_sts_credentials
{
	char *access_key;
	char *secret_key;
	char *session_token;
	char *expiration; /* ISO 8601 */
} s3_xml_sts_credentials;

/*
 * Fills *out from an AssumeRoleWithWebIdentityResponse (all four present and
 * non-empty): true; false if the body is anything else (out left empty), with the
 * error code of an STS <ErrorResponse> in *error when there is one.
 */
bool s3_xml_parse_sts_credentials(const char *body, size_t len, s3_xml_sts_credentials *out, s3_xml_error *error);

/*
 * The CompleteMultipartUpload body listing parts 1..nparts with their ETags.
 * malloc'd (free()), length in *len; NULL when out of memory.
 */
char *s3_xml_complete_body(char *const *etags, int nparts, size_t *len);

#endif
