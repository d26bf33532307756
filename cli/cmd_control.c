/*
 * tenant-backup backup, restore, status, jobs and check: the control plane's SQL API
 * (tenant_backup(), tenant_restore(), the status and job_log views, check()) over libpq.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check_offline.h"
#include "cli.h"
#include "cli_control.h"
#include "names.h"

#define CONTROL_OPTION_USAGE                                                                                           \
	"  --control CONNINFO  the control plane's database, as 'host=... dbname=...' or a\n"                              \
	"                      postgresql:// URI (default: the PG* environment); put a password\n"                         \
	"                      in ~/.pgpass or PGPASSWORD, not here\n"

#define CONTROL_EXIT_USAGE                                                                                             \
	"\nExit status: 0 done, 1 a job failed or was cancelled (a check: an error), 2 bad\n"                              \
	"usage, 3 the control plane is unreachable, 4 the control plane refused the request.\n"

static const char backup_usage[] =
	"Usage: tenant-backup backup TENANT [--engine E] [--wait] [OPTIONS]\n"
	"\n"
	"Queues a backup of every database of TENANT (or of engine E) in the control plane\n"
	"and prints the job ids. With --wait it follows the jobs to their end: a progress\n"
	"bar on a terminal (bytes of the expected total, the previous backup's size, rate,\n"
	"ETA, phase), a plain line per change otherwise. Interrupting --wait leaves the jobs\n"
	"running ('tenant-backup jobs' shows them).\n"
	"\n"
	"  --engine E          postgres, mysql, mongodb or redis\n"
	"  --wait              wait for the jobs to finish\n" CONTROL_OPTION_USAGE CONTROL_EXIT_USAGE;

static const char restore_usage[] =
	"Usage: tenant-backup restore TENANT [--engine E] [--database D] [--target T]\n"
	"                             [--backup-id N] [--no-wait] [OPTIONS]\n"
	"\n"
	"Restores TENANT's newest complete backup (or backup N) through the control plane, as\n"
	"tenant_restore() does: in place, loaded beside the live database and swapped once it\n"
	"loaded; with --target into that new database, the live one untouched. Waits for the\n"
	"jobs and shows their progress like 'backup --wait' unless --no-wait.\n"
	"\n"
	"  --engine E          the engine to restore\n"
	"  --database D        of a tenant with several databases: the one to restore\n"
	"  --target T          a new database to restore into (redis: a db number or prefix)\n"
	"  --backup-id N       the backup to restore (see 'tenant_backups()')\n"
	"  --no-wait           queue the restore and print its job ids\n" CONTROL_OPTION_USAGE CONTROL_EXIT_USAGE;

static const char status_usage[] =
	"Usage: tenant-backup status [TENANT] [--json] [OPTIONS]\n"
	"\n"
	"The tenant_backup.status view: per tenant database the last success and its\n"
	"age, OVERDUE, the running job with its progress, queued jobs, the last backup\n"
	"error (or why queued jobs wait). --json prints every column of the view.\n"
	"\n"
	"  --json              one JSON array of the view's rows\n" CONTROL_OPTION_USAGE CONTROL_EXIT_USAGE;

static const char jobs_usage[] =
	"Usage: tenant-backup jobs [TENANT] [--limit N] [--json] [OPTIONS]\n"
	"\n"
	"The newest jobs (backup, restore, drill) of the tenant_backup.job_log view:\n"
	"state, phase, who queued them, when, how long, bytes and the last error.\n"
	"\n"
	"  --limit N           at most N jobs (default 20; 0: all)\n"
	"  --json              one JSON array of the view's rows\n" CONTROL_OPTION_USAGE CONTROL_EXIT_USAGE;

static const char check_usage[] =
	"Usage: tenant-backup check [--json] [OPTIONS]\n"
	"\n"
	"Runs tenant_backup.check() in the control plane: storage round trip, master key,\n"
	"tools, WAL archiving, agents and settings, one line each with a hint. Without\n"
	"--control and PG* (or with --storage, --master-key or --offline) it checks storage\n"
	"and keys alone: see 'tenant-backup check --offline --help'.\n"
	"\n"
	"  --json              one JSON array of the checks\n" CONTROL_OPTION_USAGE CONTROL_EXIT_USAGE;

typedef struct control_args
{
	const char *command;
	const char *allowed; /* the option letters this command takes */
	const char *control;
	const char *engine;
	const char *database;
	const char *target;
	const char *backup_id;
	const char *limit;
	bool wait;
	bool no_wait;
	bool json;
} control_args;

