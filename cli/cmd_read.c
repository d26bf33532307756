/*
 * tenant-backup cat, verify and restore-rdb: all authenticate every chunk and the
 * trailer; cat also writes the plaintext to standard output, restore-rdb to a file.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "names.h"
#include "repo.h"

static const char cat_usage[] =
	"Usage: tenant-backup cat OBJECT [OPTIONS] > data\n"
	"\n"
	"Authenticates, decrypts and decompresses OBJECT (a key as printed by put and ls)\n"
	"to standard output. Output is written as chunks authenticate; the exit status is 0\n"
	"only if the whole object, its trailer and its manifest checked out, so consumers\n"
	"must check it before trusting the data.\n"
	"\n"
	"  --storage URL       file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
	"  --master-key FILE   master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n" CLI_REPLICA_USAGE
		CLI_KEY_COMMAND_USAGE;

static const char verify_usage[] =
	"Usage: tenant-backup verify OBJECT... | --tenant T [--engine E] [OPTIONS]\n"
	"\n"
	"Authenticates every chunk and the trailer of each object, and checks it against\n"
	"its manifest, without writing data. Prints one line per object; exits non-zero\n"
	"if any failed.\n"
	"\n"
	"  --tenant T          verify every backup of tenant T\n"
	"  --engine E          with --tenant: only backups of engine E\n"
	"  --wal               with --tenant: the archived WAL of dedicated tenant T instead,\n"
	"                      every file, and that no segment is missing on any timeline\n"
	"  --json              one JSON object {\"checked\", \"failed\", \"results\": [{\"object\",\n"
	"                      \"ok\", \"plain_bytes\", \"chunks\" | \"error\"}]} instead of the lines\n"
	"  --storage URL       file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
	"  --master-key FILE   master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n" CLI_REPLICA_USAGE
		CLI_KEY_COMMAND_USAGE;

static const char restore_rdb_usage[] =
	"Usage: tenant-backup restore-rdb OBJECT --dir DIR [OPTIONS]\n"
	"\n"
	"Writes the Redis RDB snapshot OBJECT (a redis backup of a dedicated tenant) as\n"
	"DIR/dump.rdb. The file appears only once the whole object authenticated, and never\n"
	"replaces an existing dump.rdb. Start redis-server with --dir DIR (and the default\n"
	"--dbfilename dump.rdb) to load it.\n"
	"\n"
	"  --dir DIR           directory to write dump.rdb into (an absolute path)\n"
	"  --storage URL       file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
	"  --master-key FILE   master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n" CLI_REPLICA_USAGE
		CLI_KEY_COMMAND_USAGE;

typedef struct read_session
{
	cli_copies copies;
	master_key master;
} read_session;

static int
read_session_open(read_session *s, const char *command, const cli_context *ctx)
{
	if (cli_copies_open(&s->copies, command, ctx) != 0)
		return -1;
	if (cli_load_master_key(ctx, &s->master) != 0)
	{
		cli_copies_close(&s->copies);
		return -1;
	}
	return 0;
}

static void
read_session_close(read_session *s)
{
	keys_master_wipe(&s->master);
	cli_copies_close(&s->copies);
}

/* What one read of a backup by cat, verify or restore-rdb needs, whichever copy it reads. */
typedef struct read_one
{
	cli_progress progress; /* first: the progress callback's context is the read_one */
	read_session *session;
	const char *object;
	const manifest *listed; /* the manifest as listed, or NULL: the one in storage, required */
	const char *dir;        /* restore-rdb */
	stream_stats stats;
	cli_copy_read *copy_read;
} read_one;

typedef struct read_args
{
	const char *tenant;
	const char *engine;
	const char *dir;
	bool wal;
	bool json;
} read_args;

