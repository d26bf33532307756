/* Master and tenant keys: generation, loading, wrapping and unwrapping (see keys.h). */
#include "keys.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "names.h"

#define KEYS_FORMAT "tenant-backup-tenant-key"
#define KEYS_WRAP_AAD "tenant-backup tenant key v1"
#define KEYS_MASTER_FILE_MAX 256

static void
keys_master_derive_id(master_key *key)
{
	static const char label[] = "tenant-backup master key id v1";
	uint8_t buf[sizeof(label) + CRYPTO_KEY_LEN];
	uint8_t digest[CRYPTO_SHA256_LEN];

	memcpy(buf, label, sizeof(label));
	memcpy(buf + sizeof(label), key->key, CRYPTO_KEY_LEN);
	crypto_sha256_once(buf, sizeof(buf), digest);
	crypto_wipe(buf, sizeof(buf));
	crypto_hex_encode(digest, KEYS_ID_LEN / 2, key->id);
}

int
keys_master_generate(const char *path, tb_error *err)
{
	uint8_t key[CRYPTO_KEY_LEN];
	char hex[2 * CRYPTO_KEY_LEN + 2];
	int fd;
	ssize_t n;

	if (crypto_random(key, sizeof(key), err) != 0)
		return -1;
	crypto_hex_encode(key, sizeof(key), hex);
	crypto_wipe(key, sizeof(key));
	strcat(hex, "\n");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
	{
		crypto_wipe(hex, sizeof(hex));
		return tb_error_set(err, errno == EEXIST ? TB_ERR_EXISTS : TB_ERR_IO,
							"unable to create master key file '%s': %s%s", path, strerror(errno),
							errno == EEXIST ? " (refusing to overwrite an existing key)" : "");
	}
	n = write(fd, hex, strlen(hex));
	crypto_wipe(hex, sizeof(hex));
	if (n != 2 * CRYPTO_KEY_LEN + 1 || fsync(fd) != 0)
	{
		tb_error_set(err, TB_ERR_IO, "unable to write master key file '%s': %s", path, strerror(errno));
		close(fd);
		unlink(path);
		return -1;
	}
	if (close(fd) != 0)
		return tb_error_set(err, TB_ERR_IO, "unable to close master key file '%s': %s", path, strerror(errno));
	return 0;
}

int
keys_master_from_hex(const char *hex, master_key *out, tb_error *err)
{
	char trimmed[2 * CRYPTO_KEY_LEN + 1];
	size_t len = strlen(hex);

	while (len > 0 && (hex[len - 1] == '\n' || hex[len - 1] == '\r' || hex[len - 1] == ' '))
		len--;
	if (len != 2 * CRYPTO_KEY_LEN)
		return tb_error_set(err, TB_ERR_KEY, "master key must be %d hex digits (got %zu characters)",
							2 * CRYPTO_KEY_LEN, len);
	memcpy(trimmed, hex, len);
	trimmed[len] = '\0';
	if (crypto_hex_decode(trimmed, out->key, CRYPTO_KEY_LEN) != 0)
	{
		crypto_wipe(trimmed, sizeof(trimmed));
		return tb_error_set(err, TB_ERR_KEY, "master key must be %d hex digits", 2 * CRYPTO_KEY_LEN);
	}
	crypto_wipe(trimmed, sizeof(trimmed));
	keys_master_derive_id(out);
	return 0;
}

