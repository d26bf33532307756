/* Unit tests of the backup object format: round trips and every kind of tampering. */
#include "unit.h"

#include <dirent.h>
#include <stdio.h>
#include <unistd.h>

#include "keys.h"
#include "stream.h"

#define CHUNK 4096

static tenant_key test_key;
static tenant_key other_key; /* same tenant, another key */

static void
make_keys(void)
{
	tb_error err = {0};

	assert_int_equal(keys_tenant_generate("acme", &test_key, &err), 0);
	assert_int_equal(keys_tenant_generate("acme", &other_key, &err), 0);
	memcpy(other_key.id, test_key.id, sizeof(other_key.id));
}

static void
seal(const uint8_t *data, size_t len, int workers, const char *backup_id, membuf *out)
{
	stream_header hdr = {.chunk_size = CHUNK};
	stream_writer_options options = {.workers = workers, .level = 1};
	stream_stats stats;
	tb_error err = {0};
	stream_writer *w;

	strcpy(hdr.tenant, "acme");
	strcpy(hdr.engine, "postgres");
	strcpy(hdr.backup_id, backup_id);
	w = stream_writer_new(&hdr, &test_key, &options, membuf_sink, out, "acme/test.tbk", &err);
	assert_non_null(w);
	/* Odd write sizes cross chunk boundaries at every offset. */
	for (size_t pos = 0; pos < len;)
	{
		size_t n = len - pos < 3001 ? len - pos : 3001;

		assert_int_equal(stream_writer_write(w, data + pos, n, &err), 0);
		pos += n;
	}
	assert_int_equal(stream_writer_finish(w, &stats, &err), 0);
	assert_int_equal(stats.plain_bytes, len);
	assert_int_equal(stats.stored_bytes, out->len);
	stream_writer_free(w);
}

/* Whether open_all reads with a read-ahead thread; every reading test runs both ways. */
static bool use_readahead;

/* Opens and reads all of obj; returns 0, or -1 with err set. Plaintext goes to plain. */
static int
open_all(membuf *obj, const tenant_key *key, membuf *plain, tb_error *err)
{
	stream_reader_options options = {.hash_stored = true, .readahead = use_readahead};
	uint8_t buf[5000];
	stream_reader *r;
	ssize_t n;

	obj->pos = 0;
	r = stream_reader_open(membuf_source, obj, "acme/test.tbk", &options, err);
	if (r == NULL)
		return -1;
	if (stream_reader_unlock(r, key, err) != 0)
	{
		stream_reader_free(r);
		return -1;
	}
	while ((n = stream_reader_read(r, buf, sizeof(buf), err)) > 0)
		membuf_append(plain, buf, (size_t) n);
	stream_reader_free(r);
	return n == 0 ? 0 : -1;
}

static void
round_trip(size_t len, bool compressible, int workers)
{
	uint8_t *data = calloc(1, len + 1);
	membuf obj = {0}, plain = {0};
	tb_error err = {0};

	if (compressible)
		fill_compressible(data, len);
	else
		fill_random(data, len, len);
	seal(data, len, workers, "b1", &obj);
	assert_int_equal(open_all(&obj, &test_key, &plain, &err), 0);
	assert_int_equal(plain.len, len);
	if (len > 0)
		assert_memory_equal(plain.data, data, len);
	if (compressible && len > 100000)
		assert_true(obj.len < len / 4);
	membuf_free(&obj);
	membuf_free(&plain);
	free(data);
}

static void
test_round_trip_sizes(void **state)
{
	const size_t sizes[] = {0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17};

	(void) state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		for (int workers = 0; workers <= 3; workers += 3)
		{
			round_trip(sizes[i], false, workers);
			round_trip(sizes[i], true, workers);
		}
}