static const struct option read_options[] = {{"tenant", required_argument, NULL, 't'},
											 {"engine", required_argument, NULL, 'e'},
											 {"dir", required_argument, NULL, 'd'},
											 {"wal", no_argument, NULL, 'w'},
											 {"json", no_argument, NULL, 'j'},
											 CLI_REPLICA_OPTION,
											 CLI_COMMON_OPTIONS,
											 {NULL, 0, NULL, 0}};

static int
verify_option(int opt, const char *arg, void *state)
{
	read_args *args = state;

	if (opt == 't')
		args->tenant = arg;
	else if (opt == 'e')
		args->engine = arg;
	else if (opt == 'w')
		args->wal = true;
	else if (opt == 'j')
		args->json = true;
	else
		return cli_usage_error("verify", "invalid option");
	return 0;
}

static int
restore_rdb_option(int opt, const char *arg, void *state)
{
	if (opt != 'd')
		return cli_usage_error("restore-rdb", "invalid option");
	((read_args *) state)->dir = arg;
	return 0;
}

const repo_read_options *
cli_read_checked(repo_read_options *options, const manifest *required, cli_progress *progress)
{
	*options = (repo_read_options){.progress = progress ? cli_progress_update : NULL,
								   .progress_ctx = progress,
								   .readahead = true,
								   .check_sha256 = true,
								   .manifest = required};
	return options;
}

/* The object's plaintext must begin as an RDB snapshot does, before any file is made. */
static int
check_rdb(storage *st, const master_key *master, const char *object, tb_error *err)
{
	repo_reader *r = repo_reader_open(st, master, object, NULL, err);
	char magic[5];
	size_t have = 0;
	ssize_t got = 1;

	if (r == NULL)
		return -1;
	while (have < sizeof(magic) && (got = repo_reader_read(r, magic + have, sizeof(magic) - have, err)) > 0)
		have += (size_t) got;
	repo_reader_close(r);
	if (got < 0)
		return -1;
	if (have < sizeof(magic) || memcmp(magic, "REDIS", 5) != 0)
		return tb_error_set(err, TB_ERR_INVALID,
							"%s is not an RDB snapshot (only a dedicated Redis tenant's backup is)", object);
	return 0;
}

static int
restore_rdb_read(cli_copy_read *r, storage *st, tb_error *err)
{
	read_one *one = r->arg;
	master_key *master = &one->session->master;
	repo_read_options options;
	manifest m;

	if (cli_backup_manifest(st, master, one->object, &m, err) != 0 || check_rdb(st, master, one->object, err) != 0)
		return -1;
	return repo_read_to_file(st, master, one->object, one->dir, "dump.rdb",
							 cli_read_checked(&options, &m, &one->progress), &one->stats, err);
}

int
cmd_restore_rdb(int argc, char **argv)
{
	read_args args = {0};
	cli_context ctx;
	read_session s;
	char dir[CLI_ESCAPED_MAX];
	tb_error err = {0};
	read_one one = {.session = &s};
	cli_copy_read r = {.read = restore_rdb_read, .arg = &one};
	int rc = cli_parse("restore-rdb", restore_rdb_usage, argc, argv, read_options, &ctx, restore_rdb_option, &args);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (argc - optind != 1 || args.dir == NULL)
		return cli_usage_error("restore-rdb", "one OBJECT and --dir DIR are required");
	if (read_session_open(&s, "restore-rdb", &ctx) != 0)
		return 2;
	one.object = argv[optind];
	one.dir = args.dir;
	cli_progress_start(&one.progress, "restore-rdb");
	rc = cli_copies_read(&s.copies, one.object, &r, &err);
	cli_progress_end(&one.progress);
	read_session_close(&s);
	if (rc != 0)
		return cli_fail("restore-rdb", &err);
	fprintf(stderr, "tenant-backup restore-rdb: wrote %s/dump.rdb (%llu bytes); load it with redis-server --dir %s\n",
			cli_escape(args.dir, dir, sizeof(dir)), (unsigned long long) one.stats.plain_bytes, dir);
	return 0;
}

