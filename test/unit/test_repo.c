/* Unit tests of the repository layer on file storage: put, list, read back, failures. */
#include "unit.h"
#include "unit_repo.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "names.h"
#include "repo.h"

static char dir[] = "/tmp/tb-test-repo-XXXXXX";
static const repo_read_options sha_check = {.check_sha256 = true};
static storage *st;
static master_key master;

static int
count_files(const char *path)
{
	char cmd[400];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "find '%s' -type f | wc -l", path);
	p = popen(cmd, "r");
	if (fscanf(p, "%d", &n) != 1)
		n = -1;
	pclose(p);
	return n;
}

static void
put_bytes(const char *tenant, const char *engine, const void *data, size_t len, manifest *m)
{
	tenant_key key;
	tb_error err = {0};
	repo_put *put;

	assert_int_equal(repo_tenant_key_current(st, &master, tenant, true, &key, &err), 0);
	put = repo_put_begin(st, &key, engine, NULL, &err);
	assert_non_null(put);
	assert_int_equal(repo_put_write(put, data, len, &err), 0);
	assert_int_equal(repo_put_commit(put, m, &err), 0);
}

static int
read_object(const char *object, membuf *out, tb_error *err)
{
	repo_reader *r = repo_reader_open(st, &master, object, NULL, err);
	uint8_t buf[4096];
	ssize_t n;

	if (r == NULL)
		return -1;
	while ((n = repo_reader_read(r, buf, sizeof(buf), err)) > 0)
		membuf_append(out, buf, (size_t) n);
	repo_reader_close(r);
	return n == 0 ? 0 : -1;
}

typedef struct seen
{
	char objects[8][MANIFEST_OBJECT_MAX];
	int count;
} seen;

static int
collect(const manifest *m, void *arg)
{
	seen *s = arg;

	if (s->count < 8)
		strcpy(s->objects[s->count], m->object);
	s->count++;
	return 0;
}

static void
test_put_list_read(void **state)
{
	manifest a, b, g;
	membuf out = {0};
	tb_error err = {0};
	seen s = {0};

	(void) state;
	put_bytes("acme", "postgres", "acme canary", 11, &a);
	sleep(1);
	put_bytes("acme", "postgres", "acme canary two", 15, &b);
	put_bytes("globex", "redis", "globex canary", 13, &g);
	assert_int_equal(strncmp(a.object, "acme/postgres/", 14), 0);
	assert_int_equal(strlen(a.sha256), 64);

	assert_int_equal(repo_list(st, "acme", NULL, collect, &s, &err), 0);
	assert_int_equal(s.count, 2);
	assert_string_equal(s.objects[0], b.object); /* newest first */
	assert_string_equal(s.objects[1], a.object);
	memset(&s, 0, sizeof(s));
	assert_int_equal(repo_list(st, NULL, NULL, collect, &s, &err), 0);
	assert_int_equal(s.count, 3);
	memset(&s, 0, sizeof(s));
	assert_int_equal(repo_list(st, "acme", "redis", collect, &s, &err), 0);
	assert_int_equal(s.count, 0);

	assert_int_equal(read_object(g.object, &out, &err), 0);
	assert_int_equal(out.len, 13);
	assert_memory_equal(out.data, "globex canary", 13);
	membuf_free(&out);
}

