/*
 * The S3 credential chain (see s3_credentials.h): environment, shared files and
 * credential_process, web identity, instance metadata. What the sources return is
 * secret: it is never part of a message, and files and outputs are never quoted.
 */
#include "s3_credentials.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#include "s3_xml.h"
#include "subprocess.h"

#define S3_CREDENTIALS_REFRESH_AHEAD 300 /* seconds before expiry */
#define S3_CREDENTIALS_ANSWER_MAX (64 * 1024)
#define S3_CREDENTIALS_TOKEN_FILE_MAX (64 * 1024)
#define S3_CREDENTIALS_PROCESS_TIMEOUT_MS 60000
#define S3_CREDENTIALS_IMDS_ENDPOINT "http://169.254.169.254"
#define S3_CREDENTIALS_IMDS_TIMEOUT 1L /* seconds, to connect and for each answer: hosts without IMDS wait no longer   \
										*/
#define S3_CREDENTIALS_IMDS_TOKEN_TTL "21600"
#define S3_CREDENTIALS_STS_CONNECT_TIMEOUT 10L
#define S3_CREDENTIALS_STS_TIMEOUT 30L

/* What a source found: 0 credentials in *out, 1 not configured here, -1 error (err set). */
#define S3_CREDENTIALS_FOUND 0
#define S3_CREDENTIALS_ABSENT 1

static void
s3_credentials_free_secret(char *s)
{
	if (s != NULL)
	{
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

void
s3_credentials_clear(s3_credentials *creds)
{
	s3_credentials_free_secret(creds->secret_key);
	s3_credentials_free_secret(creds->session_token);
	free(creds->access_key);
	*creds = (s3_credentials){0};
}

bool
s3_credentials_due(const s3_credentials *creds, time_t now)
{
	time_t ahead;

	if (creds->expiration == 0)
		return false;
	ahead = (creds->expiration - creds->obtained) / 2;
	if (ahead > S3_CREDENTIALS_REFRESH_AHEAD)
		ahead = S3_CREDENTIALS_REFRESH_AHEAD;
	return now >= creds->expiration - ahead;
}

static const char *
s3_credentials_env(const char *name)
{
	const char *value = getenv(name);

	return value != NULL && value[0] != '\0' ? value : NULL;
}

/* Fills *out with copies; the token and expiration are optional. */
static int
s3_credentials_set(s3_credentials *out, const char *access_key, const char *secret_key, const char *session_token,
				   time_t expiration, const char *source, tb_error *err)
{
	*out = (s3_credentials){.obtained = time(NULL), .expiration = expiration};
	snprintf(out->source, sizeof(out->source), "%s", source);
	if ((out->access_key = strdup(access_key)) == NULL || (out->secret_key = strdup(secret_key)) == NULL ||
		(session_token != NULL && session_token[0] != '\0' && (out->session_token = strdup(session_token)) == NULL))
	{
		s3_credentials_clear(out);
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory reading S3 credentials from %s", source);
	}
	return S3_CREDENTIALS_FOUND;
}

/* Keys in an HTTP header must be printable ASCII: anything else is refused before it is sent. */
static bool
s3_credentials_printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char) *s <= 0x20 || (unsigned char) *s >= 0x7f)
			return false;
	return true;
}

static int
s3_credentials_check(s3_credentials *out, tb_error *err)
{
	if (s3_credentials_printable(out->access_key) && s3_credentials_printable(out->secret_key) &&
		(out->session_token == NULL || s3_credentials_printable(out->session_token)))
		return S3_CREDENTIALS_FOUND;
	tb_error_set(err, TB_ERR_INVALID,
				 "S3 credentials from %s contain blanks or control characters: check what it returns", out->source);
	s3_credentials_clear(out);
	return -1;
}

/* ---- the environment ---- */

