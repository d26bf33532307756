/*
 * Unit tests of the SigV4 signer (core/storage/s3_sign.c) against AWS's published
 * examples: the S3 API reference's header-based examples and unnormalised cases of
 * the aws-c-auth signing test suite (tests/aws-signing-test-suite/v4); and the
 * driver's own requests (virtual-hosted style, encryption and storage class
 * headers, session token) against signatures computed by botocore's S3SigV4Auth.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "storage/s3_request.h"
#include "storage/s3_sign.h"

/* The S3 API reference's examples (sig-v4-header-based-auth). */
#define S3DOC_ACCESS_KEY "AKIAIOSFODNN7EXAMPLE"
#define S3DOC_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
#define S3DOC_DATE "20130524T000000Z"
#define S3DOC_HOST "examplebucket.s3.amazonaws.com"

/* The aws-c-auth suite's context: service "service", example.amazonaws.com. */
#define SUITE_ACCESS_KEY "AKIDEXAMPLE"
#define SUITE_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_DATE "20150830T123600Z"
#define SUITE_CREDENTIAL "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static s3_sign_request
s3doc_request(const char *method, const char *path, const s3_sign_pair *headers, size_t nheaders,
			  const char *payload_hash)
{
	s3_sign_request req = {
		.method = method,
		.path = path,
		.headers = headers,
		.nheaders = nheaders,
		.payload_hash = payload_hash,
		.amz_date = S3DOC_DATE,
		.region = "us-east-1",
		.service = "s3",
	};

	return req;
}

static s3_sign_request
suite_request(const char *method, const char *path, const s3_sign_pair *headers, size_t nheaders)
{
	s3_sign_request req = {
		.method = method,
		.path = path,
		.headers = headers,
		.nheaders = nheaders,
		.payload_hash = S3_SIGN_EMPTY_SHA256,
		.amz_date = SUITE_DATE,
		.region = "us-east-1",
		.service = "service",
	};

	return req;
}

static void
assert_canonical_request(const s3_sign_request *req, const char *expected)
{
	char *canonical = s3_sign_canonical_request(req);

	assert_non_null(canonical);
	assert_string_equal(canonical, expected);
	free(canonical);
}

/* The string to sign ends with the sha256 of the canonical request. */
static void
assert_string_to_sign(const s3_sign_request *req, const char *expected)
{
	char *canonical = s3_sign_canonical_request(req);
	char *sts;

	assert_non_null(canonical);
	sts = s3_sign_string_to_sign(req, canonical);
	assert_non_null(sts);
	assert_string_equal(sts, expected);
	free(sts);
	free(canonical);
}

static void
assert_authorization(const s3_sign_request *req, const char *access_key, const char *secret, const char *expected)
{
	char *auth = s3_sign_authorization(req, access_key, secret);

	assert_non_null(auth);
	assert_string_equal(auth, expected);
	free(auth);
}

static void
assert_suite_signature(const s3_sign_request *req, const char *signed_headers, const char *signature)
{
	char expected[512];

	snprintf(expected, sizeof(expected), SUITE_CREDENTIAL "SignedHeaders=%s, Signature=%s", signed_headers, signature);
	assert_authorization(req, SUITE_ACCESS_KEY, SUITE_SECRET, expected);
}

