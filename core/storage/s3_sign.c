/*
 * AWS Signature Version 4 (see s3_sign.h). S3 flavour: paths are signed exactly as
 * sent (no normalisation), empty query values are signed as "name=".
 */
#include "s3_sign.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#define S3_SIGN_ALGORITHM "AWS4-HMAC-SHA256"

/* A header or query parameter in canonical form, with its position for a stable sort. */
typedef struct s3_sign_item
{
	char *name;
	char *value;
	size_t index;
} s3_sign_item;

static const char s3_sign_hex[] = "0123456789abcdef";

static void
s3_sign_to_hex(const unsigned char *bytes, size_t len, char *out)
{
	for (size_t i = 0; i < len; i++)
	{
		out[2 * i] = s3_sign_hex[bytes[i] >> 4];
		out[2 * i + 1] = s3_sign_hex[bytes[i] & 0xf];
	}
	out[2 * len] = '\0';
}

void
s3_sign_sha256_hex(const void *data, size_t len, char *out)
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256(data, len, md);
	s3_sign_to_hex(md, sizeof(md), out);
}

void
s3_sign_amz_date(time_t t, char *out)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, S3_SIGN_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

/* RFC 3986 unreserved characters, in ASCII whatever the locale. */
static bool
s3_sign_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		   c == '_' || c == '~';
}

char *
s3_sign_uri_encode(const char *s, bool keep_slash)
{
	static const char upper_hex[] = "0123456789ABCDEF";
	char *out = malloc(strlen(s) * 3 + 1);
	char *o = out;

	if (out == NULL)
		return NULL;
	for (const unsigned char *c = (const unsigned char *) s; *c; c++)
	{
		if (s3_sign_unreserved(*c) || (keep_slash && *c == '/'))
			*o++ = (char) *c;
		else
		{
			*o++ = '%';
			*o++ = upper_hex[*c >> 4];
			*o++ = upper_hex[*c & 0xf];
		}
	}
	*o = '\0';
	return out;
}

static void
s3_sign_items_free(s3_sign_item *items, size_t n)
{
	if (items == NULL)
		return;
	for (size_t i = 0; i < n; i++)
	{
		free(items[i].name);
		free(items[i].value);
	}
	free(items);
}

/* Query parameters order by encoded name, then encoded value. */
static int
s3_sign_query_compare(const void *a, const void *b)
{
	const s3_sign_item *x = a;
	const s3_sign_item *y = b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : strcmp(x->value, y->value);
}

/* Headers order by lower-case name; headers of one name keep their order. */
static int
s3_sign_header_compare(const void *a, const void *b)
{
	const s3_sign_item *x = a;
	const s3_sign_item *y = b;
	int c = strcmp(x->name, y->name);

	return c != 0 ? c : (x->index > y->index) - (x->index < y->index);
}

/* A header name lower-cased in ASCII, whatever the locale. */
static char *
s3_sign_header_name(const char *name)
{
	char *out = strdup(name);

	if (out != NULL)
		for (char *c = out; *c; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char) (*c - 'A' + 'a');
	return out;
}

/* A header value trimmed, inner runs of blanks collapsed to one space. */
static char *
s3_sign_header_value(const char *value)
{
	char *out = malloc(strlen(value) + 1);
	char *o = out;

	if (out == NULL)
		return NULL;
	while (*value == ' ' || *value == '\t')
		value++;
	while (*value)
	{
		if (*value == ' ' || *value == '\t')
		{
			while (*value == ' ' || *value == '\t')
				value++;
			if (*value)
				*o++ = ' ';
		}
		else
			*o++ = *value++;
	}
	*o = '\0';
	return out;
}

/*
 * The canonical items of pairs, sorted: header names and values normalised, or
 * query parameters URI-encoded. NULL when out of memory.
 */