static int
s3_credentials_from_env(s3_credentials *out, tb_error *err)
{
	const char *access_key = s3_credentials_env("AWS_ACCESS_KEY_ID");
	const char *secret_key = s3_credentials_env("AWS_SECRET_ACCESS_KEY");

	if (access_key == NULL || secret_key == NULL)
		return S3_CREDENTIALS_ABSENT;
	return s3_credentials_set(out, access_key, secret_key, getenv("AWS_SESSION_TOKEN"), 0,
							  "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)", err);
}

/* ---- time ---- */

bool
s3_credentials_parse_time(const char *text, time_t *out)
{
	struct tm tm = {0};
	const char *rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);

	if (rest == NULL)
		return false;
	if (*rest == '.')
		for (rest++; isdigit((unsigned char) *rest); rest++)
			;
	if (strcmp(rest, "Z") != 0 && strcmp(rest, "+00:00") != 0)
		return false;
	*out = timegm(&tm);
	return *out > 0;
}

/* ---- credential_process ---- */

/* The string member name of doc, or NULL if absent or not a string. */
static const char *
s3_credentials_json_string(json_t *doc, const char *name)
{
	json_t *value = json_object_get(doc, name);

	return json_is_string(value) ? json_string_value(value) : NULL;
}

int
s3_credentials_parse_process_output(const char *json, size_t len, s3_credentials *out, tb_error *err)
{
	json_t *doc = json_loadb(json, len, 0, NULL);
	json_t *version = json_object_get(doc, "Version");
	const char *access_key = s3_credentials_json_string(doc, "AccessKeyId");
	const char *secret_key = s3_credentials_json_string(doc, "SecretAccessKey");
	const char *session_token = s3_credentials_json_string(doc, "SessionToken");
	const char *expiration_text = s3_credentials_json_string(doc, "Expiration");
	time_t expiration = 0;
	int rc;

	if (!json_is_object(doc))
		rc = tb_error_set(err, TB_ERR_INVALID, "credential_process printed something that is not a JSON object");
	else if (!json_is_integer(version) || json_integer_value(version) != 1)
		rc = tb_error_set(err, TB_ERR_INVALID, "credential_process output has no \"Version\": 1");
	else if (access_key == NULL || access_key[0] == '\0' || secret_key == NULL || secret_key[0] == '\0')
		rc = tb_error_set(err, TB_ERR_INVALID, "credential_process output lacks AccessKeyId or SecretAccessKey");
	else if (expiration_text != NULL && !s3_credentials_parse_time(expiration_text, &expiration))
		rc = tb_error_set(err, TB_ERR_INVALID,
						  "credential_process output has an Expiration that is not an ISO 8601 UTC time such as "
						  "2026-12-01T21:15:57Z");
	else if ((rc = s3_credentials_set(out, access_key, secret_key, session_token, expiration, "credential_process",
									  err)) == 0)
		rc = s3_credentials_check(out, err);
	json_decref(doc);
	return rc;
}

/*
 * Runs argv (stdin /dev/null, stderr inherited) and collects at most
 * S3_CREDENTIALS_ANSWER_MAX bytes of its stdout within the timeout. 0 with *out
 * malloc'd, or -1 with err set.
 */
