/*
 * Agent configuration: a file of "key = value" lines (--config or
 * TENANT_BACKUP_CONFIG), overridden by TENANT_BACKUP_<KEY> variables, overridden by
 * options. A file holding a password must not be readable by group or others.
 */
#include "agent_internal.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_LINE_MAX 4096

static const char *const common_keys[] = {"control",      "storage", "master_key_file",   "name",       "lease_seconds",
										  "poll_seconds", "workers", "compression_level", "log_format", NULL};

/* Storage credentials go to the environment, where core/storage reads them. */
static const char *const aws_keys[] = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token",
									   "aws_region",        "aws_endpoint_url",      NULL};

static void
usage(const agent_engine *engine)
{
	printf("Usage: %s [OPTIONS]\n"
		   "Takes %s backup and restore jobs from the tenant_backup catalog and runs them.\n\n"
		   "Options:\n"
		   "  --config FILE           configuration file (also TENANT_BACKUP_CONFIG)\n"
		   "  --control CONNINFO      control-plane database (libpq conninfo; PG* variables apply)\n"
		   "  --storage URL           file:///dir or s3://bucket/prefix, as the extension's\n"
		   "  --master-key FILE       the master key file (64 hex digits, mode 0600)\n"
		   "  --name NAME             this agent's name (default %s@<host name>)\n"
		   "  --lease-seconds N       lease of a claimed job, renewed while working (default 60)\n"
		   "  --poll-seconds N        look for jobs at least this often (default 10)\n"
		   "  --workers N             compression threads per backup (default 2)\n"
		   "  --once                  run the queued jobs, exit when none is left (1 if one failed)\n"
		   "  --log-format FORMAT     text (default) or json: one JSON object per line with time,\n"
		   "                          level, agent, job, tenant, engine and message\n"
		   "  --version               print the program's name and version, then exit\n"
		   "  --help                  this text\n\n"
		   "Configuration keys (file: key = value; environment: TENANT_BACKUP_<KEY>):\n"
		   "  control, storage, master_key_file, name, lease_seconds, poll_seconds, workers,\n"
		   "  compression_level (zstd, default 1), log_format, aws_access_key_id, aws_secret_access_key,\n"
		   "  aws_session_token, aws_region, aws_endpoint_url (for s3:// storage)\n"
		   "%s",
		   engine->program, engine->engine, engine->engine, engine->config_help);
}

static bool
key_in(const char *key, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(key, *list) == 0)
			return true;
	return false;
}

static bool
key_is_secret(const char *key, const char *value)
{
	return strstr(key, "password") || strstr(key, "secret") ||
		   (strcmp(key, "control") == 0 && strstr(value, "password"));
}

static char *
trim(char *s)
{
	char *end = s + strlen(s);

	while (isspace((unsigned char) *s))
		s++;
	while (end > s && isspace((unsigned char) end[-1]))
		*--end = '\0';
	return s;
}

static int
config_read_file(agent_config *config, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[CONFIG_LINE_MAX];
	int lineno = 0, rc = 0;
	bool secret = false;
	struct stat st;
	size_t prefix_len = strlen(config->engine);

	if (f == NULL)
	{
		fprintf(stderr, "cannot open configuration file %s: %s\n", path, strerror(errno));
		return 1;
	}
	config->file = strdup(path);
	while (rc == 0 && fgets(line, sizeof(line), f))
	{
		char *eq, *key, *value;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f))
		{
			fprintf(stderr, "%s:%d: line too long\n", path, lineno);
			rc = 1;
			break;
		}
		key = trim(line);
		if (*key == '\0' || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (eq == NULL)
		{
			fprintf(stderr, "%s:%d: expected key = value\n", path, lineno);
			rc = 1;
			break;
		}
		*eq = '\0';
		key = trim(key);
		value = trim(eq + 1);
		if (!key_in(key, common_keys) && !key_in(key, aws_keys) &&
			!(strncmp(key, config->engine, prefix_len) == 0 && key[prefix_len] == '_'))
		{
			fprintf(stderr, "%s:%d: unknown key \"%s\" (see --help)\n", path, lineno, key);
			rc = 1;
			break;
		}
		secret = secret || key_is_secret(key, value);
		config->keys = realloc(config->keys, sizeof(char *) * (size_t) (config->nentries + 1));
		config->values = realloc(config->values, sizeof(char *) * (size_t) (config->nentries + 1));
		config->keys[config->nentries] = strdup(key);
		config->values[config->nentries] = strdup(value);
		config->nentries++;
	}
	if (rc == 0 && secret && fstat(fileno(f), &st) == 0 && (st.st_mode & 077) != 0)
	{
		fprintf(stderr, "configuration file %s holds a password but is readable by others; chmod 600 it\n", path);
		rc = 1;
	}
	explicit_bzero(line, sizeof(line));
	fclose(f);
	return rc;
}

const char *
agent_config_get(const agent_config *config, const char *key)
{
	char name[128] = "TENANT_BACKUP_";
	size_t n = strlen(name);
	const char *env;

	for (const char *k = key; *k && n < sizeof(name) - 1; k++)
		name[n++] = (char) toupper((unsigned char) *k);
	name[n] = '\0';
	env = getenv(name);
	if (env && *env)
		return env;
	for (int i = config->nentries - 1; i >= 0; i--)
		if (strcmp(config->keys[i], key) == 0)
			return config->values[i];
	return NULL;
}