static void
test_round_trip_large(void **state)
{
	(void) state;
	round_trip(3 * 1024 * 1024 + 5, false, 0);
	round_trip(3 * 1024 * 1024 + 5, false, 4);
	round_trip(5 * 1024 * 1024 + 3, true, 0);
	round_trip(5 * 1024 * 1024 + 3, true, 2);
}

/* The same input gives objects of the same layout whether sealed inline or by workers. */
static void
test_workers_same_layout(void **state)
{
	size_t len = 200 * CHUNK + 5;
	uint8_t *data = malloc(len);
	membuf a = {0}, b = {0};

	(void) state;
	fill_compressible(data, len);
	seal(data, len, 0, "b1", &a);
	seal(data, len, 3, "b1", &b);
	assert_int_equal(a.len, b.len);
	membuf_free(&a);
	membuf_free(&b);
	free(data);
}

/* Offsets of records in an object: header length, then each record's start. */
typedef struct layout
{
	size_t header_len;
	size_t starts[64];
	size_t lens[64];
	size_t count; /* records, trailer included */
} layout;

static void
parse_layout(const membuf *obj, layout *l)
{
	size_t pos = 8;

	for (int i = 0; i < 4; i++)
		pos += 1 + obj->data[pos];
	pos += 2 + 4 + 4 + 12 + 48 + 16;
	l->header_len = pos;
	l->count = 0;
	while (pos < obj->len)
	{
		const uint8_t *p = obj->data + pos + 5;
		size_t stored = (size_t) p[0] << 24 | (size_t) p[1] << 16 | (size_t) p[2] << 8 | p[3];

		assert_true(l->count < 64);
		l->starts[l->count] = pos;
		l->lens[l->count] = 9 + stored + 16;
		pos += l->lens[l->count++];
	}
	assert_int_equal(pos, obj->len);
}

/* A random (incompressible) object of 5 chunks: all data records have the same size. */
static void
five_chunk_object(membuf *obj, const char *backup_id, layout *l)
{
	uint8_t data[5 * CHUNK];

	fill_random(data, sizeof(data), 42);
	seal(data, sizeof(data), 0, backup_id, obj);
	parse_layout(obj, l);
	assert_int_equal(l->count, 6);
}

static void
expect_failure(membuf *obj, tb_errcode code, const char *needle)
{
	membuf plain = {0};
	tb_error err = {0};

	assert_int_equal(open_all(obj, &test_key, &plain, &err), -1);
	if (err.code != code || strstr(err.msg, needle) == NULL)
		fail_msg("expected %s containing '%s', got %s: %s", tb_errcode_name(code), needle, tb_errcode_name(err.code),
				 err.msg);
	membuf_free(&plain);
}

/* Builds a new object from records of src in the given order (-1 ends the list). */
static void
rebuild(const membuf *src, const layout *l, const int *order, membuf *out)
{
	membuf_append(out, src->data, l->header_len);
	for (const int *i = order; *i >= 0; i++)
		membuf_append(out, src->data + l->starts[*i], l->lens[*i]);
}

static void
test_bit_flips(void **state)
{
	membuf obj = {0};
	layout l;

	(void) state;
	five_chunk_object(&obj, "b1", &l);
	for (size_t pos = 0; pos < obj.len; pos += (pos < l.header_len ? 1 : 613))
	{
		membuf copy = {0};
		membuf plain = {0};
		tb_error err = {0};

		membuf_append(&copy, obj.data, obj.len);
		copy.data[pos] ^= 0x04;
		if (open_all(&copy, &test_key, &plain, &err) == 0)
			fail_msg("bit flip at offset %zu was not detected", pos);
		assert_true(err.code == TB_ERR_CORRUPT || err.code == TB_ERR_KEY);
		assert_non_null(strstr(err.msg, "acme/test.tbk"));
		membuf_free(&copy);
		membuf_free(&plain);
	}
	membuf_free(&obj);
}

