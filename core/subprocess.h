/*
 * The one way tenant_backup runs a program (the key command, pg_dump and friends, the
 * agents' tools): an argv, never a shell; only the descriptors the caller names reach
 * it; its own process group; a bounded copy of its stderr for error messages; and
 * waits the caller drives from its own loop (a latch, poll) instead of blocking.
 */
#ifndef TB_SUBPROCESS_H
#define TB_SUBPROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"

#define SUBPROCESS_STDERR_MAX 2048
#define SUBPROCESS_KEEP_FDS_MAX 16

/* What one of the child's stdin, stdout and stderr is. */
typedef enum subprocess_stdio
{
	SUBPROCESS_INHERIT = 0, /* ours, as it is */
	SUBPROCESS_PIPE,        /* a pipe whose other end is ours (non-blocking); stderr's fills the capture */
	SUBPROCESS_DEVNULL,     /* /dev/null */
	SUBPROCESS_FD,          /* the caller's descriptor (in_fd, out_fd or err_fd of the options) */
} subprocess_stdio;

typedef struct subprocess_options
{
	const char *const *argv; /* argv[0]: a path, or a name looked up in PATH; every word reaches it verbatim */
	const char *const *env;  /* "NAME=value" entries added to our environment (replacing ours); NULL-terminated */
	subprocess_stdio in, out, err;
	int in_fd, out_fd, err_fd; /* with SUBPROCESS_FD */
	const int *keep_fds;       /* descriptors that stay open in the child under their number (/dev/fd/N) */
	int nkeep;                 /* at most SUBPROCESS_KEEP_FDS_MAX */
	size_t pipe_size;          /* best effort size of the stdin and stdout pipes; 0: the system's */
	bool stderr_tail;          /* the capture keeps the last bytes of stderr (default: the first) */
} subprocess_options;

typedef struct subprocess
{
	pid_t pid;   /* also its process group; 0 once reaped */
	int in_fd;   /* our end of its stdin pipe, -1 when none or closed */
	int out_fd;  /* our end of its stdout pipe, -1 when none or closed */
	int err_fd;  /* our end of its stderr pipe, -1 when none or at its end */
	int exit_fd; /* readable once it exited (a pidfd), -1 where the kernel has none: poll it with a timeout */
	int status;  /* its wait status, once reaped */
	bool stderr_tail;
	char stderr_text[SUBPROCESS_STDERR_MAX + 1]; /* NUL-terminated capture of its stderr pipe */
	size_t stderr_len;
} subprocess;

/*
 * Starts opts->argv. Every descriptor but its stdin, stdout, stderr and keep_fds is
 * closed in the child, its signals are at their defaults and unblocked, and it leads a
 * process group of its own. A program that cannot be executed still starts: it says
 * "cannot run <argv[0]>: <reason>" on its stderr and exits with status 127. 0, or -1
 * with err set (nothing left open).
 */
int subprocess_start(subprocess *sp, const subprocess_options *opts, tb_error *err);

/* Takes what its stderr pipe holds into the capture, closing err_fd at its end. */
void subprocess_read_stderr(subprocess *sp);

/*
 * Reaps it, waiting for it when wait is true: 1 once reaped (sp->status), 0 while it
 * still runs, -1 on error (errno).
 */
int subprocess_reap(subprocess *sp, bool wait);

/* Sends sig to its process group (what it started too) unless it was reaped. */
void subprocess_signal(subprocess *sp, int sig);

/* Closes our end of its stdin: it reads its end of input. */
void subprocess_close_stdin(subprocess *sp);

/*
 * For any exit path: closes our ends, sends sig to its process group unless it was
 * reaped (SIGKILL; or SIGTERM for a tool that cleans up on it, as pg_dump cancels its
 * queries) and reaps it. Safe on a subprocess that was already ended or reaped.
 */
void subprocess_end(subprocess *sp, int sig);

/*
 * Feeds it input (then closes its stdin) while collecting its stdout into out (at most
 * out_size - 1 bytes kept, NUL-terminated; *too_long when it printed more) and its
 * stderr into the capture, until both end and it is reaped, or until timeout_ms has
 * passed: then its process group is killed. 0 once it was reaped, 1 on the timeout,
 * -1 on error (errno). The read buffers are wiped: out may hold a secret.
 */
int subprocess_communicate(subprocess *sp, const char *input, size_t input_len, char *out, size_t out_size,
						   size_t *out_len, bool *too_long, int timeout_ms);

/* The first line of the capture, printable ASCII only ('?' for the rest). */
void subprocess_stderr_first_line(const subprocess *sp, char *out, size_t size);

/* The capture without its trailing newlines ("" when it said nothing). */
const char *subprocess_stderr_trimmed(subprocess *sp);

/*
 * Splits a command line into words as /bin/sh would for a simple command, without
 * running a shell or expanding anything: blanks separate words, '...' and "..." quote
 * (in "...", \ quotes \ " $ ` and a newline), a \ outside quotes quotes the next
 * character. With shell_refused, what only a shell could do is refused rather than
 * passed on literally (| & ; < > ( ) $ ` # and a newline outside quotes, $ and `
 * within "..."), so that a command written for sh -c fails instead of running
 * otherwise. what names the command in errors. A malloc'd NULL-terminated array (free
 * it with subprocess_words_free), or NULL with err set (empty, an unterminated quote).
 */
char **subprocess_words(const char *line, const char *what, bool shell_refused, tb_error *err);
void subprocess_words_free(char **words);

#endif
