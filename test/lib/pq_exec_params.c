/*
 * pq_exec_params SQL [PARAM...]: runs SQL once with its $n bound as parameters
 * (libpq's extended protocol, as drivers send placeholders), connecting from the
 * PG* environment. Prints the first column of the first row, or the error; exits 1
 * on error. For tests of what a server logs of a failing statement.
 */
#include <stdio.h>

#include <libpq-fe.h>

int
main(int argc, char **argv)
{
	PGconn *conn;
	PGresult *res;
	int status;

	if (argc < 2)
	{
		fprintf(stderr, "usage: pq_exec_params SQL [PARAM...]\n");
		return 2;
	}
	conn = PQconnectdb("");
	if (PQstatus(conn) != CONNECTION_OK)
	{
		fprintf(stderr, "%s", PQerrorMessage(conn));
		PQfinish(conn);
		return 1;
	}
	res = PQexecParams(conn, argv[1], argc - 2, NULL, (const char *const *) argv + 2, NULL, NULL, 0);
	status = PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : 1;
	if (status != 0)
		fprintf(stderr, "%s", PQerrorMessage(conn));
	else if (PQntuples(res) > 0 && PQnfields(res) > 0)
		printf("%s\n", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(conn);
	return status;
}