int
keys_master_load(const char *path, master_key *out, tb_error *err)
{
	char buf[KEYS_MASTER_FILE_MAX + 1];
	struct stat sb;
	ssize_t n;
	int fd;
	int rc;

	if (path == NULL || path[0] == '\0')
		return tb_error_set(err, TB_ERR_INVALID,
							"no master key given (use --master-key FILE or TENANT_BACKUP_MASTER_KEY_FILE)");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tb_error_set(err, errno == ENOENT ? TB_ERR_NOT_FOUND : TB_ERR_IO,
							"unable to open master key file '%s': %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
	{
		close(fd);
		return tb_error_set(err, TB_ERR_INVALID, "master key file '%s' is not a regular file", path);
	}
	if (sb.st_mode & (S_IRWXG | S_IRWXO))
	{
		close(fd);
		return tb_error_set(err, TB_ERR_INVALID,
							"master key file '%s' is accessible by group or others (mode %04o): chmod 600 it", path,
							(unsigned) (sb.st_mode & 07777));
	}
	n = read(fd, buf, KEYS_MASTER_FILE_MAX);
	close(fd);
	if (n < 0)
		return tb_error_set(err, TB_ERR_IO, "unable to read master key file '%s': %s", path, strerror(errno));
	buf[n] = '\0';
	rc = keys_master_from_hex(buf, out, err);
	crypto_wipe(buf, sizeof(buf));
	if (rc != 0)
		return tb_error_prefix(err, "invalid master key file '%s'", path);
	return 0;
}

int
keys_tenant_generate(const char *tenant, tenant_key *out, tb_error *err)
{
	uint8_t rnd[4];
	uint32_t now = (uint32_t) time(NULL);

	if (names_check_tenant(tenant, err) != 0)
		return -1;
	memset(out, 0, sizeof(*out));
	strcpy(out->tenant, tenant);
	if (crypto_random(out->key, sizeof(out->key), err) != 0 || crypto_random(rnd, sizeof(rnd), err) != 0)
		return -1;
	snprintf(out->id, sizeof(out->id), "%08x%02x%02x%02x%02x", now, rnd[0], rnd[1], rnd[2], rnd[3]);
	return 0;
}

/* AAD binding a wrapped tenant key to its tenant and id, so documents cannot be swapped. */
static size_t
keys_wrap_aad(const char *tenant, const char *key_id, char *aad, size_t size)
{
	return (size_t) snprintf(aad, size, "%s|%s|%s", KEYS_WRAP_AAD, tenant, key_id);
}

char *
keys_tenant_wrap(const master_key *master, const tenant_key *key, tb_error *err)
{
	uint8_t nonce[CRYPTO_NONCE_LEN];
	uint8_t sealed[CRYPTO_KEY_LEN + CRYPTO_TAG_LEN];
	char nonce_hex[2 * CRYPTO_NONCE_LEN + 1];
	char sealed_hex[2 * sizeof(sealed) + 1];
	char aad[256];
	char created[32];
	time_t now = time(NULL);
	struct tm tm;
	size_t aad_len;
	crypto_gcm *gcm;
	json_t *doc;
	char *text;

	if (crypto_random(nonce, sizeof(nonce), err) != 0)
		return NULL;
	gcm = crypto_gcm_new(master->key, err);
	if (gcm == NULL)
		return NULL;
	aad_len = keys_wrap_aad(key->tenant, key->id, aad, sizeof(aad));
	if (crypto_gcm_seal(gcm, nonce, aad, aad_len, key->key, CRYPTO_KEY_LEN, sealed, sealed + CRYPTO_KEY_LEN, err) != 0)
	{
		crypto_gcm_free(gcm);
		return NULL;
	}
	crypto_gcm_free(gcm);
	crypto_hex_encode(nonce, sizeof(nonce), nonce_hex);
	crypto_hex_encode(sealed, sizeof(sealed), sealed_hex);
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	doc = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "format", KEYS_FORMAT, "version", 1, "tenant",
					key->tenant, "key_id", key->id, "created", created, "master_key_id", master->id, "wrap",
					"aes-256-gcm", "nonce", nonce_hex, "wrapped_key", sealed_hex);
	text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(doc);
	if (text == NULL)
		tb_error_set(err, TB_ERR_NOMEM, "out of memory wrapping key %s of tenant '%s'", key->id, key->tenant);
	return text;
}

/* The check value of a command-wrapped key: names the key, tenant and id without revealing the key. */
static void
keys_check_value(const tenant_key *key, char out[2 * 16 + 1])
{
	uint8_t buf[256 + CRYPTO_KEY_LEN];
	uint8_t digest[CRYPTO_SHA256_LEN];
	int len = snprintf((char *) buf, 256, "tenant-backup key check v1|%s|%s|", key->tenant, key->id);

	memcpy(buf + len, key->key, CRYPTO_KEY_LEN);
	crypto_sha256_once(buf, (size_t) len + CRYPTO_KEY_LEN, digest);
	crypto_wipe(buf, sizeof(buf));
	crypto_hex_encode(digest, 16, out);
}

