/*
 * Signed S3 requests over libcurl with retries (see s3_request.h). Every attempt is
 * signed afresh, so a retry hours later still carries a valid x-amz-date.
 */
#include "s3_request.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define S3_REQUEST_CONNECT_TIMEOUT 10L /* seconds */
#define S3_REQUEST_STALL_SPEED 1024L   /* bytes per second */
/*
 * Every attempt must end within a deadline: twice the stall timeout, plus its bytes
 * (the body sent and the answer, as announced or as much as is accepted) at this
 * rate. A part of hundreds of MB still fits on a slow link; a trickle that stays
 * above the stall speed does not hold a request open for ever.
 */
#define S3_REQUEST_MIN_RATE (128L * 1024) /* bytes per second */
#define S3_REQUEST_BACKOFF_BASE_MS 100
#define S3_REQUEST_BACKOFF_CAP_MS 5000
#define S3_REQUEST_MAX_HEADERS 11       /* 9 signed, Authorization, Expect */
#define S3_REQUEST_CREDENTIALS_RETRY 10 /* seconds between attempts to renew credentials that still work */

/* How long an attempt may take; set from the transfer as libcurl reports it. */
typedef struct s3_request_deadline
{
	struct timespec start; /* CLOCK_MONOTONIC */
	long floor;            /* seconds, whatever the size */
	curl_off_t body_len;   /* bytes sent */
	curl_off_t answer_max; /* bytes accepted in the answer */
	curl_off_t min_rate;   /* bytes per second: S3_REQUEST_MIN_RATE, or a lower max_bandwidth */
	long allowed;          /* seconds the attempt was allowed when it was stopped */
} s3_request_deadline;

/* libcurl's progress callback: a non-zero return stops the transfer (CURLE_ABORTED_BY_CALLBACK). */
static int
s3_request_check_deadline(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	s3_request_deadline *d = arg;
	curl_off_t answer = dltotal > 0 && dltotal < d->answer_max ? dltotal : d->answer_max;
	long allowed = d->floor + (long) ((d->body_len + answer) / d->min_rate);
	struct timespec now;

	(void) dlnow;
	(void) ultotal;
	(void) ulnow;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec - d->start.tv_sec <= allowed)
		return 0;
	d->allowed = allowed;
	return 1;
}

/* The request body as curl reads it. */
typedef struct s3_request_upload
{
	const char *data;
	size_t len;
	size_t pos;
} s3_request_upload;

static size_t
s3_request_read_body(char *dst, size_t size, size_t nmemb, void *arg)
{
	s3_request_upload *up = arg;
	size_t n = size * nmemb;

	if (n > up->len - up->pos)
		n = up->len - up->pos;
	memcpy(dst, up->data + up->pos, n);
	up->pos += n;
	return n;
}

/* curl rewinds the body when it resends on a connection that turned out dead. */
static int
s3_request_seek_body(void *arg, curl_off_t offset, int origin)
{
	s3_request_upload *up = arg;

	if (origin != SEEK_SET || offset < 0 || (size_t) offset > up->len)
		return CURL_SEEKFUNC_FAIL;
	up->pos = (size_t) offset;
	return CURL_SEEKFUNC_OK;
}

/* Appends to the response buffer; a body larger than the buffer aborts the transfer. */
static size_t
s3_request_write_body(char *src, size_t size, size_t nmemb, void *arg)
{
	s3_buffer *buf = arg;
	size_t n = size * nmemb;

	if (n > buf->max - buf->len)
		return 0;
	memcpy(buf->data + buf->len, src, n);
	buf->len += n;
	return n;
}

