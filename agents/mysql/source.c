/*
 * Reaching a tenant's MySQL/MariaDB database: mysql://user@host:port/db (or
 * ?socket=/path, from a superuser only), the password sealed in the catalog or
 * mysql_password in the agent's configuration (for the servers it lists). Tools get
 * their credentials from the only option file they read (--defaults-file), through a
 * pipe; the C API gets them directly. Neither ever sees argv.
 */
#include "mysql_agent.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The schemas of the server itself, never a tenant's. */
static const char *const my_system_schemas[] = {"mysql", "information_schema", "performance_schema", "sys", NULL};

int
my_name_check(const char *what, const char *name, tb_error *err)
{
	size_t chars = 0;

	for (const unsigned char *c = (const unsigned char *) name; *c; c++)
		chars += (*c & 0xC0) != 0x80;
	/* MariaDB's own rules for a database name, and no '-' first: a tool could take it for an option. */
	if (chars == 0 || chars > MY_NAME_MAX || name[0] == '-' || strpbrk(name, "/\\.") || name[strlen(name) - 1] == ' ')
		return tb_error_set(err, TB_ERR_INVALID,
							"%s is not a database name this agent accepts: 1 to 64 characters, not beginning with "
							"'-', without '/', '\\' or '.', not ending with a space",
							what);
	for (const unsigned char *c = (const unsigned char *) name; *c; c++)
		if (*c < 0x20 || *c == 0x7F)
			return tb_error_set(err, TB_ERR_INVALID, "%s holds a control character", what);
	return 0;
}

bool
my_is_system_schema(const char *name)
{
	for (const char *const *s = my_system_schemas; *s; s++)
		if (strcasecmp(name, *s) == 0)
			return true;
	return false;
}

/*
 * An operator's locator (not a superuser's) carries its own credentials, and the work
 * must be done with them: TCP only (a socket would let the agent's OS identity log in),
 * its own user and password, no schema of the server itself.
 */
static int
untrusted_locator_check(const agent_job *job, const agent_uri *uri, const mysql_source *src, tb_error *err)
{
	if (src->socket)
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" names a socket; a locator added by an operator connects "
							"over TCP only (ask a superuser to add a socket locator)",
							job->tenant);
	if (src->host == NULL || strcasecmp(src->host, "localhost") == 0)
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" names no TCP host (\"localhost\" is the socket); a locator "
							"added by an operator names a host such as 127.0.0.1",
							job->tenant);
	if (uri->user == NULL || *uri->user == '\0' || job->password == NULL || *job->password == '\0')
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" carries no user and password of its own; a locator added "
							"by an operator must (mysql://user:password@host:port/db)",
							job->tenant);
	if (my_is_system_schema(src->database))
		return tb_error_set(err, TB_ERR_INVALID,
							"the locator of tenant \"%s\" names the server's own schema \"%s\", which is no tenant's",
							job->tenant, src->database);
	return 0;
}