static const struct option control_options[] = {{"control", required_argument, NULL, 'c'},
												{"engine", required_argument, NULL, 'e'},
												{"database", required_argument, NULL, 'd'},
												{"target", required_argument, NULL, 't'},
												{"backup-id", required_argument, NULL, 'b'},
												{"limit", required_argument, NULL, 'l'},
												{"wait", no_argument, NULL, 'w'},
												{"no-wait", no_argument, NULL, 'n'},
												{"json", no_argument, NULL, 'j'},
												{"help", no_argument, NULL, 'h'},
												{NULL, 0, NULL, 0}};

static int
control_option(int opt, const char *arg, void *state)
{
	control_args *args = state;

	if (strchr(args->allowed, opt) == NULL)
		return cli_usage_error(args->command, "invalid option");
	switch (opt)
	{
		case 'c':
			args->control = arg;
			break;
		case 'e':
			args->engine = arg;
			break;
		case 'd':
			args->database = arg;
			break;
		case 't':
			args->target = arg;
			break;
		case 'b':
			args->backup_id = arg;
			break;
		case 'l':
			args->limit = arg;
			break;
		case 'w':
			args->wait = true;
			break;
		case 'n':
			args->no_wait = true;
			break;
		default:
			args->json = true;
	}
	return 0;
}

static bool
control_is_number(const char *text)
{
	return text[0] != '\0' && strlen(text) <= 18 && strspn(text, "0123456789") == strlen(text);
}

/*
 * Parses the command line: options, then at most one TENANT (required when
 * tenant_required). Returns 0 to go on, -1 after --help, else an exit status.
 */
static int
control_parse(control_args *args, const char *usage, int argc, char **argv, bool tenant_required, const char **tenant)
{
	cli_context ctx;
	tb_error err = {0};
	int rc = cli_parse(args->command, usage, argc, argv, control_options, &ctx, control_option, args);

	if (rc != 0)
		return rc;
	*tenant = optind < argc ? argv[optind] : NULL;
	if (argc - optind > 1)
		return cli_usage_error(args->command, "unexpected argument '%s'", argv[optind + 1]);
	if (tenant_required && *tenant == NULL)
		return cli_usage_error(args->command, "TENANT is required");
	if ((*tenant && names_check_tenant(*tenant, &err) != 0) || (args->engine && names_check_engine(args->engine, &err)))
		return cli_fail(args->command, &err);
	if (args->backup_id && !control_is_number(args->backup_id))
		return cli_usage_error(args->command, "--backup-id takes a backup's number");
	if (args->limit && !control_is_number(args->limit))
		return cli_usage_error(args->command, "--limit takes a number");
	return 0;
}

/* The jobs queued by res (one job id a row) as a bigint[] literal. */
static char *
control_job_array(const PGresult *res)
{
	size_t size = 3 + (size_t) PQntuples(res) * 21;
	char *out = malloc(size);
	size_t used = 0;

	if (out == NULL)
		return NULL;
	out[used++] = '{';
	for (int r = 0; r < PQntuples(res); r++)
		used += (size_t) snprintf(out + used, size - used, "%s%s", r ? "," : "", PQgetvalue(res, r, 0));
	snprintf(out + used, size - used, "}");
	return out;
}

/* The columns of control_poll_sql. */
enum
{
	POLL_ID,
	POLL_KIND,
	POLL_TENANT,
	POLL_ENGINE,
	POLL_DATABASE,
	POLL_STATE,
	POLL_PHASE,
	POLL_DONE,
	POLL_EXPECTED,
	POLL_SECONDS,
	POLL_ERROR,
	POLL_CANCELLED
};