static s3_sign_item *
s3_sign_items_build(const s3_sign_pair *pairs, size_t n, bool headers)
{
	s3_sign_item *items = calloc(n > 0 ? n : 1, sizeof(*items));

	if (items == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
	{
		items[i].index = i;
		if (headers)
		{
			items[i].name = s3_sign_header_name(pairs[i].name);
			items[i].value = s3_sign_header_value(pairs[i].value);
		}
		else
		{
			items[i].name = s3_sign_uri_encode(pairs[i].name, false);
			items[i].value = s3_sign_uri_encode(pairs[i].value ? pairs[i].value : "", false);
		}
		if (items[i].name == NULL || items[i].value == NULL)
		{
			s3_sign_items_free(items, n);
			return NULL;
		}
	}
	qsort(items, n, sizeof(*items), headers ? s3_sign_header_compare : s3_sign_query_compare);
	return items;
}

/* Closes a memory stream and returns its text, or NULL (and frees it) if writing failed. */
static char *
s3_sign_stream_finish(FILE *f, char **buf)
{
	bool failed = ferror(f) != 0;

	if (fclose(f) != 0 || failed)
	{
		free(*buf);
		return NULL;
	}
	return *buf;
}

char *
s3_sign_canonical_query(const s3_sign_pair *query, size_t nquery)
{
	s3_sign_item *items = s3_sign_items_build(query, nquery, false);
	char *buf = NULL;
	size_t size;
	FILE *f;

	if (items == NULL)
		return NULL;
	f = open_memstream(&buf, &size);
	if (f == NULL)
	{
		s3_sign_items_free(items, nquery);
		return NULL;
	}
	for (size_t i = 0; i < nquery; i++)
		fprintf(f, "%s%s=%s", i > 0 ? "&" : "", items[i].name, items[i].value);
	s3_sign_items_free(items, nquery);
	return s3_sign_stream_finish(f, &buf);
}

/* The ';'-joined names of sorted header items, each name once. NULL when out of memory. */
static char *
s3_sign_signed_headers(const s3_sign_item *headers, size_t n)
{
	char *buf = NULL;
	size_t size;
	FILE *f = open_memstream(&buf, &size);

	if (f == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (i == 0 || strcmp(headers[i].name, headers[i - 1].name) != 0)
			fprintf(f, "%s%s", i > 0 ? ";" : "", headers[i].name);
	return s3_sign_stream_finish(f, &buf);
}

/*
 * The canonical request of req; with signed_headers non-NULL, also the signed
 * header names (malloc'd). NULL when out of memory.
 */
static char *
s3_sign_build_canonical(const s3_sign_request *req, char **signed_headers)
{
	s3_sign_item *headers = s3_sign_items_build(req->headers, req->nheaders, true);
	char *query = headers ? s3_sign_canonical_query(req->query, req->nquery) : NULL;
	char *names = query ? s3_sign_signed_headers(headers, req->nheaders) : NULL;
	char *buf = NULL;
	size_t size;
	FILE *f = names ? open_memstream(&buf, &size) : NULL;
	char *result = NULL;

	if (f != NULL)
	{
		fprintf(f, "%s\n%s\n%s\n", req->method, req->path, query);
		for (size_t i = 0; i < req->nheaders; i++)
		{
			if (i > 0 && strcmp(headers[i].name, headers[i - 1].name) == 0)
				fprintf(f, ",%s", headers[i].value);
			else
				fprintf(f, "%s%s:%s", i > 0 ? "\n" : "", headers[i].name, headers[i].value);
		}
		fprintf(f, "%s\n%s\n%s", req->nheaders > 0 ? "\n" : "", names, req->payload_hash);
		result = s3_sign_stream_finish(f, &buf);
	}
	s3_sign_items_free(headers, req->nheaders);
	free(query);
	if (result != NULL && signed_headers != NULL)
		*signed_headers = names;
	else
		free(names);
	return result;
}

char *
s3_sign_canonical_request(const s3_sign_request *req)
{
	return s3_sign_build_canonical(req, NULL);
}

char *
s3_sign_string_to_sign(const s3_sign_request *req, const char *canonical_request)
{
	char hash[S3_SIGN_SHA256_HEX_LEN + 1];
	char *out;

	s3_sign_sha256_hex(canonical_request, strlen(canonical_request), hash);
	if (asprintf(&out, S3_SIGN_ALGORITHM "\n%s\n%.8s/%s/%s/aws4_request\n%s", req->amz_date, req->amz_date, req->region,
				 req->service, hash) < 0)
		return NULL;
	return out;
}

static void
s3_sign_hmac(const unsigned char *key, size_t key_len, const char *data, unsigned char *out)
{
	unsigned int out_len = SHA256_DIGEST_LENGTH;

	HMAC(EVP_sha256(), key, (int) key_len, (const unsigned char *) data, strlen(data), out, &out_len);
}

/*
 * Hex HMAC-SHA256 of string_to_sign under the key derived from secret_key for req's
 * scope, into out. false when out of memory.
 */
static bool
s3_sign_signature(const s3_sign_request *req, const char *secret_key, const char *string_to_sign, char *out)
{
	size_t secret_len = strlen(secret_key);
	unsigned char *k_secret = malloc(secret_len + 5);
	unsigned char key[SHA256_DIGEST_LENGTH];
	unsigned char next[SHA256_DIGEST_LENGTH];
	char date[9];

	if (k_secret == NULL)
		return false;
	memcpy(date, req->amz_date, 8);
	date[8] = '\0';
	memcpy(k_secret, "AWS4", 4);
	memcpy(k_secret + 4, secret_key, secret_len + 1);
	s3_sign_hmac(k_secret, secret_len + 4, date, key);
	OPENSSL_cleanse(k_secret, secret_len + 5);
	free(k_secret);
	s3_sign_hmac(key, sizeof(key), req->region, next);
	s3_sign_hmac(next, sizeof(next), req->service, key);
	s3_sign_hmac(key, sizeof(key), "aws4_request", next);
	s3_sign_hmac(next, sizeof(next), string_to_sign, key);
	s3_sign_to_hex(key, sizeof(key), out);
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(next, sizeof(next));
	return true;
}

char *
s3_sign_authorization(const s3_sign_request *req, const char *access_key, const char *secret_key)
{
	char signature[S3_SIGN_SHA256_HEX_LEN + 1];
	char *signed_headers = NULL;
	char *canonical = s3_sign_build_canonical(req, &signed_headers);
	char *string_to_sign = canonical ? s3_sign_string_to_sign(req, canonical) : NULL;
	char *out = NULL;

	if (string_to_sign != NULL && s3_sign_signature(req, secret_key, string_to_sign, signature) &&
		asprintf(&out, S3_SIGN_ALGORITHM " Credential=%s/%.8s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
				 access_key, req->amz_date, req->region, req->service, signed_headers, signature) < 0)
		out = NULL;
	free(canonical);
	free(string_to_sign);
	free(signed_headers);
	return out;
}