/* cat's data goes out as it authenticates: once a read returned, another copy must not follow it. */
static int
cat_handed_on(void *ctx, tb_error *err)
{
	(void) err;
	((read_one *) ctx)->copy_read->handed_on = true;
	return 0;
}

static int
cat_read(cli_copy_read *r, storage *st, tb_error *err)
{
	read_one *one = r->arg;
	repo_read_options options;
	manifest m;

	if (cli_backup_manifest(st, &one->session->master, one->object, &m, err) != 0)
		return -1;
	cli_read_checked(&options, &m, &one->progress);
	options.keep_going = cat_handed_on;
	return repo_read_to_fd(st, &one->session->master, one->object, STDOUT_FILENO, &options, &one->stats, err);
}

int
cmd_cat(int argc, char **argv)
{
	cli_context ctx;
	read_session s;
	tb_error err = {0};
	read_one one = {.session = &s};
	cli_copy_read r = {.read = cat_read, .arg = &one};
	int rc = cli_parse("cat", cat_usage, argc, argv, read_options, &ctx, NULL, NULL);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (argc - optind != 1)
		return cli_usage_error("cat", "exactly one OBJECT is required");
	if (isatty(STDOUT_FILENO))
		return cli_usage_error("cat", "standard output is a terminal: redirect it to a file or a pipe");
	if (read_session_open(&s, "cat", &ctx) != 0)
		return 2;
	one.object = argv[optind];
	one.copy_read = &r;
	cli_progress_start(&one.progress, "cat");
	rc = cli_copies_read(&s.copies, one.object, &r, &err);
	cli_progress_end(&one.progress);
	read_session_close(&s);
	return rc == 0 ? 0 : cli_fail("cat", &err);
}

typedef struct verify_batch
{
	read_session *session;
	wal_segments *segments; /* --wal: the segments seen */
	char wal_prefix[128];   /* --wal: <tenant>/postgres/wal/ */
	int failed;
	int checked;
	json_t *results; /* --json: one object per object checked, else lines on stdout */
} verify_batch;

static void
verify_failed(verify_batch *batch, const char *key, const char *why)
{
	char escaped_key[CLI_ESCAPED_MAX], escaped_why[CLI_ESCAPED_MAX];

	batch->failed++;
	cli_escape(key, escaped_key, sizeof(escaped_key));
	cli_escape(why, escaped_why, sizeof(escaped_why));
	if (batch->results)
		json_array_append_new(batch->results,
							  json_pack("{s:s, s:b, s:s}", "object", escaped_key, "ok", 0, "error", escaped_why));
	else
		printf("FAILED  %s: %s\n", escaped_key, escaped_why);
}

static int
verify_read(cli_copy_read *r, storage *st, tb_error *err)
{
	read_one *one = r->arg;
	repo_read_options options;
	manifest stored;

	if (one->listed == NULL && cli_backup_manifest(st, &one->session->master, one->object, &stored, err) != 0)
		return -1;
	return repo_read_to_fd(st, &one->session->master, one->object, -1,
						   cli_read_checked(&options, one->listed ? one->listed : &stored, NULL), &one->stats, err);
}

/* Checks object against its manifest: m as listed, or (NULL) the one in storage, which it must have. */
static void
verify_one(verify_batch *batch, const char *object, const manifest *m)
{
	read_one one = {.session = batch->session, .object = object, .listed = m};
	cli_copy_read r = {.read = verify_read, .arg = &one};
	tb_error err = {0};
	char escaped[CLI_ESCAPED_MAX];

	batch->checked++;
	if (cli_copies_read(&batch->session->copies, object, &r, &err) != 0)
	{
		verify_failed(batch, object, err.msg);
		return;
	}
	cli_escape(object, escaped, sizeof(escaped));
	if (batch->results)
		json_array_append_new(batch->results,
							  json_pack("{s:s, s:b, s:I, s:I}", "object", escaped, "ok", 1, "plain_bytes",
										(json_int_t) one.stats.plain_bytes, "chunks", (json_int_t) one.stats.chunks));
	else
		printf("ok      %s  %llu bytes in %llu chunks\n", escaped, (unsigned long long) one.stats.plain_bytes,
			   (unsigned long long) one.stats.chunks);
	if (batch->segments)
		wal_segments_add(batch->segments, object, one.stats.plain_bytes);
}