/* S3 reference, "Example: GET Object": a ranged GET. */
static void
test_s3doc_get_object(void **state)
{
	const s3_sign_pair headers[] = {
		{"Host", S3DOC_HOST},
		{"Range", "bytes=0-9"},
		{"x-amz-content-sha256", S3_SIGN_EMPTY_SHA256},
		{"x-amz-date", S3DOC_DATE},
	};
	s3_sign_request req = s3doc_request("GET", "/test.txt", headers, N_ELEMENTS(headers), S3_SIGN_EMPTY_SHA256);

	(void) state;
	assert_canonical_request(&req, "GET\n"
								   "/test.txt\n"
								   "\n"
								   "host:examplebucket.s3.amazonaws.com\n"
								   "range:bytes=0-9\n"
								   "x-amz-content-sha256:" S3_SIGN_EMPTY_SHA256 "\n"
								   "x-amz-date:20130524T000000Z\n"
								   "\n"
								   "host;range;x-amz-content-sha256;x-amz-date\n" S3_SIGN_EMPTY_SHA256);
	assert_string_to_sign(&req, "AWS4-HMAC-SHA256\n"
								"20130524T000000Z\n"
								"20130524/us-east-1/s3/aws4_request\n"
								"7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
	assert_authorization(&req, S3DOC_ACCESS_KEY, S3DOC_SECRET,
						 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
						 "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
						 "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
}

/* S3 reference, "Example: PUT Object": a body, a '$' in the key, a storage class. */
static void
test_s3doc_put_object(void **state)
{
	const char *body = "Welcome to Amazon S3.";
	char hash[S3_SIGN_SHA256_HEX_LEN + 1];
	char *path = s3_sign_uri_encode("/test$file.text", true);
	s3_sign_pair headers[] = {
		{"Date", "Fri, 24 May 2013 00:00:00 GMT"},     {"Host", S3DOC_HOST},           {"x-amz-date", S3DOC_DATE},
		{"x-amz-storage-class", "REDUCED_REDUNDANCY"}, {"x-amz-content-sha256", hash},
	};
	s3_sign_request req;

	(void) state;
	s3_sign_sha256_hex(body, strlen(body), hash);
	assert_string_equal(hash, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
	assert_non_null(path);
	assert_string_equal(path, "/test%24file.text");
	req = s3doc_request("PUT", path, headers, N_ELEMENTS(headers), hash);
	assert_string_to_sign(&req, "AWS4-HMAC-SHA256\n"
								"20130524T000000Z\n"
								"20130524/us-east-1/s3/aws4_request\n"
								"9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
	assert_authorization(&req, S3DOC_ACCESS_KEY, S3DOC_SECRET,
						 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
						 "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
						 "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
	free(path);
}

/* S3 reference, "Example: GET Bucket Lifecycle": a query parameter without a value. */
static void
test_s3doc_get_bucket_lifecycle(void **state)
{
	const s3_sign_pair query[] = {{"lifecycle", ""}};
	const s3_sign_pair headers[] = {
		{"Host", S3DOC_HOST},
		{"x-amz-date", S3DOC_DATE},
		{"x-amz-content-sha256", S3_SIGN_EMPTY_SHA256},
	};
	s3_sign_request req = s3doc_request("GET", "/", headers, N_ELEMENTS(headers), S3_SIGN_EMPTY_SHA256);

	(void) state;
	req.query = query;
	req.nquery = N_ELEMENTS(query);
	assert_canonical_request(&req, "GET\n"
								   "/\n"
								   "lifecycle=\n"
								   "host:examplebucket.s3.amazonaws.com\n"
								   "x-amz-content-sha256:" S3_SIGN_EMPTY_SHA256 "\n"
								   "x-amz-date:20130524T000000Z\n"
								   "\n"
								   "host;x-amz-content-sha256;x-amz-date\n" S3_SIGN_EMPTY_SHA256);
	assert_string_to_sign(&req, "AWS4-HMAC-SHA256\n"
								"20130524T000000Z\n"
								"20130524/us-east-1/s3/aws4_request\n"
								"9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
	assert_authorization(&req, S3DOC_ACCESS_KEY, S3DOC_SECRET,
						 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
						 "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
						 "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

/* S3 reference, "Example: Get Bucket (List Objects)": parameters given out of order. */
static void
test_s3doc_list_objects(void **state)
{
	const s3_sign_pair query[] = {{"prefix", "J"}, {"max-keys", "2"}};
	const s3_sign_pair headers[] = {
		{"Host", S3DOC_HOST},
		{"x-amz-date", S3DOC_DATE},
		{"x-amz-content-sha256", S3_SIGN_EMPTY_SHA256},
	};
	s3_sign_request req = s3doc_request("GET", "/", headers, N_ELEMENTS(headers), S3_SIGN_EMPTY_SHA256);
	char *canonical_query = s3_sign_canonical_query(query, N_ELEMENTS(query));

	(void) state;
	assert_non_null(canonical_query);
	assert_string_equal(canonical_query, "max-keys=2&prefix=J");
	free(canonical_query);
	req.query = query;
	req.nquery = N_ELEMENTS(query);
	assert_authorization(&req, S3DOC_ACCESS_KEY, S3DOC_SECRET,
						 "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
						 "SignedHeaders=host;x-amz-content-sha256;x-amz-date, "
						 "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

static const s3_sign_pair suite_headers[] = {
	{"Host", "example.amazonaws.com"},
	{"X-Amz-Date", SUITE_DATE},
};

/* Suite get-vanilla-query-order-key-case: parameters sorted by name. */
static void
test_suite_get_vanilla_query_order_key_case(void **state)
{
	const s3_sign_pair query[] = {{"Param2", "value2"}, {"Param1", "value1"}};
	s3_sign_request req = suite_request("GET", "/", suite_headers, N_ELEMENTS(suite_headers));

	(void) state;
	req.query = query;
	req.nquery = N_ELEMENTS(query);
	assert_suite_signature(&req, "host;x-amz-date", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
}

/* Suite get-vanilla-empty-query-key. */
static void
test_suite_get_vanilla_empty_query_key(void **state)
{
	const s3_sign_pair query[] = {{"Param1", "value1"}};
	s3_sign_request req = suite_request("GET", "/", suite_headers, N_ELEMENTS(suite_headers));

	(void) state;
	req.query = query;
	req.nquery = N_ELEMENTS(query);
	assert_suite_signature(&req, "host;x-amz-date", "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb");
}

/* Suite get-vanilla-query-unreserved: unreserved characters are not encoded. */
static void
test_suite_get_vanilla_query_unreserved(void **state)
{
	const char *unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	const s3_sign_pair query[] = {{unreserved, unreserved}};
	s3_sign_request req = suite_request("GET", "/", suite_headers, N_ELEMENTS(suite_headers));

	(void) state;
	req.query = query;
	req.nquery = N_ELEMENTS(query);
	assert_suite_signature(&req, "host;x-amz-date", "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197");
}

/* Suite get-vanilla-utf8-query: a UTF-8 parameter name is percent-encoded byte by byte. */
static void
test_suite_get_vanilla_utf8_query(void **state)
{
	const s3_sign_pair query[] = {{"\xe1\x88\xb4", "bar"}};
	s3_sign_request req = suite_request("GET", "/", suite_headers, N_ELEMENTS(suite_headers));
	char *canonical_query = s3_sign_canonical_query(query, N_ELEMENTS(query));

	(void) state;
	assert_non_null(canonical_query);
	assert_string_equal(canonical_query, "%E1%88%B4=bar");
	free(canonical_query);
	req.query = query;
	req.nquery = N_ELEMENTS(query);
	assert_suite_signature(&req, "host;x-amz-date", "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04");
}

/* Suite get-unreserved: unreserved characters in the path. */
static void
test_suite_get_unreserved(void **state)
{
	char *path = s3_sign_uri_encode("/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", true);
	s3_sign_request req = suite_request("GET", path, suite_headers, N_ELEMENTS(suite_headers));

	(void) state;
	assert_non_null(path);
	assert_suite_signature(&req, "host;x-amz-date", "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f");
	free(path);
}

/* Suite get-utf8: a UTF-8 path. */
static void
test_suite_get_utf8(void **state)
{
	char *path = s3_sign_uri_encode("/\xe1\x88\xb4", true);
	s3_sign_request req = suite_request("GET", path, suite_headers, N_ELEMENTS(suite_headers));

	(void) state;
	assert_non_null(path);
	assert_string_equal(path, "/%E1%88%B4");
	assert_suite_signature(&req, "host;x-amz-date", "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85");
	free(path);
}

/* Suite get-space-unnormalized: a space is %20, never '+'. */
static void
test_suite_get_space_unnormalized(void **state)
{
	char *path = s3_sign_uri_encode("/example space/", true);
	s3_sign_request req = suite_request("GET", path, suite_headers, N_ELEMENTS(suite_headers));

	(void) state;
	assert_non_null(path);
	assert_string_equal(path, "/example%20space/");
	assert_suite_signature(&req, "host;x-amz-date", "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741");
	free(path);
}

/* Suite get-slashes-unnormalized and get-slash-dot-slash-unnormalized: S3 keeps paths as sent. */
static void
test_suite_get_unnormalized_paths(void **state)
{
	s3_sign_request slashes = suite_request("GET", "//example//", suite_headers, N_ELEMENTS(suite_headers));
	s3_sign_request dot = suite_request("GET", "/./", suite_headers, N_ELEMENTS(suite_headers));

	(void) state;
	assert_suite_signature(&slashes, "host;x-amz-date",
						   "87cca117541a147f6df867677d98a7d80dff226d2bfca9e4ffa899665623c7e5");
	assert_suite_signature(&dot, "host;x-amz-date", "68714168e6557f8f2de0ef956fc24dc2593a4bd2961f8df51898d8a134695145");
}

/* Suite get-header-value-trim: values trimmed, inner blanks collapsed, names lower-cased. */
static void
test_suite_get_header_value_trim(void **state)
{
	const s3_sign_pair headers[] = {
		{"Host", "example.amazonaws.com"},
		{"My-Header1", " value1 "},
		{"My-Header2", " \"a   b   c\" "},
		{"X-Amz-Date", SUITE_DATE},
	};
	s3_sign_request req = suite_request("GET", "/", headers, N_ELEMENTS(headers));

	(void) state;
	assert_canonical_request(&req, "GET\n"
								   "/\n"
								   "\n"
								   "host:example.amazonaws.com\n"
								   "my-header1:value1\n"
								   "my-header2:\"a b c\"\n"
								   "x-amz-date:20150830T123600Z\n"
								   "\n"
								   "host;my-header1;my-header2;x-amz-date\n" S3_SIGN_EMPTY_SHA256);
	assert_suite_signature(&req, "host;my-header1;my-header2;x-amz-date",
						   "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736");
}

/* Suite get-header-key-duplicate: values of one header joined in the order given. */
static void
test_suite_get_header_key_duplicate(void **state)
{
	const s3_sign_pair headers[] = {
		{"Host", "example.amazonaws.com"}, {"My-Header1", "value2"},   {"My-Header1", "value2"},
		{"My-Header1", "value1"},          {"X-Amz-Date", SUITE_DATE},
	};
	s3_sign_request req = suite_request("GET", "/", headers, N_ELEMENTS(headers));

	(void) state;
	assert_canonical_request(&req, "GET\n"
								   "/\n"
								   "\n"
								   "host:example.amazonaws.com\n"
								   "my-header1:value2,value2,value1\n"
								   "x-amz-date:20150830T123600Z\n"
								   "\n"
								   "host;my-header1;x-amz-date\n" S3_SIGN_EMPTY_SHA256);
	assert_suite_signature(&req, "host;my-header1;x-amz-date",
						   "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea");
}

/* Suite get-vanilla-with-session-token: temporary credentials sign their token. */
static void
test_suite_get_vanilla_with_session_token(void **state)
{
	const s3_sign_pair headers[] = {
		{"Host", "example.amazonaws.com"},
		{"X-Amz-Date", SUITE_DATE},
		{"X-Amz-Security-Token", "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"},
	};
	s3_sign_request req = suite_request("GET", "/", headers, N_ELEMENTS(headers));

	(void) state;
	assert_suite_signature(&req, "host;x-amz-date;x-amz-security-token",
						   "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8");
}

/*
 * Suite post-x-www-form-urlencoded, in both of its published forms: the older one
 * signs the empty payload hash without x-amz-content-sha256, the newer one signs the
 * body's hash and the header.
 */
static void
test_suite_post_x_www_form_urlencoded(void **state)
{
	const char *body = "Param1=value1";
	char hash[S3_SIGN_SHA256_HEX_LEN + 1];
	const s3_sign_pair old_headers[] = {
		{"Content-Type", "application/x-www-form-urlencoded"},
		{"Host", "example.amazonaws.com"},
		{"Content-Length", "13"},
		{"X-Amz-Date", SUITE_DATE},
	};
	s3_sign_pair new_headers[] = {
		{"Content-Type", "application/x-www-form-urlencoded"},
		{"Host", "example.amazonaws.com"},
		{"Content-Length", "13"},
		{"x-amz-content-sha256", hash},
		{"X-Amz-Date", SUITE_DATE},
	};
	s3_sign_request old_req = suite_request("POST", "/", old_headers, N_ELEMENTS(old_headers));
	s3_sign_request new_req = suite_request("POST", "/", new_headers, N_ELEMENTS(new_headers));

	(void) state;
	assert_canonical_request(&old_req, "POST\n"
									   "/\n"
									   "\n"
									   "content-length:13\n"
									   "content-type:application/x-www-form-urlencoded\n"
									   "host:example.amazonaws.com\n"
									   "x-amz-date:20150830T123600Z\n"
									   "\n"
									   "content-length;content-type;host;x-amz-date\n" S3_SIGN_EMPTY_SHA256);
	assert_string_to_sign(&old_req, "AWS4-HMAC-SHA256\n"
									"20150830T123600Z\n"
									"20150830/us-east-1/service/aws4_request\n"
									"0eccf3fbe5a3c5d3df1d87c98cdf5dbde190d26aabdd91c9407db930a0c00896");
	assert_suite_signature(&old_req, "content-length;content-type;host;x-amz-date",
						   "4e63d719b9b2e11a61c0ada836512bc9c66dd35e5afae1d85e7bbc1fb839d8bc");

	s3_sign_sha256_hex(body, strlen(body), hash);
	assert_string_equal(hash, "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e");
	new_req.payload_hash = hash;
	assert_suite_signature(&new_req, "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
						   "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b");
}

/* What the S3 driver relies on: key encoding and the multipart query strings. */
static void
test_encoding_for_s3_requests(void **state)
{
	const s3_sign_pair uploads[] = {{"uploads", ""}};
	const s3_sign_pair part[] = {{"uploadId", "a/b+c=="}, {"partNumber", "10"}};
	const s3_sign_pair list[] = {{"prefix", "acme/postgres/"}, {"list-type", "2"}, {"continuation-token", "1 x"}};
	char *s;

	(void) state;
	s = s3_sign_uri_encode("acme/x y+z$(1).tbk", true);
	assert_string_equal(s, "acme/x%20y%2Bz%24%281%29.tbk");
	free(s);
	s = s3_sign_uri_encode("a/b", false);
	assert_string_equal(s, "a%2Fb");
	free(s);
	s = s3_sign_canonical_query(uploads, N_ELEMENTS(uploads));
	assert_string_equal(s, "uploads=");
	free(s);
	s = s3_sign_canonical_query(part, N_ELEMENTS(part));
	assert_string_equal(s, "partNumber=10&uploadId=a%2Fb%2Bc%3D%3D");
	free(s);
	s = s3_sign_canonical_query(list, N_ELEMENTS(list));
	assert_string_equal(s, "continuation-token=1%20x&list-type=2&prefix=acme%2Fpostgres%2F");
	free(s);
	s = s3_sign_canonical_query(NULL, 0);
	assert_string_equal(s, "");
	free(s);
}

static void
test_amz_date(void **state)
{
	char date[S3_SIGN_AMZ_DATE_LEN + 1];

	(void) state;
	s3_sign_amz_date(1369353600, date);
	assert_string_equal(date, S3DOC_DATE);
	s3_sign_amz_date(951782400, date);
	assert_string_equal(date, "20000229T000000Z");
}

/* ---- the driver's requests, signed as botocore 2 (the aws CLI's) S3SigV4Auth signs them ---- */

#define DRIVER_TOKEN "session-token-example"
#define DRIVER_KMS_KEY "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

/* An S3 storage for url with the S3 reference's keys and a session token in the environment. */
static storage_s3 *
driver_open(const char *url)
{
	tb_error err;
	storage *st;

	setenv("AWS_ACCESS_KEY_ID", S3DOC_ACCESS_KEY, 1);
	setenv("AWS_SECRET_ACCESS_KEY", S3DOC_SECRET, 1);
	setenv("AWS_SESSION_TOKEN", DRIVER_TOKEN, 1);
	unsetenv("AWS_ENDPOINT_URL");
	st = storage_open(url, &err);
	if (st == NULL)
		fail_msg("storage_open: %s", err.msg);
	return (storage_s3 *) st;
}

/* The value of header name in list ("" if it is there without a value), or NULL. */
static const char *
driver_header(const struct curl_slist *list, const char *name)
{
	size_t len = strlen(name);

	for (; list != NULL; list = list->next)
		if (strncmp(list->data, name, len) == 0 && list->data[len] == ':')
			return list->data[len + 1] == ' ' ? list->data + len + 2 : list->data + len + 1;
	return NULL;
}

/* Signs req for st at S3DOC_DATE; checks its path, Host and Signature, and returns the header list. */
static struct curl_slist *
assert_driver_request(storage_s3 *st, const s3_request *req, const char *payload_hash, const char *path,
					  const char *host, const char *signed_headers, const char *signature)
{
	char *actual_path = s3_request_path(st, req);
	struct curl_slist *list;
	char expected[1024];

	assert_non_null(actual_path);
	assert_string_equal(actual_path, path);
	list = s3_request_headers(st, req, actual_path, payload_hash, S3DOC_DATE);
	free(actual_path);
	assert_non_null(list);
	assert_string_equal(driver_header(list, "Host"), host);
	assert_string_equal(driver_header(list, "x-amz-security-token"), DRIVER_TOKEN);
	snprintf(expected, sizeof(expected),
			 "AWS4-HMAC-SHA256 Credential=" S3DOC_ACCESS_KEY "/20130524/us-east-1/s3/aws4_request, "
			 "SignedHeaders=%s, Signature=%s",
			 signed_headers, signature);
	assert_string_equal(driver_header(list, "Authorization"), expected);
	return list;
}

/* Without an endpoint, AWS's virtual-hosted style: the bucket in the host, the key alone in the path. */
static void
test_driver_virtual_hosted_put_with_kms_and_storage_class(void **state)
{
	storage_s3 *st = driver_open("s3://examplebucket/backups?region=us-east-1&sse=aws:kms&kms_key_id=" DRIVER_KMS_KEY
								 "&storage_class=STANDARD_IA");
	const char *body = "Welcome to Amazon S3.";
	char hash[S3_SIGN_SHA256_HEX_LEN + 1];
	s3_request put = {.op = "PUT", .method = "PUT", .key = "acme/redis/x.tbk", .creates_object = true};
	struct curl_slist *list;

	(void) state;
	assert_true(st->virtual_host);
	assert_string_equal(st->endpoint, "https://examplebucket.s3.us-east-1.amazonaws.com");
	s3_sign_sha256_hex(body, strlen(body), hash);
	list =
		assert_driver_request(st, &put, hash, "/backups/acme/redis/x.tbk", "examplebucket.s3.us-east-1.amazonaws.com",
							  "host;x-amz-content-sha256;x-amz-date;x-amz-security-token;x-amz-server-side-encryption;"
							  "x-amz-server-side-encryption-aws-kms-key-id;x-amz-storage-class",
							  "01a5ebaa478e2a9dd79070174ef1ef6dbeb92ce9d072e45ce1f8e85212c2d3bd");
	assert_string_equal(driver_header(list, "x-amz-server-side-encryption"), "aws:kms");
	assert_string_equal(driver_header(list, "x-amz-server-side-encryption-aws-kms-key-id"), DRIVER_KMS_KEY);
	assert_string_equal(driver_header(list, "x-amz-storage-class"), "STANDARD_IA");
	curl_slist_free_all(list);
	storage_close(&st->base);
}

/* CreateMultipartUpload carries the encryption header; UploadPart does not (S3 refuses it there). */
static void
test_driver_multipart_headers(void **state)
{
	storage_s3 *st = driver_open("s3://examplebucket/backups?region=us-east-1&sse=AES256");
	const s3_sign_pair uploads[] = {{"uploads", ""}};
	const s3_sign_pair part_query[] = {{"partNumber", "1"}, {"uploadId", "abc"}};
	s3_request create = {.op = "CreateMultipartUpload",
						 .method = "POST",
						 .key = "acme/redis/x.tbk",
						 .query = uploads,
						 .nquery = 1,
						 .creates_object = true};
	s3_request part = {
		.op = "UploadPart", .method = "PUT", .key = "acme/redis/x.tbk", .query = part_query, .nquery = 2};
	struct curl_slist *list;
	char *path = s3_request_path(st, &part);

	(void) state;
	list = assert_driver_request(
		st, &create, S3_SIGN_EMPTY_SHA256, "/backups/acme/redis/x.tbk", "examplebucket.s3.us-east-1.amazonaws.com",
		"host;x-amz-content-sha256;x-amz-date;x-amz-security-token;x-amz-server-side-encryption",
		"d173e47f4bf42b064800510789abdb2aaf2d88e94818938084682d5099cfe18b");
	curl_slist_free_all(list);
	list = s3_request_headers(st, &part, path, S3_SIGN_EMPTY_SHA256, S3DOC_DATE);
	assert_non_null(list);
	assert_null(driver_header(list, "x-amz-server-side-encryption"));
	assert_null(driver_header(list, "x-amz-storage-class"));
	curl_slist_free_all(list);
	free(path);
	storage_close(&st->base);
}

/* A virtual-hosted listing asks for "/" with the prefix in the query. */
static void
test_driver_virtual_hosted_list(void **state)
{
	storage_s3 *st = driver_open("s3://examplebucket/backups/?region=us-east-1");
	const s3_sign_pair query[] = {{"list-type", "2"}, {"prefix", "backups/acme/"}};
	s3_request list_req = {
		.op = "LIST", .method = "GET", .key = "backups/acme/", .bucket_level = true, .query = query, .nquery = 2};
	struct curl_slist *list;

	(void) state;
	list = assert_driver_request(st, &list_req, S3_SIGN_EMPTY_SHA256, "/", "examplebucket.s3.us-east-1.amazonaws.com",
								 "host;x-amz-content-sha256;x-amz-date;x-amz-security-token",
								 "4bfd8ff1ec4e301c2de4ebbc8b1364a16dd06617662b235adc013f2421707b5d");
	curl_slist_free_all(list);
	storage_close(&st->base);
}

/* An explicit endpoint keeps path style unless style=virtual, which puts the bucket before its host. */
static void
test_driver_endpoint_styles(void **state)
{
	storage_s3 *path_style =
		driver_open("s3://examplebucket/backups?region=us-east-1&endpoint=http://s3.localhost:9000");
	storage_s3 *virtual_style =
		driver_open("s3://examplebucket/backups?region=us-east-1&endpoint=http://s3.localhost:9000&style=virtual");
	s3_request get = {.op = "GET", .method = "GET", .key = "acme/keys/k.json", .range = "bytes=0-9"};
	struct curl_slist *list;
	char *path = s3_request_path(path_style, &get);

	(void) state;
	assert_false(path_style->virtual_host);
	assert_string_equal(path_style->endpoint, "http://s3.localhost:9000");
	assert_string_equal(path, "/examplebucket/backups/acme/keys/k.json");
	free(path);
	assert_string_equal(virtual_style->endpoint, "http://examplebucket.s3.localhost:9000");
	list = assert_driver_request(virtual_style, &get, S3_SIGN_EMPTY_SHA256, "/backups/acme/keys/k.json",
								 "examplebucket.s3.localhost:9000",
								 "host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token",
								 "c5ce5c2bdb935fb3601c1b6866099278b36c3baa25b74dc5718555927a10f9ce");
	curl_slist_free_all(list);
	storage_close(&path_style->base);
	storage_close(&virtual_style->base);
}

/* URL options that would put something else in a header or a host name are refused, naming what is allowed. */
static void
test_driver_refused_options(void **state)
{
	static const struct
	{
		const char *url;
		const char *message;
	} refused[] = {
		{"s3://examplebucket/?sse=aws:kms&kms_key_id=a%0D%0Ax-evil:%201", "kms_key_id= is not a KMS key id"},
		{"s3://examplebucket/?kms_key_id=alias/x", "kms_key_id= needs sse=aws:kms"},
		{"s3://examplebucket/?sse=aws:kms:dsse", "sse= must be AES256 or aws:kms"},
		{"s3://examplebucket/?storage_class=GLACIER", "lifecycle rule"},
		{"s3://examplebucket/?storage_class=STANDARD%0D%0A", "storage_class= must be"},
		{"s3://examplebucket/?style=dns", "style= must be path or virtual"},
		{"s3://Example_Bucket/?style=virtual", "use style=path"},
		{"s3://my.bucket/?style=virtual", "no '.' over https"},
		{"s3://examplebucket/?max_bandwidth=50kB/s", "max_bandwidth= is not a rate"},
		{"s3://examplebucket/?max_bandwidth=1KB/s", "from 100KB/s"},
		{"s3://examplebucket/?profile=prod",
		 "use endpoint, region, style, sse, kms_key_id, storage_class, max_bandwidth"},
	};

	(void) state;
	setenv("AWS_ACCESS_KEY_ID", S3DOC_ACCESS_KEY, 1);
	setenv("AWS_SECRET_ACCESS_KEY", S3DOC_SECRET, 1);
	unsetenv("AWS_ENDPOINT_URL");
	for (size_t i = 0; i < N_ELEMENTS(refused); i++)
	{
		tb_error err;
		storage *st = storage_open(refused[i].url, &err);

		if (st != NULL)
			fail_msg("%s was accepted", refused[i].url);
		if (strstr(err.msg, refused[i].message) == NULL)
			fail_msg("%s: '%s' does not say '%s'", refused[i].url, err.msg, refused[i].message);
	}
}

/* A bucket that cannot be a host name falls back to path style at AWS; max_bandwidth takes decimal and binary units. */
static void
test_driver_defaults(void **state)
{
	storage_s3 *legacy = driver_open("s3://Legacy_Bucket/?region=eu-west-1");
	storage_s3 *limited = driver_open("s3://examplebucket/?max_bandwidth=50MB/s");
	storage_s3 *binary = driver_open("s3://examplebucket/?max_bandwidth=2MiB");

	(void) state;
	assert_false(legacy->virtual_host);
	assert_string_equal(legacy->endpoint, "https://s3.eu-west-1.amazonaws.com");
	assert_int_equal(limited->max_bandwidth, 50000000);
	assert_int_equal(binary->max_bandwidth, 2 * 1024 * 1024);
	storage_close(&legacy->base);
	storage_close(&limited->base);
	storage_close(&binary->base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_s3doc_get_object),
		cmocka_unit_test(test_s3doc_put_object),
		cmocka_unit_test(test_s3doc_get_bucket_lifecycle),
		cmocka_unit_test(test_s3doc_list_objects),
		cmocka_unit_test(test_suite_get_vanilla_query_order_key_case),
		cmocka_unit_test(test_suite_get_vanilla_empty_query_key),
		cmocka_unit_test(test_suite_get_vanilla_query_unreserved),
		cmocka_unit_test(test_suite_get_vanilla_utf8_query),
		cmocka_unit_test(test_suite_get_unreserved),
		cmocka_unit_test(test_suite_get_utf8),
		cmocka_unit_test(test_suite_get_space_unnormalized),
		cmocka_unit_test(test_suite_get_unnormalized_paths),
		cmocka_unit_test(test_suite_get_header_value_trim),
		cmocka_unit_test(test_suite_get_header_key_duplicate),
		cmocka_unit_test(test_suite_get_vanilla_with_session_token),
		cmocka_unit_test(test_suite_post_x_www_form_urlencoded),
		cmocka_unit_test(test_encoding_for_s3_requests),
		cmocka_unit_test(test_amz_date),
		cmocka_unit_test(test_driver_virtual_hosted_put_with_kms_and_storage_class),
		cmocka_unit_test(test_driver_multipart_headers),
		cmocka_unit_test(test_driver_virtual_hosted_list),
		cmocka_unit_test(test_driver_endpoint_styles),
		cmocka_unit_test(test_driver_refused_options),
		cmocka_unit_test(test_driver_defaults),
	};

	return cmocka_run_group_tests_name("s3_sign", tests, NULL, NULL);
}
