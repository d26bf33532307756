/* agents/common/log.c: hostile text stays inside its JSON string, or its text line, and the text format stays as it
 * was. */
#include "unit.h"

#include <jansson.h>
#include <stdio.h>
#include <unistd.h>

#include "agent_internal.h"

/* Runs agent_log with stderr sent to a file; returns what it wrote (caller frees). */
static char *
captured_log(const char *message)
{
	FILE *capture = tmpfile();
	int saved = dup(STDERR_FILENO);
	char *text = calloc(1, 4096);
	size_t len;

	assert_non_null(capture);
	assert_non_null(text);
	assert_int_equal(dup2(fileno(capture), STDERR_FILENO), STDERR_FILENO);
	agent_log_at(AGENT_LOG_ERROR, "key %s failed", message);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	rewind(capture);
	len = fread(text, 1, 4095, capture);
	text[len] = '\0';
	fclose(capture);
	return text;
}

static void
test_json_line_holds_hostile_text(void **state)
{
	agent_job job = {.id = 42, .tenant = "acme", .engine = "redis"};
	/* A quote, a backslash, a newline, a control byte, bytes that are no UTF-8, and UTF-8 kept as it is. */
	const char *hostile = "a\"b\\c\nd\x01\xff\xc0\xaf\xed\xa0\x80 \xc3\xa9\xf0\x9f\x98\x80";
	char *line;
	json_t *doc;
	json_error_t jerr;

	(void) state;
	agent_log_setup("test-agent", "redis", true);
	agent_log_name("redis@host");
	agent_log_job(&job);
	line = captured_log(hostile);
	/* One line: the only newline is the last byte. */
	assert_non_null(strchr(line, '\n'));
	assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
	doc = json_loads(line, 0, &jerr);
	assert_non_null(doc);
	assert_string_equal(json_string_value(json_object_get(doc, "level")), "error");
	assert_string_equal(json_string_value(json_object_get(doc, "agent")), "redis@host");
	assert_int_equal(json_integer_value(json_object_get(doc, "job")), 42);
	assert_string_equal(json_string_value(json_object_get(doc, "tenant")), "acme");
	assert_string_equal(json_string_value(json_object_get(doc, "engine")), "redis");
	assert_string_equal(json_string_value(json_object_get(doc, "message")),
						"key a\"b\\c\nd\x01\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
						"\xc3\xa9\xf0\x9f\x98\x80 failed");
	assert_int_equal(strlen(json_string_value(json_object_get(doc, "time"))), strlen("2026-12-01T21:38:55.123Z"));
	json_decref(doc);
	free(line);

	/* Outside a job, job and tenant are null. */
	agent_log_job(NULL);
	line = captured_log("x");
	doc = json_loads(line, 0, &jerr);
	assert_non_null(doc);
	assert_true(json_is_null(json_object_get(doc, "job")));
	assert_true(json_is_null(json_object_get(doc, "tenant")));
	json_decref(doc);
	free(line);
}

static void
test_text_line_unchanged(void **state)
{
	char *line;
	char prefix[160];

	(void) state;
	agent_log_setup("test-agent", "redis", false);
	line = captured_log("k");
	snprintf(prefix, sizeof(prefix), "Z test-agent[%d]: key k failed\n", (int) getpid());
	assert_int_equal(line[4], '-');
	assert_int_equal(line[10], 'T');
	assert_string_equal(line + 19, prefix);
	free(line);

	/* A newline in a value cannot forge a line of its own. */
	line = captured_log("a\n2026-12-01T00:00:00Z test-agent[1]: forged\r\t\x1b");
	snprintf(prefix, sizeof(prefix),
			 "Z test-agent[%d]: key a\\n2026-12-01T00:00:00Z test-agent[1]: forged\\r\\t\\x1b failed\n",
			 (int) getpid());
	assert_string_equal(line + 19, prefix);
	free(line);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_line_holds_hostile_text),
		cmocka_unit_test(test_text_line_unchanged),
	};

	return cmocka_run_group_tests_name("agent_log", tests, NULL, NULL);
}
