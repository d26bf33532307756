/*
 * A dedicated tenant's whole Redis server as an RDB snapshot, fetched the way a
 * replica (and redis-cli --rdb) gets one: REPLCONF capa eof and rdb-only, SYNC, then the payload,
 * either "$<length>" bytes or, diskless, "$EOF:<40-byte mark>" up to that mark. It goes
 * into storage as it arrives, never through a temporary file. Restoring one writes
 * dump.rdb into a directory confined to redis_restore_dir, for a server started with
 * --dir there; a drill writes it
 * into a scratch directory, has redis-check-rdb check it, and removes the directory.
 */
#include "redis_agent.h"

#include "crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RDB_BUFFER (1024 * 1024)
#define RDB_EOF_MARK 40
#define RDB_SILENCE_SECONDS 120
#define RDB_CRC_LEN 8 /* the CRC-64 after the EOF opcode, the snapshot's last bytes */

typedef struct rdb_fetch
{
	agent_job *job;
	redisContext *c;
	repo_put *put;
	char *buf;
	size_t len;      /* bytes in buf not yet handled */
	int silent_for;  /* seconds without a byte */
	uint64_t stored; /* payload bytes written */
	unsigned char head[5], tail[9];
} rdb_fetch;

/* More bytes from the server into buf (after len); waits tick the lease. */
static int
rdb_read(rdb_fetch *f, tb_error *err)
{
	for (;;)
	{
		struct pollfd pfd = {.fd = f->c->fd, .events = POLLIN};
		ssize_t got;
		int ready = poll(&pfd, 1, 1000);

		if (ready < 0 && errno != EINTR)
			return tb_error_set(err, TB_ERR_IO, "waiting for the RDB: %s", strerror(errno));
		if (agent_job_tick(f->job, err) != 0)
			return -1;
		if (ready <= 0)
		{
			if (++f->silent_for >= RDB_SILENCE_SECONDS)
				return tb_error_set(err, TB_ERR_IO, "the server sent nothing for %d s", RDB_SILENCE_SECONDS);
			continue;
		}
		got = read(f->c->fd, f->buf + f->len, RDB_BUFFER - f->len);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got < 0)
			return tb_error_set(err, TB_ERR_IO, "reading the RDB: %s", strerror(errno));
		if (got == 0)
			return tb_error_set(err, TB_ERR_IO, "the server closed the connection after %llu bytes of the RDB",
								(unsigned long long) f->stored);
		f->silent_for = 0;
		f->len += (size_t) got;
		return 0;
	}
}

/* job->contents: the checksum a snapshot ends with, its bytes in file order, as hex. */
static int
rdb_contents(agent_job *job, const unsigned char *crc, tb_error *err)
{
	char hex[2 * RDB_CRC_LEN + 1];

	crypto_hex_encode(crc, RDB_CRC_LEN, hex);
	free(job->contents);
	if (asprintf(&job->contents, "{\"rdb_crc64\": \"%s\"}", hex) < 0)
	{
		job->contents = NULL;
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	}
	return 0;
}

/* Payload bytes into storage, remembering the first and last few for the checks at the end. */
static int
rdb_store(rdb_fetch *f, const char *data, size_t len, tb_error *err)
{
	for (size_t i = 0; i < len && f->stored + i < sizeof(f->head); i++)
		f->head[f->stored + i] = (unsigned char) data[i];
	if (len >= sizeof(f->tail))
		memcpy(f->tail, data + len - sizeof(f->tail), sizeof(f->tail));
	else
	{
		memmove(f->tail, f->tail + len, sizeof(f->tail) - len);
		memcpy(f->tail + sizeof(f->tail) - len, data, len);
	}
	f->stored += len;
	f->job->bytes_done = f->stored;
	return repo_put_write(f->put, data, len, err);
}