/* Each job's progress; the expected total is the running job's, from the status view. */
static const char control_poll_sql[] =
	"SELECT l.job_id, l.kind, l.tenant, l.engine, coalesce(l.database, ''), l.state, coalesce(l.phase, ''),"
	"       CASE WHEN l.state = 'succeeded' THEN coalesce(l.bytes_in, l.bytes_done, 0)"
	"            ELSE coalesce(l.bytes_done, 0) END,"
	"       coalesce(s.expected_bytes, l.bytes_in, -1),"
	"       coalesce(extract(epoch FROM l.duration), 0)::float8, coalesce(l.error, ''), l.cancelled"
	"  FROM tenant_backup.job_log l LEFT JOIN tenant_backup.status s ON s.running_job = l.job_id"
	" WHERE l.job_id = ANY ($1::bigint[]) ORDER BY l.job_id";

static bool
control_job_finished(const PGresult *res, int r)
{
	const char *state = PQgetvalue(res, r, POLL_STATE);

	return strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0;
}

/* "job 12 backup acme/postgres (shop)" */
static void
control_job_name(const PGresult *res, int r, char *out, size_t size)
{
	char tenant[CLI_ESCAPED_MAX], database[CLI_ESCAPED_MAX];

	cli_escape(PQgetvalue(res, r, POLL_TENANT), tenant, sizeof(tenant));
	cli_escape(PQgetvalue(res, r, POLL_DATABASE), database, sizeof(database));
	snprintf(out, size, "job %s %s %s/%s%s%s%s", PQgetvalue(res, r, POLL_ID), PQgetvalue(res, r, POLL_KIND), tenant,
			 PQgetvalue(res, r, POLL_ENGINE), database[0] ? " (" : "", database, database[0] ? ")" : "");
}

/* "12.0 MiB of 40.0 MiB, 3.1 MiB/s, ETA 9s, phase dump" (what is known of it). */
static void
control_job_progress(const PGresult *res, int r, char *out, size_t size, double *fraction)
{
	double done = atof(PQgetvalue(res, r, POLL_DONE)), expected = atof(PQgetvalue(res, r, POLL_EXPECTED));
	double seconds = atof(PQgetvalue(res, r, POLL_SECONDS));
	double rate = seconds > 0 ? done / seconds : 0;
	char done_text[32], expected_text[32], rate_text[32], eta[32] = "", phase[64];
	const char *state = PQgetvalue(res, r, POLL_STATE);

	cli_human_bytes((uint64_t) done, done_text, sizeof(done_text));
	cli_human_bytes((uint64_t) expected, expected_text, sizeof(expected_text));
	cli_human_bytes((uint64_t) rate, rate_text, sizeof(rate_text));
	*fraction = expected > 0 ? (done < expected ? done / expected : 1.0) : -1;
	if (rate > 0 && expected > done)
		snprintf(eta, sizeof(eta), ", ETA %.0fs", (expected - done) / rate);
	cli_escape(PQgetvalue(res, r, POLL_PHASE), phase, sizeof(phase));
	if (strcmp(state, "queued") == 0)
		snprintf(out, size, "queued");
	else
		snprintf(out, size, "%s%s%s, %s/s%s%s%s", done_text, expected >= 0 ? " of " : "",
				 expected >= 0 ? expected_text : "", rate_text, eta, phase[0] ? ", phase " : "", phase);
}

/* The bar of the first unfinished job on the terminal, redrawn in place. */
static void
control_draw_bar(const PGresult *res)
{
	int jobs = PQntuples(res);

	for (int r = 0; r < jobs; r++)
	{
		char name[256 + 2 * CLI_ESCAPED_MAX], progress[512], bar[31];
		double fraction;

		if (control_job_finished(res, r))
			continue;
		control_job_name(res, r, name, sizeof(name));
		control_job_progress(res, r, progress, sizeof(progress), &fraction);
		for (int i = 0; i < 30; i++)
			bar[i] = fraction >= 0 && i < (int) (fraction * 30) ? '#' : '.';
		bar[30] = '\0';
		if (fraction >= 0)
			fprintf(stderr, "\r\033[K[%d/%d] %s [%s] %3.0f%% %s", r + 1, jobs, name, bar, fraction * 100, progress);
		else
			fprintf(stderr, "\r\033[K[%d/%d] %s %s", r + 1, jobs, name, progress);
		fflush(stderr);
		return;
	}
}

