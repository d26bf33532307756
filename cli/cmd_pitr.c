/*
 * Point-in-time recovery of a dedicated PostgreSQL tenant, straight from storage:
 * restore-pitr unpacks the newest base backup before the target into a new data
 * directory and sets it up to recover; the restore_command it writes calls wal-fetch,
 * which decrypts one archived WAL file into place.
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "names.h"
#include "pitr.h"
#include "repo.h"
#include "subprocess.h"

#define PITR_BUFFER (1024 * 1024)
/* PostgreSQL stops recovery on a restore_command exit status above 125; 1 means "not there". */
#define WAL_FETCH_NOT_FOUND 1
#define WAL_FETCH_FAILED 255

static const char wal_fetch_usage[] =
	"Usage: tenant-backup wal-fetch --tenant T FILE DEST [OPTIONS]\n"
	"\n"
	"Authenticates and decrypts the archived WAL file FILE of dedicated tenant T into\n"
	"DEST, for PostgreSQL's restore_command ('... wal-fetch --tenant T %f %p'). Exits 1\n"
	"when FILE was never archived (recovery ends there), 255 when it cannot be read or\n"
	"fails authentication (recovery stops with the error), 0 otherwise. Meanwhile a\n"
	"detached process fetches the next segments into DEST's directory/tenant_backup_prefetch,\n"
	"where the next calls find them authenticated.\n"
	"\n"
	"  --tenant T          the dedicated tenant\n"
	"  --prefetch N        segments to fetch ahead (default 8; 0: none)\n"
	"  --storage URL       file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n" CLI_REPLICA_USAGE
	"  --master-key FILE   master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n" CLI_KEY_COMMAND_USAGE;

static const char restore_pitr_usage[] =
	"Usage: tenant-backup restore-pitr --tenant T --pgdata DIR (--to TIME | --to-lsn LSN | --to-latest)\n"
	"\n"
	"Unpacks the newest base backup of dedicated tenant T that began before the target\n"
	"(by the time in its object's name, once its authenticated header confirms the\n"
	"tenant and the backup; what its manifest says is not trusted for this: a target\n"
	"inside a base backup's run makes PostgreSQL stop before it is consistent, so give\n"
	"a later one) into DIR (new or empty), writes recovery.signal and the recovery settings (a\n"
	"restore_command calling 'tenant-backup wal-fetch', the target, promotion at the\n"
	"target, archiving off), and prints how to start it. Run it as the user the server\n"
	"will run as.\n"
	"\n"
	"For a tenant whose keys its own key command wraps (bring your own key), give\n"
	"--key-command: the restore_command passes it on to wal-fetch. It runs there from the\n"
	"data directory, so name its files by absolute paths.\n"
	"\n"
	"  --tenant T          the dedicated tenant\n"
	"  --pgdata DIR        the data directory to create\n"
	"  --to TIME           recover up to TIME ('2026-11-25 10:15:00+00'), inclusive\n"
	"  --to-lsn LSN        recover up to LSN (0/3000060)\n"
	"  --to-latest         recover everything archived\n"
	"  --storage URL       file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n" CLI_REPLICA_USAGE
	"  --master-key FILE   master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n" CLI_KEY_COMMAND_USAGE;

typedef struct pitr_args
{
	int prefetch; /* wal-fetch: segments to fetch ahead */
	const char *tenant;
	const char *pgdata;
	const char *to;
	const char *to_lsn;
	bool to_latest;
	pitr_time to_time;     /* --to, parsed */
	uint64_t to_lsn_value; /* --to-lsn, parsed */
} pitr_args;

static const struct option pitr_options[] = {{"tenant", required_argument, NULL, 't'},
											 {"pgdata", required_argument, NULL, 'D'},
											 {"to", required_argument, NULL, 'T'},
											 {"to-lsn", required_argument, NULL, 'L'},
											 {"to-latest", no_argument, NULL, 'A'},
											 {"prefetch", required_argument, NULL, 'P'},
											 CLI_REPLICA_OPTION,
											 CLI_COMMON_OPTIONS,
											 {NULL, 0, NULL, 0}};