/* The payload's announcement: "$<length>" or "$EOF:<mark>", after any keep-alive newlines. */
static int
rdb_announcement(rdb_fetch *f, char *line, size_t size, tb_error *err)
{
	for (;;)
	{
		char *nl;
		size_t skip = 0;

		while (skip < f->len && f->buf[skip] == '\n')
			skip++;
		memmove(f->buf, f->buf + skip, f->len - skip);
		f->len -= skip;
		if ((nl = memchr(f->buf, '\n', f->len)) != NULL)
		{
			size_t n = (size_t) (nl - f->buf);

			if (n > 0 && f->buf[n - 1] == '\r')
				n--;
			if (n >= size)
				return tb_error_set(err, TB_ERR_INVALID, "the server answered SYNC with an over-long line");
			memcpy(line, f->buf, n);
			line[n] = '\0';
			f->len -= (size_t) (nl + 1 - f->buf);
			memmove(f->buf, nl + 1, f->len);
			if (line[0] == '-')
				return tb_error_set(err, TB_ERR_INVALID, "the server refused SYNC: %s", line + 1);
			if (line[0] != '$')
				return tb_error_set(err, TB_ERR_INVALID, "the server answered SYNC with \"%.60s\"", line);
			return 0;
		}
		if (f->len == RDB_BUFFER)
			return tb_error_set(err, TB_ERR_INVALID, "the server answered SYNC without a line end");
		if (rdb_read(f, err) != 0)
			return -1;
	}
}

/* A diskless payload: everything up to the mark, which may straddle reads. */
static int
rdb_until_mark(rdb_fetch *f, const char *mark, tb_error *err)
{
	for (;;)
	{
		char *at = memmem(f->buf, f->len, mark, RDB_EOF_MARK);

		if (at)
			return rdb_store(f, f->buf, (size_t) (at - f->buf), err);
		if (f->len > RDB_EOF_MARK)
		{
			size_t flush = f->len - RDB_EOF_MARK;

			if (rdb_store(f, f->buf, flush, err) != 0)
				return -1;
			memmove(f->buf, f->buf + flush, RDB_EOF_MARK);
			f->len = RDB_EOF_MARK;
		}
		if (rdb_read(f, err) != 0)
			return -1;
	}
}

static int
rdb_exactly(rdb_fetch *f, uint64_t length, tb_error *err)
{
	for (;;)
	{
		size_t take = f->len < length - f->stored ? f->len : (size_t) (length - f->stored);

		if (rdb_store(f, f->buf, take, err) != 0)
			return -1;
		f->len = 0;
		if (f->stored == length)
			return 0;
		if (rdb_read(f, err) != 0)
			return -1;
	}
}

int
redis_rdb_backup(agent_job *job, const redis_source *src, repo_put *put, tb_error *err)
{
	rdb_fetch f = {.job = job, .put = put};
	char line[128], run_id[REDIS_RUN_ID_LEN + 1];
	redisReply *reply;
	int rc = -1;

	if ((f.c = redis_connect(src, 0, err)) == NULL)
		return -1;
	if (redis_claim_identity(f.c, src, job, run_id, err) != 0)
		goto done;
	if ((f.buf = malloc(RDB_BUFFER)) == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		goto done;
	}
	/*
	 * capa eof: we take the diskless "$EOF:" form, so a server with repl-diskless-sync
	 * (the default) streams the snapshot instead of first writing dump.rdb into its own
	 * directory. rdb-only: only the snapshot, no replication stream after it (Redis 7.0;
	 * older servers refuse, harmlessly).
	 */
	for (int i = 0; i < 2; i++)
	{
		reply = redisCommand(f.c, i == 0 ? "REPLCONF capa eof" : "REPLCONF rdb-only 1");
		if (reply == NULL)
		{
			redis_reply_error(f.c, reply, "REPLCONF", err);
			goto done;
		}
		freeReplyObject(reply);
	}
	if (write(f.c->fd, "SYNC\r\n", 6) != 6)
	{
		tb_error_set(err, TB_ERR_IO, "sending SYNC: %s", strerror(errno));
		goto done;
	}
	if (rdb_announcement(&f, line, sizeof(line), err) != 0)
		goto done;
	if (strncmp(line, "$EOF:", 5) == 0 && strlen(line + 5) == RDB_EOF_MARK)
		rc = rdb_until_mark(&f, line + 5, err);
	else
	{
		char *end;
		unsigned long long length = strtoull(line + 1, &end, 10);

		if (*end != '\0' || end == line + 1)
		{
			tb_error_set(err, TB_ERR_INVALID, "the server announced the RDB as \"%.60s\"", line);
			goto done;
		}
		rc = rdb_exactly(&f, length, err);
	}
	/* A snapshot begins with its magic and ends with the EOF opcode and an 8-byte checksum. */
	if (rc == 0 && (f.stored < 18 || memcmp(f.head, "REDIS", 5) != 0 || f.tail[0] != 0xFF))
		rc = tb_error_set(err, TB_ERR_CORRUPT, "the server sent %llu bytes that are not a whole RDB snapshot",
						  (unsigned long long) f.stored);
	if (rc == 0)
		rc = rdb_contents(job, f.tail + 1, err);
done:
	if (rc != 0 && job->stop == AGENT_GO)
		tb_error_prefix(err, "RDB snapshot of %s:%d for tenant \"%s\"", src->host, src->port, job->tenant);
	free(f.buf);
	redisFree(f.c);
	return rc;
}