/*
 * Follows the jobs queued (res) to their end; returns CLI_EXIT_OK when all succeeded,
 * CLI_EXIT_FAILED when one failed or was cancelled, another status when polling failed.
 */
static int
control_wait(const char *command, PGconn *conn, const PGresult *queued)
{
	char *ids = control_job_array(queued);
	const char *params[1] = {ids};
	bool tty = isatty(STDERR_FILENO);
	int jobs = PQntuples(queued), rc = CLI_EXIT_OK;
	char(*seen)[64] = calloc((size_t) jobs + 1, sizeof(*seen));
	time_t *printed = calloc((size_t) jobs + 1, sizeof(*printed));
	PGresult *res = NULL;

	if (ids == NULL || seen == NULL || printed == NULL)
	{
		fprintf(stderr, "tenant-backup %s: out of memory\n", command);
		rc = CLI_EXIT_FAILED;
	}
	while (rc == CLI_EXIT_OK)
	{
		int unfinished = 0;

		if ((res = cli_control_query(command, conn, control_poll_sql, 1, params)) == NULL)
		{
			/* The control plane went away while we followed: the jobs go on without us. */
			rc = PQstatus(conn) == CONNECTION_BAD ? CLI_EXIT_UNREACHABLE : CLI_EXIT_REFUSED;
			break;
		}
		for (int r = 0; r < PQntuples(res) && r < jobs; r++)
		{
			char now_seen[64], name[256 + 2 * CLI_ESCAPED_MAX], progress[512];
			double fraction;

			if (control_job_finished(res, r))
				continue;
			unfinished++;
			snprintf(now_seen, sizeof(now_seen), "%s %s", PQgetvalue(res, r, POLL_STATE),
					 PQgetvalue(res, r, POLL_PHASE));
			/* Without a terminal: a line when the state or phase changes, and every 10 s. */
			if (!tty && (strcmp(now_seen, seen[r]) != 0 || time(NULL) - printed[r] >= 10))
			{
				control_job_name(res, r, name, sizeof(name));
				control_job_progress(res, r, progress, sizeof(progress), &fraction);
				printf("%s: %s\n", name, progress);
				fflush(stdout);
				snprintf(seen[r], sizeof(seen[r]), "%s", now_seen);
				printed[r] = time(NULL);
			}
		}
		if (unfinished == 0)
			break;
		if (tty)
			control_draw_bar(res);
		PQclear(res);
		res = NULL;
		usleep(tty ? 250000 : 500000);
	}
	if (tty)
		fprintf(stderr, "\r\033[K");
	for (int r = 0; res != NULL && r < PQntuples(res); r++)
	{
		char name[256 + 2 * CLI_ESCAPED_MAX], size[32], error[CLI_ESCAPED_MAX];
		bool cancelled = strcmp(PQgetvalue(res, r, POLL_CANCELLED), "t") == 0;

		control_job_name(res, r, name, sizeof(name));
		cli_human_bytes(strtoull(PQgetvalue(res, r, POLL_DONE), NULL, 10), size, sizeof(size));
		if (strcmp(PQgetvalue(res, r, POLL_STATE), "succeeded") == 0 && !cancelled)
			printf("%s succeeded: %s in %.1f s\n", name, size, atof(PQgetvalue(res, r, POLL_SECONDS)));
		else
		{
			printf("%s %s: %s\n", name, cancelled ? "was cancelled" : "failed",
				   cli_escape(PQgetvalue(res, r, POLL_ERROR), error, sizeof(error)));
			rc = CLI_EXIT_FAILED;
		}
	}
	PQclear(res);
	free(ids);
	free(seen);
	free(printed);
	return rc;
}

/* Runs the request (one job id a row), then prints the ids or follows the jobs. */
static int
control_request(const char *command, const char *conninfo, const char *sql, int nparams, const char *const *params,
				bool wait)
{
	PGconn *conn = cli_control_connect(command, conninfo);
	PGresult *res;
	int rc = CLI_EXIT_OK;

	if (conn == NULL)
		return CLI_EXIT_UNREACHABLE;
	if ((res = cli_control_query(command, conn, sql, nparams, params)) == NULL)
		rc = CLI_EXIT_REFUSED;
	else if (wait)
		rc = control_wait(command, conn, res);
	else
		for (int r = 0; r < PQntuples(res); r++)
			printf("%s\n", PQgetvalue(res, r, 0));
	PQclear(res);
	PQfinish(conn);
	return rc;
}