int
mysql_source_from_job(const agent_job *job, mysql_source *src, tb_error *err)
{
	agent_uri uri;
	const char *password = job->password, *user;
	bool fallback;
	int rc = -1;

	memset(src, 0, sizeof(*src));
	if (agent_uri_parse(job->locator, &uri, err) != 0)
		return tb_error_prefix(err, "the locator of tenant \"%s\"", job->tenant);
	if (strcmp(uri.scheme, "mysql") != 0 && strcmp(uri.scheme, "mariadb") != 0)
	{
		tb_error_set(err, TB_ERR_INVALID, "the locator of tenant \"%s\" is not a mysql:// URI", job->tenant);
		goto done;
	}
	if (uri.path == NULL || strchr(uri.path, '/'))
	{
		tb_error_set(err, TB_ERR_INVALID, "the locator of tenant \"%s\" names no database (mysql://user@host/db)",
					 job->tenant);
		goto done;
	}
	if (my_name_check("the database of the locator", uri.path, err) != 0)
	{
		tb_error_prefix(err, "tenant \"%s\"", job->tenant);
		goto done;
	}
	src->host = uri.host && *uri.host ? strdup(uri.host) : NULL;
	src->port = uri.port ? uri.port : 3306;
	src->socket = agent_uri_param(&uri, "socket");
	src->database = strdup(uri.path);
	if (!job->locator_trusted && untrusted_locator_check(job, &uri, src, err) != 0)
		goto done;
	/* The agent's own user and password go only where its configuration allows. */
	fallback = agent_fallback_credentials_allowed(job, src->host ? src->host : "localhost", src->port);
	user = uri.user ? uri.user : fallback ? agent_config_get(job->config, "mysql_user") : NULL;
	if (user == NULL)
	{
		tb_error_set(err, TB_ERR_INVALID,
					 "no MySQL user for tenant \"%s\": name one in the locator, or set mysql_user and list the "
					 "server in mysql_fallback_credentials_hosts",
					 job->tenant);
		goto done;
	}
	if (password == NULL && fallback)
		password = agent_config_get(job->config, "mysql_password");
	src->user = strdup(user);
	src->password = password ? strdup(password) : NULL;
	src->dump_command = agent_config_get(job->config, "mysql_dump_command");
	src->client_command = agent_config_get(job->config, "mysql_client_command");
	if (src->dump_command == NULL)
		src->dump_command = "mariadb-dump";
	if (src->client_command == NULL)
		src->client_command = "mariadb";
	rc = 0;
done:
	agent_uri_free(&uri);
	if (rc != 0)
		mysql_source_free(src);
	return rc;
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

/* The first column of the first row of sql, malloc'd; NULL with err set. */
static char *
my_value(MYSQL *conn, const char *sql, const char *what, tb_error *err)
{
	MYSQL_RES *res;
	MYSQL_ROW row;
	char *value = NULL;

	if (mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL)
		return tb_error_set(err, TB_ERR_IO, "cannot read %s: %s", what, mysql_error(conn)), NULL;
	row = mysql_fetch_row(res);
	if (row == NULL || row[0] == NULL || (value = strdup(row[0])) == NULL)
		tb_error_set(err, TB_ERR_IO, "the server told nothing of %s", what);
	mysql_free_result(res);
	return value;
}

/* The user the server authenticated (CURRENT_USER(), user@host) must be the locator's. */
static int
my_current_user_check(MYSQL *conn, const mysql_source *src, const agent_job *job, tb_error *err)
{
	char *current = my_value(conn, "SELECT CURRENT_USER()", "the authenticated user", err);
	char *at;
	int rc = 0;

	if (current == NULL)
		return -1;
	at = strrchr(current, '@');
	if (at)
		*at = '\0';
	if (strcmp(current, src->user) != 0)
		rc = tb_error_set(err, TB_ERR_INVALID,
						  "the MySQL server of tenant \"%s\" authenticated another user than the locator's \"%s\"; "
						  "nothing was read or written",
						  job->tenant, src->user);
	free(current);
	return rc;
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
	if (my_current_user_check(conn, src, job, err) != 0)
	{
		mysql_close(conn);
		return NULL;
	}
	return conn;
}

int
my_claim_identity(MYSQL *conn, const mysql_source *src, agent_job *job, tb_error *err)
{
	/* MariaDB has no @@server_uuid: its id, host name and port say which server it is. */
	char *server = my_value(conn, "SELECT CONCAT(@@server_id, '@', @@hostname, ':', @@port)",
							"the identity of the MySQL server", err);
	int rc;

	if (server == NULL)
		return tb_error_prefix(err, "tenant \"%s\"", job->tenant);
	rc = agent_job_identity(job, server, src->database, err);
	if (rc == 0 && job->restore_target && !job->drill)
		rc = agent_job_target_identity(job, server, job->restore_target, NULL, err);
	free(server);
	return rc;
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

MYSQL_RES *
my_query_about_database(MYSQL *conn, const char *db, const char *sql_format, const char *what, tb_error *err)
{
	char *name = my_literal(conn, db), *sql = NULL;
	MYSQL_RES *res;

	if (name == NULL || asprintf(&sql, sql_format, name) < 0)
	{
		free(name);
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	free(name);
	if (mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL)
	{
		free(sql);
		tb_error_set(err, TB_ERR_IO, "cannot %s database \"%s\": %s", what, db, mysql_error(conn));
		return NULL;
	}
	free(sql);
	return res;
}

int
my_database_defaults(MYSQL *conn, const char *db, char **charset, char **collation, tb_error *err)
{
	MYSQL_RES *res = my_query_about_database(
		conn, db,
		"SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
		" WHERE SCHEMA_NAME = %s",
		"look up", err);
	MYSQL_ROW row;
	int found;

	if (res == NULL)
		return -1;
	row = mysql_fetch_row(res);
	found = row != NULL;
	if (found && charset)
		*charset = strdup(row[0]);
	if (found && collation)
		*collation = strdup(row[1]);
	mysql_free_result(res);
	return found;
}

char *
my_database_options(MYSQL *conn, const char *db, tb_error *err)
{
	char *name = my_literal(conn, db), *sql = NULL, *comment = NULL, *options = NULL;
	MYSQL_RES *res;
	MYSQL_ROW row;

	if (name == NULL || asprintf(&sql,
								 "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, SCHEMA_COMMENT FROM "
								 "information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
								 name) < 0)
	{
		free(name);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory"), NULL;
	}
	free(name);
	if (mysql_query(conn, sql) != 0 || (res = mysql_store_result(conn)) == NULL)
	{
		free(sql);
		return tb_error_set(err, TB_ERR_IO, "cannot look up database \"%s\": %s", db, mysql_error(conn)), NULL;
	}
	free(sql);
	row = mysql_fetch_row(res);
	if (row == NULL)
		tb_error_set(err, TB_ERR_NOT_FOUND, "database \"%s\" does not exist", db);
	else if ((comment = my_literal(conn, row[2] ? row[2] : "")) == NULL ||
			 asprintf(&options, "CHARACTER SET %s COLLATE %s COMMENT %s", row[0], row[1], comment) < 0)
	{
		options = NULL;
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	}
	free(comment);
	mysql_free_result(res);
	return options;
}
