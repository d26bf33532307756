/*
 * Reaching a tenant's MySQL/MariaDB database: mysql://user@host:port/db (or
 * ?socket=/path), the password sealed in the catalog or mysql_password in the agent's
 * configuration. Tools get their credentials from an option file read through a pipe;
 * the C API gets them directly. Neither ever sees argv.
 */
#include "mysql_agent.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
mysql_source_from_job(const agent_job *job, mysql_source *src, tb_error *err)
{
	agent_uri uri;
	const char *password, *user;

	memset(src, 0, sizeof(*src));
	if (agent_uri_parse(job->locator, &uri, err) != 0)
		return tb_error_prefix(err, "the locator of tenant \"%s\"", job->tenant);
	if (strcmp(uri.scheme, "mysql") != 0 && strcmp(uri.scheme, "mariadb") != 0)
	{
		agent_uri_free(&uri);
		return tb_error_set(err, TB_ERR_INVALID, "the locator of tenant \"%s\" is not a mysql:// URI", job->tenant);
	}
	if (uri.path == NULL || strchr(uri.path, '/'))
	{
		agent_uri_free(&uri);
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" names no database (mysql://user@host/db)", job->tenant);
	}
	src->host = uri.host && *uri.host ? strdup(uri.host) : NULL;
	src->port = uri.port ? uri.port : 3306;
	src->socket = agent_uri_param(&uri, "socket");
	src->database = strdup(uri.path);
	user = uri.user ? uri.user : agent_config_get(job->config, "mysql_user");
	if (user == NULL)
	{
		agent_uri_free(&uri);
		mysql_source_free(src);
		return tb_error_set(err, TB_ERR_INVALID,
							"no MySQL user for tenant \"%s\": name one in the locator or set mysql_user", job->tenant);
	}
	src->user = strdup(user);
	password = job->password ? job->password : agent_config_get(job->config, "mysql_password");
	src->password = password ? strdup(password) : NULL;
	src->dump_command = agent_config_get(job->config, "mysql_dump_command");
	src->client_command = agent_config_get(job->config, "mysql_client_command");
	if (src->dump_command == NULL)
		src->dump_command = "mariadb-dump";
	if (src->client_command == NULL)
		src->client_command = "mariadb";
	agent_uri_free(&uri);
	return 0;
}

void
mysql_source_free(mysql_source *src)
{
	if (src->password)
	{
		explicit_bzero(src->password, strlen(src->password));
		free(src->password);
	}
	free(src->host);
	free(src->socket);
	free(src->user);
	free(src->database);
	memset(src, 0, sizeof(*src));
}

/* key="value" for an option file: \ and " escaped; a line break cannot be written. */
static int
option_line(char *buf, size_t size, size_t *len, const char *key, const char *value, tb_error *err)
{
	int n = snprintf(buf + *len, size - *len, "%s=\"", key);

	if (strpbrk(value, "\n\r"))
		return tb_error_set(err, TB_ERR_INVALID, "the %s of the database holds a line break", key);
	*len += (size_t) n;
	for (const char *c = value; *c && *len + 3 < size; c++)
	{
		if (*c == '\\' || *c == '"')
			buf[(*len)++] = '\\';
		buf[(*len)++] = *c;
	}
	if (*len + 3 >= size)
		return tb_error_set(err, TB_ERR_INVALID, "the %s of the database is too long", key);
	buf[(*len)++] = '"';
	buf[(*len)++] = '\n';
	buf[*len] = '\0';
	return 0;
}