/* Picks ETag and Content-Range out of the response headers. */
static size_t
s3_request_header(char *line, size_t size, size_t nmemb, void *arg)
{
	s3_response *resp = arg;
	size_t n = size * nmemb;
	char value[256];
	size_t vlen;
	const char *colon = memchr(line, ':', n);

	if (colon == NULL)
		return n;
	vlen = n - (size_t) (colon + 1 - line);
	if (vlen >= sizeof(value))
		return n;
	memcpy(value, colon + 1, vlen);
	value[vlen] = '\0';
	value[strcspn(value, "\r\n")] = '\0';
	if (colon - line == 4 && strncasecmp(line, "etag", 4) == 0)
		snprintf(resp->etag, sizeof(resp->etag), "%s", value + strspn(value, " \t"));
	else if (colon - line == 13 && strncasecmp(line, "content-range", 13) == 0)
	{
		/* "bytes 0-9/443", the total after the slash */
		const char *slash = strchr(value, '/');

		if (slash != NULL && slash[1] >= '0' && slash[1] <= '9')
			resp->total_size = strtoull(slash + 1, NULL, 10);
	}
	return n;
}

char *
s3_request_path(const storage_s3 *st, const s3_request *req)
{
	char *full_key;
	char *encoded;
	char *path;

	if (req->bucket_level)
		return asprintf(&path, "/%s", st->virtual_host ? "" : st->bucket) < 0 ? NULL : path;
	if (asprintf(&full_key, "%s%s", st->prefix, req->key) < 0)
		return NULL;
	encoded = s3_sign_uri_encode(full_key, true);
	free(full_key);
	if (encoded == NULL ||
		asprintf(&path, "%s%s/%s", st->virtual_host ? "" : "/", st->virtual_host ? "" : st->bucket, encoded) < 0)
		path = NULL;
	free(encoded);
	return path;
}

struct curl_slist *
s3_request_headers(const storage_s3 *st, const s3_request *req, const char *path, const char *payload_hash,
				   const char *amz_date)
{
	s3_sign_pair headers[S3_REQUEST_MAX_HEADERS];
	size_t n = 0;
	s3_sign_request sign;
	char *authorization;
	struct curl_slist *list = NULL;
	char *line = NULL;

	headers[n++] = (s3_sign_pair){"Host", st->host};
	headers[n++] = (s3_sign_pair){"x-amz-date", amz_date};
	headers[n++] = (s3_sign_pair){"x-amz-content-sha256", payload_hash};
	if (st->creds.session_token != NULL)
		headers[n++] = (s3_sign_pair){"x-amz-security-token", st->creds.session_token};
	if (req->range != NULL)
		headers[n++] = (s3_sign_pair){"Range", req->range};
	if (req->if_match != NULL)
		headers[n++] = (s3_sign_pair){"If-Match", req->if_match};
	if (req->creates_object && st->sse != NULL)
		headers[n++] = (s3_sign_pair){"x-amz-server-side-encryption", st->sse};
	if (req->creates_object && st->kms_key_id != NULL)
		headers[n++] = (s3_sign_pair){"x-amz-server-side-encryption-aws-kms-key-id", st->kms_key_id};
	if (req->creates_object && st->storage_class != NULL)
		headers[n++] = (s3_sign_pair){"x-amz-storage-class", st->storage_class};

	sign = (s3_sign_request){
		.method = req->method,
		.path = path,
		.query = req->query,
		.nquery = req->nquery,
		.headers = headers,
		.nheaders = n,
		.payload_hash = payload_hash,
		.amz_date = amz_date,
		.region = st->region,
		.service = "s3",
	};
	authorization = s3_sign_authorization(&sign, st->creds.access_key, st->creds.secret_key);
	if (authorization == NULL)
		return NULL;
	headers[n++] = (s3_sign_pair){"Authorization", authorization};
	/* an empty Expect: no "100-continue" round trip before each part */
	headers[n++] = (s3_sign_pair){"Expect", ""};
	for (size_t i = 0; i < n; i++)
	{
		struct curl_slist *longer;

		if (asprintf(&line, "%s:%s%s", headers[i].name, headers[i].value[0] ? " " : "", headers[i].value) < 0 ||
			(longer = curl_slist_append(list, line)) == NULL)
		{
			free(line);
			free(authorization);
			curl_slist_free_all(list);
			return NULL;
		}
		list = longer;
		free(line);
	}
	free(authorization);
	return list;
}

