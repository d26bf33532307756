/*
 * tenant-backup restore-direct: a tenant's newest complete backup (or the one named) from
 * storage and the master key alone, into a new database of any server: the
 * disaster-recovery path when the control plane is gone. PostgreSQL is loaded here by
 * pg_restore; the other engines by their agents (restore_direct_agent.c).
 */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <poll.h>
#include <unistd.h>

#include "cli.h"
#include "cli_control.h"
#include "names.h"
#include "subprocess.h"
#include "restore_direct.h"

/* PostgreSQL's NAMEDATALEN: a database or role name is at most 63 bytes. */
#define DIRECT_NAME_MAX 64
/* The database settings restore-direct carries over, at most. */
#define DIRECT_SETTINGS_MAX 128

static const char restore_direct_usage[] =
	"Usage: tenant-backup restore-direct --tenant T --engine postgres --into CONNINFO [OPTIONS]\n"
	"       tenant-backup restore-direct --tenant T --engine mysql|redis|mongodb --into URI [OPTIONS]\n"
	"\n"
	"Restores tenant T's newest complete backup found in storage (or --backup-id ID) into\n"
	"the new database CONNINFO's dbname names, without the control plane. The backup is\n"
	"chosen by its manifest and authenticated whole (header, every chunk, trailer, the\n"
	"manifest's SHA-256) into a private temporary file before anything is created; then\n"
	"the database is created with the backup's encoding and locale (CREATE DATABASE as\n"
	"pg_dump recorded it), loaded by pg_restore in one transaction as a login with no\n"
	"more than the tenant's rights (the tenant's functions run while it loads: never as\n"
	"a superuser), and given the recorded owner when that role exists. On any failure\n"
	"the new database is dropped, and SIGINT, SIGTERM or SIGHUP stop it the same way (the\n"
	"plaintext is removed; SIGKILL would leave it in TMPDIR/tenant-backup-restore-*).\n"
	"A database of that name must not exist. Needs room in TMPDIR for the plaintext.\n"
	"\n"
	"MySQL/MariaDB, Redis and MongoDB: the backup is authenticated whole first (nothing is\n"
	"created otherwise), then the engine's agent (tenant-backup-agent-ENGINE beside this\n"
	"program, or --agent) loads it with its own restore into the target, which must be new:\n"
	"  mysql://user@host:port/NEW        a database that must not exist (it is created)\n"
	"  redis://[user@]host:port/N        a database number that must hold no keys, or with\n"
	"    ?key_prefix=P                   the keys under prefix P, of which none may exist yet\n"
	"  mongodb://[user@]host:port/NEW    a database that must have no collections\n"
	"On failure what was created is removed. The target's password is never in the URI:\n"
	"--password-file FILE, or TENANT_BACKUP_MYSQL_PASSWORD / _REDIS_ / _MONGODB_PASSWORD.\n"
	"A dedicated Redis tenant's RDB snapshot is written out with restore-rdb instead.\n"
	"\n"
	"  --tenant T            the tenant\n"
	"  --engine E            postgres, mysql, redis or mongodb\n"
	"  --into CONNINFO       'dbname=NEW host=... port=... user=...' (or a URI) of the\n"
	"                        database to create; a password goes in ~/.pgpass or PGPASSWORD\n"
	"  --backup-id ID        that backup instead of the newest: the id its object's name ends\n"
	"                        with (a number for PostgreSQL, hex digits for the agents' engines)\n"
	"  --database NAME       the newest backup of the tenant's database NAME (as ls shows it:\n"
	"                        its manifest records it) when the tenant has several of ENGINE\n"
	"  --maintenance-db DB   the database to connect to for CREATE DATABASE (default postgres)\n"
	"  --load-as ROLE        load as ROLE (a login of the target server, e.g. the tenant's\n"
	"                        owner role; not a superuser), which gets the new database;\n"
	"                        needed when CONNINFO's user is a superuser. ROLE signs in as\n"
	"                        libpq does (~/.pgpass, PGPASSWORD), never with CONNINFO's password\n"
	"  --no-owner            load without owners and grants (roles the tenant's objects name\n"
	"                        need not exist: everything belongs to the connecting user)\n"
	"  --pg-restore PATH     the pg_restore to run (default pg_restore in PATH; it must be of\n"
	"                        the target server's major version or newer)\n"
	"  --agent PATH          mysql, redis, mongodb: the agent to run (default\n"
	"                        tenant-backup-agent-ENGINE in the directory of tenant-backup)\n"
	"  --password-file FILE  mysql, redis, mongodb: the target's password (mode 0600)\n"
	"  --storage URL         file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
	"  --replica URL         the replica storage: the backup is chosen from both copies and\n"
	"                        read from the replica when the primary's copy is missing or fails\n"
	"                        authentication, saying so (env TENANT_BACKUP_REPLICA_STORAGE)\n"
	"  --master-key FILE     master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n" CLI_KEY_COMMAND_USAGE;

typedef struct direct_args
{
	const char *tenant;
	const char *engine;
	const char *into;
	const char *backup_id;
	const char *database;
	const char *maintenance_db;
	const char *pg_restore;
	const char *load_as;
	bool no_owner;
	const char *agent;
	const char *password_file;
} direct_args;

static int
direct_option(int opt, const char *arg, void *state)
{
	direct_args *args = state;

	switch (opt)
	{
		case 't':
			args->tenant = arg;
			break;
		case 'e':
			args->engine = arg;
			break;
		case 'i':
			args->into = arg;
			break;
		case 'b':
			args->backup_id = arg;
			break;
		case 'd':
			args->database = arg;
			break;
		case 'm':
			args->maintenance_db = arg;
			break;
		case 'p':
			args->pg_restore = arg;
			break;
		case 'o':
			args->no_owner = true;
			break;
		case 'l':
			args->load_as = arg;
			break;
		case 'a':
			args->agent = arg;
			break;
		case 'w':
			args->password_file = arg;
			break;
		default:
			return cli_usage_error("restore-direct", "invalid option");
	}
	return 0;
}

