/*
 * AWS Signature Version 4 for S3 requests: canonical request, string to sign and
 * Authorization header, as pure functions of the request so they can be checked
 * against AWS's published examples.
 */
#ifndef TB_S3_SIGN_H
#define TB_S3_SIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define S3_SIGN_SHA256_HEX_LEN 64
#define S3_SIGN_AMZ_DATE_LEN 16 /* YYYYMMDDTHHMMSSZ */

/* sha256 of the empty string, the payload hash of requests without a body */
#define S3_SIGN_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* A query parameter or a header, as plain (unencoded) text. */
typedef struct s3_sign_pair
{
	const char *name;
	const char *value;
} s3_sign_pair;

typedef struct s3_sign_request
{
	const char *method;        /* "GET", "PUT", ... */
	const char *path;          /* canonical URI, already encoded (s3_sign_uri_encode), unnormalised */
	const s3_sign_pair *query; /* any order; the signer encodes and sorts them */
	size_t nquery;
	const s3_sign_pair *headers; /* every header to sign, any case and order; duplicates are joined */
	size_t nheaders;
	const char *payload_hash; /* hex sha256 of the body, or "UNSIGNED-PAYLOAD" */
	const char *amz_date;     /* YYYYMMDDTHHMMSSZ, the request's x-amz-date */
	const char *region;
	const char *service; /* "s3" */
} s3_sign_request;

/*
 * URI-encodes s the S3 way: everything but A-Z a-z 0-9 - . _ ~ becomes %XX
 * (upper-case hex, UTF-8 bytes as they are); '/' is kept when keep_slash.
 * Returns a malloc'd string, NULL when out of memory.
 */
char *s3_sign_uri_encode(const char *s, bool keep_slash);

/*
 * The canonical query string: names and values encoded, sorted by name then value,
 * "name=" for an empty value, joined with '&'. It is also the query string to send,
 * so what is signed is what goes on the wire. malloc'd; NULL when out of memory.
 */
char *s3_sign_canonical_query(const s3_sign_pair *query, size_t nquery);

/* The canonical request of req. malloc'd; NULL when out of memory. */
char *s3_sign_canonical_request(const s3_sign_request *req);

/* The string to sign for req and its canonical request. malloc'd; NULL when out of memory. */
char *s3_sign_string_to_sign(const s3_sign_request *req, const char *canonical_request);

/*
 * The Authorization header value ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=...") for req signed with the given credentials. malloc'd; NULL when out
 * of memory. The secret is used only for the HMAC chain and wiped from the buffers
 * derived from it.
 */
char *s3_sign_authorization(const s3_sign_request *req, const char *access_key, const char *secret_key);

/* Lower-case hex sha256 of data into out (S3_SIGN_SHA256_HEX_LEN + 1 bytes). */
void s3_sign_sha256_hex(const void *data, size_t len, char *out);

/* The x-amz-date form of t (UTC) into out (S3_SIGN_AMZ_DATE_LEN + 1 bytes). */
void s3_sign_amz_date(time_t t, char *out);

#endif