/* One attempt: CURLE_OK once any HTTP response arrived (whatever its status). */
static CURLcode
s3_request_attempt(storage_s3 *st, const s3_request *req, const char *url, const char *path, const char *payload_hash,
				   s3_response *resp, s3_request_deadline *deadline, char *curl_error)
{
	CURL *curl = st->curl;
	s3_request_upload upload = {.data = req->body, .len = req->body_len};
	char amz_date[S3_SIGN_AMZ_DATE_LEN + 1];
	struct curl_slist *headers;
	curl_off_t length = -1;
	curl_off_t mtime = -1;
	CURLcode rc;

	resp->status = 0;
	resp->etag[0] = '\0';
	resp->total_size = UINT64_MAX;
	resp->body->len = 0;
	curl_error[0] = '\0';
	s3_sign_amz_date(time(NULL), amz_date);
	if ((headers = s3_request_headers(st, req, path, payload_hash, amz_date)) == NULL)
		return CURLE_OUT_OF_MEMORY;
	*deadline = (s3_request_deadline){
		.floor = 2 * st->stall_timeout,
		.min_rate =
			st->max_bandwidth > 0 && st->max_bandwidth < S3_REQUEST_MIN_RATE ? st->max_bandwidth : S3_REQUEST_MIN_RATE,
		.body_len = (curl_off_t) req->body_len,
		.answer_max = (curl_off_t) resp->body->max,
	};
	clock_gettime(CLOCK_MONOTONIC, &deadline->start);

	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_error);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, S3_REQUEST_CONNECT_TIMEOUT);
	curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, S3_REQUEST_STALL_SPEED);
	curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, st->stall_timeout);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, s3_request_check_deadline);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, deadline);
	curl_easy_setopt(curl, CURLOPT_FILETIME, 1L);
	if (st->max_bandwidth > 0)
	{
		curl_easy_setopt(curl, CURLOPT_MAX_SEND_SPEED_LARGE, st->max_bandwidth);
		curl_easy_setopt(curl, CURLOPT_MAX_RECV_SPEED_LARGE, st->max_bandwidth);
	}
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s3_request_write_body);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, resp->body);
	curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, s3_request_header);
	curl_easy_setopt(curl, CURLOPT_HEADERDATA, resp);
	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
	else if (strcmp(req->method, "PUT") == 0 || strcmp(req->method, "POST") == 0)
	{
		curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);
		curl_easy_setopt(curl, CURLOPT_READFUNCTION, s3_request_read_body);
		curl_easy_setopt(curl, CURLOPT_READDATA, &upload);
		curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, s3_request_seek_body);
		curl_easy_setopt(curl, CURLOPT_SEEKDATA, &upload);
		curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t) req->body_len);
	}
	else if (strcmp(req->method, "GET") != 0)
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, req->method);

	rc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &resp->status);
	curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
	curl_easy_getinfo(curl, CURLINFO_FILETIME_T, &mtime);
	resp->length = length > 0 ? (uint64_t) length : 0;
	resp->mtime = mtime > 0 ? (int64_t) mtime : 0;
	/* drop the options pointing at this frame; the connection stays for the next request */
	curl_easy_reset(curl);
	curl_slist_free_all(headers);
	return rc;
}

static bool
s3_request_curl_retryable(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_CONNECT:
		case CURLE_OPERATION_TIMEDOUT:
		case CURLE_ABORTED_BY_CALLBACK: /* the deadline */
		case CURLE_SEND_ERROR:
		case CURLE_RECV_ERROR:
		case CURLE_GOT_NOTHING:
		case CURLE_PARTIAL_FILE:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_HTTP2:
		case CURLE_HTTP2_STREAM:
			return true;
		default:
			return false;
	}
}