static int
rdb_restore_keep_going(void *ctx, tb_error *err)
{
	return agent_job_tick(ctx, err);
}

/*
 * What a restore and a drill share: the backup, authenticated whole, as dump.rdb in the
 * directory dir_fd (named dir in messages), which must not exist yet, not even as a
 * dangling symbolic link. It is written under a temporary name and linked into place
 * only once everything checked out (for a restore, the SHA-256 the catalog recorded
 * too): on failure there is no dump.rdb, not even a partial one.
 */
static int
rdb_write(agent_job *job, int dir_fd, const char *dir, stream_stats *stats, tb_error *err)
{
	/* The object as stored is hashed (and checked against its manifest when there is one). */
	repo_read_options options = {.progress = agent_job_progress,
								 .progress_ctx = job,
								 .check_sha256 = true,
								 .readahead = true,
								 .keep_going = rdb_restore_keep_going};
	char tmp[64];
	struct stat st;
	int fd, rc = -1;

	if (fstatat(dir_fd, "dump.rdb", &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
		return tb_error_set(err, TB_ERR_EXISTS,
							"%s/dump.rdb already exists (or cannot be looked at): move it away or restore into "
							"another directory",
							dir);
	snprintf(tmp, sizeof(tmp), ".dump.rdb.tenant-backup-%lld", (long long) job->id);
	fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return tb_error_set(err, TB_ERR_IO, "cannot create %s/%s: %s", dir, tmp, strerror(errno));
	if (repo_read_to_fd(job->storage, job->master, job->object_key, fd, &options, stats, err) == 0 &&
		(job->drill || agent_job_check_stored(job, stats, err) == 0))
	{
		if (fsync(fd) != 0)
			tb_error_set(err, TB_ERR_IO, "cannot write %s/%s: %s", dir, tmp, strerror(errno));
		else if (linkat(dir_fd, tmp, dir_fd, "dump.rdb", 0) != 0)
			tb_error_set(err, errno == EEXIST ? TB_ERR_EXISTS : TB_ERR_IO, "cannot put %s/dump.rdb in place: %s", dir,
						 strerror(errno));
		else
			rc = fsync(dir_fd) == 0 ? 0 : tb_error_set(err, TB_ERR_IO, "cannot sync %s: %s", dir, strerror(errno));
	}
	close(fd);
	unlinkat(dir_fd, tmp, 0);
	if (rc != 0)
		tb_error_prefix(err, "writing dump.rdb of tenant \"%s\" into %s", job->tenant, dir);
	return rc;
}

/*
 * The directory a restore writes into: redis_restore_dir itself, or the target inside
 * it, each component below it opened without following a symbolic link. Nothing is
 * created. Returns its descriptor, -1 with err set.
 */
static int
rdb_open_target(agent_job *job, const char *base, tb_error *err)
{
	const char *target = job->restore_target, *p;
	size_t base_len = strlen(base);
	int dir_fd;

	while (base_len > 1 && base[base_len - 1] == '/')
		base_len--;
	if (target && target[0] == '/')
	{
		if (strncmp(target, base, base_len) != 0 || (target[base_len] != '/' && target[base_len] != '\0'))
			return tb_error_set(err, TB_ERR_INVALID,
								"the target directory of tenant \"%s\" is outside redis_restore_dir (%s): give a "
								"directory inside it",
								job->tenant, base);
		target += base_len;
	}
	dir_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd < 0)
		return tb_error_set(err, TB_ERR_IO, "cannot open redis_restore_dir %s: %s", base, strerror(errno));
	for (p = target; p && *p;)
	{
		char part[NAME_MAX + 1];
		size_t len = strcspn(p, "/");
		int next;

		if (len == 0)
		{
			p++;
			continue;
		}
		if (len > NAME_MAX || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
		{
			close(dir_fd);
			return tb_error_set(err, TB_ERR_INVALID,
								"the target directory of tenant \"%s\" has a \".\" or \"..\" component or one too "
								"long; give a plain path inside redis_restore_dir",
								job->tenant);
		}
		memcpy(part, p, len);
		part[len] = '\0';
		next = openat(dir_fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
		{
			int saved = errno;

			close(dir_fd);
			return tb_error_set(err, TB_ERR_INVALID,
								"the target directory of tenant \"%s\" under %s: component \"%s\" %s", job->tenant,
								base, part,
								saved == ENOENT ? "does not exist (create it first: nothing is created)"
								: saved == ELOOP || saved == ENOTDIR ? "is a symbolic link or not a directory"
																	 : strerror(saved));
		}
		close(dir_fd);
		dir_fd = next;
		p += len;
	}
	return dir_fd;
}

int
redis_rdb_restore(agent_job *job, tb_error *err)
{
	const char *base = agent_config_get(job->config, "redis_restore_dir");
	stream_stats stats;
	int dir_fd, rc;

	if (base == NULL || base[0] != '/')
		return tb_error_set(err, TB_ERR_INVALID,
							"an RDB snapshot is restored as a file into the agent's redis_restore_dir (an absolute "
							"path): set it, and give a target directory inside it or none");
	if ((dir_fd = rdb_open_target(job, base, err)) < 0)
		return -1;
	rc = rdb_write(job, dir_fd, job->restore_target ? job->restore_target : base, &stats, err);
	close(dir_fd);
	return rc;
}

/* What redis-check-rdb printed that says why it failed. */
typedef struct rdb_check_output
{
	char line[256]; /* the line being read (longer ones cut) */
	size_t len;
	char last[256];   /* the last line */
	char error[512];  /* the line after "--- RDB ERROR DETECTED ---", and its "[additional info]" */
	int after_marker; /* lines read since that marker, 0 before it */
} rdb_check_output;

static void
rdb_check_line(rdb_check_output *out)
{
	while (out->len > 0 && (out->line[out->len - 1] == '\r' || out->line[out->len - 1] == ' '))
		out->len--;
	out->line[out->len] = '\0';
	if (out->len == 0)
		return;
	if (out->after_marker == 1)
		snprintf(out->error, sizeof(out->error), "%s", out->line);
	else if (out->after_marker == 2 && strncmp(out->line, "[additional info]", 17) == 0)
		snprintf(out->error + strlen(out->error), sizeof(out->error) - strlen(out->error), "; %s", out->line);
	if (out->after_marker > 0)
		out->after_marker++;
	else if (strcmp(out->line, "--- RDB ERROR DETECTED ---") == 0)
		out->after_marker = 1;
	memcpy(out->last, out->line, out->len + 1);
	out->len = 0;
}

static void
rdb_check_take(rdb_check_output *out, const char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] == '\n')
			rdb_check_line(out);
		else if (out->len < sizeof(out->line) - 1)
			out->line[out->len++] = buf[i];
}

/* redis-check-rdb on file; a failure says what it found (the line naming the error, else its last). */
static int
rdb_check(agent_job *job, const char *file, tb_error *err)
{
	const char *const argv[] = {"redis-check-rdb", file, NULL};
	rdb_check_output out = {0};
	agent_child *child = agent_child_start(argv, AGENT_CHILD_STDOUT, NULL, 0, err);
	char buf[4096];
	ssize_t got;
	tb_error finish;
	int rc;

	if (child == NULL)
		return -1;
	while ((got = agent_child_read(child, job, buf, sizeof(buf), err)) > 0)
		rdb_check_take(&out, buf, (size_t) got);
	if (got < 0)
	{
		agent_child_kill(child);
		return -1;
	}
	rdb_check_line(&out);
	rc = agent_child_finish(child, job, &finish);
	agent_child_kill(child);
	if (rc == 0)
		return 0;
	if (job->stop != AGENT_GO || (!*out.error && !*out.last))
	{
		*err = finish;
		return -1;
	}
	return tb_error_set(err, TB_ERR_CORRUPT, "redis-check-rdb finds the snapshot broken: %s",
						*out.error ? out.error : out.last);
}

/* The checksum file ends with, after the EOF opcode. */
static int
rdb_read_crc(const char *file, unsigned char *crc, tb_error *err)
{
	unsigned char tail[1 + RDB_CRC_LEN];
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	struct stat st;
	int rc = 0;

	if (fd < 0)
		return tb_error_set(err, TB_ERR_IO, "cannot open %s: %s", file, strerror(errno));
	errno = 0;
	if (fstat(fd, &st) != 0 || st.st_size < (off_t) sizeof(tail) ||
		pread(fd, tail, sizeof(tail), st.st_size - (off_t) sizeof(tail)) != (ssize_t) sizeof(tail))
		rc = tb_error_set(err, TB_ERR_IO, "cannot read the end of %s: %s", file, errno ? strerror(errno) : "too short");
	else if (tail[0] != 0xFF)
		rc = tb_error_set(err, TB_ERR_CORRUPT, "%s does not end with an RDB EOF opcode and checksum", file);
	else
		memcpy(crc, tail + 1, RDB_CRC_LEN);
	close(fd);
	return rc;
}

static int
rdb_remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void) st;
	(void) flag;
	(void) ftw;
	return remove(path) == 0 ? 0 : -1;
}