static void
test_chunk_flip_names_chunk(void **state)
{
	membuf obj = {0};
	layout l;

	(void) state;
	five_chunk_object(&obj, "b1", &l);
	obj.data[l.starts[3] + 100] ^= 1;
	expect_failure(&obj, TB_ERR_CORRUPT, "object 'acme/test.tbk' is corrupt: chunk 3 fails authentication");
	membuf_free(&obj);
}

/* Rebuilds obj from its records in order and expects opening it to fail with needle. */
static void
expect_rebuilt_failure(const membuf *obj, const layout *l, const int *order, const char *needle)
{
	membuf m = {0};

	rebuild(obj, l, order, &m);
	expect_failure(&m, TB_ERR_CORRUPT, needle);
	membuf_free(&m);
}

static void
test_reorder_drop_duplicate(void **state)
{
	const int swapped[] = {0, 2, 1, 3, 4, 5, -1};
	const int dropped[] = {0, 1, 3, 4, 5, -1};
	const int duplicated[] = {0, 1, 1, 2, 3, 4, 5, -1};
	const int no_trailer[] = {0, 1, 2, 3, 4, -1};
	const int last_dropped[] = {0, 1, 2, 3, 5, -1};
	membuf obj = {0};
	layout l;

	(void) state;
	five_chunk_object(&obj, "b1", &l);
	expect_rebuilt_failure(&obj, &l, swapped, "chunk 1 fails authentication");
	expect_rebuilt_failure(&obj, &l, dropped, "chunk 2 fails authentication");
	expect_rebuilt_failure(&obj, &l, duplicated, "chunk 2 fails authentication");
	expect_rebuilt_failure(&obj, &l, no_trailer, "the trailer is gone");
	expect_rebuilt_failure(&obj, &l, last_dropped, "chunk 4");
	membuf_free(&obj);
}

static void
test_truncation(void **state)
{
	membuf obj = {0};
	layout l;
	size_t cuts[6];

	(void) state;
	five_chunk_object(&obj, "b1", &l);
	cuts[0] = 5;                           /* inside the magic */
	cuts[1] = l.header_len - 3;            /* inside the header */
	cuts[2] = l.header_len;                /* header only */
	cuts[3] = l.starts[2] + 4;             /* inside a record header */
	cuts[4] = l.starts[3] + 50;            /* inside a record */
	cuts[5] = l.starts[5] + l.lens[5] - 1; /* inside the trailer */
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
	{
		membuf m = {0};
		membuf plain = {0};
		tb_error err = {0};

		membuf_append(&m, obj.data, cuts[i]);
		assert_int_equal(open_all(&m, &test_key, &plain, &err), -1);
		assert_int_equal(err.code, TB_ERR_CORRUPT);
		if (strstr(err.msg, "truncated") == NULL && strstr(err.msg, "too short") == NULL &&
			strstr(err.msg, "missing") == NULL)
			fail_msg("cut at %zu: unexpected message: %s", cuts[i], err.msg);
		membuf_free(&m);
		membuf_free(&plain);
	}
	membuf_free(&obj);
}

static void
test_trailing_garbage(void **state)
{
	membuf obj = {0};
	layout l;

	(void) state;
	five_chunk_object(&obj, "b1", &l);
	membuf_append(&obj, "x", 1);
	expect_failure(&obj, TB_ERR_CORRUPT, "bytes after the trailer");
	membuf_free(&obj);
}

/* A chunk from another object sealed under the same tenant key does not fit. */
static void
test_splice_from_other_object(void **state)
{
	membuf a = {0}, b = {0}, m = {0};
	layout la, lb;

	(void) state;
	five_chunk_object(&a, "b1", &la);
	five_chunk_object(&b, "b2", &lb);
	membuf_append(&m, a.data, la.starts[2]);
	membuf_append(&m, b.data + lb.starts[2], lb.lens[2]);
	membuf_append(&m, a.data + la.starts[3], a.len - la.starts[3]);
	expect_failure(&m, TB_ERR_CORRUPT, "chunk 2 fails authentication");
	membuf_free(&a);
	membuf_free(&b);
	membuf_free(&m);
}

