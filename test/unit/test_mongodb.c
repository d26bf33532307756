/*
 * Unit tests of the MongoDB agent's archive format: the CRC-64 its EOF headers carry
 * and the reader of documents and terminators, through a real sealed object.
 */
#include "unit.h"
#include "unit_repo.h"

#include "agent_internal.h"
#include "mongodb_agent.h"

static char dir[] = "/tmp/tb-test-mongodb-XXXXXX";
static storage *st;
static master_key master;

static void
test_crc64(void **state)
{
	(void) state;
	/* The CRC-64/XZ check value, which Go's crc64 with the ECMA table gives too. */
	assert_true(mongo_crc64(0, (const uint8_t *) "123456789", 9) == 0x995DC9BBDF1939FAull);
	/* Fed in pieces, as documents arrive, it is the CRC of them all. */
	assert_true(mongo_crc64(mongo_crc64(0, (const uint8_t *) "1234", 4), (const uint8_t *) "56789", 5) ==
				0x995DC9BBDF1939FAull);
	assert_true(mongo_crc64(0, NULL, 0) == 0);
	/* Eight bytes a step or one: the same CRC, wherever the pieces are cut. */
	{
		uint8_t data[1000];
		uint64_t whole, pieces = 0;
		size_t at = 0, cut = 1;

		for (size_t i = 0; i < sizeof(data); i++)
			data[i] = (uint8_t) (i * 131 + 7);
		whole = mongo_crc64(0, data, sizeof(data));
		while (at < sizeof(data))
		{
			size_t n = cut < sizeof(data) - at ? cut : sizeof(data) - at;

			pieces = mongo_crc64(pieces, data + at, n);
			at += n;
			cut = cut * 3 % 17 + 1;
		}
		assert_true(whole == pieces);
	}
}

/* Seals magic + the given bytes and opens an archive reader on it, past the magic. */
static mongo_archive_reader *
archive_of(const void *bytes, size_t len, repo_reader **r)
{
	tenant_key key;
	tb_error err = {0};
	repo_put *put;
	manifest m;
	mongo_archive_reader *ar;

	assert_int_equal(repo_tenant_key_current(st, &master, "acme", true, &key, &err), 0);
	put = repo_put_begin(st, &key, "mongodb", NULL, &err);
	assert_int_equal(mongo_archive_write_u32(put, MONGO_ARCHIVE_MAGIC, &err), 0);
	assert_int_equal(repo_put_write(put, bytes, len, &err), 0);
	assert_int_equal(repo_put_commit(put, &m, &err), 0);
	*r = repo_reader_open(st, &master, m.object, NULL, &err);
	assert_non_null(*r);
	ar = mongo_archive_reader_open(*r, &err);
	assert_int_equal(mongo_archive_read_magic(ar, &err), 0);
	return ar;
}

static void
test_reader(void **state)
{
	bson_t *one = BCON_NEW("a", BCON_INT32(1), "b", "{", "c", BCON_UTF8("x"), "}");
	uint8_t bytes[256], term[4] = {0xff, 0xff, 0xff, 0xff};
	size_t n = 0;
	mongo_archive_reader *ar;
	repo_reader *r;
	mongo_item item;
	bson_t doc;
	tb_error err = {0};

	(void) state;
	memcpy(bytes, bson_get_data(one), one->len);
	n += one->len;
	memcpy(bytes + n, term, 4);
	n += 4;
	ar = archive_of(bytes, n, &r);
	assert_int_equal(mongo_archive_next(ar, &item, &doc, &err), 0);
	assert_int_equal(item, MONGO_ITEM_DOC);
	assert_int_equal(doc.len, one->len);
	assert_memory_equal(bson_get_data(&doc), bson_get_data(one), one->len);
	assert_int_equal(mongo_archive_next(ar, &item, &doc, &err), 0);
	assert_int_equal(item, MONGO_ITEM_TERMINATOR);
	assert_int_equal(mongo_archive_next(ar, &item, &doc, &err), 0);
	assert_int_equal(item, MONGO_ITEM_END);
	mongo_archive_reader_close(ar);
	repo_reader_close(r);
	bson_destroy(one);
}