/* The backup chosen from the listing: the newest dump of the tenant, or the one with the id asked for. */
typedef struct direct_choice
{
	const char *backup_id;
	const char *database; /* NULL: any */
	bool found;
	manifest chosen;
} direct_choice;

static int
direct_choose(const manifest *m, void *arg)
{
	direct_choice *choice = arg;
	manifest_object_name name;
	tb_error ignored = {0};

	/* A dedicated tenant's base backup is restored with restore-pitr, not here. */
	if (manifest_object_parse(m->object, &name, &ignored) != 0 || name.kind != MANIFEST_OBJECT_BACKUP)
		return 0;
	if ((choice->backup_id != NULL && strcmp(m->backup_id, choice->backup_id) != 0) ||
		(choice->database != NULL && strcmp(m->database, choice->database) != 0))
		return 0;
	choice->chosen = *m;
	choice->found = true;
	return 1;
}

static void
direct_problem(const char *key, const char *why, void *arg)
{
	char escaped_key[CLI_ESCAPED_MAX], escaped_why[CLI_ESCAPED_MAX];

	(void) arg;
	fprintf(stderr, "tenant-backup restore-direct: skipping %s: %s\n",
			cli_escape(key, escaped_key, sizeof(escaped_key)), cli_escape(why, escaped_why, sizeof(escaped_why)));
}

/* The signal (SIGINT, SIGTERM, SIGHUP) that asked us to stop, 0 if none: the work stops and cleans up. */
static volatile sig_atomic_t direct_interrupted;

static void
direct_on_signal(int sig)
{
	direct_interrupted = sig;
}

static void
direct_catch_signals(void)
{
	struct sigaction sa = {.sa_handler = direct_on_signal}; /* no SA_RESTART: waits return EINTR */

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

int
direct_keep_going(void *ctx, tb_error *err)
{
	(void) ctx;
	return direct_interrupted ? tb_error_set(err, TB_ERR_INTERNAL, "interrupted by signal %d: stopped and cleaned up",
											 (int) direct_interrupted)
							  : 0;
}

/* A private directory for the plaintext and the tools' files, removed by direct_scratch_remove. */
typedef struct direct_scratch
{
	char dir[4096];
	char dump[4200];
	char list[4200];
	char database_sql[4200];
	char passfile[4200];
} direct_scratch;

static int
direct_scratch_create(direct_scratch *s, tb_error *err)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(s->dir, sizeof(s->dir), "%s/tenant-backup-restore-XXXXXX", tmp && tmp[0] == '/' ? tmp : "/tmp");
	if (mkdtemp(s->dir) == NULL)
		return tb_error_set(err, TB_ERR_IO, "cannot create a private temporary directory in %s: %s",
							tmp && tmp[0] == '/' ? tmp : "/tmp", strerror(errno));
	snprintf(s->dump, sizeof(s->dump), "%s/backup.dump", s->dir);
	snprintf(s->list, sizeof(s->list), "%s/database.list", s->dir);
	snprintf(s->database_sql, sizeof(s->database_sql), "%s/database.sql", s->dir);
	snprintf(s->passfile, sizeof(s->passfile), "%s/pgpass", s->dir);
	return 0;
}

static void
direct_scratch_remove(direct_scratch *s)
{
	unlink(s->dump);
	unlink(s->list);
	unlink(s->database_sql);
	unlink(s->passfile);
	rmdir(s->dir);
}

int
direct_run(const char *const *argv, const char *out, tb_error *err)
{
	int out_fd = out ? open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
	/* Its messages go to our stderr as they come: the operator reads them above ours. */
	subprocess_options opts = {.argv = argv, .out = out ? SUBPROCESS_FD : SUBPROCESS_INHERIT, .out_fd = out_fd};
	subprocess sp;
	int rc;

	if (out != NULL && out_fd < 0)
		return tb_error_set(err, TB_ERR_IO, "cannot create %s: %s", out, strerror(errno));
	fflush(NULL);
	rc = subprocess_start(&sp, &opts, err);
	if (out_fd >= 0)
		close(out_fd);
	if (rc != 0)
		return -1;
	/* It has a process group of its own: a signal that stops us is passed on as SIGTERM, so it cleans up. */
	while ((rc = subprocess_reap(&sp, false)) == 0)
	{
		struct pollfd exited = {.fd = sp.exit_fd, .events = POLLIN};

		if (direct_interrupted)
			subprocess_signal(&sp, SIGTERM);
		if (sp.exit_fd >= 0)
			(void) poll(&exited, 1, 1000);
		else
			(void) poll(NULL, 0, 100);
	}
	if (rc < 0)
	{
		subprocess_end(&sp, SIGKILL);
		return tb_error_set(err, TB_ERR_IO, "cannot wait for %s: %s", argv[0], strerror(errno));
	}
	if (direct_keep_going(NULL, err) != 0)
		return -1;
	if (!WIFEXITED(sp.status) || WEXITSTATUS(sp.status) != 0)
		return tb_error_set(err, TB_ERR_IO, "%s failed (%s %d); its messages are above", argv[0],
							WIFEXITED(sp.status) ? "exit status" : "signal",
							WIFEXITED(sp.status) ? WEXITSTATUS(sp.status) : WTERMSIG(sp.status));
	return 0;
}

/*
 * The text quoted at *p (which is the quote character: ' or "), a doubled quote standing
 * for one, unquoted into out; advances *p past the closing quote. -1 if unterminated or too long.
 */