static int
s3_credentials_process_run(char **argv, const char *what, char **out, size_t *out_len, tb_error *err)
{
	subprocess_options opts = {.argv = (const char *const *) argv, .in = SUBPROCESS_DEVNULL, .out = SUBPROCESS_PIPE};
	char *buf = malloc(S3_CREDENTIALS_ANSWER_MAX + 1);
	size_t len = 0;
	bool too_long = false;
	subprocess sp;
	int ran, status;

	if (buf == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory running %s", what);
	if (subprocess_start(&sp, &opts, err) != 0)
	{
		free(buf);
		return tb_error_prefix(err, "unable to run %s: ", what);
	}
	ran = subprocess_communicate(&sp, NULL, 0, buf, S3_CREDENTIALS_ANSWER_MAX + 1, &len, &too_long,
								 S3_CREDENTIALS_PROCESS_TIMEOUT_MS);
	subprocess_end(&sp, SIGKILL);
	status = sp.status;
	if (ran != 0 || too_long || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
	{
		OPENSSL_cleanse(buf, S3_CREDENTIALS_ANSWER_MAX + 1);
		free(buf);
		if (ran == 1)
			return tb_error_set(err, TB_ERR_STORAGE_AUTH, "%s did not finish within %d s", what,
								S3_CREDENTIALS_PROCESS_TIMEOUT_MS / 1000);
		if (ran < 0)
			return tb_error_set(err, TB_ERR_STORAGE_AUTH, "unable to wait for %s: %s", what, strerror(errno));
		if (too_long)
			return tb_error_set(err, TB_ERR_STORAGE_AUTH, "%s printed more than %d bytes", what,
								S3_CREDENTIALS_ANSWER_MAX);
		if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
			return tb_error_set(err, TB_ERR_STORAGE_AUTH,
								"%s could not be started (exit status 127): check the program's path", what);
		return tb_error_set(err, TB_ERR_STORAGE_AUTH, "%s failed (%s %d): see its messages on standard error", what,
							WIFEXITED(status) ? "exit status" : "signal",
							WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
	}
	*out = buf;
	*out_len = len;
	return 0;
}

static int
s3_credentials_from_process(const char *command, const char *profile, const char *path, s3_credentials *out,
							tb_error *err)
{
	char what[sizeof(out->source)];
	char *output = NULL;
	size_t len = 0;
	char **argv;
	int rc;

	snprintf(what, sizeof(what), "credential_process of profile '%s' in %s", profile, path);
	/* As the AWS CLI splits it: its characters are the program's words, nothing is a shell's. */
	if ((argv = subprocess_words(command, what, false, err)) == NULL)
		return -1;
	rc = s3_credentials_process_run(argv, what, &output, &len, err);
	subprocess_words_free(argv);
	if (rc != 0)
		return -1;
	rc = s3_credentials_parse_process_output(output, len, out, err);
	OPENSSL_cleanse(output, len);
	free(output);
	if (rc != 0)
		return tb_error_prefix(err, "%s", what);
	snprintf(out->source, sizeof(out->source), "%s", what);
	return S3_CREDENTIALS_FOUND;
}

/* ---- shared credentials and config files ---- */

/* The settings of one profile that credentials come from. */
typedef struct s3_profile
{
	bool found; /* the profile's section is in the file */
	char *access_key;
	char *secret_key;
	char *session_token;
	char *credential_process;
} s3_profile;

static void
s3_profile_clear(s3_profile *p)
{
	free(p->access_key);
	s3_credentials_free_secret(p->secret_key);
	s3_credentials_free_secret(p->session_token);
	free(p->credential_process);
	*p = (s3_profile){0};
}

/* A path from the environment or under the home directory, "~/" expanded; malloc'd. */
static char *
s3_credentials_file_path(const char *env_name, const char *home_relative)
{
	const char *path = s3_credentials_env(env_name);
	const char *home = s3_credentials_env("HOME");
	char *out;

	if (home == NULL)
	{
		struct passwd *pw = getpwuid(getuid());

		home = pw != NULL ? pw->pw_dir : "/";
	}
	if (path != NULL && strncmp(path, "~/", 2) != 0)
		return strdup(path);
	if (asprintf(&out, "%s/%s", home, path != NULL ? path + 2 : home_relative) < 0)
		return NULL;
	return out;
}

/* s without the blanks around it, in place. */
static char *
s3_credentials_trim(char *s)
{
	char *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		*--end = '\0';
	return s;
}

/* Whether an INI section header names the profile: "[name]" in the credentials file, "[profile name]" in config. */
static bool
s3_credentials_section_matches(char *section, const char *profile, bool config_file)
{
	if (config_file && strncmp(section, "profile", 7) == 0 && (section[7] == ' ' || section[7] == '\t'))
		return strcmp(s3_credentials_trim(section + 8), profile) == 0;
	return strcmp(section, profile) == 0;
}

static int
s3_profile_set(s3_profile *p, const char *key, const char *value)
{
	static const struct
	{
		const char *name;
		size_t offset;
	} keys[] = {
		{"aws_access_key_id", offsetof(s3_profile, access_key)},
		{"aws_secret_access_key", offsetof(s3_profile, secret_key)},
		{"aws_session_token", offsetof(s3_profile, session_token)},
		{"credential_process", offsetof(s3_profile, credential_process)},
	};

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (strcasecmp(key, keys[i].name) == 0)
		{
			char **field = (char **) ((char *) p + keys[i].offset);

			s3_credentials_free_secret(*field);
			return (*field = strdup(value)) != NULL ? 0 : -1;
		}
	return 0;
}

/*
 * Reads profile's section of an INI file into *p. A missing file is no profile; an
 * unreadable or malformed one is an error naming the file and line, never its text.
 */
static int
s3_profile_read(const char *path, const char *profile, bool config_file, s3_profile *p, tb_error *err)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	bool in_profile = false;
	int lineno = 0;
	int rc = 0;

	*p = (s3_profile){0};
	if (f == NULL)
		return errno == ENOENT || errno == ENOTDIR
				   ? 0
				   : tb_error_set(err, TB_ERR_IO, "unable to read the AWS %s file %s: %s",
								  config_file ? "config" : "shared credentials", path, strerror(errno));
	while (rc == 0 && getline(&line, &cap, f) >= 0)
	{
		char *text = s3_credentials_trim(line);
		char *eq;

		lineno++;
		if (text[0] == '\0' || text[0] == '#' || text[0] == ';' || line[0] == ' ' || line[0] == '\t')
			continue; /* blank, comment, or a nested setting's continuation */
		if (text[0] == '[')
		{
			char *close = strchr(text, ']');

			if (close == NULL)
				rc = tb_error_set(err, TB_ERR_INVALID, "line %d of %s opens a [section] it does not close", lineno,
								  path);
			else
			{
				*close = '\0';
				in_profile = s3_credentials_section_matches(s3_credentials_trim(text + 1), profile, config_file);
				p->found |= in_profile;
			}
		}
		else if ((eq = strchr(text, '=')) == NULL)
			rc = tb_error_set(err, TB_ERR_INVALID, "line %d of %s is neither a [section] nor a key = value setting",
							  lineno, path);
		else if (in_profile)
		{
			*eq = '\0';
			if (s3_profile_set(p, s3_credentials_trim(text), s3_credentials_trim(eq + 1)) != 0)
				rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory reading %s", path);
		}
	}
	if (line != NULL)
		OPENSSL_cleanse(line, cap);
	free(line);
	fclose(f);
	if (rc != 0)
		s3_profile_clear(p);
	return rc;
}

/* Credentials of one profile's section: its keys, else its credential_process. */
static int
s3_credentials_from_profile(const s3_profile *p, const char *profile, const char *path, s3_credentials *out,
							tb_error *err)
{
	char source[sizeof(out->source)];

	if (p->access_key != NULL || p->secret_key != NULL)
	{
		if (p->access_key == NULL || p->access_key[0] == '\0' || p->secret_key == NULL || p->secret_key[0] == '\0')
			return tb_error_set(err, TB_ERR_INVALID,
								"profile '%s' in %s needs both aws_access_key_id and aws_secret_access_key", profile,
								path);
		snprintf(source, sizeof(source), "profile '%s' in %s", profile, path);
		if (s3_credentials_set(out, p->access_key, p->secret_key, p->session_token, 0, source, err) != 0)
			return -1;
		return s3_credentials_check(out, err);
	}
	if (p->credential_process != NULL)
		return s3_credentials_from_process(p->credential_process, profile, path, out, err);
	return S3_CREDENTIALS_ABSENT;
}

static int
s3_credentials_from_files(s3_credentials *out, tb_error *err)
{
	const char *chosen = s3_credentials_env("AWS_PROFILE");
	const char *profile = chosen ? chosen : "default";
	char *paths[2] = {s3_credentials_file_path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
					  s3_credentials_file_path("AWS_CONFIG_FILE", ".aws/config")};
	bool found = false;
	int rc = S3_CREDENTIALS_ABSENT;

	for (int i = 0; i < 2 && rc == S3_CREDENTIALS_ABSENT; i++)
	{
		s3_profile p;

		if (paths[i] == NULL)
			rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory reading S3 credentials");
		else if ((rc = s3_profile_read(paths[i], profile, i == 1, &p, err)) == 0)
		{
			found |= p.found;
			rc = s3_credentials_from_profile(&p, profile, paths[i], out, err);
			s3_profile_clear(&p);
		}
	}
	if (rc == S3_CREDENTIALS_ABSENT && chosen != NULL && !found)
		rc = tb_error_set(err, TB_ERR_INVALID, "AWS_PROFILE names profile '%s', which is in neither %s nor %s", profile,
						  paths[0] ? paths[0] : "the credentials file", paths[1] ? paths[1] : "the config file");
	free(paths[0]);
	free(paths[1]);
	return rc;
}

/* ---- HTTP for STS and IMDS ---- */

typedef struct s3_credentials_answer
{
	char data[S3_CREDENTIALS_ANSWER_MAX];
	size_t len;
	long status;
} s3_credentials_answer;

static size_t
s3_credentials_collect(char *src, size_t size, size_t nmemb, void *arg)
{
	s3_credentials_answer *answer = arg;
	size_t n = size * nmemb;

	if (n >= sizeof(answer->data) - answer->len)
		return 0;
	memcpy(answer->data + answer->len, src, n);
	answer->len += n;
	answer->data[answer->len] = '\0';
	return n;
}

/*
 * One HTTP request (body NULL: GET, else with method): CURLE_OK and *answer
 * filled once any answer arrived, whatever its status. The answer is wiped by the
 * caller.
 */
static CURLcode
s3_credentials_http(const char *method, const char *url, const char *header, const char *body, long connect_timeout,
					long timeout, bool direct, s3_credentials_answer *answer)
{
	CURL *curl = curl_easy_init();
	struct curl_slist *headers = NULL;
	CURLcode rc;

	answer->len = 0;
	answer->status = 0;
	answer->data[0] = '\0';
	if (curl == NULL || (header != NULL && (headers = curl_slist_append(NULL, header)) == NULL))
	{
		curl_easy_cleanup(curl);
		return CURLE_OUT_OF_MEMORY;
	}
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, connect_timeout);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s3_credentials_collect);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, answer);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	if (direct) /* the metadata service is link-local: never through a proxy */
		curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
	if (body != NULL)
	{
		curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	}
	rc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &answer->status);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	return rc;
}

