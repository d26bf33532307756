/* agents/common: locators, configuration, secret pipes and the tools a job runs. */
#include "unit.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent_internal.h"

static const agent_engine test_engine = {.engine = "mysql", .program = "test-agent", .config_help = ""};

static void
test_uri_parts(void **state)
{
	agent_uri uri;
	tb_error err;
	char *v;

	(void) state;
	assert_int_equal(
		agent_uri_parse("mysql://bob:p%40ss:w@rd@db.example:3307/acme%2Dprod?socket=%2Ftmp%2Fs&x=1", &uri, &err), 0);
	assert_string_equal(uri.scheme, "mysql");
	assert_string_equal(uri.user, "bob");
	/* A password ends at the last '@' of the authority and is percent-decoded. */
	assert_string_equal(uri.password, "p@ss:w@rd");
	assert_string_equal(uri.host, "db.example");
	assert_int_equal(uri.port, 3307);
	assert_string_equal(uri.path, "acme-prod");
	v = agent_uri_param(&uri, "socket");
	assert_string_equal(v, "/tmp/s");
	free(v);
	assert_null(agent_uri_param(&uri, "sock"));
	agent_uri_free(&uri);

	assert_int_equal(agent_uri_parse("redis://[::1]:6380/3", &uri, &err), 0);
	assert_string_equal(uri.host, "::1");
	assert_int_equal(uri.port, 6380);
	assert_string_equal(uri.path, "3");
	assert_null(uri.user);
	assert_null(uri.password);
	agent_uri_free(&uri);

	assert_int_equal(agent_uri_parse("mongodb://host", &uri, &err), 0);
	assert_null(uri.path);
	assert_int_equal(uri.port, 0);
	agent_uri_free(&uri);
}

static void
test_uri_refusals(void **state)
{
	agent_uri uri;
	tb_error err;
	char *out;

	(void) state;
	assert_int_equal(agent_uri_parse("acme", &uri, &err), -1);
	assert_int_equal(err.code, TB_ERR_INVALID);
	assert_int_equal(agent_uri_parse("mysql://h:99999/db", &uri, &err), -1);
	assert_non_null(strstr(err.msg, "invalid port"));
	assert_int_equal(agent_uri_parse("mysql://h:12x/db", &uri, &err), -1);
	assert_int_equal(agent_uri_parse("mysql://[::1/db", &uri, &err), -1);
	assert_int_equal(agent_uri_decode("a%2", 3, &out, &err), -1);
	assert_int_equal(agent_uri_decode("a%zz", 4, &out, &err), -1);
	/* A NUL would cut a password short without anyone noticing. */
	assert_int_equal(agent_uri_decode("a%00b", 5, &out, &err), -1);
	assert_int_equal(agent_uri_decode("%41%62c", 7, &out, &err), 0);
	assert_string_equal(out, "Abc");
	free(out);
}

static char *
write_config(const char *text, mode_t mode)
{
	char *path = strdup("/tmp/test-agent-conf.XXXXXX");
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
	close(fd);
	chmod(path, mode);
	return path;
}

static int
load(agent_config *config, const char *path, const char *extra)
{
	char *argv[] = {"test-agent", "--config", (char *) path, (char *) extra, NULL};

	optind = 0; /* glibc: start over */
	return agent_config_load(config, &test_engine, extra ? 4 : 3, argv);
}

static void
test_config_sources(void **state)
{
	char *path = write_config("# comment\nstorage = file:///tmp/x\nmaster_key_file=/k\n  workers = 3 \n"
							  "mysql_user = bob\nmysql_password = secret\n",
							  0600);
	agent_config config;

	(void) state;
	unsetenv("TENANT_BACKUP_MYSQL_USER");
	assert_int_equal(load(&config, path, "--workers=5"), 0);
	assert_string_equal(config.storage, "file:///tmp/x");
	assert_int_equal(config.workers, 5); /* an option wins over the file */
	assert_int_equal(config.lease_seconds, 60);
	assert_string_equal(agent_config_get(&config, "mysql_user"), "bob");
	agent_config_free(&config);

	setenv("TENANT_BACKUP_MYSQL_USER", "alice", 1);
	assert_int_equal(load(&config, path, NULL), 0);
	assert_string_equal(agent_config_get(&config, "mysql_user"), "alice"); /* the environment wins over the file */
	assert_int_equal(config.workers, 3);
	agent_config_free(&config);
	unsetenv("TENANT_BACKUP_MYSQL_USER");
	unlink(path);
	free(path);
}

