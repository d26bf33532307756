/*
 * Unit tests of the ListMultipartUploadsResult and ListPartsResult parsers
 * (core/storage/s3_xml.c): each upload with its key, id and start, the markers of a
 * truncated page, an upload's bytes and newest part, and refusals of what the janitor
 * must not act on (no upload id, a truncated page without markers, not a listing).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "storage/s3_xml.h"

#define HEAD                                                                                                           \
	"<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListMultipartUploadsResult "                                           \
	"xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Bucket>b</Bucket>"
#define UPLOAD(key, id, when)                                                                                          \
	"<Upload><Key>" key "</Key><UploadId>" id "</UploadId><StorageClass>STANDARD</StorageClass><Initiated>" when       \
	"</Initiated></Upload>"

typedef struct seen
{
	int count;
	char keys[4][64];
	char uploads[4][64];
	int64_t mtimes[4];
	int stop_after; /* 0: never */
} seen;

static int
collect(const char *key, const char *upload, const storage_info *info, void *arg)
{
	seen *s = arg;

	snprintf(s->keys[s->count], sizeof(s->keys[0]), "%s", key);
	snprintf(s->uploads[s->count], sizeof(s->uploads[0]), "%s", upload);
	s->mtimes[s->count] = info->mtime;
	s->count++;
	return s->stop_after != 0 && s->count >= s->stop_after;
}

static int
parse(const char *body, seen *s, bool *truncated, char **next_key, char **next_upload)
{
	return s3_xml_parse_uploads(body, strlen(body), collect, s, truncated, next_key, next_upload);
}

static void
test_uploads_listed_with_key_id_and_start(void **state)
{
	const char *body =
		HEAD "<IsTruncated>false</IsTruncated>" UPLOAD("jan/acme/redis/a.tbk", "U1", "2026-12-02T00:29:33.000Z")
			UPLOAD("jan/acme/redis/b.tbk", "U2", "2026-12-02T00:29:34.000Z") "</ListMultipartUploadsResult>";
	seen s = {0};
	bool truncated = true;
	char *next_key, *next_upload;

	(void) state;
	assert_int_equal(parse(body, &s, &truncated, &next_key, &next_upload), 0);
	assert_int_equal(s.count, 2);
	assert_string_equal(s.keys[0], "jan/acme/redis/a.tbk");
	assert_string_equal(s.uploads[1], "U2");
	assert_int_equal(s.mtimes[0], 1796171373);
	assert_false(truncated);
	assert_null(next_key);
	assert_null(next_upload);
}

static void
test_truncated_page_gives_both_markers(void **state)
{
	const char *body = HEAD "<IsTruncated>true</IsTruncated><NextKeyMarker>jan/acme/x.tbk</NextKeyMarker>"
							"<NextUploadIdMarker>U9</NextUploadIdMarker>" UPLOAD(
								"jan/acme/x.tbk", "U9", "2026-12-02T00:00:00Z") "</ListMultipartUploadsResult>";
	seen s = {0};
	bool truncated = false;
	char *next_key, *next_upload;

	(void) state;
	assert_int_equal(parse(body, &s, &truncated, &next_key, &next_upload), 0);
	assert_true(truncated);
	assert_string_equal(next_key, "jan/acme/x.tbk");
	assert_string_equal(next_upload, "U9");
	free(next_key);
	free(next_upload);
}

static void
test_refusals(void **state)
{
	seen s = {0};
	bool truncated;
	char *next_key, *next_upload;

	(void) state;
	/* An upload without an id could not be aborted: the listing is not trusted. */
	assert_int_equal(parse(HEAD "<IsTruncated>false</IsTruncated><Upload><Key>k</Key></Upload>"
								"</ListMultipartUploadsResult>",
						   &s, &truncated, &next_key, &next_upload),
					 -1);
	/* Truncated without its markers: the next page could not be asked for. */
	assert_int_equal(parse(HEAD "<IsTruncated>true</IsTruncated><NextKeyMarker>k</NextKeyMarker>"
								"</ListMultipartUploadsResult>",
						   &s, &truncated, &next_key, &next_upload),
					 -1);
	assert_null(next_key);
	assert_int_equal(parse("<ListBucketResult></ListBucketResult>", &s, &truncated, &next_key, &next_upload), -1);
	assert_int_equal(parse("not xml", &s, &truncated, &next_key, &next_upload), -1);
	assert_int_equal(s.count, 0);
}

static void
test_callback_stops_the_listing(void **state)
{
	const char *body = HEAD "<IsTruncated>false</IsTruncated>" UPLOAD("a", "U1", "2026-12-02T00:00:00Z")
		UPLOAD("b", "U2", "2026-12-02T00:00:00Z") "</ListMultipartUploadsResult>";
	seen s = {.stop_after = 1};
	bool truncated;
	char *next_key, *next_upload;

	(void) state;
	assert_int_equal(parse(body, &s, &truncated, &next_key, &next_upload), 1);
	assert_int_equal(s.count, 1);
}

static void
test_parts_give_bytes_and_newest_part(void **state)
{
	const char *body = "<ListPartsResult><IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker>"
					   "<Part><PartNumber>1</PartNumber><LastModified>2026-12-02T00:29:40.000Z</LastModified>"
					   "<Size>5242880</Size></Part><Part><PartNumber>2</PartNumber>"
					   "<LastModified>2026-12-02T00:29:35.000Z</LastModified><Size>100</Size></Part></ListPartsResult>";
	storage_info info = {.mtime = 1796171373}; /* Initiated, 00:29:33 */
	bool truncated = false;
	char *next = NULL;

	(void) state;
	assert_int_equal(s3_xml_parse_parts(body, strlen(body), &info, &truncated, &next), 0);
	assert_int_equal(info.size, 5242980);
	assert_int_equal(info.mtime, 1796171380);
	assert_true(truncated);
	assert_string_equal(next, "2");
	free(next);
	body = "<ListPartsResult><Part><Size>x</Size></Part></ListPartsResult>";
	assert_int_equal(s3_xml_parse_parts(body, strlen(body), &info, &truncated, &next), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uploads_listed_with_key_id_and_start),
		cmocka_unit_test(test_truncated_page_gives_both_markers),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_callback_stops_the_listing),
		cmocka_unit_test(test_parts_give_bytes_and_newest_part),
	};

	s3_xml_init();
	return cmocka_run_group_tests_name("s3_uploads", tests, NULL, NULL);
}