static int
pitr_option(int opt, const char *arg, void *state)
{
	pitr_args *args = state;

	switch (opt)
	{
		case 't':
			args->tenant = arg;
			return 0;
		case 'D':
			args->pgdata = arg;
			return 0;
		case 'T':
			args->to = arg;
			return 0;
		case 'L':
			args->to_lsn = arg;
			return 0;
		case 'A':
			args->to_latest = true;
			return 0;
		case 'P':
			args->prefetch = atoi(arg);
			return 0;
	}
	return cli_usage_error("restore-pitr", "invalid option");
}

/* Writes the whole of a reader's plaintext to fd; 0 once the object authenticated. */
static int
copy_object(repo_reader *r, int fd, tb_error *err)
{
	char *buf = malloc(PITR_BUFFER);
	ssize_t n;

	if (buf == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	while ((n = repo_reader_read(r, buf, PITR_BUFFER, err)) > 0)
		for (ssize_t done = 0, w; done < n; done += w)
			if ((w = write(fd, buf + done, (size_t) (n - done))) < 0)
			{
				free(buf);
				return errno == EPIPE ? tb_error_set(err, TB_ERR_IO, "the unpacking tool stopped reading")
									  : tb_error_set(err, TB_ERR_IO, "could not write: %s", strerror(errno));
			}
	free(buf);
	return n == 0 ? 0 : -1;
}

/* FILE into DEST through DEST.tbtmp, renamed only once it authenticated; 0, 1 (not archived) or -1. */
static int
wal_fetch(storage *st, const master_key *master, const char *tenant, const char *file, const char *dest, tb_error *err)
{
	char name[NAMES_WAL_OBJECT_MAX], id[80], object[600], tmp[4096];
	storage_info info;
	repo_reader *r;
	int fd, rc;

	if (names_check_tenant(tenant, err) != 0 || names_wal_object(file, name, sizeof(name), id, sizeof(id), err) != 0)
		return -1;
	snprintf(object, sizeof(object), "%s/postgres/%s", tenant, name);
	if (storage_head(st, object, &info, err) != 0)
		return err->code == TB_ERR_NOT_FOUND ? 1 : -1;
	if ((r = repo_reader_open(st, master, object, &(stream_reader_options){.readahead = true}, err)) == NULL)
		return -1;
	/* The header names the file it was sealed for: another file's object moved here fails. */
	if (strcmp(repo_reader_header(r)->backup_id, id) != 0)
	{
		tb_error_set(err, TB_ERR_CORRUPT, "%s holds WAL file '%s', not '%s'", object, repo_reader_header(r)->backup_id,
					 file);
		repo_reader_close(r);
		return -1;
	}
	snprintf(tmp, sizeof(tmp), "%s.tbtmp", dest);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
	{
		repo_reader_close(r);
		return tb_error_set(err, TB_ERR_IO, "could not create '%s': %s", tmp, strerror(errno));
	}
	rc = copy_object(r, fd, err);
	repo_reader_close(r);
	if (rc == 0 && (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, dest) != 0))
		rc = tb_error_set(err, TB_ERR_IO, "could not put '%s' in place: %s", dest, strerror(errno));
	else if (rc != 0)
		close(fd);
	if (rc != 0)
		unlink(tmp);
	return rc;
}

/* The next segment's name after file (a whole segment of segment_bytes), or false. */
static bool
next_segment(const char *file, uint64_t segment_bytes, char *out, size_t size)
{
	pitr_wal_name name;

	if (segment_bytes == 0 || pitr_wal_name_parse(file, &name) != 0)
		return false;
	pitr_wal_name_format(name.timeline, pitr_wal_segno(&name, segment_bytes) + 1, segment_bytes, out, size);
	return true;
}

/*
 * In a detached child, fetches the segments after file into spool while PostgreSQL
 * replays this one: the next calls then find theirs authenticated and in place. One
 * prefetcher at a time (a lock in the spool); it stops at the end of the archive.
 */
