/* The control-plane commands' connection, queries and output (control.c). */
#ifndef TB_CLI_CONTROL_H
#define TB_CLI_CONTROL_H

#include <libpq-fe.h>

/* Exit statuses every command documents (README, "Exit status"); 2, bad usage, is cli_usage_error's. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILED 1      /* a job failed or was cancelled; a check is in error */
#define CLI_EXIT_UNREACHABLE 3 /* no connection to the control plane */
#define CLI_EXIT_REFUSED 4     /* the control plane refused the request (unknown tenant, no permission, ...) */

/* A libpq or server message on one line (newlines and tabs as blanks), escaped into out; returns out. */
const char *cli_control_one_line(const char *message, char *out, size_t size);

/*
 * A connection to the control plane from conninfo (a connection string or URI; NULL or
 * empty: PG* alone), search_path pinned. NULL after printing why.
 */
PGconn *cli_control_connect(const char *command, const char *conninfo);

/* Prints the server's error of res (message, detail, hint; escaped) once; returns CLI_EXIT_REFUSED. */
int cli_control_report(const char *command, const PGresult *res);

/* Runs sql with its text parameters bound; NULL after reporting the error (or the connection lost). */
PGresult *cli_control_query(const char *command, PGconn *conn, const char *sql, int nparams, const char *const *params);

#define CLI_CONTROL_COLUMNS_MAX 32

/* Every row of res as aligned columns (its first columns) under a header of their names, every value escaped. */
void cli_control_print_table(const PGresult *res, int columns);

/* Runs sql, which returns one json value in one row, and prints it on one line; returns an exit status. */
int cli_control_print_json(const char *command, PGconn *conn, const char *sql, int nparams, const char *const *params);

#endif