/* Removes the scratch directory and all in it; with failed, err keeps the failure first. */
static int
rdb_remove_scratch(const char *dir, bool failed, tb_error *err)
{
	char failure[TB_ERROR_MSG_MAX];

	errno = 0;
	if (nftw(dir, rdb_remove_entry, 8, FTW_DEPTH | FTW_PHYS) == 0)
		return 0;
	if (!failed)
		return tb_error_set(err, TB_ERR_IO, "cannot remove the drill's scratch directory %s: %s", dir, strerror(errno));
	memcpy(failure, err->msg, sizeof(failure));
	return tb_error_set(err, err->code, "%s (and the scratch directory %s is left: %s)", failure, dir, strerror(errno));
}

int
redis_rdb_drill(agent_job *job, tb_error *err)
{
	const char *base = agent_config_get(job->config, "redis_restore_dir");
	char scratch[PATH_MAX], file[PATH_MAX + 16];
	unsigned char crc[RDB_CRC_LEN];
	stream_stats stats;
	int scratch_fd = -1, rc = -1;

	if (base == NULL)
		base = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	if (base[0] != '/')
		return tb_error_set(err, TB_ERR_INVALID, "the drill's scratch directory must be under an absolute path, not %s",
							base);
	if (snprintf(scratch, sizeof(scratch), "%s/tenant_backup_drill_%lld_XXXXXX", base, (long long) job->id) >=
		(int) sizeof(scratch))
		return tb_error_set(err, TB_ERR_INVALID, "the directory %s has too long a name", base);
	if (mkdtemp(scratch) == NULL)
		return tb_error_set(err, TB_ERR_IO, "cannot make the drill's scratch directory in %s: %s", base,
							strerror(errno));
	snprintf(file, sizeof(file), "%s/dump.rdb", scratch);
	scratch_fd = open(scratch, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (scratch_fd < 0)
		tb_error_set(err, TB_ERR_IO, "cannot open the drill's scratch directory %s: %s", scratch, strerror(errno));
	else if (rdb_write(job, scratch_fd, scratch, &stats, err) == 0 && rdb_check(job, file, err) == 0 &&
			 rdb_read_crc(file, crc, err) == 0 && rdb_contents(job, crc, err) == 0)
	{
		crypto_hex_encode(stats.stored_sha256, sizeof(stats.stored_sha256), job->object_sha256);
		snprintf(job->detail, sizeof(job->detail), "drill: dump.rdb of %llu bytes checked by redis-check-rdb",
				 (unsigned long long) stats.plain_bytes);
		rc = 0;
	}
	if (scratch_fd >= 0)
		close(scratch_fd);
	if (rdb_remove_scratch(scratch, rc != 0, err) != 0)
		rc = -1;
	return rc;
}