static void
prefetch_after(const cli_context *ctx, const char *tenant, const char *file, const char *dest, const char *spool,
			   int count)
{
	struct stat st_dest;
	char name[32], path[4400], lock[4200];
	storage *st;
	master_key master;
	DIR *dir;
	struct dirent *e;
	int fd;

	if (count <= 0 || stat(dest, &st_dest) != 0 || !next_segment(file, (uint64_t) st_dest.st_size, name, sizeof(name)))
		return;
	if (fork() != 0)
		return;
	setsid();
	if (freopen("/dev/null", "r", stdin) == NULL || freopen("/dev/null", "w", stdout) == NULL)
		_exit(0);
	snprintf(lock, sizeof(lock), "%s/.lock", spool);
	if ((mkdir(spool, 0700) != 0 && errno != EEXIST) || (fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0 ||
		flock(fd, LOCK_EX | LOCK_NB) != 0)
		_exit(0);
	/* What recovery has gone past is of no use any more. */
	if ((dir = opendir(spool)) != NULL)
	{
		while ((e = readdir(dir)) != NULL)
			if (e->d_name[0] != '.' && strcmp(e->d_name, file) <= 0)
			{
				snprintf(path, sizeof(path), "%s/%s", spool, e->d_name);
				unlink(path);
			}
		closedir(dir);
	}
	if ((st = cli_open_storage(ctx)) == NULL || cli_load_master_key(ctx, &master) != 0)
		_exit(0);
	for (int i = 0; i < count; i++)
	{
		tb_error err = {0};

		snprintf(path, sizeof(path), "%s/%s", spool, name);
		if (access(path, F_OK) != 0 && wal_fetch(st, &master, tenant, name, path, &err) != 0)
			break;
		if (!next_segment(name, (uint64_t) st_dest.st_size, name, sizeof(name)))
			break;
	}
	keys_master_wipe(&master);
	storage_close(st);
	_exit(0);
}

/* What one wal-fetch of FILE into DEST needs, from whichever copy. */
typedef struct wal_fetch_copy
{
	const master_key *master;
	const char *tenant, *file, *dest;
	bool not_archived; /* the copy read last never had FILE (a missing key document is not that) */
} wal_fetch_copy;

/* wal_fetch from one copy; a file that copy never archived is its TB_ERR_NOT_FOUND. */
static int
wal_fetch_read(cli_copy_read *r, storage *st, tb_error *err)
{
	wal_fetch_copy *w = r->arg;
	int rc = wal_fetch(st, w->master, w->tenant, w->file, w->dest, err);

	w->not_archived = rc == 1;
	if (rc == 1)
		return tb_error_set(err, TB_ERR_NOT_FOUND, "%s of tenant '%s' is not in the archive", w->file, w->tenant);
	return rc;
}

int
cmd_wal_fetch(int argc, char **argv)
{
	pitr_args args = {.prefetch = 8};
	cli_context ctx;
	cli_copies copies;
	master_key master;
	wal_fetch_copy fetch = {.master = &master};
	tb_error err = {0};
	char spool[4096], spooled[4200];
	const char *file, *dest;
	int rc = cli_parse("wal-fetch", wal_fetch_usage, argc, argv, pitr_options, &ctx, pitr_option, &args);

	if (rc != 0)
		return rc < 0 ? 0 : WAL_FETCH_FAILED;
	if (args.tenant == NULL || argc - optind != 2 || args.prefetch < 0)
	{
		cli_usage_error("wal-fetch", "--tenant T, FILE and DEST are required");
		return WAL_FETCH_FAILED;
	}
	file = argv[optind];
	dest = argv[optind + 1];
	/* The spool is beside DEST (pg_wal/), which base backups leave out. */
	snprintf(spool, sizeof(spool), "%.*s%s", (int) (strrchr(dest, '/') ? strrchr(dest, '/') - dest + 1 : 0), dest,
			 "tenant_backup_prefetch");
	snprintf(spooled, sizeof(spooled), "%s/%s", spool, file);
	if (strchr(file, '/') == NULL && rename(spooled, dest) == 0)
		rc = 0;
	else
	{
		fetch.tenant = args.tenant;
		fetch.file = file;
		fetch.dest = dest;
		if (cli_copies_open(&copies, "wal-fetch", &ctx) != 0)
			return WAL_FETCH_FAILED;
		if (cli_load_master_key(&ctx, &master) != 0)
		{
			cli_copies_close(&copies);
			return WAL_FETCH_FAILED;
		}
		rc = cli_copies_read(&copies, file, &(cli_copy_read){.read = wal_fetch_read, .arg = &fetch}, &err);
		keys_master_wipe(&master);
		cli_copies_close(&copies);
	}
	if (rc != 0 && fetch.not_archived)
	{
		fprintf(stderr, "tenant-backup wal-fetch: %s of tenant '%s' is not in the archive\n", file, args.tenant);
		return WAL_FETCH_NOT_FOUND;
	}
	if (rc != 0)
	{
		char msg[CLI_ESCAPED_MAX];

		fprintf(stderr, "tenant-backup wal-fetch: WAL file %s of tenant '%s': %s\n", file, args.tenant,
				cli_escape(err.msg, msg, sizeof(msg)));
		return WAL_FETCH_FAILED;
	}
	prefetch_after(&ctx, args.tenant, file, dest, spool, args.prefetch);
	return 0;
}

typedef struct base_choice
{
	cli_copies *copies;
	const master_key *master;
	const char *tenant;
	bool before_given;
	time_t before; /* with before_given: the base backup must have begun before this */
	manifest *candidates;
	size_t count, cap;
	bool out_of_memory;
} base_choice;

static void
base_skip(const char *key, const char *why, void *arg)
{
	char escaped_key[CLI_ESCAPED_MAX], escaped_why[CLI_ESCAPED_MAX];

	(void) arg;
	fprintf(stderr, "tenant-backup restore-pitr: skipping %s: %s\n", cli_escape(key, escaped_key, sizeof(escaped_key)),
			cli_escape(why, escaped_why, sizeof(escaped_why)));
}

/* Keeps the base backups that began before the target, by the time in their names. */
static int
base_consider(const manifest *m, void *arg)
{
	base_choice *c = arg;
	manifest_object_name name;
	tb_error err = {0};

	if (manifest_object_parse(m->object, &name, &err) != 0 || name.kind != MANIFEST_OBJECT_BASE)
		return 0;
	/* An archived WAL file's object put among the base backups is not one. */
	if (pitr_is_wal_backup_id(name.backup_id))
	{
		base_skip(m->object, "holds an archived WAL file, not a base backup", NULL);
		return 0;
	}
	/* The name's time is whole seconds: the backup began before it + 1. */
	if (c->before_given && name.began + 1 > c->before)
		return 0;
	if (c->count == c->cap)
	{
		size_t cap = c->cap ? c->cap * 2 : 16;
		manifest *grown = realloc(c->candidates, cap * sizeof(*grown));

		if (grown == NULL)
		{
			c->out_of_memory = true;
			return 1;
		}
		c->candidates = grown;
		c->cap = cap;
	}
	c->candidates[c->count++] = *m;
	return 0;
}

/* Newest first by the object's name (its time, then its id). */
static int
base_newest_first(const void *a, const void *b)
{
	return strcmp(((const manifest *) b)->object, ((const manifest *) a)->object);
}

/* A candidate's authenticated header, from one copy: whether it is the backup its name says. */
typedef struct base_header
{
	const base_choice *choice;
	const manifest *m;
	bool same;
} base_header;

static int
base_header_read(cli_copy_read *r, storage *st, tb_error *err)
{
	base_header *h = r->arg;
	repo_reader *reader = repo_reader_open(st, h->choice->master, h->m->object, NULL, err);

	if (reader == NULL)
		return -1;
	h->same = strcmp(repo_reader_header(reader)->tenant, h->choice->tenant) == 0 &&
			  strcmp(repo_reader_header(reader)->engine, "postgres") == 0 &&
			  strcmp(repo_reader_header(reader)->backup_id, h->m->backup_id) == 0;
	repo_reader_close(reader);
	return 0;
}

/*
 * The newest base backup of the tenant that began before the target, decided by
 * authenticated data: its header must say this tenant, postgres and the backup id
 * of its name (whose time orders and filters), whatever its manifest says about when
 * it finished. A candidate whose header disagrees is skipped with a warning. NULL:
 * none (err clear), or err set when a header could not be read for another reason.
 */
static const manifest *
base_choose(base_choice *c, tb_error *err)
{
	if (c->count > 0)
		qsort(c->candidates, c->count, sizeof(manifest), base_newest_first);
	for (size_t i = 0; i < c->count; i++)
	{
		const manifest *m = &c->candidates[i];
		base_header header = {.choice = c, .m = m};

		/* Not authentic or not in its place: not a base backup. Anything else (storage, key) stops the choice. */
		if (cli_copies_read(c->copies, m->object, &(cli_copy_read){.read = base_header_read, .arg = &header}, err) != 0)
		{
			if (err->code != TB_ERR_CORRUPT)
				return NULL;
			base_skip(m->object, err->msg, NULL);
			tb_error_clear(err);
			continue;
		}
		if (header.same)
			return m;
		base_skip(m->object, "its header is not the backup its name and manifest say", NULL);
	}
	return NULL;
}

/* tar -x into dir, fed with the base backup; 0 once it and its manifest checked out and tar succeeded. */
static int
unpack_base(storage *st, const master_key *master, const manifest *base, const char *dir, tb_error *err)
{
	const char *argv[] = {"tar", "-x", "-f", "-", "-C", dir, NULL};
	/* Best effort: a pipe as large as a chunk lets tar unpack while the next one decodes. */
	subprocess_options opts = {.argv = argv, .in = SUBPROCESS_PIPE, .pipe_size = PITR_BUFFER};
	stream_stats stats;
	subprocess tar;
	int rc;

	if (subprocess_start(&tar, &opts, err) != 0)
		return -1;
	/* repo_read_to_fd writes as a plain file descriptor: blocking, tar's pace. */
	(void) fcntl(tar.in_fd, F_SETFL, fcntl(tar.in_fd, F_GETFL) & ~O_NONBLOCK);
	signal(SIGPIPE, SIG_IGN);
	rc = repo_read_to_fd(st, master, base->object, tar.in_fd,
						 &(repo_read_options){.readahead = true, .check_sha256 = true, .manifest = base}, &stats, err);
	subprocess_close_stdin(&tar);
	if (subprocess_reap(&tar, true) < 0 || !WIFEXITED(tar.status) || WEXITSTATUS(tar.status) != 0)
		rc = rc != 0 ? rc : tb_error_set(err, TB_ERR_IO, "tar could not unpack the base backup into %s", dir);
	subprocess_end(&tar, SIGKILL);
	return rc;
}

static int
remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void) st;
	(void) ftw;
	return type == FTW_DP ? rmdir(path) : unlink(path);
}