static int
verify_listed(const manifest *m, void *arg)
{
	verify_one(arg, m->object, m);
	return 0;
}

static void
verify_problem(const char *key, const char *why, void *arg)
{
	verify_failed(arg, key, why);
}

static int
verify_wal_listed(const char *key, const storage_info *info, void *arg)
{
	verify_batch *batch = arg;
	size_t len = strlen(key);

	(void) info;
	/* The listing is a hint: only keys below the tenant's own WAL count. */
	if (strncmp(key, batch->wal_prefix, strlen(batch->wal_prefix)) == 0 && len > 4 &&
		strcmp(key + len - 4, ".tbk") == 0)
		verify_one(batch, key, NULL);
	return 0;
}

int
cmd_verify(int argc, char **argv)
{
	read_args args = {0};
	cli_context ctx;
	read_session s;
	verify_batch batch = {.session = &s};
	tb_error err = {0};
	int rc = cli_parse("verify", verify_usage, argc, argv, read_options, &ctx, verify_option, &args);
	const char *tenant, *engine;

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	tenant = args.tenant;
	engine = args.engine;
	if ((tenant == NULL) == (optind == argc))
		return cli_usage_error("verify", "give either OBJECT... or --tenant T");
	if (engine != NULL && tenant == NULL)
		return cli_usage_error("verify", "--engine goes with --tenant");
	if (args.wal && (tenant == NULL || engine != NULL))
		return cli_usage_error("verify", "--wal goes with --tenant, without --engine");
	if (tenant && (names_check_tenant(tenant, &err) != 0 || (engine && names_check_engine(engine, &err) != 0)))
		return cli_fail("verify", &err);
	if (read_session_open(&s, "verify", &ctx) != 0)
		return 2;
	if (args.json)
		batch.results = json_array();
	if (args.wal)
	{
		snprintf(batch.wal_prefix, sizeof(batch.wal_prefix), "%s/postgres/wal/", tenant);
		batch.segments = wal_segments_new();
		rc = storage_list(s.copies.primary, batch.wal_prefix, verify_wal_listed, &batch, &err);
		batch.failed += wal_segments_report_gaps(batch.segments);
		wal_segments_free(batch.segments);
	}
	else if (tenant)
		rc = cli_copies_list(&s.copies, tenant, engine,
							 &(cli_listing_handlers){.backup = verify_listed, .problem = verify_problem, .arg = &batch},
							 &err);
	else
		for (int i = optind; i < argc; i++)
			verify_one(&batch, argv[i], NULL);
	read_session_close(&s);
	if (rc == 0 && batch.results != NULL)
		rc = cli_print_json(
			json_pack("{s:i, s:i, s:O}", "checked", batch.checked, "failed", batch.failed, "results", batch.results),
			&err);
	json_decref(batch.results);
	if (rc != 0)
		return cli_fail("verify", &err);
	if (tenant && batch.checked == 0)
	{
		fprintf(stderr, "tenant-backup verify: no %s of tenant '%s'%s%s found%s\n",
				args.wal ? "archived WAL" : "backups", tenant, engine ? " for engine " : "", engine ? engine : "",
				batch.failed ? " that could be checked (see the failures above)" : "");
		return 1;
	}
	fprintf(stderr, "tenant-backup verify: %d checked, %d failed\n", batch.checked, batch.failed);
	return batch.failed ? 1 : 0;
}
