/*
 * Counting a MySQL/MariaDB backup's rows per table, as the dump streams and in a loaded
 * database alike (see dump_count.h). The dump is read by a small byte state machine: it
 * looks at the start of each line for CREATE TABLE, INSERT INTO or DELIMITER, reads a
 * backquoted name (`` is one backquote), and in an INSERT's VALUES counts the groups
 * opened at depth 0, skipping single-quoted strings and their backslash escapes, up to
 * the ';' that ends the statement. Everything else is passed over a line at a time.
 */
#include "dump_count.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct my_contents
{
	json_t *tables; /* name -> rows */
	int64_t rows;
};

my_contents *
my_contents_new(void)
{
	my_contents *c = calloc(1, sizeof(*c));

	if (c && (c->tables = json_object()) == NULL)
	{
		free(c);
		return NULL;
	}
	return c;
}

int
my_contents_add(my_contents *c, const char *name, int64_t rows, tb_error *err)
{
	json_t *count = json_object_get(c->tables, name);

	if (count == NULL)
	{
		if (json_object_set_new(c->tables, name, json_integer(rows)) != 0)
			return tb_error_set(err, TB_ERR_INVALID, "table name \"%s\" cannot be a JSON key (not UTF-8?)", name);
	}
	else
		json_integer_set(count, json_integer_value(count) + rows);
	c->rows += rows;
	return 0;
}

char *
my_contents_json(const my_contents *c, char *detail, size_t detail_size, tb_error *err)
{
	json_t *doc = json_pack("{s:O}", "tables", c->tables);
	char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;

	json_decref(doc);
	if (text == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory writing the contents"), NULL;
	if (detail)
		snprintf(detail, detail_size, "%zu table%s, %lld row%s", json_object_size(c->tables),
				 json_object_size(c->tables) == 1 ? "" : "s", (long long) c->rows, c->rows == 1 ? "" : "s");
	return text;
}

void
my_contents_free(my_contents *c)
{
	if (c == NULL)
		return;
	json_decref(c->tables);
	free(c);
}

/* 64 characters of up to 4 bytes, and room for the #mysql50# prefix of old names. */
#define NAME_MAX_BYTES 512
#define HEAD_MAX 32

typedef enum dump_state
{
	D_LINE,      /* at the start of a line: its first bytes go into head */
	D_SKIP,      /* the rest of the line is not ours */
	D_DELIMITER, /* the argument of DELIMITER, up to the line's end */
	D_NAME,      /* inside `name` */
	D_NAME_TICK, /* a backquote inside the name: `` goes on, anything else ended it */
	D_VALUES,    /* after an INSERT's name: " VALUES" */
	D_ROWS,      /* the VALUES list, outside strings */
	D_STRING,    /* inside '...' */
	D_ESCAPE,    /* after a backslash inside '...' */
	D_FAILED,
} dump_state;

struct my_dump_count
{
	my_contents *contents;
	dump_state state;
	bool compound; /* between DELIMITER ;; and DELIMITER ;: bodies of triggers and routines */
	bool create;   /* the name being read is a CREATE TABLE's (else an INSERT's) */
	char head[HEAD_MAX + 1];
	size_t head_len;
	char name[NAME_MAX_BYTES + 1];
	size_t name_len;
	size_t values_matched;
	int64_t depth;
	int64_t rows; /* groups of the current INSERT, added at its end */
	tb_error err;
};

static const char values_keyword[] = " VALUES";

my_dump_count *
my_dump_count_new(void)
{
	my_dump_count *d = calloc(1, sizeof(*d));

	if (d && (d->contents = my_contents_new()) == NULL)
	{
		free(d);
		return NULL;
	}
	return d;
}

void
my_dump_count_free(my_dump_count *d)
{
	if (d == NULL)
		return;
	my_contents_free(d->contents);
	free(d);
}

static void
dump_fail(my_dump_count *d, const char *what)
{
	d->name[d->name_len] = '\0';
	tb_error_set(&d->err, TB_ERR_INVALID, "the dump's %s%s%s%s", what, d->name_len ? " (table `" : "",
				 d->name_len ? d->name : "", d->name_len ? "`)" : "");
	d->state = D_FAILED;
}

/* A line's first bytes: the statements that matter, recognised as soon as they are whole. */
static void
dump_line_byte(my_dump_count *d, unsigned char c)
{
	static const struct
	{
		const char *text;
		dump_state next;
		bool create;
		bool in_compound;
	} heads[] = {
		{"CREATE TABLE `", D_NAME, true, false},
		{"CREATE TABLE IF NOT EXISTS `", D_NAME, true, false},
		{"INSERT INTO `", D_NAME, false, false},
		{"DELIMITER ", D_DELIMITER, false, true},
	};
	bool candidate = false;

	if (c == '\n')
	{
		d->head_len = 0;
		return;
	}
	d->head[d->head_len++] = (char) c;
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++)
	{
		size_t len = strlen(heads[i].text);

		if ((d->compound && !heads[i].in_compound) || d->head_len > len || memcmp(d->head, heads[i].text, d->head_len))
			continue;
		if (d->head_len < len)
		{
			candidate = true;
			continue;
		}
		d->state = heads[i].next;
		d->create = heads[i].create;
		d->name_len = 0;
		d->head_len = 0;
		return;
	}
	if (!candidate)
		d->state = D_SKIP;
}