/* What unpacking the base backup needs, from whichever copy. */
typedef struct unpack_copy
{
	const master_key *master;
	const manifest *base;
	const char *dir;
} unpack_copy;

/* unpack_base from one copy; a failure leaves dir empty again, for the other copy or for removal. */
static int
unpack_read(cli_copy_read *r, storage *st, tb_error *err)
{
	const unpack_copy *u = r->arg;

	if (unpack_base(st, u->master, u->base, u->dir, err) == 0)
		return 0;
	if (nftw(u->dir, remove_entry, 64, FTW_DEPTH | FTW_PHYS) != 0 || mkdir(u->dir, 0700) != 0)
		r->handed_on = true;
	return -1;
}

/* value as one /bin/sh word ('...', a ' as '\''), with % doubled as restore_command wants. */
static void
command_word(FILE *f, const char *value)
{
	fputc('\'', f);
	for (const char *c = value; *c; c++)
		if (*c == '\'')
			fputs("'\\''", f);
		else if (*c == '%')
			fputs("%%", f);
		else
			fputc(*c, f);
	fputc('\'', f);
}

/* name = 'value' as postgresql.conf reads it back: a ' as '', a \ as \\. */
static void
conf_setting(FILE *f, const char *name, const char *value)
{
	fprintf(f, "%s = '", name);
	for (const char *c = value; *c; c++)
	{
		if (*c == '\'' || *c == '\\')
			fputc(*c, f);
		fputc(*c, f);
	}
	fputs("'\n", f);
}

