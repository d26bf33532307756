/* Unit tests of manifest validation: what storage hands back is checked field by field. */
#include "unit.h"

#include <stdio.h>

#include "manifest.h"

#define KEY "acme/postgres/2026-11-26T060000Z-42.json"

static const manifest good = {
	.tenant = "acme",
	.engine = "postgres",
	.backup_id = "42",
	.object = "acme/postgres/2026-11-26T060000Z-42.tbk",
	.key_id = "0123456789abcdef",
	.started = "2026-11-26T06:00:00Z",
	.finished = "2026-11-26T06:00:07Z",
	.plain_bytes = 100,
	.stored_bytes = 200,
	.chunks = 1,
	.chunk_size = 1048576,
	.sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
};

/* good as JSON, with the value of field replaced by value (raw JSON), or as it is (NULL). */
static char *
json_with(const char *field, const char *value)
{
	char *text = manifest_to_json(&good, &(tb_error){0});
	char *out, *at, *end, needle[64];

	assert_non_null(text);
	if (field == NULL)
		return text;
	snprintf(needle, sizeof(needle), "\"%s\": ", field);
	at = strstr(text, needle);
	assert_non_null(at);
	at += strlen(needle);
	end = at + strcspn(at, ",\n");
	out = malloc(strlen(text) + strlen(value) + 1);
	sprintf(out, "%.*s%s%s", (int) (at - text), text, value, end);
	free(text);
	return out;
}

static int
parse_with(const char *field, const char *value, const char *key, tb_error *err)
{
	char *json = json_with(field, value);
	manifest m;
	int rc = manifest_from_json(json, key, &m, err);

	free(json);
	return rc;
}

static void
test_round_trip(void **state)
{
	tb_error err = {0};
	char *json = json_with(NULL, NULL);
	manifest m;

	(void) state;
	assert_int_equal(manifest_from_json(json, KEY, &m, &err), 0);
	assert_string_equal(m.object, good.object);
	assert_int_equal(m.stored_bytes, 200);
	free(json);
}

static void
test_each_field_checked(void **state)
{
	static const struct
	{
		const char *field, *value, *named;
	} bad[] = {
		{"tenant", "\"Acme\"", "tenant"},
		{"tenant", "\"globex\"", "object (not below"},
		{"engine", "\"oracle\"", "engine"},
		{"backup_id", "\"43\"", "backup_id (not the one in the object's name)"},
		{"backup_id", "\"4/2\"", "backup_id"},
		{"object", "\"globex/postgres/2026-11-26T060000Z-42.tbk\"", "object (not the manifest's own sibling"},
		{"object", "\"acme/postgres/../x.tbk\"", "object (not the manifest's own sibling"},
		{"key_id", "\"0123456789ABCDEF\"", "key_id"},
		{"key_id", "\"\\u001b[31m\"", "key_id"},
		{"started", "\"2026-11-26 06:00:00Z\"", "started"},
		{"started", "\"2026-02-30T06:00:00Z\"", "started"},
		{"finished", "\"2026-11-26T06:00:07Z\\u001b]0;owned\\u0007\"", "finished"},
		{"finished", "\"2026-11-26T05:59:59Z\"", "finished"},
		{"plain_bytes", "-1", "negative"},
		{"stored_bytes", "\"200\"", "wrong type"},
		{"stored_bytes", "2.5", "wrong type"},
		{"chunk_size", "0", "chunk_size"},
		{"sha256", "\"00112233\"", "sha256"},
		{"version", "2", "format or version"},
	};

	(void) state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		tb_error err = {0};

		assert_int_equal(parse_with(bad[i].field, bad[i].value, KEY, &err), -1);
		if (strstr(err.msg, bad[i].named) == NULL)
			fail_msg("%s = %s: '%s' does not name '%s'", bad[i].field, bad[i].value, err.msg, bad[i].named);
		assert_null(strchr(err.msg, '\033'));
	}
}

/* good with a database, as JSON with its value replaced by value (raw JSON). */
static int
parse_database(const char *value, manifest *m, tb_error *err)
{
	manifest with = good;
	char *text, *json;
	int rc;

	strcpy(with.database, "acme_db");
	text = manifest_to_json(&with, err);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"database\": \"acme_db\""));
	json = text;
	if (value != NULL)
	{
		char *at = strstr(text, "\"acme_db\"");

		json = malloc(strlen(text) + strlen(value) + 1);
		sprintf(json, "%.*s%s%s", (int) (at - text), text, value, at + strlen("\"acme_db\""));
		free(text);
	}
	rc = manifest_from_json(json, KEY, m, err);
	free(json);
	return rc;
}