static int
direct_parse_quoted(const char **p, char *out, size_t size)
{
	const char quote = **p;
	const char *c = *p + 1;
	size_t used = 0;

	for (; *c && !(c[0] == quote && c[1] != quote); c++)
	{
		if (c[0] == quote)
			c++;
		if (used + 1 >= size)
			return -1;
		out[used++] = *c;
	}
	if (*c != quote)
		return -1;
	out[used] = '\0';
	*p = c + 1;
	return 0;
}

/*
 * The identifier at *p as pg_dump writes one (bare lower-case, or double-quoted),
 * unquoted into out; advances *p. -1 if it is not one.
 */
static int
direct_parse_identifier(const char **p, char *out, size_t size)
{
	const char *c = *p;
	size_t used = 0;

	if (*c == '"')
		return direct_parse_quoted(p, out, size) == 0 && out[0] != '\0' ? 0 : -1;
	while ((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '$')
	{
		if (used + 1 >= size)
			return -1;
		out[used++] = *c++;
	}
	out[used] = '\0';
	*p = c;
	return used > 0 ? 0 : -1;
}

/* A 'literal' or a bare word at *p, into out; advances *p. */
static int
direct_parse_value(const char **p, char *out, size_t size)
{
	return **p == '\'' ? direct_parse_quoted(p, out, size) : direct_parse_identifier(p, out, size);
}

/* The properties of the backed-up database that restore-direct applies. */
typedef struct direct_properties
{
	char encoding[64];
	char locale_provider[16];
	char locale[256];
	char lc_collate[256];
	char lc_ctype[256];
	char icu_locale[256];
	char owner[DIRECT_NAME_MAX];
	/* The database's settings and connection limit, as statements on the new database, applied after the load. */
	char *settings[DIRECT_SETTINGS_MAX];
	int nsettings;
} direct_properties;

static void
direct_properties_free(direct_properties *props)
{
	for (int i = 0; i < props->nsettings; i++)
		free(props->settings[i]);
	props->nsettings = 0;
}

/* Appends text to the malloc'd *sql; false when out of memory (*sql freed). */
static bool
direct_sql_append(char **sql, const char *text)
{
	size_t have = *sql ? strlen(*sql) : 0;
	char *grown = realloc(*sql, have + strlen(text) + 1);

	if (grown == NULL)
	{
		free(*sql);
		*sql = NULL;
		return false;
	}
	strcpy(grown + have, text);
	*sql = grown;
	return true;
}

/* Appends the identifier or literal text, escaped by conn; false when out of memory. */
static bool
direct_sql_append_escaped(PGconn *conn, char **sql, const char *text, bool identifier)
{
	char *escaped =
		identifier ? PQescapeIdentifier(conn, text, strlen(text)) : PQescapeLiteral(conn, text, strlen(text));
	bool ok = escaped != NULL && direct_sql_append(sql, escaped);

	PQfreemem(escaped);
	return ok;
}

/*
 * One line of the DATABASE PROPERTIES entry, "ALTER DATABASE <source> SET <name> TO
 * <value>[, <value>]...;", "ALTER DATABASE <source> CONNECTION LIMIT = <n>;" or "ALTER
 * ROLE <role> IN DATABASE <source> SET ...;", rebuilt for the database fresh from its
 * parsed parts, every name and value escaped by conn (NULL: not of that shape, or out
 * of memory). Nothing of the line itself is ever run.
 */
static char *
direct_setting_statement(PGconn *conn, const char *line, const char *source, const char *fresh)
{
	const char *p = line;
	char role[DIRECT_NAME_MAX] = "", name[DIRECT_NAME_MAX], value[1024];
	char *sql = NULL;
	bool ok;

	if (strncmp(p, "ALTER ROLE ", 11) == 0)
	{
		p += 11;
		if (direct_parse_identifier(&p, role, sizeof(role)) != 0 || strncmp(p, " IN", 3) != 0)
			return NULL;
		p += 3;
	}
	else if (strncmp(p, "ALTER", 5) == 0)
		p += 5;
	else
		return NULL;
	if (strncmp(p, " DATABASE ", 10) != 0)
		return NULL;
	p += 10;
	if (direct_parse_identifier(&p, name, sizeof(name)) != 0 || strcmp(name, source) != 0)
		return NULL;
	ok = (role[0] == '\0' ? direct_sql_append(&sql, "ALTER")
						  : direct_sql_append(&sql, "ALTER ROLE ") &&
								direct_sql_append_escaped(conn, &sql, role, true) && direct_sql_append(&sql, " IN")) &&
		 direct_sql_append(&sql, " DATABASE ") && direct_sql_append_escaped(conn, &sql, fresh, true);
	if (ok && role[0] == '\0' && strncmp(p, " CONNECTION LIMIT = ", 20) == 0)
	{
		p += 20;
		if (strspn(p + (*p == '-'), "0123456789") == 0 || strspn(p + (*p == '-'), "0123456789") > 9 ||
			strcmp(p + (*p == '-') + strspn(p + (*p == '-'), "0123456789"), ";\n") != 0)
			ok = false;
		else
		{
			snprintf(value, sizeof(value), " CONNECTION LIMIT %.*s", (int) strcspn(p, ";"), p);
			ok = direct_sql_append(&sql, value);
		}
		p = ";\n";
	}
	else if (ok && strncmp(p, " SET ", 5) == 0)
	{
		p += 5;
		ok = direct_parse_identifier(&p, name, sizeof(name)) == 0 && strncmp(p, " TO ", 4) == 0 &&
			 direct_sql_append(&sql, " SET ") && direct_sql_append_escaped(conn, &sql, name, true) &&
			 direct_sql_append(&sql, " TO ");
		for (p += 4; ok; p += 2)
		{
			ok = direct_parse_value(&p, value, sizeof(value)) == 0 &&
				 direct_sql_append_escaped(conn, &sql, value, false);
			if (!ok || strncmp(p, ", ", 2) != 0)
				break;
			ok = direct_sql_append(&sql, ", ");
		}
	}
	else
		ok = false;
	if (!ok || strcmp(p, ";\n") != 0)
	{
		free(sql);
		return NULL;
	}
	return sql;
}

/*
 * Reads pg_restore's script of the archive's DATABASE entry: "CREATE DATABASE <name>
 * WITH TEMPLATE = template0 ENCODING = '...' ..." and "ALTER DATABASE <name> OWNER TO
 * <role>;", and of its DATABASE PROPERTIES (settings, connection limit), rebuilt for
 * fresh (direct_setting_statement). Options it does not know (TABLESPACE: the new
 * server may not have it) are left out; a CREATE DATABASE not of this shape is an
 * error, another line not of its shape is skipped with a warning; none is run as read.
 */
static int
direct_read_properties(PGconn *conn, const char *path, const char *fresh, direct_properties *props, tb_error *err)
{
	FILE *f = fopen(path, "r");
	char line[8192], name[DIRECT_NAME_MAX], source[DIRECT_NAME_MAX] = "";
	bool created = false;

	if (f == NULL)
		return tb_error_set(err, TB_ERR_IO, "cannot read %s: %s", path, strerror(errno));
	while (fgets(line, sizeof(line), f) != NULL)
	{
		const char *p = line;

		if (strncmp(p, "CREATE DATABASE ", 16) == 0)
		{
			p += 16;
			if (direct_parse_identifier(&p, source, sizeof(source)) != 0 || strncmp(p, " WITH", 5) != 0)
				break;
			p += 5;
			while (*p == ' ')
			{
				char key[32], value[256];
				size_t key_len = strspn(++p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_");
				char *into = NULL;
				size_t into_size = sizeof(props->locale);

				if (key_len == 0 || key_len >= sizeof(key) || strncmp(p + key_len, " = ", 3) != 0)
					break;
				memcpy(key, p, key_len);
				key[key_len] = '\0';
				p += key_len + 3;
				if (direct_parse_value(&p, value, sizeof(value)) != 0)
					break;
				if (strcmp(key, "ENCODING") == 0)
				{
					into = props->encoding;
					into_size = sizeof(props->encoding);
				}
				else if (strcmp(key, "LOCALE_PROVIDER") == 0)
				{
					into = props->locale_provider;
					into_size = sizeof(props->locale_provider);
				}
				else if (strcmp(key, "LOCALE") == 0)
					into = props->locale;
				else if (strcmp(key, "LC_COLLATE") == 0)
					into = props->lc_collate;
				else if (strcmp(key, "LC_CTYPE") == 0)
					into = props->lc_ctype;
				else if (strcmp(key, "ICU_LOCALE") == 0)
					into = props->icu_locale;
				if (into != NULL)
					snprintf(into, into_size, "%s", value);
			}
			if (strcmp(p, ";\n") != 0)
				break;
			created = true;
		}
		else if (strncmp(p, "ALTER DATABASE ", 15) == 0 && created && strstr(p, " OWNER TO ") != NULL)
		{
			p += 15;
			if (direct_parse_identifier(&p, name, sizeof(name)) != 0 || strncmp(p, " OWNER TO ", 10) != 0)
				continue;
			p += 10;
			if (direct_parse_identifier(&p, props->owner, sizeof(props->owner)) != 0 || strcmp(p, ";\n") != 0)
				props->owner[0] = '\0';
		}
		else if (created && (strncmp(p, "ALTER DATABASE ", 15) == 0 || strncmp(p, "ALTER ROLE ", 11) == 0))
		{
			char *statement =
				props->nsettings < DIRECT_SETTINGS_MAX ? direct_setting_statement(conn, p, source, fresh) : NULL;

			if (statement == NULL)
				fprintf(stderr, "tenant-backup restore-direct: warning: a database property of the backup is not of a "
								"shape restore-direct applies: left out\n");
			else
				props->settings[props->nsettings++] = statement;
		}
	}
	fclose(f);
	if (!created)
		return tb_error_set(err, TB_ERR_CORRUPT,
							"the backup's archive has no CREATE DATABASE of the shape pg_dump writes: it is not a "
							"PostgreSQL tenant's pg_dump archive");
	return 0;
}

/* Finds the archive's DATABASE entry in `pg_restore --create --list` output (only --create lists it) and writes a list
 * of it alone. */
static int
direct_database_entry(const direct_scratch *s, tb_error *err)
{
	FILE *in = fopen(s->list, "r");
	char line[8192];
	long entry = -1, properties = -1;
	FILE *out;

	if (in == NULL)
		return tb_error_set(err, TB_ERR_IO, "cannot read %s: %s", s->list, strerror(errno));
	/* "<id>; <catalog oid> <oid> DATABASE [PROPERTIES] - <name> <owner>": the shape, not the names, decides. */
	while (fgets(line, sizeof(line), in) != NULL)
	{
		long id;
		unsigned catalog, oid;
		int used = 0;

		if (sscanf(line, "%ld; %u %u DATABASE - %n", &id, &catalog, &oid, &used) == 3 && used > 0 && entry < 0)
			entry = id;
		used = 0;
		if (sscanf(line, "%ld; %u %u DATABASE PROPERTIES - %n", &id, &catalog, &oid, &used) == 3 && used > 0 &&
			properties < 0)
			properties = id;
	}
	fclose(in);
	if (entry < 0)
		return tb_error_set(err, TB_ERR_CORRUPT,
							"the backup's archive has no DATABASE entry: it is not a PostgreSQL "
							"tenant's pg_dump archive");
	if ((out = fopen(s->list, "w")) == NULL)
		return tb_error_set(err, TB_ERR_IO, "cannot write %s: %s", s->list, strerror(errno));
	fprintf(out, "%ld;\n", entry);
	if (properties >= 0)
		fprintf(out, "%ld;\n", properties);
	return fclose(out) == 0 ? 0 : tb_error_set(err, TB_ERR_IO, "cannot write %s: %s", s->list, strerror(errno));
}

/* The connection options of --into (or a copy of them with another dbname), for libpq and pg_restore. */
typedef struct direct_target
{
	PQconninfoOption *options;
	const char *dbname;
	const char *password;
} direct_target;

static int
direct_target_parse(const char *into, direct_target *t, tb_error *err)
{
	char *message = NULL;

	t->dbname = t->password = NULL;
	if ((t->options = PQconninfoParse(into, &message)) == NULL)
	{
		PQfreemem(message);
		return tb_error_set(err, TB_ERR_INVALID, "--into is not a connection string or URI libpq accepts");
	}
	for (PQconninfoOption *o = t->options; o->keyword; o++)
		if (o->val != NULL && strcmp(o->keyword, "dbname") == 0)
			t->dbname = o->val;
		else if (o->val != NULL && strcmp(o->keyword, "password") == 0)
			t->password = o->val;
	if (t->dbname == NULL || t->dbname[0] == '\0' || strlen(t->dbname) >= DIRECT_NAME_MAX)
		return tb_error_set(err, TB_ERR_INVALID, "--into must name the new database with dbname=NAME (1 to %d bytes)",
							DIRECT_NAME_MAX - 1);
	return 0;
}

/* A connection to dbname with --into's other options. */
static PGconn *
direct_connect(const direct_target *t, const char *dbname, tb_error *err)
{
	const char *keywords[64], *values[64];
	int n = 0;
	PGconn *conn;

	for (PQconninfoOption *o = t->options; o->keyword && n < 61; o++)
		if (o->val != NULL && strcmp(o->keyword, "dbname") != 0)
		{
			keywords[n] = o->keyword;
			values[n++] = o->val;
		}
	keywords[n] = "dbname";
	values[n++] = dbname;
	keywords[n] = "fallback_application_name";
	values[n++] = "tenant-backup restore-direct";
	keywords[n] = NULL;
	values[n] = NULL;
	conn = PQconnectdbParams(keywords, values, 0);
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
	{
		char msg[CLI_ESCAPED_MAX];

		tb_error_set(err, TB_ERR_IO, "cannot connect to database '%s' of the target server: %s", dbname,
					 conn ? cli_control_one_line(PQerrorMessage(conn), msg, sizeof(msg)) : "out of memory");
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* Appends " keyword='value'" (quoted as conninfo quotes) at w of the string out; returns its new end. */
static char *
direct_conninfo_append(char *w, const char *out, const char *keyword, const char *value)
{
	w += sprintf(w, "%s%s='", w == out ? "" : " ", keyword);
	for (const char *c = value; *c; c++)
	{
		if (*c == '\'' || *c == '\\')
			*w++ = '\\';
		*w++ = *c;
	}
	*w++ = '\'';
	*w = '\0';
	return w;
}

/*
 * --into's options but the password, with dbname, as a conninfo string for pg_restore's
 * --dbname (each value quoted, so none can add an option); the password goes to it in a
 * passfile of our private directory, never in argv.
 */
static char *
direct_conninfo_for_tool(const direct_target *t, const char *load_as, const direct_scratch *s, tb_error *err)
{
	size_t size = 64 + (load_as ? 2 * strlen(load_as) : 0);
	char *out, *w;

	for (PQconninfoOption *o = t->options; o->keyword; o++)
		if (o->val != NULL)
			size += strlen(o->keyword) + 2 * strlen(o->val) + 8;
	if ((out = w = malloc(size)) == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	for (PQconninfoOption *o = t->options; o->keyword; o++)
	{
		if (o->val == NULL || strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "passfile") == 0 ||
			(load_as && strcmp(o->keyword, "user") == 0))
			continue;
		w = direct_conninfo_append(w, out, o->keyword, o->val);
	}
	if (load_as != NULL)
		w = direct_conninfo_append(w, out, "user", load_as);
	/* CONNINFO's password is its user's: the load role signs in on its own. */
	else if (t->password != NULL)
		w = direct_conninfo_append(w, out, "passfile", s->passfile);
	return out;
}

/* The passfile for pg_restore: the password of --into (if any) for every host, port, database and user. */
static int
direct_passfile_write(const direct_target *t, const direct_scratch *s, tb_error *err)
{
	int fd = open(s->passfile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (f == NULL)
	{
		if (fd >= 0)
			close(fd);
		return tb_error_set(err, TB_ERR_IO, "cannot create %s: %s", s->passfile, strerror(errno));
	}
	if (t->password != NULL)
	{
		fputs("*:*:*:*:", f);
		for (const char *c = t->password; *c; c++)
		{
			if (*c == ':' || *c == '\\')
				fputc('\\', f);
			fputc(*c, f);
		}
		fputc('\n', f);
	}
	return fclose(f) == 0 ? 0 : tb_error_set(err, TB_ERR_IO, "cannot write %s: %s", s->passfile, strerror(errno));
}

/* Runs one utility statement; an error names what it was for. */
static int
direct_exec(PGconn *conn, const char *sql, const char *what, tb_error *err)
{
	PGresult *res = PQexec(conn, sql);
	int rc = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
		char msg[CLI_ESCAPED_MAX];

		rc = tb_error_set(err, TB_ERR_IO, "%s failed: %s", what,
						  cli_control_one_line(primary ? primary : PQerrorMessage(conn), msg, sizeof(msg)));
	}
	PQclear(res);
	return rc;
}

/* Appends " KEY = 'value'" (escaped for conn) to sql when value is set. */
static int
direct_append_option(PGconn *conn, char *sql, size_t size, const char *key, const char *value)
{
	char *literal;

	if (value[0] == '\0')
		return 0;
	if ((literal = PQescapeLiteral(conn, value, strlen(value))) == NULL)
		return -1;
	snprintf(sql + strlen(sql), size - strlen(sql), " %s = %s", key, literal);
	PQfreemem(literal);
	return 0;
}

/* CREATE DATABASE with the recorded encoding and locale, every name and value escaped. */
static int
direct_create_database(PGconn *admin, const char *dbname, const direct_properties *props, tb_error *err)
{
	char sql[2048];
	char *ident = PQescapeIdentifier(admin, dbname, strlen(dbname));
	int rc;

	if (ident == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s WITH TEMPLATE = template0", ident);
	PQfreemem(ident);
	if (direct_append_option(admin, sql, sizeof(sql), "ENCODING", props->encoding) != 0 ||
		direct_append_option(admin, sql, sizeof(sql), "LOCALE_PROVIDER", props->locale_provider) != 0 ||
		direct_append_option(admin, sql, sizeof(sql), "LOCALE", props->locale) != 0 ||
		direct_append_option(admin, sql, sizeof(sql), "LC_COLLATE", props->lc_collate) != 0 ||
		direct_append_option(admin, sql, sizeof(sql), "LC_CTYPE", props->lc_ctype) != 0 ||
		direct_append_option(admin, sql, sizeof(sql), "ICU_LOCALE", props->icu_locale) != 0)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	rc = direct_exec(admin, sql, "CREATE DATABASE", err);
	if (rc != 0)
		tb_error_prefix(err, "database '%s'", dbname);
	return rc;
}

static void
direct_drop_database(PGconn *admin, const char *dbname)
{
	char sql[256];
	char *ident = PQescapeIdentifier(admin, dbname, strlen(dbname));
	tb_error err = {0};

	if (ident == NULL)
		return;
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", ident);
	PQfreemem(ident);
	if (direct_exec(admin, sql, "DROP DATABASE", &err) != 0)
		fprintf(stderr, "tenant-backup restore-direct: could not drop the partly restored database '%s': %s\n", dbname,
				err.msg);
}

/* ALTER DATABASE dbname OWNER TO role, both escaped. */
static int
direct_alter_owner(PGconn *admin, const char *dbname, const char *role, tb_error *err)
{
	char sql[512];
	char *db = PQescapeIdentifier(admin, dbname, strlen(dbname)),
		 *owner = PQescapeIdentifier(admin, role, strlen(role));
	int rc = db && owner ? 0 : tb_error_set(err, TB_ERR_NOMEM, "out of memory");

	if (rc == 0)
	{
		snprintf(sql, sizeof(sql), "ALTER DATABASE %s OWNER TO %s", db, owner);
		rc = direct_exec(admin, sql, "ALTER DATABASE ... OWNER TO", err);
	}
	PQfreemem(db);
	PQfreemem(owner);
	return rc;
}

/*
 * The session that loads runs the tenant's code (CHECK constraints, defaults, domain
 * checks call its functions as rows arrive), so its login must have no more than the
 * tenant's rights: refuses a load role (load_as, else the connecting user) that is a
 * superuser or may touch the server's files or programs.
 */
static int
direct_check_loader(PGconn *admin, const char *load_as, tb_error *err)
{
	const char *params[1] = {load_as};
	PGresult *res = PQexecParams(
		admin,
		"SELECT r.rolname, r.rolsuper OR pg_catalog.pg_has_role(r.oid, 'pg_execute_server_program', 'MEMBER')"
		"       OR pg_catalog.pg_has_role(r.oid, 'pg_write_server_files', 'MEMBER')"
		"       OR pg_catalog.pg_has_role(r.oid, 'pg_read_server_files', 'MEMBER'), r.rolcanlogin"
		"  FROM pg_catalog.pg_roles r WHERE r.rolname = coalesce($1, current_user)",
		1, NULL, params, NULL, NULL, 0);
	char role[CLI_ESCAPED_MAX];
	int rc = 0;

	cli_escape(load_as ? load_as : "", role, sizeof(role));
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		rc = tb_error_set(err, TB_ERR_IO, "cannot read pg_roles on the target server");
	else if (PQntuples(res) == 0)
		rc = tb_error_set(err, TB_ERR_INVALID,
						  "--load-as role '%s' does not exist on the target server: create it (LOGIN, with only the "
						  "tenant's rights) first",
						  role);
	else if (strcmp(PQgetvalue(res, 0, 1), "t") == 0)
		rc =
			tb_error_set(err, TB_ERR_INVALID,
						 "the backup would be loaded as '%s', a superuser (or a role that may reach the server's files "
						 "or programs): the tenant's functions run while it loads. Pass --load-as ROLE, a login with "
						 "only the tenant's rights (such as its owner role)",
						 cli_escape(PQgetvalue(res, 0, 0), role, sizeof(role)));
	else if (load_as != NULL && strcmp(PQgetvalue(res, 0, 2), "t") != 0)
		rc = tb_error_set(err, TB_ERR_INVALID, "--load-as role '%s' cannot log in: ALTER ROLE it LOGIN first", role);
	PQclear(res);
	return rc;
}

/* The recorded owner, when that role exists on the target server; a warning says what to do if not. */
static void
direct_set_owner(PGconn *admin, const char *dbname, const char *owner)
{
	const char *params[1] = {owner};
	PGresult *res =
		PQexecParams(admin, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", 1, NULL, params, NULL, NULL, 0);
	char escaped[CLI_ESCAPED_MAX];

	cli_escape(owner, escaped, sizeof(escaped));
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
	{
		tb_error err = {0};

		if (direct_alter_owner(admin, dbname, owner, &err) != 0)
			fprintf(stderr, "tenant-backup restore-direct: warning: %s\n", err.msg);
	}
	else
		fprintf(stderr,
				"tenant-backup restore-direct: warning: the backup's database was owned by role '%s', which does not "
				"exist here: the database stays yours (create the role, then ALTER DATABASE ... OWNER TO it)\n",
				escaped);
	PQclear(res);
}

/*
 * The whole restore once the backup is chosen: authenticate it into the scratch
 * directory, read its database entry, create the database, load it, set its owner.
 * Leaves no database behind on failure.
 */
static int
direct_restore_postgres(const direct_args *args, storage *st, const master_key *master, const manifest *m,
						const direct_target *target, tb_error *err)
{
	const char *pg_restore = args->pg_restore ? args->pg_restore : "pg_restore";
	direct_scratch s;
	direct_properties props = {0};
	repo_read_options options;
	stream_stats stats;
	cli_progress progress;
	PGconn *admin = NULL;
	PGresult *res;
	char *conninfo = NULL;
	bool created = false;
	int rc;

	if ((admin = direct_connect(target, args->maintenance_db ? args->maintenance_db : "postgres", err)) == NULL)
		return -1;
	if (direct_check_loader(admin, args->load_as, err) != 0)
	{
		PQfinish(admin);
		return -1;
	}
	res = PQexecParams(admin, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1", 1, NULL, &target->dbname, NULL,
					   NULL, 0);
	rc = PQresultStatus(res) != PGRES_TUPLES_OK ? tb_error_set(err, TB_ERR_IO, "cannot read pg_database")
		 : PQntuples(res) > 0                   ? tb_error_set(err, TB_ERR_EXISTS,
															   "database '%s' already exists on the target server: restore-direct only "
																				 "creates a new database (name another with dbname=, or drop that one)",
															   target->dbname)
												: 0;
	PQclear(res);
	if (rc != 0 || (rc = direct_scratch_create(&s, err)) != 0)
	{
		PQfinish(admin);
		return -1;
	}
	cli_progress_start(&progress, "restore-direct: authenticating");
	cli_read_checked(&options, m, &progress);
	options.keep_going = direct_keep_going;
	rc = repo_read_to_file(st, master, m->object, s.dir, "backup.dump", &options, &stats, err);
	cli_progress_end(&progress);
	if (rc == 0 &&
		(rc = direct_run((const char *const[]){pg_restore, "--create", "--list", s.dump, NULL}, s.list, err)) == 0 &&
		(rc = direct_database_entry(&s, err)) == 0 &&
		(rc = direct_run((const char *const[]){pg_restore, "--create", "--schema-only", "--use-list", s.list, "--file",
											   s.database_sql, s.dump, NULL},
						 NULL, err)) == 0)
		rc = direct_read_properties(admin, s.database_sql, target->dbname, &props, err);
	if (rc == 0 && (rc = direct_passfile_write(target, &s, err)) == 0 &&
		(conninfo = direct_conninfo_for_tool(target, args->load_as, &s, err)) == NULL)
		rc = -1;
	if (rc == 0 && (rc = direct_keep_going(NULL, err)) == 0 &&
		(rc = direct_create_database(admin, target->dbname, &props, err)) == 0)
	{
		char *dbname_option = NULL;

		created = true;
		/* The load role owns the new database (and so its public schema) while it loads. */
		if (args->load_as != NULL)
			rc = direct_alter_owner(admin, target->dbname, args->load_as, err);
		if (rc == 0 && asprintf(&dbname_option, "--dbname=%s", conninfo) < 0)
		{
			dbname_option = NULL;
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		}
		/* Without --no-owner the NULL in its place ends the argv: owners and grants are restored. */
		if (rc == 0)
			rc = direct_run((const char *const[]){pg_restore, "--exit-on-error", "--single-transaction",
												  "--no-password", dbname_option, s.dump,
												  args->no_owner ? "--no-owner" : NULL, "--no-privileges", NULL},
							NULL, err);
		free(dbname_option);
		if (rc != 0)
			tb_error_prefix(err, "loading database '%s' (dropped again)", target->dbname);
	}
	if (rc != 0 && created)
		direct_drop_database(admin, target->dbname);
	else if (rc == 0)
	{
		if (!args->no_owner && props.owner[0])
			direct_set_owner(admin, target->dbname, props.owner);
		for (int i = 0; i < props.nsettings; i++)
		{
			tb_error warning = {0};

			if (direct_exec(admin, props.settings[i], "a recorded database setting", &warning) != 0)
				fprintf(stderr, "tenant-backup restore-direct: warning: %s\n", warning.msg);
		}
	}
	direct_properties_free(&props);
	free(conninfo);
	direct_scratch_remove(&s);
	PQfinish(admin);
	return rc;
}

/* What restoring the chosen backup needs, from whichever copy. */
typedef struct direct_copy
{
	const direct_args *args;
	const cli_context *ctx;
	const master_key *master;
	const manifest *chosen;
	const direct_target *target;
	const cli_copies *copies;
	bool postgres;
} direct_copy;

/*
 * The whole restore from one copy, st. A copy at fault (missing, failing
 * authentication) fails it before or while the backup is authenticated, and leaves
 * nothing behind: the other copy may follow.
 */
static int
direct_restore_copy(cli_copy_read *r, storage *st, tb_error *err)
{
	const direct_copy *d = r->arg;

	if (d->postgres)
		return direct_restore_postgres(d->args, st, d->master, d->chosen, d->target, err);
	return direct_restore_with_agent(
		&(direct_agent_request){.engine = d->args->engine,
								.into = d->args->into,
								.agent = d->args->agent,
								.password_file = d->args->password_file,
								.storage_url = st == d->copies->replica ? d->ctx->replica_url : d->ctx->storage_url,
								.loading = &r->handed_on},
		d->ctx, st, d->master, d->chosen, err);
}

int
cmd_restore_direct(int argc, char **argv)
{
	static const struct option options[] = {{"tenant", required_argument, NULL, 't'},
											{"engine", required_argument, NULL, 'e'},
											{"into", required_argument, NULL, 'i'},
											{"backup-id", required_argument, NULL, 'b'},
											{"database", required_argument, NULL, 'd'},
											{"maintenance-db", required_argument, NULL, 'm'},
											{"pg-restore", required_argument, NULL, 'p'},
											{"no-owner", no_argument, NULL, 'o'},
											{"load-as", required_argument, NULL, 'l'},
											{"agent", required_argument, NULL, 'a'},
											{"password-file", required_argument, NULL, 'w'},
											CLI_REPLICA_OPTION,
											CLI_COMMON_OPTIONS,
											{NULL, 0, NULL, 0}};
	direct_args args = {0};
	direct_choice choice = {0};
	direct_target target = {0};
	bool postgres;
	cli_context ctx;
	tb_error err = {0};
	master_key master;
	cli_copies copies;
	char object[CLI_ESCAPED_MAX];
	int rc = cli_parse("restore-direct", restore_direct_usage, argc, argv, options, &ctx, direct_option, &args);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (optind != argc)
		return cli_usage_error("restore-direct", "unexpected argument '%s'", argv[optind]);
	if (args.tenant == NULL || args.engine == NULL || args.into == NULL)
		return cli_usage_error("restore-direct", "--tenant, --engine and --into are required");
	if (names_check_tenant(args.tenant, &err) != 0 || names_check_engine(args.engine, &err) != 0)
		return cli_fail("restore-direct", &err);
	postgres = strcmp(args.engine, "postgres") == 0;
	if (postgres && (args.agent || args.password_file))
		return cli_usage_error("restore-direct", "--agent and --password-file are for mysql, redis and mongodb");
	if (!postgres && (args.maintenance_db || args.pg_restore || args.load_as || args.no_owner))
		return cli_usage_error("restore-direct",
							   "--maintenance-db, --pg-restore, --load-as and --no-owner are for postgres");
	if (args.backup_id && (args.backup_id[0] == '\0' || strlen(args.backup_id) > STREAM_BACKUP_ID_MAX ||
						   strspn(args.backup_id, "abcdefghijklmnopqrstuvwxyz0123456789-_") != strlen(args.backup_id)))
		return cli_usage_error("restore-direct", "--backup-id takes the backup id an object's name ends with");
	if (!postgres && direct_agent_into_check(args.engine, args.into, &err) != 0)
		return cli_fail("restore-direct", &err);
	if (postgres && direct_target_parse(args.into, &target, &err) != 0)
	{
		PQconninfoFree(target.options);
		return cli_fail("restore-direct", &err);
	}
	if (cli_storage_exists(&ctx, &err) != 0 || cli_copies_open(&copies, "restore-direct", &ctx) != 0)
	{
		PQconninfoFree(target.options);
		return err.msg[0] ? cli_fail("restore-direct", &err) : 2;
	}
	if (cli_load_master_key(&ctx, &master) != 0)
	{
		cli_copies_close(&copies);
		PQconninfoFree(target.options);
		return 2;
	}
	direct_catch_signals();
	choice.backup_id = args.backup_id;
	choice.database = args.database;
	rc = cli_copies_list(&copies, args.tenant, args.engine,
						 &(cli_listing_handlers){.backup = direct_choose, .problem = direct_problem, .arg = &choice},
						 &err);
	if (rc == 0 && !choice.found)
	{
		char database[CLI_ESCAPED_MAX];

		rc = tb_error_set(&err, TB_ERR_NOT_FOUND, "no complete %s backup of tenant '%s'%s%s%s%s in storage",
						  args.engine, args.tenant, args.backup_id ? " with backup id " : "",
						  args.backup_id ? args.backup_id : "", args.database ? " of database " : "",
						  args.database ? cli_escape(args.database, database, sizeof(database)) : "");
	}
	if (rc == 0)
	{
		char where[CLI_ESCAPED_MAX];

		fprintf(stderr, "tenant-backup restore-direct: restoring %s (finished %s) into %s%s%s\n",
				cli_escape(choice.chosen.object, object, sizeof(object)), choice.chosen.finished,
				postgres ? "database '" : "", cli_escape(postgres ? target.dbname : args.into, where, sizeof(where)),
				postgres ? "'" : "");
		rc = cli_copies_read(&copies, choice.chosen.object,
							 &(cli_copy_read){.read = direct_restore_copy,
											  .arg = &(direct_copy){.args = &args,
																	.ctx = &ctx,
																	.master = &master,
																	.chosen = &choice.chosen,
																	.target = &target,
																	.copies = &copies,
																	.postgres = postgres}},
							 &err);
	}
	keys_master_wipe(&master);
	cli_copies_close(&copies);
	if (rc == 0)
	{
		char where[CLI_ESCAPED_MAX];

		if (postgres)
			printf("restored %s into database '%s'\n", object, cli_escape(target.dbname, where, sizeof(where)));
		else
			printf("restored %s into %s\n", object, cli_escape(args.into, where, sizeof(where)));
	}
	PQconninfoFree(target.options);
	return rc == 0 ? 0 : cli_fail("restore-direct", &err);
}