/* What goes into restore_command must fit on one line of postgresql.auto.conf. */
static int
check_conf_value(const char *what, const char *value, tb_error *err)
{
	for (const char *c = value; *c; c++)
		if ((unsigned char) *c < 0x20 || *c == 0x7f)
			return tb_error_set(err, TB_ERR_INVALID, "%s holds a control character: it cannot go into restore_command",
								what);
	return 0;
}

/* The restore_command calling wal-fetch (the caller frees it). */
static char *
restore_command(const cli_context *ctx, const char *tenant, const char *self, const char *key_file)
{
	char *text = NULL;
	size_t len;
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		return NULL;
	command_word(f, self);
	fprintf(f, " wal-fetch --tenant %s --storage ", tenant);
	command_word(f, ctx->storage_url);
	if (ctx->replica_url)
	{
		fputs(" --replica ", f);
		command_word(f, ctx->replica_url);
	}
	fputs(" --master-key ", f);
	command_word(f, key_file);
	/* The key command too: the server that runs restore_command has not got our environment. */
	if (ctx->key_command)
	{
		fputs(" --key-command ", f);
		command_word(f, ctx->key_command);
	}
	fputs(" %f %p", f);
	if (fclose(f) != 0)
	{
		free(text);
		return NULL;
	}
	return text;
}

