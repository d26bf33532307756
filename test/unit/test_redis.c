/*
 * Unit tests of the Redis agent's pure parts: SCAN patterns for prefixes, staging
 * names, and the logical format's records through a real sealed object on file storage.
 */
#include "unit.h"
#include "unit_repo.h"

#include <stdio.h>

#include "agent_internal.h"
#include "redis_agent.h"

static char dir[] = "/tmp/tb-test-redis-XXXXXX";
static storage *st;
static master_key master;

static void
test_prefix_pattern(void **state)
{
	char *p;

	(void) state;
	p = redis_prefix_pattern("acme:", 5);
	assert_string_equal(p, "acme:*");
	free(p);
	/* Every glob character is escaped: a prefix matches only itself. */
	p = redis_prefix_pattern("a*?[x]\\:", 8);
	assert_string_equal(p, "a\\*\\?\\[x\\]\\\\:*");
	free(p);
	p = redis_prefix_pattern("", 0);
	assert_string_equal(p, "*");
	free(p);
}

static void
test_staging_key(void **state)
{
	char mark[96], key[160], other[96];

	(void) state;
	redis_staging_mark(&master, 7, mark, sizeof(mark));
	assert_int_equal(strlen(mark), strlen("tenant-backup:restore:7:") + REDIS_STAGING_TOKEN_LEN + 1);
	assert_memory_equal(mark, "tenant-backup:restore:7:", 24);
	snprintf(key, sizeof(key), "acme:%sk", mark);
	assert_true(redis_is_staging_key(&master, key, strlen(key), 5));
	assert_true(redis_is_staging_key(&master, mark, strlen(mark), 0));
	/* The same mark with a token that is not the job's: a user's key. */
	key[5 + 24] ^= 1;
	assert_false(redis_is_staging_key(&master, key, strlen(key), 5));
	assert_false(redis_is_staging_key(&master, "acme:tenant-backup:restore:7:k", 30, 5));
	assert_false(redis_is_staging_key(&master, "acme:tenant-backup:x", 20, 5));
	assert_false(redis_is_staging_key(&master, "acme:", 5, 5));
	assert_false(redis_is_staging_key(&master, "tenant-backup:restore:1:", 24, 0));
	/* Unique to the job. */
	redis_staging_mark(&master, 8, other, sizeof(other));
	assert_string_not_equal(mark, other);
}

/* Seals records into one object; with end, the end record too. */
static void
put_records(const redis_record *recs, int n, bool end, manifest *m)
{
	tenant_key key;
	tb_error err = {0};
	repo_put *put;
	redis_record e = {.type = 'E'};

	assert_int_equal(repo_tenant_key_current(st, &master, "acme", true, &key, &err), 0);
	put = repo_put_begin(st, &key, "redis", NULL, &err);
	assert_non_null(put);
	assert_int_equal(repo_put_write(put, REDIS_KEYS_MAGIC, 8, &err), 0);
	for (int i = 0; i < n; i++)
	{
		assert_int_equal(redis_record_write(put, &recs[i], &err), 0);
		e.keys += recs[i].type == 'K';
		e.value_bytes += recs[i].value_len;
	}
	if (end)
		assert_int_equal(redis_record_write(put, &e, &err), 0);
	assert_int_equal(repo_put_commit(put, m, &err), 0);
}

static redis_record_reader *
open_records(const manifest *m, repo_reader **r)
{
	tb_error err = {0};
	char magic[8];

	*r = repo_reader_open(st, &master, m->object, NULL, &err);
	assert_non_null(*r);
	assert_int_equal(repo_reader_read(*r, magic, sizeof(magic), &err), 8);
	assert_memory_equal(magic, REDIS_KEYS_MAGIC, 8);
	return redis_record_reader_open(*r, &err);
}

static void
test_records_round_trip(void **state)
{
	size_t big_len = 3 * 256 * 1024 + 17; /* larger than the reader's buffer */
	char *big = malloc(big_len);
	redis_record recs[3] = {
		{.type = 'S', .db = 7, .name = "a*:", .name_len = 3},
		{.type = 'K',
		 .name = "k\0\xff\r\n",
		 .name_len = 5,
		 .expires_ms = 1790000000123,
		 .value = "v\0v",
		 .value_len = 3},
		{.type = 'K', .name = "big", .name_len = 3, .value_len = big_len},
	};
	redis_record_reader *rr;
	repo_reader *r;
	redis_record rec;
	manifest m;
	tb_error err = {0};

	(void) state;
	for (size_t i = 0; i < big_len; i++)
		big[i] = (char) (i * 31 + 7);
	recs[2].value = big;
	put_records(recs, 3, true, &m);
	rr = open_records(&m, &r);
	assert_int_equal(redis_record_next(rr, &rec, &err), 1);
	assert_int_equal(rec.type, 'S');
	assert_int_equal(rec.db, 7);
	assert_memory_equal(rec.name, "a*:", 3);
	assert_int_equal(redis_record_next(rr, &rec, &err), 1);
	assert_int_equal(rec.type, 'K');
	assert_int_equal(rec.name_len, 5);
	assert_memory_equal(rec.name, "k\0\xff\r\n", 5);
	assert_int_equal(rec.expires_ms, 1790000000123);
	assert_int_equal(rec.value_len, 3);
	assert_memory_equal(rec.value, "v\0v", 3);
	assert_int_equal(redis_record_next(rr, &rec, &err), 1);
	assert_int_equal(rec.expires_ms, 0);
	assert_int_equal(rec.value_len, big_len);
	assert_memory_equal(rec.value, big, big_len);
	assert_int_equal(redis_record_next(rr, &rec, &err), 1);
	assert_int_equal(rec.type, 'E');
	assert_int_equal(rec.keys, 2);
	assert_int_equal(rec.value_bytes, 3 + big_len);
	assert_int_equal(redis_record_next(rr, &rec, &err), 0);
	redis_record_reader_close(rr);
	repo_reader_close(r);
	free(big);
}