static s3_credentials_answer *
s3_credentials_answer_new(void)
{
	return malloc(sizeof(s3_credentials_answer));
}

static void
s3_credentials_answer_free(s3_credentials_answer *answer)
{
	if (answer != NULL)
	{
		OPENSSL_cleanse(answer, sizeof(*answer));
		free(answer);
	}
}

/* ---- web identity (STS AssumeRoleWithWebIdentity) ---- */

/* The token file's content without surrounding blanks, malloc'd; NULL with err set. */
static char *
s3_credentials_read_token(const char *path, tb_error *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf = malloc(S3_CREDENTIALS_TOKEN_FILE_MAX + 1);
	size_t len = 0;
	ssize_t n = 0;
	char *token;

	if (fd < 0 || buf == NULL)
	{
		tb_error_set(err, fd < 0 ? TB_ERR_IO : TB_ERR_NOMEM,
					 "unable to read the web identity token file %s (AWS_WEB_IDENTITY_TOKEN_FILE): %s", path,
					 fd < 0 ? strerror(errno) : "out of memory");
		if (fd >= 0)
			close(fd);
		free(buf);
		return NULL;
	}
	while (len < S3_CREDENTIALS_TOKEN_FILE_MAX &&
		   ((n = read(fd, buf + len, S3_CREDENTIALS_TOKEN_FILE_MAX - len)) > 0 || (n < 0 && errno == EINTR)))
		if (n > 0)
			len += (size_t) n;
	close(fd);
	buf[len] = '\0';
	token = s3_credentials_trim(buf);
	if (n < 0 || len == S3_CREDENTIALS_TOKEN_FILE_MAX || token[0] == '\0')
	{
		tb_error_set(err, TB_ERR_INVALID, "the web identity token file %s (AWS_WEB_IDENTITY_TOKEN_FILE) is %s", path,
					 n < 0              ? "unreadable"
					 : token[0] == '\0' ? "empty"
										: "larger than 64 KiB");
		OPENSSL_cleanse(buf, len);
		free(buf);
		return NULL;
	}
	memmove(buf, token, strlen(token) + 1);
	return buf;
}

