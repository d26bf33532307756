/*
 * Running a program (see subprocess.h). Everything that allocates happens before the
 * fork: the child of a threaded process (the agents, the CLI) may only make
 * async-signal-safe calls until it executes the program.
 */
#include "subprocess.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* What the child needs, prepared by the parent. */
typedef struct subprocess_plan
{
	int stdio_fd[3];                       /* what becomes 0, 1 and 2: -1 to keep ours, -2 for /dev/null */
	int keep[SUBPROCESS_KEEP_FDS_MAX + 3]; /* sorted, ascending */
	int nkeep;
	char *const *envp;
} subprocess_plan;

static void
subprocess_close_pair(int pair[2])
{
	for (int i = 0; i < 2; i++)
		if (pair[i] >= 0)
			close(pair[i]);
	pair[0] = pair[1] = -1;
}

/* Closes every descriptor from lo on that is not kept, without close_range: /proc/self/fd, else every number. */
static void
subprocess_close_slow(int lo, const subprocess_plan *plan)
{
	char buf[4096];
	int dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	long n;

	if (dir < 0)
	{
		long max = sysconf(_SC_OPEN_MAX);

		for (int fd = lo, k = 0; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
		{
			while (k < plan->nkeep && plan->keep[k] < fd)
				k++;
			if (k >= plan->nkeep || plan->keep[k] != fd)
				close(fd);
		}
		return;
	}
	/* getdents64 rather than readdir: no malloc in the child. */
	while ((n = syscall(SYS_getdents64, dir, buf, sizeof(buf))) > 0)
		for (long off = 0; off < n;)
		{
			struct dirent64 *d = (struct dirent64 *) (buf + off);
			int fd = 0;
			bool keep = false;

			off += d->d_reclen;
			if (d->d_name[0] < '0' || d->d_name[0] > '9')
				continue;
			for (const char *c = d->d_name; *c; c++)
				fd = fd * 10 + (*c - '0');
			for (int k = 0; k < plan->nkeep; k++)
				keep = keep || plan->keep[k] == fd;
			if (fd >= lo && fd != dir && !keep)
				close(fd);
		}
	close(dir);
}

/* In the child: closes every descriptor from 3 on but the kept ones. */
static void
subprocess_close_inherited(const subprocess_plan *plan)
{
	unsigned int lo = 3;

	for (int k = 0; k <= plan->nkeep; k++)
	{
		unsigned int hi = k < plan->nkeep ? (unsigned int) plan->keep[k] : ~0U;

		if (hi < lo)
			continue;
		if (hi > lo && close_range(lo, hi == ~0U ? hi : hi - 1, CLOSE_RANGE_UNSHARE) != 0)
		{
			subprocess_close_slow(3, plan);
			return;
		}
		if (hi != ~0U)
			lo = hi + 1;
	}
}

static void
subprocess_child(const char *const *argv, const subprocess_plan *plan)
{
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigset_t none;
	int src[3];

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int sig = 1; sig < NSIG; sig++)
		(void) sigaction(sig, &dfl, NULL);
	(void) setpgid(0, 0);
	/* Moved above 2 first, so that one dup2 cannot overwrite the source of another. */
	for (int i = 0; i < 3; i++)
	{
		src[i] = plan->stdio_fd[i];
		if (src[i] == -2)
			src[i] = open("/dev/null", i == 0 ? O_RDONLY : O_WRONLY);
		if (src[i] >= 0 && src[i] <= 2 && src[i] != i)
			src[i] = fcntl(src[i], F_DUPFD, 3);
		if (plan->stdio_fd[i] != -1 && src[i] < 0)
			_exit(127);
	}
	for (int i = 0; i < 3; i++)
		if (src[i] >= 0 && (src[i] == i ? fcntl(i, F_SETFD, 0) : dup2(src[i], i)) < 0)
			_exit(127);
	subprocess_close_inherited(plan);
	execvpe(argv[0], (char *const *) argv, plan->envp);
	dprintf(2, "cannot run %s: %s", argv[0], strerror(errno));
	_exit(127);
}

/* Our environment with opts->env added (a name given there replaces ours); NULL: ours as it is. */
static char **
subprocess_environment(const char *const *add)
{
	size_t n = 0, nadd = 0, k = 0;
	char **envp;

	if (add == NULL)
		return NULL;
	while (environ[n] != NULL)
		n++;
	while (add[nadd] != NULL)
		nadd++;
	if ((envp = calloc(n + nadd + 1, sizeof(*envp))) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++)
	{
		bool replaced = false;

		for (size_t j = 0; j < nadd && !replaced; j++)
		{
			size_t name = strcspn(add[j], "=");

			replaced = strncmp(environ[i], add[j], name) == 0 && environ[i][name] == '=';
		}
		if (!replaced)
			envp[k++] = environ[i];
	}
	for (size_t j = 0; j < nadd; j++)
		envp[k++] = (char *) add[j];
	return envp;
}