static void
test_wrong_tenant_key(void **state)
{
	membuf obj = {0}, plain = {0};
	tb_error err = {0};
	tenant_key globex;
	layout l;

	(void) state;
	five_chunk_object(&obj, "b1", &l);
	assert_int_equal(open_all(&obj, &other_key, &plain, &err), -1);
	assert_int_equal(err.code, TB_ERR_KEY);
	assert_non_null(strstr(err.msg, "does not unwrap"));
	assert_int_equal(plain.len, 0);

	assert_int_equal(keys_tenant_generate("globex", &globex, &err), 0);
	assert_int_equal(open_all(&obj, &globex, &plain, &err), -1);
	assert_int_equal(err.code, TB_ERR_KEY);
	assert_non_null(strstr(err.msg, "is sealed with key"));
	membuf_free(&obj);
	membuf_free(&plain);
}

static void
test_not_an_object(void **state)
{
	membuf m = {0};

	(void) state;
	membuf_append(&m, "PGDMP this is a plain dump, not a sealed object", 47);
	expect_failure(&m, TB_ERR_CORRUPT, "bad magic");
	membuf_free(&m);
}

static int
failing_sink(void *ctx, const void *buf, size_t len, tb_error *err)
{
	membuf *b = ctx;

	if (b->len + len > 50000)
		return tb_error_set(err, TB_ERR_STORAGE, "storage refused the write");
	membuf_append(b, buf, len);
	return 0;
}

/* A sink that fails part-way fails the writer with the sink's error, inline or with workers. */
static void
test_sink_failure(void **state)
{
	size_t len = 100 * CHUNK;
	uint8_t *data = malloc(len);

	(void) state;
	fill_random(data, len, 7);
	for (int workers = 0; workers <= 3; workers += 3)
	{
		stream_header hdr = {.chunk_size = CHUNK};
		stream_writer_options options = {.workers = workers};
		stream_stats stats;
		tb_error err = {0};
		membuf out = {0};
		stream_writer *w;
		int rc;

		strcpy(hdr.tenant, "acme");
		strcpy(hdr.engine, "mysql");
		strcpy(hdr.backup_id, "b1");
		w = stream_writer_new(&hdr, &test_key, &options, failing_sink, &out, "acme/fail.tbk", &err);
		assert_non_null(w);
		rc = stream_writer_write(w, data, len, &err);
		if (rc == 0)
			rc = stream_writer_finish(w, &stats, &err);
		assert_int_equal(rc, -1);
		assert_int_equal(err.code, TB_ERR_STORAGE);
		assert_non_null(strstr(err.msg, "storage refused the write"));
		assert_non_null(strstr(err.msg, "acme/fail.tbk"));
		stream_writer_free(w);
		membuf_free(&out);
	}
	free(data);
}

/* The thread ids in /proc/self/task other than the main thread's; returns how many. */
static int
list_other_threads(int *ids, int max)
{
	DIR *tasks = opendir("/proc/self/task");
	struct dirent *de;
	int n = 0;

	assert_non_null(tasks);
	while ((de = readdir(tasks)) != NULL)
		if (de->d_name[0] != '.' && atoi(de->d_name) != (int) getpid() && n < max)
			ids[n++] = atoi(de->d_name);
	closedir(tasks);
	return n;
}

/*
 * Every thread a writer starts has all signals blocked: the host's handlers stay on its
 * threads. Threads joined by an earlier test can linger in /proc for a moment while the
 * kernel reaps them, so only the ids that were not there before the writer count.
 */