/* The STS endpoint: AWS_ENDPOINT_URL_STS, else the region's. malloc'd. */
static char *
s3_credentials_sts_endpoint(const char *region)
{
	const char *endpoint = s3_credentials_env("AWS_ENDPOINT_URL_STS");
	char *out;

	if (endpoint != NULL)
		return strdup(endpoint);
	return asprintf(&out, "https://sts.%s.amazonaws.com/", region) < 0 ? NULL : out;
}

static int
s3_credentials_from_web_identity(const char *region, s3_credentials *out, tb_error *err)
{
	const char *token_file = s3_credentials_env("AWS_WEB_IDENTITY_TOKEN_FILE");
	const char *role_arn = s3_credentials_env("AWS_ROLE_ARN");
	const char *session_name = s3_credentials_env("AWS_ROLE_SESSION_NAME");
	char default_session[64];
	char *token;
	char *endpoint = NULL;
	char *role_enc = NULL, *session_enc = NULL, *token_enc = NULL;
	char *body = NULL;
	s3_credentials_answer *answer = NULL;
	s3_xml_sts_credentials sts = {0};
	s3_xml_error sts_error;
	time_t expiration;
	CURLcode curl_rc;
	int rc = -1;

	if (token_file == NULL || role_arn == NULL)
		return S3_CREDENTIALS_ABSENT;
	if (session_name == NULL)
	{
		snprintf(default_session, sizeof(default_session), "tenant-backup-%ld", (long) time(NULL));
		session_name = default_session;
	}
	if ((token = s3_credentials_read_token(token_file, err)) == NULL)
		return -1;
	if ((endpoint = s3_credentials_sts_endpoint(region)) == NULL ||
		(role_enc = curl_easy_escape(NULL, role_arn, 0)) == NULL ||
		(session_enc = curl_easy_escape(NULL, session_name, 0)) == NULL ||
		(token_enc = curl_easy_escape(NULL, token, 0)) == NULL ||
		asprintf(&body,
				 "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=%s&RoleSessionName=%s"
				 "&WebIdentityToken=%s",
				 role_enc, session_enc, token_enc) < 0 ||
		(answer = s3_credentials_answer_new()) == NULL)
	{
		body = NULL;
		tb_error_set(err, TB_ERR_NOMEM, "out of memory asking STS for web identity credentials");
		goto done;
	}
	curl_rc = s3_credentials_http("POST", endpoint, "Content-Type: application/x-www-form-urlencoded", body,
								  S3_CREDENTIALS_STS_CONNECT_TIMEOUT, S3_CREDENTIALS_STS_TIMEOUT, false, answer);
	if (curl_rc != CURLE_OK)
		tb_error_set(err, TB_ERR_STORAGE_AUTH,
					 "STS AssumeRoleWithWebIdentity for role %s at %s failed: %s (AWS_ENDPOINT_URL_STS overrides "
					 "the endpoint)",
					 role_arn, endpoint, curl_easy_strerror(curl_rc));
	else if (!s3_xml_parse_sts_credentials(answer->data, answer->len, &sts, &sts_error))
		tb_error_set(err, TB_ERR_STORAGE_AUTH,
					 "STS refused AssumeRoleWithWebIdentity for role %s (HTTP %ld%s%s): check AWS_ROLE_ARN, the "
					 "token in AWS_WEB_IDENTITY_TOKEN_FILE and the role's trust policy",
					 role_arn, answer->status, sts_error.code[0] ? ", " : "", sts_error.code);
	else if (!s3_credentials_parse_time(sts.expiration, &expiration))
		tb_error_set(err, TB_ERR_STORAGE_AUTH,
					 "STS answered AssumeRoleWithWebIdentity for role %s with an unreadable "
					 "Expiration",
					 role_arn);
	else if (s3_credentials_set(out, sts.access_key, sts.secret_key, sts.session_token, expiration,
								"web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)", err) == 0)
		rc = s3_credentials_check(out, err);

done:
	s3_credentials_free_secret(token);
	if (token_enc != NULL)
	{
		OPENSSL_cleanse(token_enc, strlen(token_enc));
		curl_free(token_enc);
	}
	s3_credentials_free_secret(body);
	curl_free(role_enc);
	curl_free(session_enc);
	free(endpoint);
	s3_credentials_answer_free(answer);
	free(sts.access_key);
	s3_credentials_free_secret(sts.secret_key);
	s3_credentials_free_secret(sts.session_token);
	free(sts.expiration);
	return rc;
}