/* Opens a command-wrapped key: runs the command, checks what it returned against the check value. */
static int
keys_unwrap_command(const master_key *master, const char *wrapped, const char *check, tenant_key *out, tb_error *err)
{
	char hex[KEYS_COMMAND_OUTPUT_MAX + 1];
	char computed[2 * 16 + 1];

	if (master->key_command == NULL)
		return tb_error_set(err, TB_ERR_KEY,
							"tenant key %s of tenant '%s' is wrapped by the tenant's own key command, which is not "
							"known here (the CLI takes it as --key-command or TENANT_BACKUP_KEY_COMMAND)",
							out->id, out->tenant);
	if (keys_command_run(master->key_command, "unwrap", out->tenant, out->id, wrapped, hex, sizeof(hex), err) != 0)
		return -1;
	if (strlen(hex) != 2 * CRYPTO_KEY_LEN || crypto_hex_decode(hex, out->key, CRYPTO_KEY_LEN) != 0)
	{
		crypto_wipe(hex, sizeof(hex));
		return tb_error_set(err, TB_ERR_KEY,
							"the key command of tenant '%s' did not print 64 hex digits unwrapping key %s", out->tenant,
							out->id);
	}
	crypto_wipe(hex, sizeof(hex));
	keys_check_value(out, computed);
	if (strcmp(computed, check) != 0)
		return tb_error_set(err, TB_ERR_KEY, "the key command of tenant '%s' returned another key than key %s",
							out->tenant, out->id);
	return 0;
}

char *
keys_tenant_wrap_command(const char *command, const tenant_key *key, tb_error *err)
{
	char hex[2 * CRYPTO_KEY_LEN + 2];
	char *wrapped = malloc(KEYS_COMMAND_OUTPUT_MAX + 1);
	char check[2 * 16 + 1];
	char created[32];
	time_t now = time(NULL);
	struct tm tm;
	json_t *doc = NULL;
	char *text = NULL;
	tenant_key back;
	master_key opener = {.key_command = command};
	int rc;

	if (wrapped == NULL)
	{
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		return NULL;
	}
	crypto_hex_encode(key->key, CRYPTO_KEY_LEN, hex);
	strcat(hex, "\n");
	rc = keys_command_run(command, "wrap", key->tenant, key->id, hex, wrapped, KEYS_COMMAND_OUTPUT_MAX + 1, err);
	crypto_wipe(hex, sizeof(hex));
	if (rc != 0)
		goto done;
	for (const char *c = wrapped; *c; c++)
		if (*c < 0x20 || *c > 0x7e)
		{
			tb_error_set(err, TB_ERR_KEY,
						 "the key command of tenant '%s' printed more than one line of printable "
						 "ASCII wrapping key %s",
						 key->tenant, key->id);
			goto done;
		}
	if (wrapped[0] == '\0')
	{
		tb_error_set(err, TB_ERR_KEY, "the key command of tenant '%s' printed nothing wrapping key %s", key->tenant,
					 key->id);
		goto done;
	}
	keys_check_value(key, check);
	/* What cannot be unwrapped now would make every backup under it unreadable. */
	memset(&back, 0, sizeof(back));
	strcpy(back.tenant, key->tenant);
	strcpy(back.id, key->id);
	rc = keys_unwrap_command(&opener, wrapped, check, &back, err);
	keys_tenant_wipe(&back);
	if (rc != 0)
	{
		tb_error_prefix(err, "checking the key command of tenant '%s'", key->tenant);
		goto done;
	}
	gmtime_r(&now, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	doc = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s}", "format", KEYS_FORMAT, "version", 1, "tenant",
					key->tenant, "key_id", key->id, "created", created, "wrap", "command", "wrapped_key", wrapped,
					"check", check);
	text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (text == NULL)
		tb_error_set(err, TB_ERR_NOMEM, "out of memory wrapping key %s of tenant '%s'", key->id, key->tenant);
done:
	json_decref(doc);
	free(wrapped);
	return text;
}

int
keys_doc_is_command_wrapped(const char *json)
{
	json_t *doc = json_loads(json, 0, NULL);
	const char *wrap = doc ? json_string_value(json_object_get(doc, "wrap")) : NULL;
	int rc = wrap == NULL ? -1 : strcmp(wrap, "command") == 0;

	json_decref(doc);
	return rc;
}

