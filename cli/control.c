/*
 * The control plane over libpq for the commands that talk to it: one connection from
 * --control or the PG* environment, every value a bound parameter, results printed as
 * an aligned table or as the server's own JSON, errors printed once with their exit status.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cli_control.h"

const char *
cli_control_one_line(const char *message, char *out, size_t size)
{
	char flat[CLI_ESCAPED_MAX];
	size_t used = 0;

	/* libpq's messages run over lines ("...failed: ...\n\tIs the server running..."). */
	for (const char *c = message; *c && used + 1 < sizeof(flat); c++)
		if (*c != '\n' && *c != '\t')
			flat[used++] = *c;
		else if (used > 0 && flat[used - 1] != ' ')
			flat[used++] = ' ';
	while (used > 0 && flat[used - 1] == ' ')
		used--;
	flat[used] = '\0';
	return cli_escape(flat, out, size);
}

PGconn *
cli_control_connect(const char *command, const char *conninfo)
{
	/* conninfo is expanded as a connection string or URI; NULL or "": the PG* environment alone. */
	const char *keywords[] = {"dbname", "fallback_application_name", NULL};
	const char *values[] = {conninfo && conninfo[0] ? conninfo : NULL, "tenant-backup", NULL};
	PGconn *conn = PQconnectdbParams(keywords, values, 1);
	PGresult *res;
	char msg[CLI_ESCAPED_MAX];

	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "tenant-backup %s: cannot connect to the control plane: %s", command,
				conn ? cli_control_one_line(PQerrorMessage(conn), msg, sizeof(msg)) : "out of memory");
		fprintf(stderr, "\n  give its connection with --control 'host=... dbname=...' or the PG* environment\n");
		PQfinish(conn);
		return NULL;
	}
	/* Nothing an operator created elsewhere on the path is ever called. */
	res = PQexec(conn, "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		cli_control_report(command, res);
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

int
cli_control_report(const char *command, const PGresult *res)
{
	const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	char msg[CLI_ESCAPED_MAX];

	fprintf(stderr, "tenant-backup %s: the control plane refused: %s\n", command,
			cli_control_one_line(primary ? primary : PQresultErrorMessage(res), msg, sizeof(msg)));
	if (detail)
		fprintf(stderr, "  detail: %s\n", cli_escape(detail, msg, sizeof(msg)));
	if (hint)
		fprintf(stderr, "  hint: %s\n", cli_escape(hint, msg, sizeof(msg)));
	return CLI_EXIT_REFUSED;
}

PGresult *
cli_control_query(const char *command, PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQstatus(conn) == CONNECTION_BAD)
	{
		char msg[CLI_ESCAPED_MAX];

		fprintf(stderr, "tenant-backup %s: lost the connection to the control plane: %s\n", command,
				cli_control_one_line(PQerrorMessage(conn), msg, sizeof(msg)));
		PQclear(res);
		return NULL;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		cli_control_report(command, res);
		PQclear(res);
		return NULL;
	}
	return res;
}

void
cli_control_print_table(const PGresult *res, int columns)
{
	int rows = PQntuples(res), cols = columns < PQnfields(res) ? columns : PQnfields(res);
	size_t width[CLI_CONTROL_COLUMNS_MAX] = {0};
	char cell[CLI_ESCAPED_MAX];

	if (cols > CLI_CONTROL_COLUMNS_MAX)
		cols = CLI_CONTROL_COLUMNS_MAX;
	for (int c = 0; c < cols; c++)
	{
		width[c] = strlen(PQfname(res, c));
		for (int r = 0; r < rows; r++)
		{
			size_t len = strlen(cli_escape(PQgetvalue(res, r, c), cell, sizeof(cell)));

			if (len > width[c])
				width[c] = len;
		}
	}
	for (int r = -1; r < rows; r++)
	{
		for (int c = 0; c < cols; c++)
		{
			const char *text = r < 0 ? PQfname(res, c) : cli_escape(PQgetvalue(res, r, c), cell, sizeof(cell));

			/* The last column is not padded: trailing blanks help nobody. */
			if (c + 1 < cols)
				printf("%-*s  ", (int) width[c], text);
			else
				printf("%s\n", text);
		}
	}
}

int
cli_control_print_json(const char *command, PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = cli_control_query(command, conn, sql, nparams, params);

	if (res == NULL)
		return CLI_EXIT_REFUSED;
	/* The server's json: valid, every control character escaped. */
	printf("%s\n", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "[]");
	PQclear(res);
	return 0;
}
