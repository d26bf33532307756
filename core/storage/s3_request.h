/*
 * The S3 driver's state and its one way to talk to S3: a signed request over
 * libcurl, retried with backoff on transient failures, with S3 errors turned into
 * tb_error messages that name the object and what to check.
 */
#ifndef TB_S3_REQUEST_H
#define TB_S3_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "s3_credentials.h"
#include "s3_sign.h"
#include "s3_xml.h"
#include "storage.h"

/* An s3:// storage. Used by one thread at a time: requests share one curl handle. */
typedef struct storage_s3
{
	storage base;
	char *endpoint;    /* scheme://host[:port], no path; with virtual_host, the bucket's own host */
	char *host;        /* the Host header: host[:port] */
	bool virtual_host; /* virtual-hosted style: the bucket in the host name, not in the path */
	bool style_given;  /* style= in the URL; else virtual for AWS's own endpoints, path for others */
	char *bucket;
	char *prefix; /* "" or a key prefix ending in '/' */
	char *region;
	s3_credentials creds;     /* resolved again when due (s3_credentials_due) */
	time_t creds_retry_after; /* after a failed renewal, not before this */
	char *sse;                /* x-amz-server-side-encryption of new objects, or NULL */
	char *kms_key_id;         /* x-amz-server-side-encryption-aws-kms-key-id, or NULL */
	char *storage_class;      /* x-amz-storage-class of new objects, or NULL */
	curl_off_t max_bandwidth; /* bytes per second each way, 0 for no limit */
	size_t part_size;         /* multipart part size to start with */
	int retries;              /* retries after the first attempt */
	long stall_timeout;       /* seconds below 1 KB/s before a transfer is abandoned; sets the deadline too */
	CURL *curl;
} storage_s3;

/* Where a response body goes: max bytes at data, owned by the caller. */
typedef struct s3_buffer
{
	char *data;
	size_t len;
	size_t max;
} s3_buffer;

typedef struct s3_request
{
	const char *op;     /* operation named in messages: "PUT", "UploadPart", "LIST", ... */
	const char *method; /* HTTP method */
	/*
	 * Object key below the storage prefix. For a bucket-level request (a listing),
	 * the prefix the request is about, named in messages only.
	 */
	const char *key;
	bool bucket_level;
	const s3_sign_pair *query;
	size_t nquery;
	const char *range;    /* Range header, or NULL */
	const char *if_match; /* If-Match header, or NULL */
	const void *body;     /* sent again from the start on each attempt */
	size_t body_len;
	bool error_in_ok_body; /* a 2xx response with an <Error> body is a failure */
	bool creates_object;   /* PUT or CreateMultipartUpload: carries the storage's encryption and storage class */
} s3_request;

typedef struct s3_response
{
	long status;         /* last HTTP status, 0 if none was received */
	s3_buffer *body;     /* where the body goes, emptied at each attempt */
	char etag[128];      /* ETag header, "" if none */
	uint64_t length;     /* Content-Length, 0 if none */
	uint64_t total_size; /* object size from Content-Range, UINT64_MAX if none */
	int64_t mtime;       /* Last-Modified, 0 if none */
	s3_xml_error error;  /* S3 error code and message of a failed request */
} s3_response;

/*
 * Sends req, retrying up to st->retries times with exponential backoff and full
 * jitter on connection failures, stalls, missed deadlines, 5xx, 429, SlowDown,
 * RequestTimeout and InternalError. Temporary credentials due for renewal are
 * resolved again first (a failed renewal is an error only once they expired). Each attempt is stopped at its deadline:
 * twice st->stall_timeout plus its bytes at a minimum rate (see s3_request.c). Returns 0 on a 2xx response (without an
 * <Error> body when req->error_in_ok_body); err may then still describe an attempt that was retried. Otherwise -1 with
 * err set (TB_ERR_NOT_FOUND for a missing key, TB_ERR_STORAGE_AUTH for rejected credentials, TB_ERR_STORAGE else) and
 * resp->status telling what the last attempt got.
 */
int s3_request_execute(storage_s3 *st, const s3_request *req, s3_response *resp, tb_error *err);

/*
 * The URL path of req, which is also its canonical URI: "/bucket/<key>" in path
 * style, "/<key>" in virtual-hosted style. malloc'd; NULL when out of memory.
 */
char *s3_request_path(const storage_s3 *st, const s3_request *req);

/*
 * The headers of one attempt of req signed at amz_date with st's current
 * credentials, Authorization last but one (before an empty Expect), as a curl list;
 * NULL when out of memory.
 */
struct curl_slist *s3_request_headers(const storage_s3 *st, const s3_request *req, const char *path,
									  const char *payload_hash, const char *amz_date);

/* Whether a failed response says the object does not exist (rather than the bucket). */
bool s3_response_key_missing(const s3_response *resp);

#endif