/* An object copied under another tenant's prefix is refused, not served as theirs. */
static void
test_object_moved_between_tenants(void **state)
{
	manifest a;
	membuf out = {0};
	tb_error err = {0};
	char cmd[1024];

	(void) state;
	put_bytes("acme", "mysql", "acme rows", 9, &a);
	put_bytes("globex", "mysql", "globex rows", 11, &a);
	snprintf(cmd, sizeof(cmd), "cp %s/%s %s/acme/mysql/moved.tbk", dir, a.object, dir);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(read_object("acme/mysql/moved.tbk", &out, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_non_null(strstr(err.msg, "moved or swapped"));
	membuf_free(&out);
}

static void
test_manifest_mismatch(void **state)
{
	manifest a;
	tb_error err = {0};
	stream_stats stats;
	char key[MANIFEST_OBJECT_MAX + 8];
	char *json, *p;
	size_t len;

	(void) state;
	put_bytes("acme", "mongodb", "docs", 4, &a);
	assert_int_equal(repo_read_to_fd(st, &master, a.object, -1, &sha_check, &stats, &err), 0);
	assert_int_equal(repo_manifest_key(a.object, key, sizeof(key), &err), 0);
	assert_int_equal(storage_get(st, key, MANIFEST_MAX_BYTES, &json, &len, &err), 0);
	p = strstr(json, a.sha256);
	assert_non_null(p);
	p[0] = p[0] == '0' ? '1' : '0';
	assert_int_equal(storage_put(st, key, json, len, &err), 0);
	free(json);
	assert_int_equal(repo_read_to_fd(st, &master, a.object, -1, &sha_check, &stats, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_non_null(strstr(err.msg, "does not match its manifest"));
}

/* An older backup copied over a newer one's key authenticates, but is not the backup its manifest names. */
static void
test_object_replaced_by_older_one(void **state)
{
	manifest older, newer;
	tb_error err = {0};
	stream_stats stats;
	char cmd[2 * MANIFEST_OBJECT_MAX + 700];

	(void) state;
	put_bytes("acme", "redis", "old keys", 8, &older);
	put_bytes("acme", "redis", "new keys", 8, &newer);
	snprintf(cmd, sizeof(cmd), "cp %s/%s %s/%s", dir, older.object, dir, newer.object);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(repo_read_to_fd(st, &master, newer.object, -1, NULL, &stats, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_non_null(strstr(err.msg, "does not match its manifest"));
	assert_non_null(strstr(err.msg, older.backup_id));
}

static void
test_wrong_master_key(void **state)
{
	manifest a;
	master_key other;
	tb_error err = {0};
	stream_stats stats;

	(void) state;
	put_bytes("initech", "redis", "tps reports", 11, &a);
	assert_int_equal(
		keys_master_from_hex("abababababababababababababababababababababababababababababababab", &other, &err), 0);
	assert_int_equal(repo_read_to_fd(st, &other, a.object, -1, NULL, &stats, &err), -1);
	assert_int_equal(err.code, TB_ERR_KEY);
	assert_non_null(strstr(err.msg, "is wrapped by master key"));
}

/* A put whose input fails leaves no object, no manifest and no temporary file. */
static void
test_failed_put_leaves_nothing(void **state)
{
	tenant_key key;
	manifest m;
	tb_error err = {0};
	char tenant_dir[400];
	int before, fd;

	(void) state;
	assert_int_equal(repo_tenant_key_current(st, &master, "umbrella", true, &key, &err), 0);
	snprintf(tenant_dir, sizeof(tenant_dir), "%s/umbrella", dir);
	before = count_files(tenant_dir);
	fd = open(dir, O_RDONLY | O_DIRECTORY); /* read() on a directory fails */
	assert_int_equal(repo_put_fd(st, &key, "postgres", fd, NULL, &m, &err), -1);
	close(fd);
	assert_int_equal(err.code, TB_ERR_IO);
	assert_int_equal(count_files(tenant_dir), before);
}

static void
test_storage_keys_checked(void **state)
{
	tb_error err = {0};

	(void) state;
	assert_int_equal(storage_put(st, "../escape", "x", 1, &err), -1);
	assert_int_equal(err.code, TB_ERR_INVALID);
	assert_int_equal(storage_put(st, "a//b", "x", 1, &err), -1);
	assert_int_equal(storage_put(st, "/abs", "x", 1, &err), -1);
	assert_null(storage_open("file://relative/dir", &err));
	assert_null(storage_open("ftp://host/x", &err));
	assert_non_null(strstr(err.msg, "unsupported storage scheme"));
}

static void
test_storage_abort_and_ranges(void **state)
{
	tb_error err = {0};
	storage_write *w;
	storage_read *r;
	storage_info info;
	char buf[16];
	ssize_t n;

	(void) state;
	w = storage_write_open(st, "scratch/aborted", &err);
	assert_non_null(w);
	assert_int_equal(storage_write_append(w, "abc", 3, &err), 0);
	storage_write_abort(w);
	assert_int_equal(storage_head(st, "scratch/aborted", &info, &err), -1);
	assert_int_equal(err.code, TB_ERR_NOT_FOUND);
	assert_int_equal(count_files(dir) >= 0, 1);

	assert_int_equal(storage_put(st, "scratch/range", "0123456789", 10, &err), 0);
	r = storage_read_open(st, "scratch/range", 3, 4, &err);
	assert_non_null(r);
	n = storage_read_next(r, buf, sizeof(buf), &err);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "3456", 4);
	assert_int_equal(storage_read_next(r, buf, sizeof(buf), &err), 0);
	storage_read_close(r);
	assert_int_equal(storage_delete(st, "scratch/range", &err), 0);
	assert_int_equal(storage_delete(st, "scratch/range", &err), 0);
}

static void
test_wal_object_names(void **state)
{
	char object[NAMES_WAL_OBJECT_MAX], id[80];
	tb_error err = {0};

	(void) state;
	assert_int_equal(names_wal_object("000000010000000A000000FF", object, sizeof(object), id, sizeof(id), &err), 0);
	assert_string_equal(object, "wal/00000001/000000010000000A000000FF.tbk");
	assert_string_equal(id, "000000010000000a000000ff");
	assert_int_equal(names_wal_object("00000002.history", object, sizeof(object), id, sizeof(id), &err), 0);
	assert_string_equal(object, "wal/00000002/00000002.history.tbk");
	assert_string_equal(id, "00000002-history");
	assert_int_equal(
		names_wal_object("000000010000000000000002.00000028.backup", object, sizeof(object), id, sizeof(id), &err), 0);
	assert_string_equal(id, "000000010000000000000002-00000028-backup");
	assert_int_equal(names_wal_object("000000010000000000000003.partial", object, sizeof(object), id, sizeof(id), &err),
					 0);
	/* Anything else is refused: it would name another object, or none PostgreSQL makes. */
	assert_int_equal(names_wal_object("00000001000000000000000g", object, sizeof(object), id, sizeof(id), &err), -1);
	assert_int_equal(names_wal_object("../../etc/passwd", object, sizeof(object), id, sizeof(id), &err), -1);
	assert_int_equal(names_wal_object("000000010000000000000003.tbk", object, sizeof(object), id, sizeof(id), &err),
					 -1);
	assert_int_equal(names_wal_object("00000001.history/x", object, sizeof(object), id, sizeof(id), &err), -1);
	assert_int_equal(err.code, TB_ERR_INVALID);
}

/* Writes text to path outside the storage, for links to point at. */
static void
write_outside(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void
assert_outside(const char *path, const char *text)
{
	char buf[64] = {0};
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	assert_true(fread(buf, 1, sizeof(buf) - 1, f) > 0);
	fclose(f);
	assert_string_equal(buf, text);
}

static int
count_listed(const char *key, const storage_info *info, void *arg)
{
	(void) info;
	if (strncmp(key, "hostile/", 8) == 0)
		(*(int *) arg)++;
	return 0;
}

/* The number of keys storage_list finds below hostile/ (the regular files only). */
static int
listed_hostile(void)
{
	tb_error err = {0};
	int n = 0;

	assert_int_equal(storage_list(st, "hostile/", count_listed, &n, &err), 0);
	return n;
}

static void
make_storage_dir(const char *rel)
{
	char path[400];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	assert_int_equal(mkdir(path, 0700) == 0 || errno == EEXIST, 1);
}

/* A FIFO in place of a key document: refused at once (alarm fails a hang), never listed. */
static void
test_file_fifo_refused(void **state)
{
	char path[400];
	tb_error err = {0};
	storage_info info;
	char *doc = NULL;
	size_t len;

	(void) state;
	make_storage_dir("hostile");
	make_storage_dir("hostile/keys");
	snprintf(path, sizeof(path), "%s/hostile/keys/0000000000000001.json", dir);
	assert_int_equal(mkfifo(path, 0600), 0);
	alarm(10);
	assert_int_equal(storage_get(st, "hostile/keys/0000000000000001.json", 4096, &doc, &len, &err), -1);
	alarm(0);
	assert_null(doc);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_non_null(strstr(err.msg, "'hostile/keys/0000000000000001.json' in file://"));
	assert_non_null(strstr(err.msg, "is a FIFO, not a regular file"));
	assert_int_equal(storage_head(st, "hostile/keys/0000000000000001.json", &info, &err), -1);
	assert_int_equal(err.code, TB_ERR_NOT_FOUND);
	assert_int_equal(listed_hostile(), 0);
	assert_int_equal(storage_delete(st, "hostile/keys/0000000000000001.json", &err), 0);
	assert_int_equal(access(path, F_OK), -1);
}

/* A manifest linked to a secret file: refused without its content; deleting removes the link only. */
static void
test_file_symlink_refused(void **state)
{
	char outside[] = "/tmp/tb-test-outside-XXXXXX";
	char secret[400], link_path[400];
	tb_error err = {0};
	storage_info info;
	char *doc = NULL;
	size_t len;

	(void) state;
	assert_non_null(mkdtemp(outside));
	snprintf(secret, sizeof(secret), "%s/secret", outside);
	write_outside(secret, "TOP SECRET");
	make_storage_dir("hostile");
	snprintf(link_path, sizeof(link_path), "%s/hostile/backup.json", dir);
	assert_int_equal(symlink(secret, link_path), 0);

	assert_int_equal(storage_get(st, "hostile/backup.json", 4096, &doc, &len, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_non_null(strstr(err.msg, "'hostile/backup.json' in file://"));
	assert_non_null(strstr(err.msg, "is a symbolic link, not a regular file"));
	assert_null(strstr(err.msg, "TOP SECRET"));
	assert_int_equal(storage_head(st, "hostile/backup.json", &info, &err), -1);
	assert_int_equal(err.code, TB_ERR_NOT_FOUND);
	assert_int_equal(listed_hostile(), 0);

	/* a write in the link's place replaces the link, never the file it points to */
	assert_int_equal(storage_put(st, "hostile/backup.json", "ours", 4, &err), 0);
	assert_outside(secret, "TOP SECRET");
	assert_int_equal(storage_get(st, "hostile/backup.json", 4096, &doc, &len, &err), 0);
	assert_string_equal(doc, "ours");
	free(doc);
	assert_int_equal(storage_delete(st, "hostile/backup.json", &err), 0);

	assert_int_equal(symlink(secret, link_path), 0);
	assert_int_equal(storage_delete(st, "hostile/backup.json", &err), 0);
	assert_int_equal(access(link_path, F_OK), -1);
	assert_outside(secret, "TOP SECRET");
	unlink(secret);
	rmdir(outside);
}

/* A directory linked out of the root: reads, writes and deletes through it are refused. */
static void
test_file_symlinked_directory_refused(void **state)
{
	char outside[] = "/tmp/tb-test-outside-XXXXXX";
	char victim[400], planted[400], link_path[400];
	tb_error err = {0};
	char *doc = NULL;
	size_t len;

	(void) state;
	assert_non_null(mkdtemp(outside));
	snprintf(victim, sizeof(victim), "%s/x.tbk", outside);
	write_outside(victim, "outside");
	make_storage_dir("hostile");
	snprintf(link_path, sizeof(link_path), "%s/hostile/linked", dir);
	assert_int_equal(symlink(outside, link_path), 0);

	assert_int_equal(storage_get(st, "hostile/linked/x.tbk", 4096, &doc, &len, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_non_null(strstr(err.msg, "'hostile/linked' in file://"));
	assert_non_null(strstr(err.msg, "is a symbolic link, not a directory"));
	assert_int_equal(storage_put(st, "hostile/linked/new", "x", 1, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	snprintf(planted, sizeof(planted), "%s/new", outside);
	assert_int_equal(access(planted, F_OK), -1);
	assert_int_equal(count_files(outside), 1); /* no temporary file left there either */
	assert_int_equal(storage_delete(st, "hostile/linked/x.tbk", &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_outside(victim, "outside");
	assert_int_equal(listed_hostile(), 0);

	/* a directory is no object either */
	make_storage_dir("hostile/adir");
	assert_int_equal(storage_get(st, "hostile/adir", 4096, &doc, &len, &err), -1);
	assert_non_null(strstr(err.msg, "is a directory, not a regular file"));
	unlink(link_path);
	unlink(victim);
	rmdir(outside);
}

static int
count_unfinished(const char *key, const char *upload, const storage_info *info, void *arg)
{
	(void) key;
	(void) upload;
	(void) info;
	(*(int *) arg)++;
	return 0;
}

/*
 * A tenant directory that is a link out of the root, as a storage writer may plant:
 * listing, the unfinished-write listing, a tenant's delete-prefix (drop, replica
 * cleanup) and writes under it never follow it; the victim's files stay.
 */
static void
test_file_symlinked_tenant_refused(void **state)
{
	char outside[] = "/tmp/tb-test-outside-XXXXXX";
	char victim[400], temporary[400], link_path[400];
	tb_error err = {0};
	uint64_t objects = 1, bytes = 1;
	int unfinished = 0;

	(void) state;
	assert_non_null(mkdtemp(outside));
	snprintf(victim, sizeof(victim), "%s/postgres", outside);
	assert_int_equal(mkdir(victim, 0700), 0);
	snprintf(victim, sizeof(victim), "%s/postgres/x.tbk", outside);
	write_outside(victim, "victim");
	snprintf(temporary, sizeof(temporary), "%s/postgres/.x.tbk.tmp-0123abcd", outside);
	write_outside(temporary, "victim");
	snprintf(link_path, sizeof(link_path), "%s/linked-tenant", dir);
	assert_int_equal(symlink(outside, link_path), 0);

	assert_int_equal(repo_delete_prefix(st, "linked-tenant/", &objects, &bytes, &err), 0);
	assert_int_equal(objects, 0);
	assert_int_equal(storage_list_unfinished(st, "linked-tenant/", count_unfinished, &unfinished, &err), 0);
	assert_int_equal(unfinished, 0);
	assert_int_equal(storage_put(st, "linked-tenant/postgres/new.tbk", "x", 1, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_non_null(strstr(err.msg, "is a symbolic link, not a directory"));
	assert_int_equal(storage_delete(st, "linked-tenant/postgres/x.tbk", &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_outside(victim, "victim");
	assert_outside(temporary, "victim");
	assert_int_equal(count_files(outside), 2);
	unlink(link_path);
	unlink(temporary);
	unlink(victim);
	snprintf(victim, sizeof(victim), "%s/postgres", outside);
	rmdir(victim);
	rmdir(outside);
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
		cmocka_unit_test(test_put_list_read),
		cmocka_unit_test(test_object_moved_between_tenants),
		cmocka_unit_test(test_manifest_mismatch),
		cmocka_unit_test(test_object_replaced_by_older_one),
		cmocka_unit_test(test_wrong_master_key),
		cmocka_unit_test(test_failed_put_leaves_nothing),
		cmocka_unit_test(test_storage_keys_checked),
		cmocka_unit_test(test_storage_abort_and_ranges),
		cmocka_unit_test(test_wal_object_names),
		cmocka_unit_test(test_file_fifo_refused),
		cmocka_unit_test(test_file_symlink_refused),
		cmocka_unit_test(test_file_symlinked_directory_refused),
		cmocka_unit_test(test_file_symlinked_tenant_refused),
	};

	return cmocka_run_group_tests_name("repo", tests, setup, teardown);
}