/* DELIMITER's argument: ";" ends a compound region, anything else starts one. */
static void
dump_delimiter_byte(my_dump_count *d, unsigned char c)
{
	if (c != '\n')
	{
		if (d->head_len < HEAD_MAX)
			d->head[d->head_len++] = (char) c;
		return;
	}
	while (d->head_len > 0 && (d->head[d->head_len - 1] == ' ' || d->head[d->head_len - 1] == '\r'))
		d->head_len--;
	d->compound = !(d->head_len == 1 && d->head[0] == ';');
	d->head_len = 0;
	d->state = D_LINE;
}

/* The byte after a name's closing backquote; returns whether it was consumed. */
static bool
dump_name_end(my_dump_count *d, unsigned char c)
{
	if (c == '`')
	{
		if (d->name_len >= NAME_MAX_BYTES)
			dump_fail(d, "table name is too long");
		else
		{
			d->name[d->name_len++] = '`';
			d->state = D_NAME;
		}
		return true;
	}
	d->name[d->name_len] = '\0';
	if (d->create)
	{
		if (my_contents_add(d->contents, d->name, 0, &d->err) != 0)
			d->state = D_FAILED;
		else
			d->state = D_SKIP;
		return false;
	}
	d->rows = 0;
	d->values_matched = 0;
	d->state = D_VALUES;
	return false;
}

/* " VALUES", then the list: whitespace or its first '('. Returns whether c was consumed. */
static bool
dump_values_byte(my_dump_count *d, unsigned char c)
{
	if (d->values_matched < sizeof(values_keyword) - 1)
	{
		if (c == (unsigned char) values_keyword[d->values_matched])
			d->values_matched++;
		else
			dump_fail(d, "INSERT is not INSERT INTO `table` VALUES");
		return true;
	}
	if (c != ' ' && c != '\n' && c != '(')
	{
		dump_fail(d, "INSERT is not INSERT INTO `table` VALUES");
		return true;
	}
	d->depth = 0;
	d->state = D_ROWS;
	return false;
}

/* The VALUES list outside strings, up to the end of the buffer or of the list. */
static const unsigned char *
dump_rows(my_dump_count *d, const unsigned char *p, const unsigned char *end)
{
	while (p < end)
	{
		unsigned char c = *p++;

		if (c == '\'')
		{
			d->state = D_STRING;
			break;
		}
		if (c == '(')
		{
			if (d->depth++ == 0)
				d->rows++;
		}
		else if (c == ')')
		{
			if (d->depth-- == 0)
			{
				dump_fail(d, "INSERT closes a parenthesis it did not open");
				break;
			}
		}
		else if (c == ';' && d->depth == 0)
		{
			if (my_contents_add(d->contents, d->name, d->rows, &d->err) != 0)
				d->state = D_FAILED;
			else
				d->state = D_SKIP;
			d->name_len = 0;
			break;
		}
	}
	return p;
}

void
my_dump_count_feed(my_dump_count *d, const void *buf, size_t len)
{
	const unsigned char *p = buf, *end = p + len;

	while (p < end)
	{
		switch (d->state)
		{
			case D_FAILED:
				return;
			case D_SKIP:
				p = memchr(p, '\n', (size_t) (end - p));
				if (p == NULL)
					return;
				p++;
				d->head_len = 0;
				d->state = D_LINE;
				break;
			case D_LINE:
				dump_line_byte(d, *p++);
				break;
			case D_DELIMITER:
				dump_delimiter_byte(d, *p++);
				break;
			case D_NAME:
				if (*p == '`')
					d->state = D_NAME_TICK;
				else if (*p == '\n')
					dump_fail(d, "table name holds a line break");
				else if (d->name_len >= NAME_MAX_BYTES)
					dump_fail(d, "table name is too long");
				else
					d->name[d->name_len++] = (char) *p;
				p++;
				break;
			case D_NAME_TICK:
				if (dump_name_end(d, *p))
					p++;
				break;
			case D_VALUES:
				if (dump_values_byte(d, *p))
					p++;
				break;
			case D_ROWS:
				p = dump_rows(d, p, end);
				break;
			case D_STRING:
				while (p < end && *p != '\'' && *p != '\\')
					p++;
				if (p == end)
					return;
				d->state = *p++ == '\\' ? D_ESCAPE : D_ROWS;
				break;
			case D_ESCAPE:
				p++;
				d->state = D_STRING;
				break;
		}
	}
}

char *
my_dump_count_finish(my_dump_count *d, char *detail, size_t detail_size, tb_error *err)
{
	if (d->state == D_FAILED)
	{
		*err = d->err;
		return NULL;
	}
	if (d->state != D_LINE && d->state != D_SKIP)
	{
		d->name[d->name_len] = '\0';
		tb_error_set(err, TB_ERR_INVALID, "the dump ended inside a statement%s%s%s", d->name_len ? " (table `" : "",
					 d->name_len ? d->name : "", d->name_len ? "`)" : "");
		return NULL;
	}
	return my_contents_json(d->contents, detail, detail_size, err);
}
