/*
 * The agents' log on stderr: one line per event, as text (time, program[pid], message)
 * or as one JSON object (--log-format json) that names the job it is about. Messages
 * carry tenant-controlled text (key names, collection names, server answers): it is
 * escaped in both, so that it can never end the line (or the JSON object) early.
 */
#include "agent_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "tenant-backup-agent";
static const char *log_agent_name;
static const char *log_engine;
static bool log_json;
static const agent_job *log_job;

void
agent_log_setup(const char *program, const char *engine, bool json)
{
	log_program = program;
	log_engine = engine;
	log_json = json;
}

void
agent_log_name(const char *name)
{
	log_agent_name = name;
}

void
agent_log_job(const agent_job *job)
{
	log_job = job;
}

/* Length of the well-formed UTF-8 sequence at s (1-4), 0 if it is not one. */
static size_t
utf8_sequence_length(const unsigned char *s)
{
	size_t len;
	unsigned int cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < len; i++)
	{
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8. */
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

/* text as a JSON string: quotes, backslashes and control characters escaped, bytes that are not UTF-8 as U+FFFD. */
static void
log_json_string(FILE *out, const char *text)
{
	const unsigned char *s = (const unsigned char *) text;

	fputc('"', out);
	while (*s)
	{
		size_t len = utf8_sequence_length(s);

		if (len == 0)
		{
			fputs("\\ufffd", out);
			s++;
		}
		else if (*s == '"' || *s == '\\')
			fprintf(out, "\\%c", *s++);
		else if (*s < 0x20 || *s == 0x7f)
			fprintf(out, "\\u%04x", *s++);
		else
		{
			fwrite(s, 1, len, out);
			s += len;
		}
	}
	fputc('"', out);
}

/* text with its control characters as \n, \r, \t or \xNN: a value holding a newline cannot start a line of its own. */
static void
log_text(FILE *out, const char *text)
{
	for (const unsigned char *s = (const unsigned char *) text; *s; s++)
	{
		if (*s == '\n')
			fputs("\\n", out);
		else if (*s == '\r')
			fputs("\\r", out);
		else if (*s == '\t')
			fputs("\\t", out);
		else if (*s < 0x20 || *s == 0x7f)
			fprintf(out, "\\x%02x", *s);
		else
			fputc(*s, out);
	}
}

static void
log_json_field(FILE *out, const char *key, const char *value)
{
	fprintf(out, ",\"%s\":", key);
	if (value)
		log_json_string(out, value);
	else
		fputs("null", out);
}

void
agent_log_at(agent_log_level level, const char *fmt, ...)
{
	static const char *const level_names[] = {"info", "warning", "error"};
	char stamp[40], *message = NULL, *line = NULL;
	size_t line_len = 0;
	struct timeval now;
	struct tm tm;
	va_list ap;
	FILE *out;
	int len;

	gettimeofday(&now, NULL);
	gmtime_r(&now.tv_sec, &tm);
	len = (int) strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	va_start(ap, fmt);
	if (vasprintf(&message, fmt, ap) < 0)
		message = NULL;
	va_end(ap);
	/* The line is built whole and written at once, so lines of two threads never interleave. */
	out = open_memstream(&line, &line_len);
	if (out == NULL || message == NULL)
	{
		fprintf(stderr, "%sZ %s[%d]: out of memory writing a log line\n", stamp, log_program, (int) getpid());
		free(message);
		if (out)
			fclose(out);
		free(line);
		return;
	}
	if (log_json)
	{
		snprintf(stamp + len, sizeof(stamp) - (size_t) len, ".%03dZ", (int) (now.tv_usec / 1000));
		fprintf(out, "{\"time\":\"%s\",\"level\":\"%s\"", stamp, level_names[level]);
		log_json_field(out, "agent", log_agent_name ? log_agent_name : log_program);
		if (log_job)
			fprintf(out, ",\"job\":%lld", (long long) log_job->id);
		else
			fputs(",\"job\":null", out);
		log_json_field(out, "tenant", log_job ? log_job->tenant : NULL);
		log_json_field(out, "engine", log_job && log_job->engine ? log_job->engine : log_engine);
		log_json_field(out, "message", message);
		fputs("}\n", out);
	}
	else
	{
		fprintf(out, "%sZ %s[%d]: ", stamp, log_program, (int) getpid());
		log_text(out, message);
		fputc('\n', out);
	}
	fclose(out);
	fwrite(line, 1, line_len, stderr);
	free(line);
	free(message);
}
