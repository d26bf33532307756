/*
 * The plain libmongoc baseline of bench/mongodb-backup.sh: what reading and writing a
 * collection costs with nothing but the driver, to set the agent's numbers against.
 *
 *   mongo_plain fill URI DB COLL N SIZE   N documents of about SIZE bytes, shaped as
 *                                         test/lib/mongo_tool.py's "many" makes them
 *   mongo_plain read URI DB COLL [OUT]    one cursor over the whole collection, as the
 *                                         agent's backup opens it (empty filter, no
 *                                         options, the server's default batches);
 *                                         OUT: also writes the documents there, as
 *                                         concatenated BSON
 *   mongo_plain insert URI DB COLL FILE   the documents of FILE (concatenated BSON) in
 *                                         ordered bulk inserts of 1000 documents or 8 MB,
 *                                         document validation bypassed: as the agent's
 *                                         restore loads a collection
 *
 * Prints "DOCS BYTES" (documents and their BSON bytes) and exits 0, or a message and 1.
 * Built by the script: cc -O2 -Wall -Wextra -Werror mongo_plain.c $(pkg-config --cflags
 * --libs libmongoc-1.0).
 */
#include <mongoc/mongoc.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_DOCS 1000
#define BATCH_BYTES (8 * 1024 * 1024)

typedef struct loader
{
	mongoc_collection_t *coll;
	mongoc_bulk_operation_t *bulk;
	size_t pending, pending_bytes;
	uint64_t docs, bytes;
} loader;

static int
fail(const char *what, const bson_error_t *error)
{
	fprintf(stderr, "mongo_plain: %s: %s\n", what, error ? error->message : "failed");
	return 1;
}

static int
flush(loader *l)
{
	bson_error_t error;
	bson_t reply;
	bool ok = true;

	if (l->pending)
	{
		ok = mongoc_bulk_operation_execute(l->bulk, &reply, &error);
		bson_destroy(&reply);
	}
	if (l->bulk)
		mongoc_bulk_operation_destroy(l->bulk);
	l->bulk = NULL;
	l->pending = l->pending_bytes = 0;
	return ok ? 0 : fail("bulk insert", &error);
}

static int
add(loader *l, const bson_t *doc)
{
	bson_error_t error;

	if (l->bulk == NULL)
	{
		bson_t opts = BSON_INITIALIZER;

		BSON_APPEND_BOOL(&opts, "ordered", true);
		l->bulk = mongoc_collection_create_bulk_operation_with_opts(l->coll, &opts);
		bson_destroy(&opts);
		mongoc_bulk_operation_set_bypass_document_validation(l->bulk, true);
	}
	if (!mongoc_bulk_operation_insert_with_opts(l->bulk, doc, NULL, &error))
		return fail("a document", &error);
	l->docs++;
	l->bytes += doc->len;
	l->pending_bytes += doc->len;
	if (++l->pending >= BATCH_DOCS || l->pending_bytes >= BATCH_BYTES)
		return flush(l);
	return 0;
}

/* Documents as mongo_tool.py many writes them; the padding from a fixed xorshift. */
static int
fill(loader *l, uint64_t n, size_t size)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	uint64_t x = n * 7919 + size;
	char *pad = malloc(size + 1);
	int rc = 0;

	if (pad == NULL)
		return fail("out of memory", NULL);
	for (uint64_t i = 0; rc == 0 && i < n; i++)
	{
		bson_t doc = BSON_INITIALIZER, sub, arr;
		bson_oid_t oid;
		size_t used, len;
		char text[48];

		bson_oid_init(&oid, NULL);
		BSON_APPEND_OID(&doc, "_id", &oid);
		BSON_APPEND_INT32(&doc, "i", (int32_t) i);
		BSON_APPEND_INT64(&doc, "l", (int64_t) i * 1000003);
		BSON_APPEND_DOUBLE(&doc, "f", (double) i / 7.0);
		BSON_APPEND_DATE_TIME(&doc, "t", 1577836800000 + (int64_t) i * 1000);
		BSON_APPEND_BOOL(&doc, "b", i % 2 == 0);
		if (i % 3 == 0)
		{
			uint8_t bin[16];

			for (int k = 0; k < 16; k++)
				bin[k] = (uint8_t) ((x = x * 6364136223846793005ull + 1442695040888963407ull) >> 33);
			BSON_APPEND_BINARY(&doc, "bin", BSON_SUBTYPE_UUID, bin, sizeof(bin));
		}
		if (i % 4 == 0)
		{
			snprintf(text, sizeof(text), "v%" PRIu64, i % 97);
			BSON_APPEND_DOCUMENT_BEGIN(&doc, "sub", &sub);
			BSON_APPEND_UTF8(&sub, "k", text);
			BSON_APPEND_ARRAY_BEGIN(&sub, "a", &arr);
			snprintf(text, sizeof(text), "%" PRIu64, i);
			BSON_APPEND_INT32(&arr, "0", (int32_t) i);
			BSON_APPEND_UTF8(&arr, "1", text);
			BSON_APPEND_NULL(&arr, "2");
			bson_append_array_end(&sub, &arr);
			bson_append_document_end(&doc, &sub);
		}
		if (i % 5 == 0)
		{
			bson_decimal128_t dec;

			snprintf(text, sizeof(text), "%" PRIu64 ".%02" PRIu64, i, i % 100);
			bson_decimal128_from_string(text, &dec);
			BSON_APPEND_DECIMAL128(&doc, "dec", &dec);
		}
		used = doc.len;
		len = size > used + 10 ? size - used - 10 : 0;
		for (size_t k = 0; k < len; k++)
		{
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			pad[k] = alphabet[x % (sizeof(alphabet) - 1)];
		}
		pad[len] = '\0';
		BSON_APPEND_UTF8(&doc, "s", pad);
		rc = add(l, &doc);
		bson_destroy(&doc);
	}
	free(pad);
	return rc == 0 ? flush(l) : rc;
}

