/* Unit tests of the subprocess runner: argv verbatim, descriptors, environment, stderr, status, timeout. */
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keys.h"
#include "subprocess.h"

/* Runs argv with stdout and stderr piped, no input; its stdout in out. */
static subprocess
run(const char *const *argv, const char *const *env, const int *keep, int nkeep, char *out, size_t size)
{
	subprocess_options opts = {.argv = argv,
							   .env = env,
							   .in = SUBPROCESS_DEVNULL,
							   .out = SUBPROCESS_PIPE,
							   .err = SUBPROCESS_PIPE,
							   .keep_fds = keep,
							   .nkeep = nkeep};
	subprocess sp;
	tb_error err = {0};
	size_t len;
	bool too_long;

	assert_int_equal(subprocess_start(&sp, &opts, &err), 0);
	assert_int_equal(subprocess_communicate(&sp, NULL, 0, out, size, &len, &too_long, 10000), 0);
	assert_false(too_long);
	return sp;
}

static void
test_argv_reaches_the_program_verbatim(void **state)
{
	const char *argv[] = {"printf", "%s|", "-n", "a b", "--help", "'q'", "$HOME", "*", "; rm -rf x", NULL};
	char out[256];
	subprocess sp;

	(void) state;
	sp = run(argv, NULL, NULL, 0, out, sizeof(out));
	assert_true(WIFEXITED(sp.status) && WEXITSTATUS(sp.status) == 0);
	assert_string_equal(out, "-n|a b|--help|'q'|$HOME|*|; rm -rf x|");
}