int
keys_tenant_unwrap(const master_key *master, const char *json, const char *tenant, const char *key_id, tenant_key *out,
				   tb_error *err)
{
	const char *format = NULL, *doc_tenant = NULL, *doc_id = NULL, *master_id = NULL, *wrap = NULL, *nonce_hex = NULL,
			   *sealed_hex = NULL, *check = NULL;
	uint8_t nonce[CRYPTO_NONCE_LEN];
	uint8_t sealed[CRYPTO_KEY_LEN + CRYPTO_TAG_LEN];
	int version = 0;
	char aad[256];
	size_t aad_len;
	crypto_gcm *gcm;
	json_error_t jerr;
	json_t *doc = json_loads(json, 0, &jerr);
	bool by_command;
	int ok;

	if (doc == NULL ||
		json_unpack(doc, "{s:s, s:i, s:s, s:s, s:s, s:s}", "format", &format, "version", &version, "tenant",
					&doc_tenant, "key_id", &doc_id, "wrap", &wrap, "wrapped_key", &sealed_hex) != 0 ||
		strcmp(format, KEYS_FORMAT) != 0 || version != 1 || strlen(doc_id) != KEYS_ID_LEN ||
		strlen(doc_tenant) >= sizeof(out->tenant))
		goto invalid;
	by_command = strcmp(wrap, "command") == 0;
	if (by_command ? json_unpack(doc, "{s:s}", "check", &check) != 0 || strlen(check) != 32
				   : strcmp(wrap, "aes-256-gcm") != 0 ||
						 json_unpack(doc, "{s:s, s:s}", "master_key_id", &master_id, "nonce", &nonce_hex) != 0 ||
						 crypto_hex_decode(nonce_hex, nonce, sizeof(nonce)) != 0 ||
						 crypto_hex_decode(sealed_hex, sealed, sizeof(sealed)) != 0)
		goto invalid;
	if (strcmp(doc_tenant, tenant) != 0 || (key_id != NULL && strcmp(doc_id, key_id) != 0))
	{
		tb_error_set(err, TB_ERR_CORRUPT, "key document for tenant '%s' key %s names tenant '%s' key %s instead",
					 tenant, key_id ? key_id : "(current)", doc_tenant, doc_id);
		json_decref(doc);
		return -1;
	}
	memset(out, 0, sizeof(*out));
	strcpy(out->tenant, doc_tenant);
	strcpy(out->id, doc_id);
	if (by_command)
	{
		ok = keys_unwrap_command(master, sealed_hex, check, out, err);
		json_decref(doc);
		if (ok != 0)
			keys_tenant_wipe(out);
		return ok;
	}
	if (strcmp(master_id, master->id) != 0)
	{
		tb_error_set(err, TB_ERR_KEY,
					 "tenant key %s of tenant '%s' is wrapped by master key %s, but the master key given is %s", doc_id,
					 tenant, master_id, master->id);
		json_decref(doc);
		return -1;
	}
	json_decref(doc);
	aad_len = keys_wrap_aad(out->tenant, out->id, aad, sizeof(aad));
	gcm = crypto_gcm_new(master->key, err);
	if (gcm == NULL)
		return -1;
	ok = crypto_gcm_open(gcm, nonce, aad, aad_len, sealed, CRYPTO_KEY_LEN, out->key, sealed + CRYPTO_KEY_LEN, err);
	crypto_gcm_free(gcm);
	if (ok != 1)
	{
		keys_tenant_wipe(out);
		if (ok == 0)
			tb_error_set(err, TB_ERR_KEY,
						 "unable to unwrap tenant key %s of tenant '%s' with master key %s: wrong master key or "
						 "tampered key document",
						 key_id ? key_id : "(current)", tenant, master->id);
		return -1;
	}
	return 0;

invalid:
	json_decref(doc);
	return tb_error_set(err, TB_ERR_CORRUPT, "tenant key %s of tenant '%s' is not a valid key document",
						key_id ? key_id : "(current)", tenant);
}

#define KEYS_SECRET_PREFIX "tbs1"
#define KEYS_SECRET_MAX 4096