/* ---- EC2 instance metadata (IMDSv2) ---- */

/* An IAM role name as IAM allows them: it goes into a URL path. */
static bool
s3_credentials_role_name_valid(const char *name)
{
	size_t len = strlen(name);

	return len > 0 && len <= 64 &&
		   strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+=,.@_-") == len;
}

/* Credentials from the role JSON the metadata service returned. */
static int
s3_credentials_parse_imds(const s3_credentials_answer *answer, const char *role, s3_credentials *out, tb_error *err)
{
	json_t *doc = json_loadb(answer->data, answer->len, 0, NULL);
	const char *code = s3_credentials_json_string(doc, "Code");
	const char *access_key = s3_credentials_json_string(doc, "AccessKeyId");
	const char *secret_key = s3_credentials_json_string(doc, "SecretAccessKey");
	const char *token = s3_credentials_json_string(doc, "Token");
	const char *expiration_text = s3_credentials_json_string(doc, "Expiration");
	time_t expiration = 0;
	int rc;

	if (code == NULL || strcmp(code, "Success") != 0 || access_key == NULL || secret_key == NULL || token == NULL ||
		expiration_text == NULL || !s3_credentials_parse_time(expiration_text, &expiration))
		rc = tb_error_set(err, TB_ERR_STORAGE_AUTH,
						  "the EC2 instance metadata service gave no usable credentials for role '%s' (no Code "
						  "\"Success\", a key, token or Expiration missing)",
						  role);
	else if ((rc = s3_credentials_set(out, access_key, secret_key, token, expiration,
									  "the EC2 instance metadata service", err)) == 0)
		rc = s3_credentials_check(out, err);
	json_decref(doc);
	return rc;
}