/* Whether fd is among the lines of a listing of /proc/self/fd. */
static bool
listed(const char *listing, int fd)
{
	char want[16];
	const char *p = listing;
	size_t n = (size_t) snprintf(want, sizeof(want), "%d", fd);

	for (; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p))
		if (strncmp(p, want, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
			return true;
	return false;
}

static void
test_inherited_descriptors_are_closed(void **state)
{
	const char *argv[] = {"ls", "/proc/self/fd", NULL};
	int leaked = open("/dev/null", O_RDONLY), kept = open("/dev/null", O_RDONLY);
	char out[4096];
	subprocess sp;

	(void) state;
	/* Neither is close-on-exec: only the runner keeps the first out of the child. */
	assert_int_equal(dup2(leaked, 77), 77);
	assert_int_equal(dup2(kept, 78), 78);
	sp = run(argv, NULL, (const int[]){78}, 1, out, sizeof(out));
	assert_true(WIFEXITED(sp.status) && WEXITSTATUS(sp.status) == 0);
	assert_true(listed(out, 0) && listed(out, 1) && listed(out, 2));
	assert_false(listed(out, 77));
	assert_true(listed(out, 78));
	close(77);
	close(78);
	close(leaked);
	close(kept);
}

static void
test_environment_additions(void **state)
{
	const char *argv[] = {"sh", "-c", "printf '%s|%s|%s' \"$TB_TEST_ADDED\" \"$TB_TEST_REPLACED\" \"$TB_TEST_KEPT\"",
						  NULL};
	const char *env[] = {"TB_TEST_ADDED=a b", "TB_TEST_REPLACED=new", NULL};
	char out[256];

	(void) state;
	setenv("TB_TEST_REPLACED", "old", 1);
	setenv("TB_TEST_KEPT", "ours", 1);
	run(argv, env, NULL, 0, out, sizeof(out));
	assert_string_equal(out, "a b|new|ours");
	/* Ours is untouched. */
	assert_string_equal(getenv("TB_TEST_REPLACED"), "old");
	assert_null(getenv("TB_TEST_ADDED"));
}

static void
test_stderr_capture_is_bounded(void **state)
{
	/* 100 kB between a first and a last line, all on its stderr. */
	const char *argv[] = {
		"sh", "-c", "{ echo 'the first line'; head -c 100000 /dev/zero | tr '\\0' x; echo; echo last; } >&2; exit 4",
		NULL};
	subprocess_options opts = {.argv = argv, .in = SUBPROCESS_DEVNULL, .err = SUBPROCESS_PIPE};
	char line[64];
	tb_error err = {0};
	subprocess sp;

	(void) state;
	for (int tail = 0; tail < 2; tail++)
	{
		opts.stderr_tail = tail;
		assert_int_equal(subprocess_start(&sp, &opts, &err), 0);
		while (sp.err_fd >= 0)
		{
			struct pollfd pfd = {.fd = sp.err_fd, .events = POLLIN};

			assert_true(poll(&pfd, 1, 10000) > 0);
			subprocess_read_stderr(&sp);
		}
		assert_int_equal(subprocess_reap(&sp, true), 1);
		assert_true(WIFEXITED(sp.status) && WEXITSTATUS(sp.status) == 4);
		assert_int_equal(sp.stderr_len, SUBPROCESS_STDERR_MAX);
		assert_int_equal(strlen(sp.stderr_text), SUBPROCESS_STDERR_MAX);
		if (tail)
		{
			const char *said = subprocess_stderr_trimmed(&sp);

			assert_string_equal(said + strlen(said) - 5, "\nlast");
		}
		else
		{
			subprocess_stderr_first_line(&sp, line, sizeof(line));
			assert_string_equal(line, "the first line");
		}
		subprocess_end(&sp, SIGKILL);
	}
}

static void
test_exit_status_and_signal(void **state)
{
	const char *killed[] = {"sh", "-c", "kill -TERM $$", NULL};
	const char *missing[] = {"/nonexistent/tool", "--version", NULL};
	char out[64];
	subprocess sp;

	(void) state;
	sp = run(killed, NULL, NULL, 0, out, sizeof(out));
	assert_true(WIFSIGNALED(sp.status));
	assert_int_equal(WTERMSIG(sp.status), SIGTERM);
	sp = run(missing, NULL, NULL, 0, out, sizeof(out));
	assert_true(WIFEXITED(sp.status) && WEXITSTATUS(sp.status) == 127);
	assert_non_null(strstr(sp.stderr_text, "cannot run /nonexistent/tool: No such file or directory"));
}

static void
test_input_and_own_process_group(void **state)
{
	const char *argv[] = {"sh", "-c", "cat; ps -o pgid= -p $$ | tr -d ' \\n' >&2", NULL};
	subprocess_options opts = {.argv = argv, .in = SUBPROCESS_PIPE, .out = SUBPROCESS_PIPE, .err = SUBPROCESS_PIPE};
	char out[64], pid[32];
	size_t len;
	bool too_long;
	tb_error err = {0};
	subprocess sp;
	pid_t child;

	(void) state;
	assert_int_equal(subprocess_start(&sp, &opts, &err), 0);
	child = sp.pid;
	assert_true(sp.exit_fd >= 0);
	assert_int_equal(subprocess_communicate(&sp, "hello\n", 6, out, 4, &len, &too_long, 10000), 0);
	/* Only three bytes fit with the NUL: the rest is noticed, not kept. */
	assert_true(too_long);
	assert_string_equal(out, "hel");
	snprintf(pid, sizeof(pid), "%d", (int) child);
	assert_string_equal(sp.stderr_text, pid);
	assert_int_equal(sp.pid, 0);
	assert_int_equal(sp.exit_fd, -1);
}

static void
test_timeout_kills_the_whole_group(void **state)
{
	/* The shell prints the pid of a grandchild that would outlive a kill of the shell alone. */
	const char *argv[] = {"sh", "-c", "sleep 60 & echo $! >&2; wait", NULL};
	subprocess_options opts = {.argv = argv, .in = SUBPROCESS_DEVNULL, .out = SUBPROCESS_PIPE, .err = SUBPROCESS_PIPE};
	struct timespec start, end;
	char out[16];
	size_t len;
	bool too_long;
	tb_error err = {0};
	subprocess sp;
	pid_t grandchild;
	int gone = 0;

	(void) state;
	assert_int_equal(subprocess_start(&sp, &opts, &err), 0);
	clock_gettime(CLOCK_MONOTONIC, &start);
	assert_int_equal(subprocess_communicate(&sp, NULL, 0, out, sizeof(out), &len, &too_long, 500), 1);
	clock_gettime(CLOCK_MONOTONIC, &end);
	assert_true(end.tv_sec - start.tv_sec < 5);
	assert_true(WIFSIGNALED(sp.status) && WTERMSIG(sp.status) == SIGKILL);
	assert_int_equal(sp.pid, 0);
	grandchild = (pid_t) atoi(sp.stderr_text);
	assert_true(grandchild > 0);
	/* Killed too (then reaped by whoever inherits it). */
	for (int i = 0; i < 100 && !gone; i++)
	{
		gone = kill(grandchild, 0) != 0 && errno == ESRCH;
		if (!gone)
			usleep(20000);
	}
	assert_true(gone);
}

static void
test_words(void **state)
{
	tb_error err = {0};
	char **w;

	(void) state;
	w = subprocess_words("  sh /a\\ b/kms.sh 'dir'\\''50%' \"x \\\"y\\\"\" '' -z\t", "the key command", true, &err);
	assert_non_null(w);
	assert_string_equal(w[0], "sh");
	assert_string_equal(w[1], "/a b/kms.sh");
	assert_string_equal(w[2], "dir'50%");
	assert_string_equal(w[3], "x \"y\"");
	assert_string_equal(w[4], "");
	assert_string_equal(w[5], "-z");
	assert_null(w[6]);
	subprocess_words_free(w);
	for (const char **bad = (const char *[]){"kms | tee x", "kms; id", "kms $HOME", "kms \"$HOME\"", "kms `id`",
											 "kms > x", "kms &", "kms 'open", "kms # c", "   ", NULL};
		 *bad; bad++)
	{
		assert_null(subprocess_words(*bad, "the key command", true, &err));
		assert_int_equal(err.code, TB_ERR_INVALID);
		assert_non_null(strstr(err.msg, "the key command"));
	}
	assert_null(subprocess_words("kms | x", "the key command", true, &err));
	assert_non_null(strstr(err.msg, "shell syntax (|)"));
	/* Without the refusal, the same characters are words like any other (credential_process). */
	w = subprocess_words("p \\$(touch\\ x) ;rm \"$a b\"\n'|'", "credential_process", false, &err);
	assert_non_null(w);
	assert_string_equal(w[0], "p");
	assert_string_equal(w[1], "$(touch x)");
	assert_string_equal(w[2], ";rm");
	assert_string_equal(w[3], "$a b");
	assert_string_equal(w[4], "|");
	assert_null(w[5]);
	subprocess_words_free(w);
	assert_null(subprocess_words("p 'open", "credential_process", false, &err));
	assert_string_equal(err.msg, "credential_process has an unterminated ' quote");
	assert_null(subprocess_words("p \\", "credential_process", false, &err));
	assert_string_equal(err.msg, "credential_process ends with a backslash");
}

/* The key command goes through the runner: its words without a shell, its environment, its errors. */
static void
test_key_command_runs_without_a_shell(void **state)
{
	char out[256], *big = malloc(200000);
	tb_error err = {0};

	(void) state;
	assert_int_equal(keys_command_run("sh -c 'read k; printf \"%s|%s|%s|%s\" \"$k\" \"$TENANT_BACKUP_KEY_OP\" "
									  "\"$TENANT_BACKUP_TENANT\" \"$TENANT_BACKUP_KEY_ID\"'",
									  "wrap", "acme", "k1", "abc\n", out, sizeof(out), &err),
					 0);
	assert_string_equal(out, "abc|wrap|acme|k1");
	assert_int_equal(keys_command_run("kms | tee /tmp/x", "wrap", "acme", "k1", "abc\n", out, sizeof(out), &err), -1);
	assert_string_equal(err.msg, "the key command of tenant 'acme' uses shell syntax (|), which is not run by a shell: "
								 "put it in a script and name the script");
	assert_int_equal(
		keys_command_run("sh -c 'echo denied >&2; exit 3'", "unwrap", "acme", "k1", "x\n", out, sizeof(out), &err), -1);
	assert_string_equal(err.msg, "the key command of tenant 'acme' failed unwrapping key k1 (exit status 3): denied");
	/* A command that exits without reading its input: no SIGPIPE ends us. */
	memset(big, 'a', 199999);
	big[199999] = '\0';
	assert_int_equal(keys_command_run("true", "wrap", "acme", "k1", big, out, sizeof(out), &err), 0);
	assert_string_equal(out, "");
	free(big);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_argv_reaches_the_program_verbatim),
		cmocka_unit_test(test_inherited_descriptors_are_closed),
		cmocka_unit_test(test_environment_additions),
		cmocka_unit_test(test_stderr_capture_is_bounded),
		cmocka_unit_test(test_exit_status_and_signal),
		cmocka_unit_test(test_input_and_own_process_group),
		cmocka_unit_test(test_timeout_kills_the_whole_group),
		cmocka_unit_test(test_words),
		cmocka_unit_test(test_key_command_runs_without_a_shell),
	};

	return cmocka_run_group_tests_name("subprocess", tests, NULL, NULL);
}