static int
parse_int(const char *what, const char *text, int min, int max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(text, &end, 10);
	if (errno || end == text || *end || v < min || v > max)
	{
		fprintf(stderr, "%s must be a number from %d to %d, not \"%s\"\n", what, min, max, text);
		return 1;
	}
	*out = (int) v;
	return 0;
}

/* Sets *slot from the file or environment unless an option already did. */
static void
config_default(const agent_config *config, char **slot, const char *key)
{
	const char *v;

	if (*slot == NULL && (v = agent_config_get(config, key)) != NULL)
		*slot = strdup(v);
}

int
agent_config_load(agent_config *config, const agent_engine *engine, int argc, char **argv)
{
	static const struct option options[] = {{"config", required_argument, NULL, 'c'},
											{"control", required_argument, NULL, 'C'},
											{"storage", required_argument, NULL, 's'},
											{"master-key", required_argument, NULL, 'k'},
											{"name", required_argument, NULL, 'n'},
											{"lease-seconds", required_argument, NULL, 'l'},
											{"poll-seconds", required_argument, NULL, 'p'},
											{"workers", required_argument, NULL, 'w'},
											{"once", no_argument, NULL, 'o'},
											{"log-format", required_argument, NULL, 'f'},
											{"version", no_argument, NULL, 'V'},
											{"help", no_argument, NULL, 'h'},
											{NULL, 0, NULL, 0}};
	const char *file = getenv("TENANT_BACKUP_CONFIG");
	const char *lease = NULL, *poll = NULL, *workers = NULL, *log_format = NULL, *level;
	int opt;

	memset(config, 0, sizeof(*config));
	config->engine = engine->engine;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1)
	{
		switch (opt)
		{
			case 'c':
				file = optarg;
				break;
			case 'C':
				config->control = strdup(optarg);
				break;
			case 's':
				config->storage = strdup(optarg);
				break;
			case 'k':
				config->master_key_file = strdup(optarg);
				break;
			case 'n':
				config->name = strdup(optarg);
				break;
			case 'l':
				lease = optarg;
				break;
			case 'p':
				poll = optarg;
				break;
			case 'w':
				workers = optarg;
				break;
			case 'o':
				config->once = true;
				break;
			case 'f':
				log_format = optarg;
				break;
			case 'V':
				printf("%s %s\n", engine->program, TB_VERSION);
				return -1;
			case 'h':
				usage(engine);
				return -1;
			default:
				fprintf(stderr, "Try \"%s --help\".\n", engine->program);
				return 1;
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "%s: unexpected argument \"%s\"; try --help\n", engine->program, argv[optind]);
		return 1;
	}
	if (file && *file && config_read_file(config, file) != 0)
		return 1;
	config_default(config, &config->control, "control");
	config_default(config, &config->storage, "storage");
	config_default(config, &config->master_key_file, "master_key_file");
	config_default(config, &config->name, "name");
	for (const char *const *k = aws_keys; *k; k++)
	{
		char env[64];
		const char *v = agent_config_get(config, *k);
		size_t i;

		for (i = 0; (*k)[i] && i < sizeof(env) - 1; i++)
			env[i] = (char) toupper((unsigned char) (*k)[i]);
		env[i] = '\0';
		if (v && getenv(env) == NULL)
			setenv(env, v, 0);
	}
	if (lease == NULL)
		lease = agent_config_get(config, "lease_seconds");
	if (poll == NULL)
		poll = agent_config_get(config, "poll_seconds");
	if (workers == NULL)
		workers = agent_config_get(config, "workers");
	level = agent_config_get(config, "compression_level");
	if (log_format == NULL)
		log_format = agent_config_get(config, "log_format");
	if (log_format && strcmp(log_format, "json") != 0 && strcmp(log_format, "text") != 0)
	{
		fprintf(stderr, "%s: log_format must be text or json\n", engine->program);
		return 1;
	}
	config->log_json = log_format && strcmp(log_format, "json") == 0;
	config->lease_seconds = 60;
	config->poll_seconds = 10;
	config->workers = 2;
	config->level = STREAM_LEVEL_DEFAULT;
	if ((lease && parse_int("lease_seconds", lease, 5, 86400, &config->lease_seconds) != 0) ||
		(poll && parse_int("poll_seconds", poll, 1, 3600, &config->poll_seconds) != 0) ||
		(workers && parse_int("workers", workers, 1, 64, &config->workers) != 0) ||
		(level && parse_int("compression_level", level, 1, 19, &config->level) != 0))
		return 1;
	if (config->storage == NULL || config->master_key_file == NULL)
	{
		fprintf(stderr,
				"%s: storage and master_key_file must be set (options, configuration file or "
				"TENANT_BACKUP_STORAGE / TENANT_BACKUP_MASTER_KEY_FILE); see --help\n",
				engine->program);
		return 1;
	}
	return 0;
}

void
agent_config_free(agent_config *config)
{
	for (int i = 0; i < config->nentries; i++)
	{
		explicit_bzero(config->values[i], strlen(config->values[i]));
		free(config->keys[i]);
		free(config->values[i]);
	}
	free(config->keys);
	free(config->values);
	free(config->file);
	free(config->control);
	free(config->storage);
	free(config->master_key_file);
	free(config->name);
	memset(config, 0, sizeof(*config));
}