static int
s3_credentials_from_imds(s3_credentials *out, tb_error *err)
{
	const char *disabled = s3_credentials_env("AWS_EC2_METADATA_DISABLED");
	const char *configured = s3_credentials_env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	const char *endpoint = configured ? configured : S3_CREDENTIALS_IMDS_ENDPOINT;
	size_t endpoint_len = strlen(endpoint);
	s3_credentials_answer *answer;
	char *token_header = NULL;
	char *url = NULL;
	char role[128];
	CURLcode curl_rc;
	int rc = S3_CREDENTIALS_ABSENT;

	if (disabled != NULL && strcasecmp(disabled, "true") == 0)
		return S3_CREDENTIALS_ABSENT;
	while (endpoint_len > 0 && endpoint[endpoint_len - 1] == '/')
		endpoint_len--;
	if ((answer = s3_credentials_answer_new()) == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory asking the EC2 instance metadata service");
	/* IMDSv2: a session token first; no answer means no metadata service here */
	if (asprintf(&url, "%.*s/latest/api/token", (int) endpoint_len, endpoint) < 0)
		url = NULL;
	curl_rc =
		url ? s3_credentials_http("PUT", url, "X-aws-ec2-metadata-token-ttl-seconds: " S3_CREDENTIALS_IMDS_TOKEN_TTL,
								  "", S3_CREDENTIALS_IMDS_TIMEOUT, S3_CREDENTIALS_IMDS_TIMEOUT, true, answer)
			: CURLE_OUT_OF_MEMORY;
	free(url);
	url = NULL;
	if (curl_rc != CURLE_OK || answer->status != 200 || !s3_credentials_printable(answer->data) ||
		asprintf(&token_header, "X-aws-ec2-metadata-token: %s", answer->data) < 0)
	{
		token_header = NULL;
		goto done;
	}
	/* the role attached to the instance; none (404) means no credentials here */
	if (asprintf(&url, "%.*s/latest/meta-data/iam/security-credentials/", (int) endpoint_len, endpoint) < 0 ||
		s3_credentials_http("GET", url, token_header, NULL, S3_CREDENTIALS_IMDS_TIMEOUT, S3_CREDENTIALS_IMDS_TIMEOUT,
							true, answer) != CURLE_OK ||
		answer->status != 200)
		goto done;
	answer->data[strcspn(answer->data, "\r\n")] = '\0';
	if (!s3_credentials_role_name_valid(answer->data))
	{
		rc = tb_error_set(err, TB_ERR_STORAGE_AUTH, "the EC2 instance metadata service at %.*s named no valid IAM role",
						  (int) endpoint_len, endpoint);
		goto done;
	}
	snprintf(role, sizeof(role), "%.*s", (int) sizeof(role) - 1, answer->data);
	free(url);
	if (asprintf(&url, "%.*s/latest/meta-data/iam/security-credentials/%s", (int) endpoint_len, endpoint, role) < 0)
	{
		url = NULL;
		rc = tb_error_set(err, TB_ERR_NOMEM, "out of memory asking the EC2 instance metadata service");
	}
	else if (s3_credentials_http("GET", url, token_header, NULL, S3_CREDENTIALS_IMDS_TIMEOUT,
								 S3_CREDENTIALS_IMDS_TIMEOUT, true, answer) != CURLE_OK ||
			 answer->status != 200)
		rc = tb_error_set(err, TB_ERR_STORAGE_AUTH,
						  "the EC2 instance metadata service at %.*s did not return the credentials of role '%s' "
						  "(HTTP %ld)",
						  (int) endpoint_len, endpoint, role, answer->status);
	else
		rc = s3_credentials_parse_imds(answer, role, out, err);

done:
	s3_credentials_free_secret(token_header);
	free(url);
	s3_credentials_answer_free(answer);
	return rc;
}

int
s3_credentials_resolve(s3_credentials *out, const char *region, tb_error *err)
{
	int rc;

	*out = (s3_credentials){0};
	if ((rc = s3_credentials_from_env(out, err)) != S3_CREDENTIALS_ABSENT ||
		(rc = s3_credentials_from_files(out, err)) != S3_CREDENTIALS_ABSENT ||
		(rc = s3_credentials_from_web_identity(region, out, err)) != S3_CREDENTIALS_ABSENT ||
		(rc = s3_credentials_from_imds(out, err)) != S3_CREDENTIALS_ABSENT)
		return rc;
	return tb_error_set(err, TB_ERR_INVALID,
						"S3 credentials are missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
						"AWS_SESSION_TOKEN for temporary credentials), a profile in ~/.aws/credentials or "
						"~/.aws/config (AWS_PROFILE; keys or credential_process), AWS_WEB_IDENTITY_TOKEN_FILE with "
						"AWS_ROLE_ARN, or run on an EC2 instance with a role (the instance metadata service)");
}