static void
test_config_refusals(void **state)
{
	char *loose = write_config("storage = s\nmaster_key_file = k\nmysql_password = x\n", 0644);
	char *unknown = write_config("storage = s\nredis_password = x\n", 0600);
	char *garbage = write_config("storage\n", 0600);
	char *bad_number = write_config("storage = s\nmaster_key_file = k\nlease_seconds = 2\n", 0600);
	agent_config config;

	(void) state;
	/* A password readable by others; another engine's key; a line without '='; a lease too short. */
	assert_int_equal(load(&config, loose, NULL), 1);
	agent_config_free(&config);
	assert_int_equal(load(&config, unknown, NULL), 1);
	agent_config_free(&config);
	assert_int_equal(load(&config, garbage, NULL), 1);
	agent_config_free(&config);
	assert_int_equal(load(&config, bad_number, NULL), 1);
	agent_config_free(&config);
	for (char **p = (char *[]){loose, unknown, garbage, bad_number, NULL}; *p; p++)
	{
		unlink(*p);
		free(*p);
	}
}

/* A job whose ticks never reach a control plane: no signals, renewal far away. */
static agent test_agent = {.signal_fd = -1, .renew_at = 1e300};

static void
test_child_pipes_and_failures(void **state)
{
	agent_job job = {.owner = &test_agent};
	const char *cat_argv[] = {"cat", NULL};
	const char *fail_argv[] = {"sh", "-c", "echo first >&2; echo 'the reason' >&2; exit 3", NULL};
	const char *missing_argv[] = {"/nonexistent/tool", NULL};
	char buf[64];
	tb_error err;
	agent_child *c;
	ssize_t n;

	(void) state;
	c = agent_child_start(cat_argv, AGENT_CHILD_STDIN | AGENT_CHILD_STDOUT, NULL, 0, &err);
	assert_non_null(c);
	assert_int_equal(agent_child_write(c, &job, "hello", 5, &err), 0);
	n = agent_child_read(c, &job, buf, sizeof(buf), &err);
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(agent_child_finish(c, &job, &err), 0);
	agent_child_kill(c);

	c = agent_child_start(fail_argv, AGENT_CHILD_STDOUT, NULL, 0, &err);
	assert_non_null(c);
	assert_int_equal(agent_child_read(c, &job, buf, sizeof(buf), &err), 0);
	assert_int_equal(agent_child_finish(c, &job, &err), -1);
	assert_non_null(strstr(err.msg, "sh failed (exit status 3)"));
	assert_non_null(strstr(err.msg, "the reason"));
	agent_child_kill(c);

	c = agent_child_start(missing_argv, AGENT_CHILD_STDOUT, NULL, 0, &err);
	assert_non_null(c);
	assert_int_equal(agent_child_read(c, &job, buf, sizeof(buf), &err), 0);
	assert_int_equal(agent_child_finish(c, &job, &err), -1);
	assert_non_null(strstr(err.msg, "exit status 127"));
	agent_child_kill(c);
}

static void
test_secret_pipe_reaches_tool(void **state)
{
	agent_job job = {.owner = &test_agent};
	tb_error err;
	char arg[32], buf[64];
	int fd = agent_secret_pipe("[client]\npassword=\"x\"\n", &err);
	const char *argv[] = {"cat", arg, NULL};
	agent_child *c;
	ssize_t n, total = 0;

	(void) state;
	assert_true(fd >= 0);
	snprintf(arg, sizeof(arg), "/dev/fd/%d", fd);
	c = agent_child_start(argv, AGENT_CHILD_STDOUT, &fd, 1, &err);
	close(fd);
	assert_non_null(c);
	while ((n = agent_child_read(c, &job, buf + total, sizeof(buf) - (size_t) total, &err)) > 0)
		total += n;
	assert_int_equal(n, 0);
	assert_int_equal(agent_child_finish(c, &job, &err), 0);
	assert_int_equal(total, 22);
	assert_memory_equal(buf, "[client]\npassword=\"x\"\n", 22);
	agent_child_kill(c);
}

static void
test_tick_stops_on_lost_lease(void **state)
{
	agent_job job = {.owner = &test_agent, .stop = AGENT_STOP_LEASE_LOST};
	const char *argv[] = {"sleep", "30", NULL};
	char buf[8];
	tb_error err;
	agent_child *c = agent_child_start(argv, AGENT_CHILD_STDOUT, NULL, 0, &err);

	(void) state;
	assert_non_null(c);
	/* The wait for output ends at the tick, not when the tool ends. */
	assert_int_equal(agent_child_read(c, &job, buf, sizeof(buf), &err), -1);
	assert_non_null(strstr(err.msg, "lease was lost"));
	agent_child_kill(c);
}

