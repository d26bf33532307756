/*
 * An agent's one-shot restore-direct mode: the disaster-recovery path when the control
 * plane is gone. tenant-backup restore-direct chose the backup by its manifest and
 * authenticated it whole; this runs the engine's own restore of that one object into a
 * new target, with no job, lease or catalog (agent_job.direct).
 */
#include "agent_internal.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "manifest.h"
#include "names.h"

/* A password file holds one line; more is not a password. */
#define DIRECT_PASSWORD_MAX 1024

static void
direct_usage(const agent_engine *engine)
{
	printf("Usage: %s restore-direct --tenant=T --object=KEY --key-id=ID --sha256=HEX --into=URI [OPTIONS]\n"
		   "Restores one %s backup object of tenant T into the new target URI names, without the\n"
		   "control plane (run by tenant-backup restore-direct, which chooses and authenticates it).\n\n"
		   "  --tenant=T            the tenant the object's authenticated header must name\n"
		   "  --object=KEY          the backup object, <tenant>/%s/<time>-<backup id>.tbk\n"
		   "  --key-id=ID           the key id its manifest records (the header must name it)\n"
		   "  --sha256=HEX          the SHA-256 of the object as stored, from its manifest\n"
		   "  --into=URI            the target, which must be empty or not exist; no password in it\n"
		   "  --password-file=FILE  the target's password (mode 0600); else TENANT_BACKUP_%s_PASSWORD\n"
		   "  --source-database=DB  the backed-up database its manifest names (MySQL: sequence\n"
		   "                        defaults naming it are pointed at the target's own)\n"
		   "  --storage=URL         file:///dir or s3://bucket/prefix (env TENANT_BACKUP_STORAGE)\n"
		   "  --master-key=FILE     the master key file (env TENANT_BACKUP_MASTER_KEY_FILE)\n"
		   "A tenant's own key command (BYOK) comes from TENANT_BACKUP_KEY_COMMAND.\n",
		   engine->program, engine->engine, engine->engine, engine->engine);
}