char *
keys_secret_seal(const master_key *master, const char *context, const char *secret, tb_error *err)
{
	size_t len = strlen(secret);
	uint8_t nonce[CRYPTO_NONCE_LEN];
	uint8_t *sealed;
	char *hex, *out = NULL;
	crypto_gcm *gcm;

	if (len > KEYS_SECRET_MAX)
	{
		tb_error_set(err, TB_ERR_INVALID, "%s is longer than %d bytes", context, KEYS_SECRET_MAX);
		return NULL;
	}
	if (crypto_random(nonce, sizeof(nonce), err) != 0 || (gcm = crypto_gcm_new(master->key, err)) == NULL)
		return NULL;
	sealed = malloc(len + CRYPTO_TAG_LEN);
	hex = malloc(2 * (len + CRYPTO_TAG_LEN) + 1);
	if (sealed == NULL || hex == NULL)
		tb_error_set(err, TB_ERR_NOMEM, "out of memory");
	else if (crypto_gcm_seal(gcm, nonce, context, strlen(context), secret, len, sealed, sealed + len, err) == 0)
	{
		char nonce_hex[2 * CRYPTO_NONCE_LEN + 1];

		crypto_hex_encode(nonce, sizeof(nonce), nonce_hex);
		crypto_hex_encode(sealed, len + CRYPTO_TAG_LEN, hex);
		if (asprintf(&out, "%s:%s:%s:%s", KEYS_SECRET_PREFIX, master->id, nonce_hex, hex) < 0)
		{
			out = NULL;
			tb_error_set(err, TB_ERR_NOMEM, "out of memory");
		}
	}
	crypto_gcm_free(gcm);
	free(sealed);
	free(hex);
	return out;
}

int
keys_secret_open(const master_key *master, const char *context, const char *sealed, char **secret, tb_error *err)
{
	char prefix[8], master_id[KEYS_ID_LEN + 1], nonce_hex[2 * CRYPTO_NONCE_LEN + 1];
	uint8_t nonce[CRYPTO_NONCE_LEN];
	const char *body;
	size_t body_len, len;
	uint8_t *bytes;
	crypto_gcm *gcm;
	int ok;

	if (sscanf(sealed, "%4[^:]:%16[0-9a-f]:%24[0-9a-f]:", prefix, master_id, nonce_hex) != 3 ||
		strcmp(prefix, KEYS_SECRET_PREFIX) != 0 || crypto_hex_decode(nonce_hex, nonce, sizeof(nonce)) != 0 ||
		(body = strrchr(sealed, ':')) == NULL)
		return tb_error_set(err, TB_ERR_CORRUPT, "sealed %s is malformed", context);
	if (strcmp(master_id, master->id) != 0)
		return tb_error_set(err, TB_ERR_KEY, "%s was sealed with master key %s, but the master key given is %s",
							context, master_id, master->id);
	body++;
	body_len = strlen(body);
	if (body_len % 2 != 0 || body_len / 2 < CRYPTO_TAG_LEN || body_len / 2 > KEYS_SECRET_MAX + CRYPTO_TAG_LEN)
		return tb_error_set(err, TB_ERR_CORRUPT, "sealed %s is malformed", context);
	len = body_len / 2 - CRYPTO_TAG_LEN;
	bytes = malloc(body_len / 2);
	*secret = malloc(len + 1);
	if (bytes == NULL || *secret == NULL || crypto_hex_decode(body, bytes, body_len / 2) != 0 ||
		(gcm = crypto_gcm_new(master->key, err)) == NULL)
	{
		free(bytes);
		free(*secret);
		*secret = NULL;
		return tb_error_set(err, TB_ERR_CORRUPT, "sealed %s is malformed", context);
	}
	ok = crypto_gcm_open(gcm, nonce, context, strlen(context), bytes, len, *secret, bytes + len, err);
	crypto_gcm_free(gcm);
	free(bytes);
	if (ok != 1)
	{
		crypto_wipe(*secret, len);
		free(*secret);
		*secret = NULL;
		return ok < 0
				   ? -1
				   : tb_error_set(err, TB_ERR_KEY, "sealed %s does not open with master key %s", context, master->id);
	}
	(*secret)[len] = '\0';
	return 0;
}

void
keys_master_wipe(master_key *key)
{
	crypto_wipe(key, sizeof(*key));
}

void
keys_tenant_wipe(tenant_key *key)
{
	crypto_wipe(key, sizeof(*key));
}