/* A well-sealed object whose plaintext after the magic is raw bytes. */
static void
put_raw(const void *bytes, size_t len, manifest *m)
{
	tenant_key key;
	tb_error err = {0};
	repo_put *put;

	assert_int_equal(repo_tenant_key_current(st, &master, "acme", true, &key, &err), 0);
	put = repo_put_begin(st, &key, "redis", NULL, &err);
	assert_int_equal(repo_put_write(put, REDIS_KEYS_MAGIC, 8, &err), 0);
	assert_int_equal(repo_put_write(put, bytes, len, &err), 0);
	assert_int_equal(repo_put_commit(put, m, &err), 0);
}

static void
expect_record_error(const void *bytes, size_t len, const char *message)
{
	redis_record_reader *rr;
	repo_reader *r;
	redis_record rec;
	manifest m;
	tb_error err = {0};

	put_raw(bytes, len, &m);
	rr = open_records(&m, &r);
	assert_int_equal(redis_record_next(rr, &rec, &err), -1);
	assert_string_equal(err.msg, message);
	redis_record_reader_close(rr);
	repo_reader_close(r);
}

static void
test_record_errors(void **state)
{
	(void) state;
	expect_record_error("K\1\0\0\0k\0\0", 8, "the backup ends inside a record");
	expect_record_error("Z", 1, "unknown record type 0x5a in the backup");
	/* A length no Redis value can have is refused before any allocation. */
	expect_record_error("K\1\0\0\0k\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x10", 22,
						"a record claims 1152921504606846976 bytes");
}

static void
test_read_to_file(void **state)
{
	redis_record recs[1] = {{.type = 'K', .name = "k", .name_len = 1, .value = "v", .value_len = 1}};
	manifest m;
	tb_error err = {0};
	stream_stats stats;
	char out[400], path[500];
	FILE *f;

	(void) state;
	put_records(recs, 1, true, &m);
	snprintf(out, sizeof(out), "%s/out", dir);
	assert_int_equal(repo_read_to_file(st, &master, m.object, out, "dump.rdb", NULL, &stats, &err), 0);
	snprintf(path, sizeof(path), "%s/dump.rdb", out);
	f = fopen(path, "rb");
	assert_non_null(f);
	fclose(f);
	/* Never over an existing file, and a relative directory is refused. */
	assert_int_equal(repo_read_to_file(st, &master, m.object, out, "dump.rdb", NULL, &stats, &err), -1);
	assert_int_equal(err.code, TB_ERR_EXISTS);
	assert_int_equal(repo_read_to_file(st, &master, m.object, "relative", "dump.rdb", NULL, &stats, &err), -1);
	assert_int_equal(err.code, TB_ERR_INVALID);
}

/* The agent's own Redis credentials go only to the servers it lists; a locator's own always. */
static void
test_fallback_credentials(void **state)
{
	char *keys[] = {"redis_user", "redis_password", "redis_fallback_credentials_hosts"};
	char *values[] = {"agent", "agentpw", "127.0.0.1:6380"};
	agent_config config = {.engine = "redis", .nentries = 3, .keys = keys, .values = values};
	agent_job job = {.tenant = "t", .engine = "redis", .config = &config, .options = "{}"};
	redis_source src;
	tb_error err;

	(void) state;
	unsetenv("TENANT_BACKUP_REDIS_PASSWORD");
	unsetenv("TENANT_BACKUP_REDIS_FALLBACK_CREDENTIALS_HOSTS");
	job.locator = "redis://127.0.0.1:6380/1";
	assert_int_equal(redis_source_from_job(&job, &src, &err), 0);
	assert_string_equal(src.user, "agent");
	assert_string_equal(src.password, "agentpw");
	redis_source_free(&src);
	for (const char *const *l = (const char *const[]){"redis://127.0.0.1:6379/1", "redis://collector.example:6380/0",
													  "redis://localhost:6380/0", NULL};
		 *l; l++)
	{
		job.locator = (char *) *l;
		assert_int_equal(redis_source_from_job(&job, &src, &err), 0);
		assert_null(src.user);
		assert_null(src.password);
		redis_source_free(&src);
	}
	job.password = "own";
	job.locator = "redis://collector.example:6380/0";
	assert_int_equal(redis_source_from_job(&job, &src, &err), 0);
	assert_string_equal(src.password, "own");
	redis_source_free(&src);
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
		cmocka_unit_test(test_prefix_pattern),     cmocka_unit_test(test_staging_key),
		cmocka_unit_test(test_records_round_trip), cmocka_unit_test(test_record_errors),
		cmocka_unit_test(test_read_to_file),       cmocka_unit_test(test_fallback_credentials),
	};

	return cmocka_run_group_tests_name("redis", tests, setup, teardown);
}