static void
test_uri_encode(void **state)
{
	char *out = agent_uri_encode("db 1/x%\xc3\xa9_-.:@");

	(void) state;
	/* An identity's part: nothing but the safe characters stays as it is; '/' and spaces never. */
	assert_string_equal(out, "db%201%2Fx%25%C3%A9_-.:@");
	free(out);
}

static void
test_fallback_credentials_hosts(void **state)
{
	char *keys[] = {"mysql_fallback_credentials_hosts"}, *values[] = {" db.internal:3307, 127.0.0.1 ,Cache"};
	agent_config config = {.engine = "mysql", .nentries = 1, .keys = keys, .values = values};
	agent_config empty = {.engine = "mysql"};
	agent_job job = {.engine = "mysql", .config = &config};

	(void) state;
	unsetenv("TENANT_BACKUP_MYSQL_FALLBACK_CREDENTIALS_HOSTS");
	assert_true(agent_fallback_credentials_allowed(&job, "db.internal", 3307));
	assert_false(agent_fallback_credentials_allowed(&job, "db.internal", 3306)); /* host:port: that port only */
	assert_true(agent_fallback_credentials_allowed(&job, "127.0.0.1", 1));       /* host: any port */
	assert_true(agent_fallback_credentials_allowed(&job, "cache", 6379));        /* host names in any case */
	assert_false(agent_fallback_credentials_allowed(&job, "127.0.0.10", 3306));
	assert_false(agent_fallback_credentials_allowed(&job, "db.internal.evil", 3307));
	assert_false(agent_fallback_credentials_allowed(&job, "localhost", 3306));
	job.config = &empty; /* nothing listed: the agent's credentials go nowhere */
	assert_false(agent_fallback_credentials_allowed(&job, "127.0.0.1", 3306));
}

static void
test_backup_checks(void **state)
{
	agent_job job = {.tenant = "acme",
					 .engine = "mysql",
					 .backup_id = 7,
					 .object_key = "acme/mysql/2026-12-01T000000Z-00aa11.tbk",
					 .backup_key_id = "1111222233334444",
					 .backup_sha256 = "ab00000000000000000000000000000000000000000000000000000000000000"};
	stream_header hdr = {.tenant = "acme", .engine = "mysql", .backup_id = "00aa11", .key_id = "1111222233334444"};
	stream_stats stats = {.stored_sha256 = {0xab}, .stored_sha256_known = true};
	tb_error err;

	(void) state;
	assert_int_equal(agent_job_check_header(&job, &hdr, &err), 0);
	assert_int_equal(agent_job_check_stored(&job, &stats, &err), 0);
	/* Another backup of the same tenant under this one's name. */
	strcpy(hdr.backup_id, "aa11");
	assert_int_equal(agent_job_check_header(&job, &hdr, &err), -1);
	assert_non_null(strstr(err.msg, "is another backup of tenant \"acme\""));
	strcpy(hdr.backup_id, "00aa11");
	strcpy(hdr.key_id, "5555222233334444");
	assert_int_equal(agent_job_check_header(&job, &hdr, &err), -1);
	assert_non_null(strstr(err.msg, "not with key 1111222233334444"));
	strcpy(hdr.key_id, "1111222233334444");
	strcpy(hdr.tenant, "globex");
	assert_int_equal(agent_job_check_header(&job, &hdr, &err), -1);
	assert_non_null(strstr(err.msg, "belongs to tenant \"globex\""));
	/* Not the bytes the catalog recorded; or not hashed at all. */
	stats.stored_sha256[31] = 1;
	assert_int_equal(agent_job_check_stored(&job, &stats, &err), -1);
	assert_int_equal(err.code, TB_ERR_CORRUPT);
	assert_non_null(strstr(err.msg, "as the catalog recorded it"));
	stats.stored_sha256_known = false;
	assert_int_equal(agent_job_check_stored(&job, &stats, &err), -1);
	job.backup_sha256 = NULL;
	stats.stored_sha256_known = true;
	assert_int_equal(agent_job_check_stored(&job, &stats, &err), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uri_parts),
		cmocka_unit_test(test_uri_refusals),
		cmocka_unit_test(test_config_sources),
		cmocka_unit_test(test_config_refusals),
		cmocka_unit_test(test_child_pipes_and_failures),
		cmocka_unit_test(test_secret_pipe_reaches_tool),
		cmocka_unit_test(test_tick_stops_on_lost_lease),
		cmocka_unit_test(test_uri_encode),
		cmocka_unit_test(test_fallback_credentials_hosts),
		cmocka_unit_test(test_backup_checks),
	};

	return cmocka_run_group_tests_name("agent", tests, NULL, NULL);
}