static bool
s3_request_status_retryable(const s3_response *resp)
{
	return (resp->status >= 500 && resp->status != 501) || resp->status == 429 || strcmp(resp->error.code, "SlowDown") == 0 ||
		   strcmp(resp->error.code, "RequestTimeout") == 0 || strcmp(resp->error.code, "InternalError") == 0;
}

/* Sleeps a random time up to min(cap, base * 2^attempt): exponential backoff, full jitter. */
static void
s3_request_backoff(int attempt)
{
	uint32_t cap_ms = S3_REQUEST_BACKOFF_CAP_MS;
	uint32_t ms;
	struct timespec ts;

	if (attempt < 6 && ((uint32_t) S3_REQUEST_BACKOFF_BASE_MS << attempt) < cap_ms)
		cap_ms = (uint32_t) S3_REQUEST_BACKOFF_BASE_MS << attempt;
	ms = arc4random_uniform(cap_ms + 1);
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long) (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

bool
s3_response_key_missing(const s3_response *resp)
{
	return resp->status == 404 && (resp->error.code[0] == '\0' || strcmp(resp->error.code, "NoSuchKey") == 0);
}

/* S3 error codes that say what to fix. */
static const struct
{
	const char *code;
	tb_errcode errcode;
	const char *hint;
} s3_request_known_errors[] = {
	{"SignatureDoesNotMatch", TB_ERR_STORAGE_AUTH, "check the secret access key"},
	{"InvalidAccessKeyId", TB_ERR_STORAGE_AUTH, "check the access key id"},
	{"InvalidToken", TB_ERR_STORAGE_AUTH, "check the session token"},
	{"ExpiredToken", TB_ERR_STORAGE_AUTH, "renew the temporary credentials"},
	{"AccessDenied", TB_ERR_STORAGE_AUTH, "check the permissions of the access key on the bucket"},
	{"AuthorizationHeaderMalformed", TB_ERR_STORAGE_AUTH, "check region= in the storage URL or AWS_REGION"},
	{"RequestTimeTooSkewed", TB_ERR_STORAGE_AUTH, "check this host's clock"},
	{"KMS.NotFoundException", TB_ERR_STORAGE, "check kms_key_id= in the storage URL"},
	{"InvalidStorageClass", TB_ERR_STORAGE, "check storage_class= in the storage URL"},
	{"NoSuchBucket", TB_ERR_STORAGE, "create the bucket or correct the storage URL"},
};

/* Sets err for an HTTP response that failed; names the object and what to check. */
static int
s3_request_http_error(const storage_s3 *st, const s3_request *req, const s3_response *resp, tb_error *err)
{
	const char *code = resp->error.code;

	for (size_t i = 0; i < sizeof(s3_request_known_errors) / sizeof(s3_request_known_errors[0]); i++)
		if (strcmp(code, s3_request_known_errors[i].code) == 0)
			return tb_error_set(err, s3_request_known_errors[i].errcode,
								"S3 rejected %s '%s' in bucket '%s' (%s: %s): %s (credentials from %s)", req->op,
								req->key, st->bucket, code, resp->error.message, s3_request_known_errors[i].hint,
								st->creds.source);
	if (resp->status == 403)
		return tb_error_set(err, TB_ERR_STORAGE_AUTH,
							"S3 denied %s '%s' in bucket '%s' (HTTP 403%s%s): check the credentials from %s and "
							"their permissions on the bucket",
							req->op, req->key, st->bucket, code[0] ? " " : "", code, st->creds.source);
	if (!req->bucket_level && s3_response_key_missing(resp))
		return tb_error_set(err, TB_ERR_NOT_FOUND, "object '%s' does not exist in %s", req->key, st->base.description);
	return tb_error_set(err, TB_ERR_STORAGE, "S3 %s '%s' failed with HTTP %ld (%s: %s)", req->op, req->key,
						resp->status, code[0] ? code : "no error code", resp->error.message);
}

/*
 * Renews temporary credentials when they are due. A failed renewal leaves the
 * current ones in use while they last (tried again after a pause), and is an error
 * once they expired.
 */
static int
s3_request_renew_credentials(storage_s3 *st, const s3_request *req, tb_error *err)
{
	time_t now = time(NULL);
	s3_credentials fresh;

	if (!s3_credentials_due(&st->creds, now) || (now < st->creds.expiration && now < st->creds_retry_after))
		return 0;
	if (s3_credentials_resolve(&fresh, st->region, err) == 0)
	{
		s3_credentials_clear(&st->creds);
		st->creds = fresh;
		return 0;
	}
	st->creds_retry_after = now + S3_REQUEST_CREDENTIALS_RETRY;
	if (now < st->creds.expiration)
		return 0;
	return tb_error_prefix(err, "S3 %s '%s': the temporary credentials from %s expired and could not be renewed",
						   req->op, req->key, st->creds.source);
}

int
s3_request_execute(storage_s3 *st, const s3_request *req, s3_response *resp, tb_error *err)
{
	char payload_hash[S3_SIGN_SHA256_HEX_LEN + 1];
	char curl_error[CURL_ERROR_SIZE];
	s3_request_deadline deadline;
	char *path = s3_request_path(st, req);
	char *query = s3_sign_canonical_query(req->query, req->nquery);
	char *url = NULL;
	int rc = -1;

	if (path == NULL || query == NULL || asprintf(&url, "%s%s%s%s", st->endpoint, path, query[0] ? "?" : "", query) < 0)
	{
		free(path);
		free(query);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory preparing S3 %s '%s'", req->op, req->key);
	}
	if (req->body_len > 0)
		s3_sign_sha256_hex(req->body, req->body_len, payload_hash);
	else
		strcpy(payload_hash, S3_SIGN_EMPTY_SHA256);

	for (int attempt = 0;; attempt++)
	{
		CURLcode curl_rc;
		bool retry;

		if (s3_request_renew_credentials(st, req, err) != 0)
			break;
		curl_rc = s3_request_attempt(st, req, url, path, payload_hash, resp, &deadline, curl_error);

		resp->error.code[0] = '\0';
		resp->error.message[0] = '\0';
		if (curl_rc == CURLE_OK)
		{
			bool ok = resp->status >= 200 && resp->status < 300;
			bool error_body =
				(!ok || req->error_in_ok_body) && s3_xml_parse_error(resp->body->data, resp->body->len, &resp->error);

			if (ok && !error_body)
			{
				rc = 0;
				break;
			}
			retry = s3_request_status_retryable(resp);
			s3_request_http_error(st, req, resp, err);
		}
		else
		{
			retry = s3_request_curl_retryable(curl_rc);
			if (curl_rc == CURLE_WRITE_ERROR)
				tb_error_set(err, TB_ERR_STORAGE, "S3 %s '%s' returned more than the %zu bytes expected", req->op,
							 req->key, resp->body->max);
			else if (curl_rc == CURLE_ABORTED_BY_CALLBACK)
				tb_error_set(err, TB_ERR_STORAGE,
							 "S3 %s '%s' at %s did not finish within its deadline of %ld s (2 x stall_timeout, plus "
							 "its size at %ld KiB/s): check the network and the endpoint",
							 req->op, req->key, st->endpoint, deadline.allowed, (long) (deadline.min_rate / 1024));
			else
				tb_error_set(err, curl_rc == CURLE_OUT_OF_MEMORY ? TB_ERR_NOMEM : TB_ERR_STORAGE,
							 "S3 %s '%s' at %s failed: %s", req->op, req->key, st->endpoint,
							 curl_error[0] ? curl_error : curl_easy_strerror(curl_rc));
		}
		if (!retry || attempt >= st->retries)
		{
			if (attempt > 0)
				tb_error_prefix(err, "gave up after %d attempts", attempt + 1);
			break;
		}
		s3_request_backoff(attempt);
	}
	free(url);
	free(path);
	free(query);
	return rc;
}