static void
expect_reader_error(const void *bytes, size_t len, const char *message)
{
	repo_reader *r;
	mongo_archive_reader *ar = archive_of(bytes, len, &r);
	mongo_item item;
	bson_t doc;
	tb_error err = {0};

	assert_int_equal(mongo_archive_next(ar, &item, &doc, &err), -1);
	assert_string_equal(err.msg, message);
	mongo_archive_reader_close(ar);
	repo_reader_close(r);
}

static void
test_reader_errors(void **state)
{
	(void) state;
	expect_reader_error("\x10\0", 2, "the archive ends inside a document");
	expect_reader_error("\x03\0\0\0", 4, "the archive holds a document of 3 bytes");
	expect_reader_error("\x0c\0\0\0\x10"
						"a\0\x01\0\0",
						10, "the backup ends inside a record");
	/* A document must end in a zero byte, and hold only known element types. */
	expect_reader_error("\x0c\0\0\0\x10"
						"a\0\x01\0\0\0\x07",
						12, "the archive holds a malformed document (bad length)");
	expect_reader_error("\x0c\0\0\0\x55"
						"a\0\x01\0\0\0\0",
						12, "the archive holds a malformed document (corrupt BSON)");
}

/* Locators: never admin, local or config; only the allowed URI options, none that reads a file. */
static void
test_locator_rules(void **state)
{
	agent_config config = {.engine = "mongodb"};
	agent_job job = {.tenant = "t", .engine = "mongodb", .config = &config};
	mongo_source src;
	tb_error err;
	static const struct
	{
		const char *locator;
		const char *error;
	} refused[] = {
		{"mongodb://127.0.0.1:1/admin", "one of the server's own databases"},
		{"mongodb://127.0.0.1:1/Config", "one of the server's own databases"},
		{"mongodb://127.0.0.1:1/local?replicaSet=rs0", "one of the server's own databases"},
		{"mongodb://127.0.0.1:1/x?tls=true&tlsCAFile=/etc/shadow", "has a URI option this agent does not take"},
		{"mongodb://127.0.0.1:1/x?TLSCERTIFICATEKEYFILE=/k.pem", "has a URI option this agent does not take"},
		{"mongodb://127.0.0.1:1/x?sslclientcertificatekeyfile=/k.pem", "has a URI option this agent does not take"},
		{"mongodb://127.0.0.1:1/x?authMechanism=GSSAPI", "only those are allowed"},
		{"mongodb://127.0.0.1:1/x?authMechanism=MONGODB-X509", "only those are allowed"},
		{"mongodb://127.0.0.1:1/x?tls=yes", "a value other than true or false"},
	};

	(void) state;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
	{
		job.locator = (char *) refused[i].locator;
		assert_int_equal(mongo_source_open(&job, &src, &err), -1);
		assert_non_null(strstr(err.msg, refused[i].error));
	}
	job.locator = "mongodb://shopper@127.0.0.1:1/shop?replicaSet=rs0&authSource=admin&authMechanism=SCRAM-SHA-256&tls=false"
				  "&readPreference=primary&connectTimeoutMS=100&serverSelectionTimeoutMS=100&appname=a";
	assert_int_equal(mongo_source_open(&job, &src, &err), 0);
	assert_string_equal(src.database, "shop");
	mongo_source_close(&src);
	assert_true(mongo_is_reserved_database("ADMIN") && !mongo_is_reserved_database("admins"));
}

static int
setup(void **state)
{
	(void) state;
	return unit_repo_open(dir, &st, &master);
}

static int
teardown(void **state)
{
	(void) state;
	return unit_repo_close(dir, st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc64),
		cmocka_unit_test(test_reader),
		cmocka_unit_test(test_reader_errors),
		cmocka_unit_test(test_locator_rules),
	};

	return cmocka_run_group_tests_name("mongodb", tests, setup, teardown);
}