int
cmd_backup(int argc, char **argv)
{
	control_args args = {.command = "backup", .allowed = "cew"};
	const char *tenant;
	int rc = control_parse(&args, backup_usage, argc, argv, true, &tenant);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	return control_request("backup", args.control,
						   "SELECT j FROM tenant_backup.tenant_backup($1, $2, false) j ORDER BY j", 2,
						   (const char *const[]){tenant, args.engine}, args.wait);
}

int
cmd_restore(int argc, char **argv)
{
	control_args args = {.command = "restore", .allowed = "cedtbn"};
	const char *tenant;
	int rc = control_parse(&args, restore_usage, argc, argv, true, &tenant);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	return control_request("restore", args.control,
						   "SELECT j FROM tenant_backup.tenant_restore($1, $2, $3::bigint, $4, false, $5) j ORDER BY j",
						   5, (const char *const[]){tenant, args.engine, args.backup_id, args.target, args.database},
						   !args.no_wait);
}

/* Runs a listing: its table, or (--json) its JSON array; a tenant named must exist. */
static int
control_listing(const control_args *args, const char *tenant, const char *table_sql, const char *json_sql, int nparams,
				const char *const *params)
{
	PGconn *conn = cli_control_connect(args->command, args->control);
	PGresult *res = NULL;
	int rc = CLI_EXIT_OK;

	if (conn == NULL)
		return CLI_EXIT_UNREACHABLE;
	if (tenant != NULL)
	{
		res = cli_control_query(args->command, conn,
								"SELECT count(*) FROM tenant_backup.tenant_overview WHERE tenant = $1", 1, &tenant);
		if (res == NULL)
			rc = CLI_EXIT_REFUSED;
		else if (strcmp(PQgetvalue(res, 0, 0), "0") == 0)
		{
			fprintf(stderr, "tenant-backup %s: the control plane has no tenant '%s' (tenant_create() registers one)\n",
					args->command, tenant);
			rc = CLI_EXIT_REFUSED;
		}
		PQclear(res);
	}
	if (rc == CLI_EXIT_OK && args->json)
		rc = cli_control_print_json(args->command, conn, json_sql, nparams, params);
	else if (rc == CLI_EXIT_OK)
	{
		if ((res = cli_control_query(args->command, conn, table_sql, nparams, params)) == NULL)
			rc = CLI_EXIT_REFUSED;
		else
			cli_control_print_table(res, PQnfields(res));
		PQclear(res);
	}
	PQfinish(conn);
	return rc;
}

/* An age as its largest unit: 42s, 17m, 5h, 3d. */
#define CONTROL_AGE_SQL(x)                                                                                             \
	"CASE WHEN " x " IS NULL THEN '' WHEN " x " < interval '1 minute' THEN extract(epoch FROM " x                      \
	")::bigint || 's' WHEN " x " < interval '1 hour' THEN (extract(epoch FROM " x ")::bigint / 60) || 'm' "            \
	"WHEN " x " < interval '2 days' THEN (extract(epoch FROM " x ")::bigint / 3600) || 'h' "                           \
	"ELSE (extract(epoch FROM " x ")::bigint / 86400) || 'd' END"

int
cmd_status(int argc, char **argv)
{
	control_args args = {.command = "status", .allowed = "cj"};
	const char *tenant;
	int rc = control_parse(&args, status_usage, argc, argv, false, &tenant);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	return control_listing(
		&args, tenant,
		"SELECT s.tenant AS \"TENANT\", s.engine AS \"ENGINE\", s.locator AS \"DATABASE\","
		"       coalesce(to_char(s.last_success AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"'), 'never')"
		"           AS \"LAST SUCCESS\", " CONTROL_AGE_SQL(
			"s.age") " AS \"AGE\","
					 "       CASE WHEN s.overdue THEN 'OVERDUE' ELSE 'ok' END"
					 "           || CASE WHEN s.schedule_state <> 'on' THEN ' (' || s.schedule_state || ')' ELSE '' "
					 "END AS \"STATE\","
					 "       coalesce(s.running_kind || coalesce(' ' || s.running_phase, '') || ' '"
					 "           || pg_catalog.pg_size_pretty(s.running_bytes)"
					 "           || coalesce(' of ' || pg_catalog.pg_size_pretty(s.expected_bytes), ''), '') AS "
					 "\"RUNNING\","
					 "       s.queued_jobs AS \"QUEUED\", coalesce(s.last_error, s.waiting_for_agent, '') AS \"LAST "
					 "ERROR\""
					 "  FROM tenant_backup.status s WHERE $1::text IS NULL OR s.tenant = $1"
					 " ORDER BY s.tenant, s.engine, s.source_id",
		"SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.tenant, s.engine, s.source_id), '[]')::text"
		"  FROM tenant_backup.status s WHERE $1::text IS NULL OR s.tenant = $1",
		1, &tenant);
}