static int
subprocess_int_compare(const void *a, const void *b)
{
	return *(const int *) a - *(const int *) b;
}

int
subprocess_start(subprocess *sp, const subprocess_options *opts, tb_error *err)
{
	int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
	const subprocess_stdio kinds[3] = {opts->in, opts->out, opts->err};
	const int fds[3] = {opts->in_fd, opts->out_fd, opts->err_fd};
	int *pipes[3] = {in_pipe, out_pipe, err_pipe};
	subprocess_plan plan = {.nkeep = opts->nkeep};
	char **envp = NULL;
	const char *tool = opts->argv[0];

	memset(sp, 0, sizeof(*sp));
	sp->in_fd = sp->out_fd = sp->err_fd = sp->exit_fd = -1;
	sp->stderr_tail = opts->stderr_tail;
	if (opts->nkeep < 0 || opts->nkeep > SUBPROCESS_KEEP_FDS_MAX)
		return tb_error_set(err, TB_ERR_INVALID, "cannot start %s: more than %d descriptors to pass", tool,
							SUBPROCESS_KEEP_FDS_MAX);
	if (opts->nkeep > 0)
		memcpy(plan.keep, opts->keep_fds, sizeof(int) * (size_t) opts->nkeep);
	qsort(plan.keep, (size_t) plan.nkeep, sizeof(int), subprocess_int_compare);
	if (opts->env != NULL && (envp = subprocess_environment(opts->env)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory starting %s", tool);
	plan.envp = envp ? envp : environ;
	for (int i = 0; i < 3; i++)
	{
		plan.stdio_fd[i] = kinds[i] == SUBPROCESS_FD ? fds[i] : kinds[i] == SUBPROCESS_DEVNULL ? -2 : -1;
		if (kinds[i] != SUBPROCESS_PIPE)
			continue;
		if (pipe2(pipes[i], O_CLOEXEC) != 0)
		{
			tb_error_set(err, TB_ERR_IO, "cannot make pipes for %s: %s", tool, strerror(errno));
			goto fail;
		}
		/* The child's end is [0] for its stdin, [1] for its output. */
		plan.stdio_fd[i] = pipes[i][i == 0 ? 0 : 1];
		if (opts->pipe_size > 0 && i < 2)
			(void) fcntl(pipes[i][0], F_SETPIPE_SZ, (int) opts->pipe_size);
	}
	fflush(NULL);
	sp->pid = fork();
	if (sp->pid < 0)
	{
		sp->pid = 0;
		tb_error_set(err, TB_ERR_IO, "cannot start %s: %s", tool, strerror(errno));
		goto fail;
	}
	if (sp->pid == 0)
		subprocess_child(opts->argv, &plan);
	/* Also here: a signal to its group must not miss it before the child's own setpgid. */
	(void) setpgid(sp->pid, sp->pid);
	free(envp);
	sp->exit_fd = pidfd_open(sp->pid, 0);
	sp->in_fd = in_pipe[1];
	sp->out_fd = out_pipe[0];
	sp->err_fd = err_pipe[0];
	for (int i = 0; i < 3; i++)
	{
		int ours = i == 0 ? sp->in_fd : i == 1 ? sp->out_fd : sp->err_fd;

		if (ours >= 0)
			(void) fcntl(ours, F_SETFL, fcntl(ours, F_GETFL) | O_NONBLOCK);
		if (pipes[i][i == 0 ? 0 : 1] >= 0)
			close(pipes[i][i == 0 ? 0 : 1]);
	}
	return 0;
fail:
	free(envp);
	for (int i = 0; i < 3; i++)
		subprocess_close_pair(pipes[i]);
	return -1;
}

void
subprocess_read_stderr(subprocess *sp)
{
	char buf[4096];
	ssize_t n;

	if (sp->err_fd < 0)
		return;
	while ((n = read(sp->err_fd, buf, sizeof(buf))) > 0)
	{
		size_t len = (size_t) n;

		if (!sp->stderr_tail)
		{
			size_t take = len < SUBPROCESS_STDERR_MAX - sp->stderr_len ? len : SUBPROCESS_STDERR_MAX - sp->stderr_len;

			memcpy(sp->stderr_text + sp->stderr_len, buf, take);
			sp->stderr_len += take;
		}
		else if (len >= SUBPROCESS_STDERR_MAX)
		{
			memcpy(sp->stderr_text, buf + len - SUBPROCESS_STDERR_MAX, SUBPROCESS_STDERR_MAX);
			sp->stderr_len = SUBPROCESS_STDERR_MAX;
		}
		else
		{
			size_t keep = sp->stderr_len + len > SUBPROCESS_STDERR_MAX ? SUBPROCESS_STDERR_MAX - len : sp->stderr_len;

			memmove(sp->stderr_text, sp->stderr_text + sp->stderr_len - keep, keep);
			memcpy(sp->stderr_text + keep, buf, len);
			sp->stderr_len = keep + len;
		}
		sp->stderr_text[sp->stderr_len] = '\0';
	}
	if (n == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK))
	{
		close(sp->err_fd);
		sp->err_fd = -1;
	}
}

int
subprocess_reap(subprocess *sp, bool wait)
{
	pid_t rc;

	if (sp->pid <= 0)
		return 1;
	while ((rc = waitpid(sp->pid, &sp->status, wait ? 0 : WNOHANG)) < 0 && errno == EINTR)
		;
	if (rc == 0)
		return 0;
	if (rc < 0)
		return -1;
	sp->pid = 0;
	if (sp->exit_fd >= 0)
		close(sp->exit_fd);
	sp->exit_fd = -1;
	return 1;
}

void
subprocess_signal(subprocess *sp, int sig)
{
	if (sp->pid > 0)
		(void) kill(-sp->pid, sig);
}

void
subprocess_close_stdin(subprocess *sp)
{
	if (sp->in_fd >= 0)
		close(sp->in_fd);
	sp->in_fd = -1;
}

void
subprocess_end(subprocess *sp, int sig)
{
	subprocess_close_stdin(sp);
	if (sp->out_fd >= 0)
		close(sp->out_fd);
	if (sp->err_fd >= 0)
		close(sp->err_fd);
	sp->out_fd = sp->err_fd = -1;
	if (sp->pid > 0)
	{
		subprocess_signal(sp, sig);
		(void) subprocess_reap(sp, true);
	}
}

/* Milliseconds left until deadline (CLOCK_MONOTONIC, in ms), at least 0. */
static int
subprocess_ms_left(long long deadline)
{
	struct timespec ts;
	long long now;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	return now >= deadline ? 0 : (int) (deadline - now > INT_MAX ? INT_MAX : deadline - now);
}

int
subprocess_communicate(subprocess *sp, const char *input, size_t input_len, char *out, size_t out_size, size_t *out_len,
					   bool *too_long, int timeout_ms)
{
	struct timespec ts;
	long long deadline;
	size_t in_off = 0;
	sigset_t pipe_signal, saved;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	deadline = (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
	*out_len = 0;
	*too_long = false;
	/* A program that exits without reading its input must not kill us with SIGPIPE. */
	sigemptyset(&pipe_signal);
	sigaddset(&pipe_signal, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_signal, &saved);
	if (input_len == 0)
		subprocess_close_stdin(sp);
	while (sp->out_fd >= 0 || sp->err_fd >= 0)
	{
		struct pollfd pfd[3] = {{.fd = sp->in_fd, .events = POLLOUT},
								{.fd = sp->out_fd, .events = POLLIN},
								{.fd = sp->err_fd, .events = POLLIN}};
		int ready = poll(pfd, 3, subprocess_ms_left(deadline));

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0)
		{
			int saved_errno = errno;

			subprocess_end(sp, SIGKILL);
			pthread_sigmask(SIG_SETMASK, &saved, NULL);
			errno = saved_errno;
			return ready == 0 ? 1 : -1;
		}
		if (pfd[0].revents)
		{
			ssize_t n = write(sp->in_fd, input + in_off, input_len - in_off);

			if (n > 0)
				in_off += (size_t) n;
			if ((n < 0 && errno != EAGAIN && errno != EINTR) || in_off == input_len)
				subprocess_close_stdin(sp);
		}
		if (pfd[1].revents)
		{
			char buf[4096];
			ssize_t n;

			while ((n = read(sp->out_fd, buf, sizeof(buf))) > 0)
			{
				size_t take = *out_len + (size_t) n < out_size ? (size_t) n : out_size - 1 - *out_len;

				memcpy(out + *out_len, buf, take);
				*out_len += take;
				*too_long = *too_long || take < (size_t) n;
			}
			explicit_bzero(buf, sizeof(buf));
			if (n == 0 || (errno != EINTR && errno != EAGAIN))
			{
				close(sp->out_fd);
				sp->out_fd = -1;
			}
		}
		if (pfd[2].revents)
			subprocess_read_stderr(sp);
	}
	subprocess_close_stdin(sp);
	{
		/* A SIGPIPE our writes raised is taken here, before the old mask comes back. */
		struct timespec zero = {0, 0};

		while (sigtimedwait(&pipe_signal, NULL, &zero) > 0)
			;
	}
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	out[*out_len] = '\0';
	return subprocess_reap(sp, true) < 0 ? -1 : 0;
}

void
subprocess_stderr_first_line(const subprocess *sp, char *out, size_t size)
{
	size_t n = 0;

	for (size_t i = 0; i < sp->stderr_len && sp->stderr_text[i] != '\n' && n + 1 < size; i++)
		out[n++] = (sp->stderr_text[i] >= 0x20 && sp->stderr_text[i] < 0x7f) ? sp->stderr_text[i] : '?';
	out[n] = '\0';
}

const char *
subprocess_stderr_trimmed(subprocess *sp)
{
	while (sp->stderr_len > 0 &&
		   (sp->stderr_text[sp->stderr_len - 1] == '\n' || sp->stderr_text[sp->stderr_len - 1] == '\r'))
		sp->stderr_text[--sp->stderr_len] = '\0';
	return sp->stderr_text;
}

void
subprocess_words_free(char **words)
{
	if (words == NULL)
		return;
	for (char **w = words; *w; w++)
		free(*w);
	free(words);
}

/* Sets err for a character of line that only a shell would give a meaning to; returns false. */
static bool
subprocess_words_refuse(const char *what, char c, tb_error *err)
{
	tb_error_set(err, TB_ERR_INVALID,
				 "%s uses shell syntax (%c), which is not run by a shell: put it in a script and name the script", what,
				 c == '\n' || c == '\r' ? '?' : c);
	return false;
}

/* One word of *p into word (its length into *n); false with err set. Leaves *p after it. */
static bool
subprocess_word(const char **p, char *word, size_t *n, bool shell_refused, const char *what, tb_error *err)
{
	const char *c = *p;

	*n = 0;
	while (*c && *c != ' ' && *c != '\t' && *c != '\n')
	{
		char quote = (*c == '\'' || *c == '"') ? *c++ : 0;

		if (quote == 0 && shell_refused && strchr("|&;<>()$`#\r", *c) != NULL)
			return subprocess_words_refuse(what, *c, err);
		if (quote == 0 && *c == '\\' && *++c == '\0')
			return tb_error_set(err, TB_ERR_INVALID, "%s ends with a backslash", what), false;
		if (quote == 0)
		{
			word[(*n)++] = *c++;
			continue;
		}
		for (; *c && *c != quote; c++)
		{
			if (quote == '"' && shell_refused && (*c == '$' || *c == '`'))
				return subprocess_words_refuse(what, *c, err);
			/* Within "...", a backslash quotes only these, as in /bin/sh. */
			if (quote == '"' && *c == '\\' && c[1] != '\0' && strchr("\\\"$`\n", c[1]) != NULL)
				c++;
			word[(*n)++] = *c;
		}
		if (*c++ != quote)
			return tb_error_set(err, TB_ERR_INVALID, "%s has an unterminated %c quote", what, quote), false;
	}
	*p = c;
	return true;
}

char **
subprocess_words(const char *line, const char *what, bool shell_refused, tb_error *err)
{
	size_t len = strlen(line), nwords = 0;
	/* At most one word for every two characters, plus the NULL. */
	char **words = calloc(len / 2 + 2, sizeof(*words));
	char *word = malloc(len + 1);
	const char *p = line;

	if (words == NULL || word == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory reading %s", what);
		goto fail;
	}
	for (;;)
	{
		size_t n;

		while (*p == ' ' || *p == '\t' || (*p == '\n' && !shell_refused))
			p++;
		if (*p == '\0')
			break;
		if (*p == '\n')
		{
			subprocess_words_refuse(what, *p, err);
			goto fail;
		}
		if (!subprocess_word(&p, word, &n, shell_refused, what, err))
			goto fail;
		if ((words[nwords++] = strndup(word, n)) == NULL)
		{
			tb_error_set(err, TB_ERR_NOMEM, "out of memory reading %s", what);
			goto fail;
		}
	}
	free(word);
	if (nwords == 0)
	{
		free(words);
		return tb_error_set(err, TB_ERR_INVALID, "%s is empty", what), NULL;
	}
	return words;
fail:
	free(word);
	subprocess_words_free(words);
	return NULL;
}