static int
read_all(mongoc_collection_t *coll, const char *out_path)
{
	bson_t filter = BSON_INITIALIZER;
	mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);
	const bson_t *doc;
	bson_error_t error;
	uint64_t docs = 0, bytes = 0;
	FILE *out = NULL;
	int rc = 0;

	if (out_path && (out = fopen(out_path, "wb")) == NULL)
	{
		perror(out_path);
		rc = 1;
	}
	while (rc == 0 && mongoc_cursor_next(cursor, &doc))
	{
		docs++;
		bytes += doc->len;
		if (out && fwrite(bson_get_data(doc), 1, doc->len, out) != doc->len)
		{
			perror(out_path);
			rc = 1;
		}
	}
	if (rc == 0 && mongoc_cursor_error(cursor, &error))
		rc = fail("reading", &error);
	if (out && fclose(out) != 0 && rc == 0)
	{
		perror(out_path);
		rc = 1;
	}
	mongoc_cursor_destroy(cursor);
	if (rc == 0)
		printf("%" PRIu64 " %" PRIu64 "\n", docs, bytes);
	return rc;
}

static int
insert_file(loader *l, const char *path)
{
	bson_error_t error;
	bson_reader_t *reader = bson_reader_new_from_file(path, &error);
	const bson_t *doc;
	bool eof = false;
	int rc = 0;

	if (reader == NULL)
		return fail(path, &error);
	while (rc == 0 && (doc = bson_reader_read(reader, &eof)) != NULL)
		rc = add(l, doc);
	if (rc == 0 && !eof)
		rc = fail(path, NULL);
	bson_reader_destroy(reader);
	return rc == 0 ? flush(l) : rc;
}

int
main(int argc, char **argv)
{
	mongoc_client_t *client;
	loader l = {0};
	const char *mode = argc > 1 ? argv[1] : "";
	int rc;

	if (argc < 5 || (strcmp(mode, "fill") == 0 && argc != 7) || (strcmp(mode, "read") == 0 && argc > 6) ||
		(strcmp(mode, "insert") == 0 && argc != 6) ||
		(strcmp(mode, "fill") != 0 && strcmp(mode, "read") != 0 && strcmp(mode, "insert") != 0))
	{
		fprintf(stderr, "usage: mongo_plain fill URI DB COLL N SIZE | read URI DB COLL [OUT] | insert URI DB COLL "
						"FILE\n");
		return 2;
	}
	mongoc_init();
	if ((client = mongoc_client_new(argv[2])) == NULL)
	{
		mongoc_cleanup();
		return fail("not a MongoDB URI", NULL);
	}
	mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
	mongoc_client_set_appname(client, "mongo_plain");
	l.coll = mongoc_client_get_collection(client, argv[3], argv[4]);
	if (strcmp(mode, "read") == 0)
		rc = read_all(l.coll, argc > 5 ? argv[5] : NULL);
	else
	{
		rc = strcmp(mode, "fill") == 0 ? fill(&l, strtoull(argv[5], NULL, 10), strtoull(argv[6], NULL, 10))
									   : insert_file(&l, argv[5]);
		if (rc == 0)
			printf("%" PRIu64 " %" PRIu64 "\n", l.docs, l.bytes);
		else if (l.bulk)
			mongoc_bulk_operation_destroy(l.bulk);
	}
	mongoc_collection_destroy(l.coll);
	mongoc_client_destroy(client);
	mongoc_cleanup();
	return rc;
}