int
mysql_option_pipe(const mysql_source *src, tb_error *err)
{
	char buf[8192];
	size_t len = (size_t) snprintf(buf, sizeof(buf), "[client]\nport=%d\n", src->port);
	int fd = -1;

	if (option_line(buf, sizeof(buf), &len, "user", src->user, err) == 0 &&
		(src->password == NULL || option_line(buf, sizeof(buf), &len, "password", src->password, err) == 0) &&
		(src->host == NULL || option_line(buf, sizeof(buf), &len, "host", src->host, err) == 0) &&
		(src->socket == NULL || option_line(buf, sizeof(buf), &len, "socket", src->socket, err) == 0))
	{
		/* "localhost" means the socket to these tools; any other host goes over TCP. */
		if (src->host && strcmp(src->host, "localhost") != 0)
			len += (size_t) snprintf(buf + len, sizeof(buf) - len, "protocol=TCP\n");
		fd = agent_secret_pipe(buf, err);
	}
	explicit_bzero(buf, sizeof(buf));
	return fd;
}

MYSQL *
mysql_source_connect(const mysql_source *src, const agent_job *job, tb_error *err)
{
	MYSQL *conn = mysql_init(NULL);
	unsigned int timeout = 10;

	if (conn == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory connecting to MySQL"), NULL;
	mysql_options(conn, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
	mysql_options(conn, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	if (src->host && strcmp(src->host, "localhost") != 0)
	{
		unsigned int tcp = MYSQL_PROTOCOL_TCP;

		mysql_options(conn, MYSQL_OPT_PROTOCOL, &tcp);
	}
	if (mysql_real_connect(conn, src->host, src->user, src->password, NULL, (unsigned int) src->port, src->socket, 0) ==
		NULL)
	{
		tb_error_set(err, TB_ERR_IO, "cannot connect to the MySQL server of tenant \"%s\" (%s@%s:%d): %s", job->tenant,
					 src->user, src->host ? src->host : "localhost", src->port, mysql_error(conn));
		mysql_close(conn);
		return NULL;
	}
	return conn;
}

int
my_exec(MYSQL *conn, const char *what, tb_error *err, const char *fmt, ...)
{
	char *sql;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&sql, fmt, ap);
	va_end(ap);
	if (n < 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory %s", what);
	if (mysql_real_query(conn, sql, (unsigned long) n) != 0)
	{
		free(sql);
		return tb_error_set(err, TB_ERR_IO, "%s: %s (error %u)", what, mysql_error(conn), mysql_errno(conn));
	}
	free(sql);
	/* A statement may return rows (SET does not, CALL could): discard them. */
	do
	{
		MYSQL_RES *res = mysql_store_result(conn);

		if (res)
			mysql_free_result(res);
	} while (mysql_next_result(conn) == 0);
	return 0;
}

char *
my_ident(const char *name)
{
	size_t len = strlen(name);
	char *out = malloc(2 * len + 3), *p = out;

	if (out == NULL)
		return NULL;
	*p++ = '`';
	for (const char *c = name; *c; c++)
	{
		if (*c == '`')
			*p++ = '`';
		*p++ = *c;
	}
	*p++ = '`';
	*p = '\0';
	return out;
}

char *
my_literal(MYSQL *conn, const char *text)
{
	size_t len = strlen(text);
	char *out = malloc(2 * len + 3);

	if (out == NULL)
		return NULL;
	out[0] = '\'';
	len = mysql_real_escape_string(conn, out + 1, text, (unsigned long) len);
	out[len + 1] = '\'';
	out[len + 2] = '\0';
	return out;
}

int
my_database_defaults(MYSQL *conn, const char *db, char **charset, char **collation, tb_error *err)
{
	char *name = my_literal(conn, db);
	char *sql = NULL;
	MYSQL_RES *res;
	MYSQL_ROW row;
	int found;

	if (name == NULL || asprintf(&sql,
								 "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
								 "information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
								 name) < 0)
	{
		free(name);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	}
	free(name);
	if (mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL)
	{
		free(sql);
		return tb_error_set(err, TB_ERR_IO, "cannot look up database \"%s\": %s", db, mysql_error(conn));
	}
	free(sql);
	row = mysql_fetch_row(res);
	found = row != NULL;
	if (found && charset)
		*charset = strdup(row[0]);
	if (found && collation)
		*collation = strdup(row[1]);
	mysql_free_result(res);
	return found;
}