/*
 * recovery.signal, and the recovery settings after the base backup's own in
 * postgresql.auto.conf: every value one we formatted (the targets parsed, the paths
 * and URL checked for control characters), quoted for the file.
 */
static int
write_recovery(const cli_context *ctx, const pitr_args *args, const char *dir, tb_error *err)
{
	char path[4096], self[4096], key_file[PATH_MAX], target[PITR_TEXT_MAX];
	char *command;
	FILE *f;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n < 0)
		return tb_error_set(err, TB_ERR_IO, "could not find this program's path: %s", strerror(errno));
	self[n] = '\0';
	/* restore_command runs in the data directory: a relative name would not be found from there. */
	if (realpath(ctx->master_key_file, key_file) == NULL)
		return tb_error_set(err, TB_ERR_IO, "could not resolve %s: %s", ctx->master_key_file, strerror(errno));
	if (check_conf_value("this program's path", self, err) != 0 ||
		check_conf_value("the storage URL", ctx->storage_url, err) != 0 ||
		(ctx->replica_url && check_conf_value("the replica URL", ctx->replica_url, err) != 0) ||
		check_conf_value("the master key file name", key_file, err) != 0 ||
		(ctx->key_command && check_conf_value("the key command", ctx->key_command, err) != 0))
		return -1;
	if ((command = restore_command(ctx, args->tenant, self, key_file)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	snprintf(path, sizeof(path), "%s/recovery.signal", dir);
	if ((f = fopen(path, "w")) == NULL || fclose(f) != 0)
	{
		free(command);
		return tb_error_set(err, TB_ERR_IO, "could not write %s: %s", path, strerror(errno));
	}
	snprintf(path, sizeof(path), "%s/postgresql.auto.conf", dir);
	if ((f = fopen(path, "a")) == NULL)
	{
		free(command);
		return tb_error_set(err, TB_ERR_IO, "could not write %s: %s", path, strerror(errno));
	}
	fprintf(f, "\n# tenant-backup restore-pitr of tenant '%s'\n", args->tenant);
	conf_setting(f, "restore_command", command);
	free(command);
	if (args->to)
	{
		pitr_format_time(&args->to_time, target, sizeof(target));
		conf_setting(f, "recovery_target_time", target);
	}
	if (args->to_lsn)
	{
		pitr_format_lsn(args->to_lsn_value, target, sizeof(target));
		conf_setting(f, "recovery_target_lsn", target);
	}
	if (args->to || args->to_lsn)
		conf_setting(f, "recovery_target_action", "promote");
	/* A restored copy must not archive into the tenant's WAL as if it were the original. */
	conf_setting(f, "archive_mode", "off");
	if (fclose(f) != 0)
		return tb_error_set(err, TB_ERR_IO, "could not write %s: %s", path, strerror(errno));
	return 0;
}

int
cmd_restore_pitr(int argc, char **argv)
{
	pitr_args args = {0};
	cli_context ctx;
	base_choice choice = {0};
	cli_copies copies;
	const manifest *base = NULL;
	master_key master;
	tb_error err = {0};
	char target[PITR_TEXT_MAX], object[CLI_ESCAPED_MAX];
	int rc = cli_parse("restore-pitr", restore_pitr_usage, argc, argv, pitr_options, &ctx, pitr_option, &args);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (args.tenant == NULL || args.pgdata == NULL || optind != argc)
		return cli_usage_error("restore-pitr", "--tenant T and --pgdata DIR are required");
	if ((args.to != NULL) + (args.to_lsn != NULL) + args.to_latest != 1)
		return cli_usage_error("restore-pitr", "give exactly one of --to, --to-lsn and --to-latest");
	/* Parsed whole, and written into the configuration only as we format them again. */
	if (args.to && pitr_parse_time(args.to, &args.to_time) != 0)
		return cli_usage_error("restore-pitr", "--to is not a time like '2026-11-25 10:15:00+00' (nothing after it)");
	if (args.to_lsn && pitr_parse_lsn(args.to_lsn, &args.to_lsn_value) != 0)
		return cli_usage_error("restore-pitr", "--to-lsn is not an LSN like 0/3000060 (hex/hex, nothing after it)");
	if (args.pgdata[0] != '/')
		return cli_usage_error("restore-pitr", "--pgdata must be an absolute path");
	if (names_check_tenant(args.tenant, &err) != 0)
		return cli_fail("restore-pitr", &err);
	/* A new directory, or an empty one (made again, so that it is ours and 0700). */
	if (mkdir(args.pgdata, 0700) != 0)
	{
		if (errno != EEXIST)
			tb_error_set(&err, TB_ERR_IO, "could not create %s: %s", args.pgdata, strerror(errno));
		else if (rmdir(args.pgdata) != 0 || mkdir(args.pgdata, 0700) != 0)
			tb_error_set(&err, TB_ERR_EXISTS, "%s exists and is not empty; give a new or empty directory", args.pgdata);
		if (err.code != TB_OK)
			return cli_fail("restore-pitr", &err);
	}
	if (cli_copies_open(&copies, "restore-pitr", &ctx) != 0)
		return 2;
	if (cli_load_master_key(&ctx, &master) != 0)
	{
		cli_copies_close(&copies);
		return 2;
	}
	choice.copies = &copies;
	/* The target as written into the configuration, for the messages. */
	if (args.to)
		pitr_format_time(&args.to_time, target, sizeof(target));
	else if (args.to_lsn)
		pitr_format_lsn(args.to_lsn_value, target, sizeof(target));
	else
		snprintf(target, sizeof(target), "everything archived");
	choice.master = &master;
	choice.tenant = args.tenant;
	choice.before_given = args.to != NULL;
	choice.before = args.to_time.seconds;
	rc = cli_copies_list(
		&copies, args.tenant, "postgres",
		&(cli_listing_handlers){.backup = base_consider, .problem = base_skip, .arg = &choice, .below = "base/"}, &err);
	if (rc == 0 && choice.out_of_memory)
		rc = tb_error_set(&err, TB_ERR_NOMEM, "out of memory listing base backups");
	if (rc == 0 && (base = base_choose(&choice, &err)) == NULL && err.code != TB_OK)
		rc = -1;
	else if (rc == 0 && base == NULL)
	{
		rc = tb_error_set(&err, TB_ERR_NOT_FOUND,
						  "tenant '%s' has no base backup that ended before %s: none that began before it (by the "
						  "time in its name) checked out",
						  args.tenant, args.to ? target : "now");
	}
	if (rc == 0)
	{
		fprintf(stderr, "tenant-backup restore-pitr: base backup %s (backup %s)\n",
				cli_escape(base->object, object, sizeof(object)), base->backup_id);
		rc = cli_copies_read(
			&copies, base->object,
			&(cli_copy_read){.read = unpack_read,
							 .arg = &(unpack_copy){.master = &master, .base = base, .dir = args.pgdata}},
			&err);
	}
	if (rc == 0)
		rc = write_recovery(&ctx, &args, args.pgdata, &err);
	keys_master_wipe(&master);
	cli_copies_close(&copies);
	free(choice.candidates);
	if (rc != 0)
	{
		/* Nothing half-restored stays behind to be started by mistake. */
		if (nftw(args.pgdata, remove_entry, 64, FTW_DEPTH | FTW_PHYS) != 0)
			fprintf(stderr, "tenant-backup restore-pitr: could not remove %s: %s\n", args.pgdata, strerror(errno));
		return cli_fail("restore-pitr", &err);
	}
	fprintf(stderr,
			"tenant-backup restore-pitr: %s is ready to recover %s; start it with\n"
			"  pg_ctl -D %s start\n"
			"(archive_mode is off in the copy: turn it on again if it is to replace the original)\n",
			args.pgdata, target, args.pgdata);
	return 0;
}

typedef struct wal_segment
{
	pitr_wal_name name;
} wal_segment;

struct wal_segments
{
	wal_segment *items;
	size_t count, cap;
	uint64_t segment_bytes;
};

wal_segments *
wal_segments_new(void)
{
	return calloc(1, sizeof(wal_segments));
}

void
wal_segments_free(wal_segments *w)
{
	if (w)
		free(w->items);
	free(w);
}

void
wal_segments_add(wal_segments *w, const char *object, uint64_t segment_bytes)
{
	const char *file = strrchr(object, '/');
	char segment[PITR_WAL_NAME_LEN + 1];
	pitr_wal_name name;

	if (w == NULL || file == NULL || strlen(file + 1) != PITR_WAL_NAME_LEN + 4 ||
		strcmp(file + 1 + PITR_WAL_NAME_LEN, ".tbk") != 0)
		return;
	memcpy(segment, file + 1, PITR_WAL_NAME_LEN);
	segment[PITR_WAL_NAME_LEN] = '\0';
	if (pitr_wal_name_parse(segment, &name) != 0)
		return;
	if (w->count == w->cap)
	{
		size_t cap = w->cap ? w->cap * 2 : 256;
		wal_segment *grown = realloc(w->items, cap * sizeof(*grown));

		if (grown == NULL)
			return;
		w->items = grown;
		w->cap = cap;
	}
	/* Every segment is the same size: it says how many make one 4 GB log file. */
	if (w->segment_bytes == 0 && segment_bytes > 0)
		w->segment_bytes = segment_bytes;
	w->items[w->count].name = name;
	w->count++;
}

static int
by_timeline_and_number(const void *a, const void *b)
{
	const pitr_wal_name *x = &((const wal_segment *) a)->name, *y = &((const wal_segment *) b)->name;

	if (x->timeline != y->timeline)
		return x->timeline < y->timeline ? -1 : 1;
	if (x->log != y->log)
		return x->log < y->log ? -1 : 1;
	return x->seg < y->seg ? -1 : x->seg > y->seg;
}

int
wal_segments_report_gaps(wal_segments *w)
{
	int gaps = 0;

	if (w == NULL || w->count == 0 || w->segment_bytes == 0)
		return 0;
	qsort(w->items, w->count, sizeof(*w->items), by_timeline_and_number);
	for (size_t i = 1; i < w->count; i++)
	{
		const pitr_wal_name *earlier = &w->items[i - 1].name, *later = &w->items[i].name;
		uint64_t prev = pitr_wal_segno(earlier, w->segment_bytes), next = pitr_wal_segno(later, w->segment_bytes);
		char after[PITR_WAL_NAME_LEN + 1];

		if (later->timeline != earlier->timeline || next <= prev + 1)
			continue;
		gaps++;
		pitr_wal_name_format(earlier->timeline, prev, w->segment_bytes, after, sizeof(after));
		printf("GAP     timeline %08X: %llu segment(s) missing after %s\n", later->timeline,
			   (unsigned long long) (next - prev - 1), after);
	}
	return gaps;
}