static void
test_database(void **state)
{
	static const char *const bad[] = {"\"\"", "42", "null", "\"acme\\u001b[2J\"", "\"a\\nb\"", "\"a\\u0000b\""};
	tb_error err = {0};
	char *json = json_with(NULL, NULL);
	char long_name[MANIFEST_DATABASE_MAX + 3];
	manifest m;

	(void) state;
	/* Which database a backup is of: recorded, read back. */
	assert_int_equal(parse_database(NULL, &m, &err), 0);
	assert_string_equal(m.database, "acme_db");
	assert_int_equal(parse_database("\"caf\u00e9 db\"", &m, &err), 0);
	assert_string_equal(m.database, "caf\u00e9 db");
	/* A manifest from before, without it, still reads: the database is unknown. */
	assert_null(strstr(json, "database"));
	assert_int_equal(manifest_from_json(json, KEY, &m, &err), 0);
	assert_string_equal(m.database, "");
	free(json);
	/* Storage is untrusted: what a listing would print is checked. */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
	{
		assert_int_equal(parse_database(bad[i], &m, &err), -1);
		if (strstr(err.msg, "database") == NULL && strstr(err.msg, "JSON") == NULL)
			fail_msg("database = %s: '%s' does not name the field", bad[i], err.msg);
		assert_null(strchr(err.msg, '\033'));
		assert_string_equal(m.database, "");
	}
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[0] = '"';
	long_name[sizeof(long_name) - 2] = '"';
	long_name[sizeof(long_name) - 1] = '\0';
	assert_int_equal(parse_database(long_name, &m, &err), -1);
	assert_true(manifest_database_valid("acme_db"));
	assert_false(manifest_database_valid("acme\tdb"));
	assert_false(manifest_database_valid(""));
}

static void
test_manifest_of_another_object(void **state)
{
	tb_error err = {0};

	(void) state;
	/* A manifest copied beside another object names its own, not that one. */
	assert_int_equal(parse_with(NULL, NULL, "acme/postgres/2026-11-27T060000Z-43.json", &err), -1);
	assert_non_null(strstr(err.msg, "sibling"));
	assert_int_equal(parse_with(NULL, NULL, "acme/postgres/base/2026-11-26T060000Z-42.json", &err), -1);
}

static void
test_parse_error_quotes_nothing(void **state)
{
	tb_error err = {0};
	manifest m;

	(void) state;
	assert_int_equal(manifest_from_json("hunter2 secret", KEY, &m, &err), -1);
	assert_null(strstr(err.msg, "hunter"));
	assert_non_null(strstr(err.msg, "line 1"));
	assert_int_equal(manifest_from_json("{\"format\": \"hunter2\"}", KEY, &m, &err), -1);
	assert_null(strstr(err.msg, "hunter"));
}

static void
test_object_names(void **state)
{
	manifest_object_name n;
	tb_error err = {0};

	(void) state;
	assert_int_equal(manifest_object_parse("acme/redis/2026-11-26T060000Z-9f3a.tbk", &n, &err), 0);
	assert_int_equal(n.kind, MANIFEST_OBJECT_BACKUP);
	assert_string_equal(n.tenant, "acme");
	assert_string_equal(n.engine, "redis");
	assert_string_equal(n.backup_id, "9f3a");
	assert_int_equal(n.began, 1795672800);
	assert_int_equal(manifest_object_parse("acme/postgres/base/2026-11-26T060000Z-7.tbk", &n, &err), 0);
	assert_int_equal(n.kind, MANIFEST_OBJECT_BASE);
	assert_int_equal(manifest_object_parse("acme/postgres/wal/00000001/000000010000000000000003.tbk", &n, &err), 0);
	assert_int_equal(n.kind, MANIFEST_OBJECT_WAL);
	assert_string_equal(n.backup_id, "000000010000000000000003");

	assert_int_equal(manifest_object_parse("acme/redis/base/2026-11-26T060000Z-7.tbk", &n, &err), -1);
	assert_int_equal(manifest_object_parse("acme/postgres/wal/00000002/000000010000000000000003.tbk", &n, &err), -1);
	assert_int_equal(manifest_object_parse("acme/keys/2026-11-26T060000Z-7.tbk", &n, &err), -1);
	assert_int_equal(manifest_object_parse("acme/postgres/2026-11-26T250000Z-7.tbk", &n, &err), -1);
	assert_int_equal(manifest_object_parse("acme/postgres/2026-11-26T060000Z-.tbk", &n, &err), -1);
	assert_int_equal(manifest_object_parse("acme/postgres/2026-11-26T060000Z-A.tbk", &n, &err), -1);
	assert_int_equal(manifest_object_parse("acme/postgres/x/2026-11-26T060000Z-7.tbk", &n, &err), -1);
	assert_int_equal(manifest_object_parse("acme/postgres/2026-11-26T060000Z-7\n.tbk", &n, &err), -1);
	assert_null(strchr(err.msg, '\n'));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_each_field_checked),
		cmocka_unit_test(test_database),
		cmocka_unit_test(test_manifest_of_another_object),
		cmocka_unit_test(test_parse_error_quotes_nothing),
		cmocka_unit_test(test_object_names),
	};

	return cmocka_run_group_tests_name("manifest", tests, NULL, NULL);
}