static void
test_threads_block_signals(void **state)
{
	stream_header hdr = {.chunk_size = CHUNK};
	stream_writer_options options = {.workers = 2};
	membuf out = {0};
	tb_error err = {0};
	stream_writer *w;
	int before[64], after[64];
	int n_before, n_after;
	int threads = 0, blocked = 0;

	(void) state;
	strcpy(hdr.tenant, "acme");
	strcpy(hdr.engine, "postgres");
	strcpy(hdr.backup_id, "sig");
	n_before = list_other_threads(before, 64);
	w = stream_writer_new(&hdr, &test_key, &options, membuf_sink, &out, "acme/sig.tbk", &err);
	assert_non_null(w);
	n_after = list_other_threads(after, 64);
	for (int i = 0; i < n_after; i++)
	{
		char path[64], line[256];
		bool lingering = false;
		FILE *f;

		for (int j = 0; j < n_before; j++)
			lingering |= before[j] == after[i];
		if (lingering)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%d/status", after[i]);
		f = fopen(path, "r");
		assert_non_null(f);
		while (fgets(line, sizeof(line), f))
			if (strncmp(line, "SigBlk:", 7) == 0)
			{
				threads++;
				/* 64 signals blocked but SIGKILL and SIGSTOP, which cannot be: fffffffe7ffbfeff or more */
				if (strtoull(line + 7, NULL, 16) >= 0xfffffffe7ffbfeffULL)
					blocked++;
			}
		fclose(f);
	}
	assert_int_equal(threads, 3); /* two sealers and the emitter */
	assert_int_equal(blocked, threads);
	stream_writer_free(w);
	membuf_free(&out);
}

/* An error left in err by an earlier call that later succeeded must not fail the next one. */
static void
test_stale_error_is_not_a_failure(void **state)
{
	stream_header hdr = {.chunk_size = CHUNK};
	stream_stats stats;
	membuf obj = {0}, plain = {0};
	tb_error err = {.code = TB_ERR_STORAGE, .msg = "an attempt that was retried"};
	stream_writer *w;

	(void) state;
	strcpy(hdr.tenant, "acme");
	strcpy(hdr.engine, "redis");
	strcpy(hdr.backup_id, "stale");
	w = stream_writer_new(&hdr, &test_key, NULL, membuf_sink, &obj, "acme/stale.tbk", &err);
	assert_non_null(w);
	assert_int_equal(stream_writer_write(w, "abc", 3, &err), 0);
	assert_int_equal(stream_writer_finish(w, &stats, &err), 0);
	stream_writer_free(w);
	err.code = TB_ERR_STORAGE;
	assert_int_equal(open_all(&obj, &test_key, &plain, &err), 0);
	assert_int_equal(plain.len, 3);
	membuf_free(&obj);
	membuf_free(&plain);
}

static int
inline_reads(void **state)
{
	(void) state;
	use_readahead = false;
	return 0;
}

static int
readahead_reads(void **state)
{
	(void) state;
	use_readahead = true;
	return 0;
}

/* Every test once reading inline and once with the read-ahead thread. */
#define BOTH_WAYS(f)                                                                                                   \
	{#f, f, inline_reads, NULL, NULL},                                                                                 \
	{                                                                                                                  \
#f " (read-ahead)", f, readahead_reads, NULL, NULL                                                             \
	}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		BOTH_WAYS(test_round_trip_sizes),
		BOTH_WAYS(test_round_trip_large),
		BOTH_WAYS(test_bit_flips),
		BOTH_WAYS(test_chunk_flip_names_chunk),
		BOTH_WAYS(test_reorder_drop_duplicate),
		BOTH_WAYS(test_truncation),
		BOTH_WAYS(test_trailing_garbage),
		BOTH_WAYS(test_splice_from_other_object),
		BOTH_WAYS(test_wrong_tenant_key),
		BOTH_WAYS(test_not_an_object),
		BOTH_WAYS(test_stale_error_is_not_a_failure),
		cmocka_unit_test(test_workers_same_layout),
		cmocka_unit_test(test_sink_failure),
		cmocka_unit_test(test_threads_block_signals),
	};

	make_keys();
	return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