/* The first line of path, which only its owner may read, into a malloc'd string; NULL (err set). */
static char *
direct_read_password(const char *path, tb_error *err)
{
	FILE *f = fopen(path, "r");
	char line[DIRECT_PASSWORD_MAX + 2], *password = NULL;
	struct stat st;

	if (f == NULL)
	{
		tb_error_set(err, TB_ERR_IO, "cannot open the password file %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) != 0 || (st.st_mode & 077) != 0)
		tb_error_set(err, TB_ERR_INVALID, "the password file %s is readable by others; chmod 600 it", path);
	else if (fgets(line, sizeof(line), f) == NULL || strlen(line) > DIRECT_PASSWORD_MAX)
		tb_error_set(err, TB_ERR_INVALID, "the password file %s holds no line of at most %d bytes", path,
					 DIRECT_PASSWORD_MAX);
	else
	{
		line[strcspn(line, "\r\n")] = '\0';
		if ((password = strdup(line)) == NULL)
			tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	}
	explicit_bzero(line, sizeof(line));
	fclose(f);
	return password;
}

/* A copy of text (NULL: none) into *slot; -1 (err set) when out of memory. */
static int
direct_strdup(char **slot, const char *text, tb_error *err)
{
	if (text != NULL && (*slot = strdup(text)) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	return 0;
}

typedef struct direct_args
{
	const char *tenant;
	const char *object;
	const char *key_id;
	const char *sha256;
	const char *into;
	const char *password_file;
	const char *source_database;
} direct_args;

/*
 * The job for args: the object, which must be a backup of args->tenant and the engine;
 * the target, whose URI must carry no password. 0, or -1 with err set.
 */
static int
direct_job(const agent_engine *engine, const direct_args *args, agent_job *job, tb_error *err)
{
	manifest_object_name name;
	agent_uri uri;
	char password_key[64], password_env[80];
	int rc;

	snprintf(password_key, sizeof(password_key), "%s_password", engine->engine);
	snprintf(password_env, sizeof(password_env), "TENANT_BACKUP_%s", password_key);
	for (char *c = password_env; *c; c++)
		*c = (char) toupper((unsigned char) *c);

	if (manifest_object_parse(args->object, &name, err) != 0)
		return tb_error_prefix(err, "--object");
	if (name.kind != MANIFEST_OBJECT_BACKUP || strcmp(name.tenant, args->tenant) != 0 ||
		strcmp(name.engine, engine->engine) != 0)
		return tb_error_set(err, TB_ERR_INVALID, "--object is not a %s backup of tenant \"%s\"", engine->engine,
							args->tenant);
	if (strspn(args->sha256, "0123456789abcdef") != 64 || args->sha256[64] != '\0' ||
		strspn(args->key_id, "0123456789abcdef") != strlen(args->key_id) || args->key_id[0] == '\0')
		return tb_error_set(err, TB_ERR_INVALID, "--sha256 takes 64 and --key-id some lower-case hex digits");
	if (agent_uri_parse(args->into, &uri, err) != 0)
		return tb_error_prefix(err, "--into");
	if (uri.password != NULL)
		rc = tb_error_set(err, TB_ERR_INVALID,
						  "--into carries a password, which would be in argv: put it in --password-file or %s",
						  password_env);
	else if ((rc = direct_strdup(&job->kind, "restore", err)) == 0 &&
			 (rc = direct_strdup(&job->tenant, args->tenant, err)) == 0 &&
			 (rc = direct_strdup(&job->locator, args->into, err)) == 0 &&
			 (rc = direct_strdup(&job->options, "{}", err)) == 0 &&
			 (rc = direct_strdup(&job->object_key, args->object, err)) == 0 &&
			 (rc = direct_strdup(&job->backup_sha256, args->sha256, err)) == 0 &&
			 (rc = direct_strdup(&job->backup_key_id, args->key_id, err)) == 0)
	{
		job->engine = engine->engine;
		job->backup_id = strtoll(name.backup_id, NULL, 10);
		job->locator_trusted = true;
		job->direct = true;
		if (args->password_file)
			rc = (job->password = direct_read_password(args->password_file, err)) == NULL ? -1 : 0;
		else
			rc = direct_strdup(&job->password, agent_config_get(job->config, password_key), err);
	}
	if (rc == 0 && engine->direct_target)
		rc = engine->direct_target(job, &uri, args->source_database, err);
	else if (rc == 0 && (uri.path == NULL || uri.path[0] == '\0'))
		rc = tb_error_set(err, TB_ERR_INVALID, "--into names no database (%s://user@host:port/NEW)", engine->engine);
	else if (rc == 0)
		rc = direct_strdup(&job->restore_target, uri.path, err);
	agent_uri_free(&uri);
	return rc;
}

int
agent_direct_main(const agent_engine *engine, int argc, char **argv)
{
	static const struct option options[] = {{"tenant", required_argument, NULL, 't'},
											{"object", required_argument, NULL, 'o'},
											{"key-id", required_argument, NULL, 'k'},
											{"sha256", required_argument, NULL, 's'},
											{"into", required_argument, NULL, 'i'},
											{"password-file", required_argument, NULL, 'p'},
											{"source-database", required_argument, NULL, 'd'},
											{"storage", required_argument, NULL, 'S'},
											{"master-key", required_argument, NULL, 'M'},
											{"help", no_argument, NULL, 'h'},
											{NULL, 0, NULL, 0}};
	agent_config config = {.engine = engine->engine, .workers = 1, .level = STREAM_LEVEL_DEFAULT, .lease_seconds = 60};
	agent a = {.engine = engine, .config = &config, .signal_fd = -1};
	direct_args args = {0};
	agent_job job = {0};
	tb_error err = {0};
	const char *key_command = getenv("TENANT_BACKUP_KEY_COMMAND");
	int opt, rc = 1;

	agent_log_setup(engine->program, engine->engine, false);
	/* A hangup reaches tenant-backup too, which stops us with SIGTERM: we clean up then. */
	signal(SIGHUP, SIG_IGN);
	optind = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1)
	{
		const char **slot = opt == 't'   ? &args.tenant
							: opt == 'o' ? &args.object
							: opt == 'k' ? &args.key_id
							: opt == 's' ? &args.sha256
							: opt == 'i' ? &args.into
							: opt == 'p' ? &args.password_file
							: opt == 'd' ? &args.source_database
										 : NULL;

		if (slot)
			*slot = optarg;
		else if (opt == 'S')
			config.storage = strdup(optarg);
		else if (opt == 'M')
			config.master_key_file = strdup(optarg);
		else if (opt == 'h')
		{
			direct_usage(engine);
			return 0;
		}
		else
		{
			fprintf(stderr, "Try \"%s restore-direct --help\".\n", engine->program);
			return 2;
		}
	}
	if (config.storage == NULL && getenv("TENANT_BACKUP_STORAGE"))
		config.storage = strdup(getenv("TENANT_BACKUP_STORAGE"));
	if (config.master_key_file == NULL && getenv("TENANT_BACKUP_MASTER_KEY_FILE"))
		config.master_key_file = strdup(getenv("TENANT_BACKUP_MASTER_KEY_FILE"));
	if (optind != argc || !args.tenant || !args.object || !args.key_id || !args.sha256 || !args.into ||
		!config.storage || !config.master_key_file)
	{
		fprintf(stderr,
				"%s restore-direct: --tenant, --object, --key-id, --sha256, --into, the storage and the master key "
				"are required, and nothing else; try --help\n",
				engine->program);
		agent_config_free(&config);
		return 2;
	}
	job.config = &config;
	if (names_check_tenant(args.tenant, &err) != 0 || direct_job(engine, &args, &job, &err) != 0 ||
		direct_strdup(&job.key_command, key_command && *key_command ? key_command : NULL, &err) != 0)
		agent_log_at(AGENT_LOG_ERROR, "restore-direct: %s", err.msg);
	else if (agent_setup(&a) == 0)
	{
		a.master.key_command = job.key_command;
		job.storage = a.storage;
		job.master = &a.master;
		job.owner = &a;
		job.workers = config.workers;
		job.level = config.level;
		agent_log_job(&job);
		rc = engine->restore(&job, &err) == 0 ? 0 : 1;
		if (rc == 0)
			agent_log("restore-direct of %s for tenant \"%s\" succeeded: %s", job.object_key, job.tenant, job.detail);
		else
			agent_log_at(AGENT_LOG_ERROR, "restore-direct of %s for tenant \"%s\" failed: %s", job.object_key,
						 job.tenant, err.msg);
		agent_log_job(NULL);
	}
	agent_job_free(&job);
	agent_teardown(&a);
	return rc;
}