int
cmd_jobs(int argc, char **argv)
{
	control_args args = {.command = "jobs", .allowed = "clj", .limit = "20"};
	const char *tenant;
	int rc = control_parse(&args, jobs_usage, argc, argv, false, &tenant);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	return control_listing(
		&args, tenant,
		"SELECT l.job_id AS \"JOB\", l.kind AS \"KIND\", l.tenant AS \"TENANT\", l.engine AS \"ENGINE\","
		"       coalesce(l.database, '') AS \"DATABASE\","
		"       l.state || CASE WHEN l.cancelled THEN ' (cancelled)' ELSE '' END AS \"STATE\","
		"       coalesce(l.phase, '') AS \"PHASE\", coalesce(l.queued_by, '') AS \"QUEUED BY\","
		"       to_char(l.queued_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"') AS \"QUEUED\", " CONTROL_AGE_SQL(
			"l.duration") " AS \"TOOK\","
						  "       coalesce(pg_catalog.pg_size_pretty(coalesce(l.bytes_in, l.bytes_done)), '') AS "
						  "\"BYTES\", coalesce(l.error, '') AS \"ERROR\""
						  "  FROM tenant_backup.job_log l WHERE $1::text IS NULL OR l.tenant = $1"
						  " ORDER BY l.job_id DESC LIMIT nullif($2::bigint, 0)",
		"SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.job_id DESC), '[]')::text FROM"
		" (SELECT * FROM tenant_backup.job_log l WHERE $1::text IS NULL OR l.tenant = $1"
		"   ORDER BY l.job_id DESC LIMIT nullif($2::bigint, 0)) l",
		2, (const char *const[]){tenant, args.limit});
}

int
cmd_check(int argc, char **argv)
{
	control_args args = {.command = "check", .allowed = "cj"};
	const char *tenant;
	PGconn *conn;
	PGresult *res;
	int rc;

	if (cli_check_wants_offline(argc, argv))
		return cmd_check_offline(argc, argv);
	rc = control_parse(&args, check_usage, argc, argv, false, &tenant);
	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (tenant != NULL)
		return cli_usage_error("check", "unexpected argument '%s'", tenant);
	if ((conn = cli_control_connect("check", args.control)) == NULL)
		return CLI_EXIT_UNREACHABLE;
	res = cli_control_query("check", conn,
							args.json ? "SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]')::text,"
										"       coalesce(bool_or(c.status = 'error'), false)"
										"  FROM tenant_backup.check() c"
									  : "SELECT c.name AS \"CHECK\", c.status AS \"STATUS\", coalesce(c.detail, '') AS "
										"\"DETAIL\", coalesce(c.hint, '') AS \"HINT\", c.status = 'error' AS failed"
										"  FROM tenant_backup.check() c",
							0, NULL);
	if (res == NULL)
		rc = CLI_EXIT_REFUSED;
	else
	{
		int failed_column = args.json ? 1 : 4;

		if (args.json)
			printf("%s\n", PQgetvalue(res, 0, 0));
		for (int r = 0; r < PQntuples(res); r++)
			if (strcmp(PQgetvalue(res, r, failed_column), "t") == 0)
				rc = CLI_EXIT_FAILED;
		/* The table without its last column, which only decides the exit status. */
		if (!args.json)
			cli_control_print_table(res, 4);
	}
	PQclear(res);
	PQfinish(conn);
	return rc;
}
