/*
 * <tenant>/keys/active.json: which tenant key new backups use, as the control plane's
 * catalog committed it. It is sealed with the master key (the tenant and key id are
 * the sealed secret), so storage cannot forge it or point it at another tenant's key.
 */
#include "repo.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"

#define REPO_ACTIVE_CONTEXT "active tenant key"
#define REPO_ACTIVE_MAX 4096

int
repo_active_key_object(const char *tenant, char *out, size_t size, tb_error *err)
{
	if (names_check_tenant(tenant, err) != 0)
		return -1;
	if (snprintf(out, size, "%s/keys/active.json", tenant) >= (int) size)
		return tb_error_set(err, TB_ERR_INVALID, "the active key object name of tenant '%s' is too long", tenant);
	return 0;
}

int
repo_active_key_put(storage *st, const master_key *master, const char *tenant, const char *key_id, tb_error *err)
{
	char object[128], secret[128];
	char *sealed, *text;
	json_t *doc;
	int rc;

	if (repo_active_key_object(tenant, object, sizeof(object), err) != 0)
		return -1;
	if (strlen(key_id) != KEYS_ID_LEN || strspn(key_id, "0123456789abcdef") != KEYS_ID_LEN)
		return tb_error_set(err, TB_ERR_INVALID, "invalid key id '%s' for tenant '%s'", key_id, tenant);
	snprintf(secret, sizeof(secret), "%s/%s", tenant, key_id);
	if ((sealed = keys_secret_seal(master, REPO_ACTIVE_CONTEXT, secret, err)) == NULL)
		return tb_error_prefix(err, "unable to seal the active key of tenant '%s'", tenant);
	doc = json_pack("{s:s, s:s, s:s}", "tenant", tenant, "key_id", key_id, "sealed", sealed);
	text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(doc);
	free(sealed);
	if (text == NULL)
		return tb_error_set(err, TB_ERR_NOMEM, "out of memory writing the active key of tenant '%s'", tenant);
	rc = storage_put(st, object, text, strlen(text), err);
	free(text);
	return rc != 0 ? tb_error_prefix(err, "unable to store the active key of tenant '%s'", tenant) : 0;
}

int
repo_active_key_get(storage *st, const master_key *master, const char *tenant, char *key_id, tb_error *err)
{
	char object[128], expected_prefix[80];
	char *text = NULL, *secret = NULL;
	size_t len;
	json_t *doc;
	const char *sealed;
	int rc;

	if (repo_active_key_object(tenant, object, sizeof(object), err) != 0)
		return -1;
	if (storage_get(st, object, REPO_ACTIVE_MAX, &text, &len, err) != 0)
		return err->code == TB_ERR_NOT_FOUND ? -1 : tb_error_prefix(err, "unable to read %s", object);
	doc = json_loadb(text, len, 0, NULL);
	free(text);
	sealed = json_string_value(json_object_get(doc, "sealed"));
	rc = sealed ? keys_secret_open(master, REPO_ACTIVE_CONTEXT, sealed, &secret, err)
				: tb_error_set(err, TB_ERR_CORRUPT, "%s is not an active key document", object);
	json_decref(doc);
	if (rc != 0)
		return tb_error_prefix(err, "%s does not open with the master key (not written by this control plane)", object);
	snprintf(expected_prefix, sizeof(expected_prefix), "%s/", tenant);
	if (strncmp(secret, expected_prefix, strlen(expected_prefix)) != 0 ||
		strlen(secret + strlen(expected_prefix)) != KEYS_ID_LEN)
		rc = tb_error_set(err, TB_ERR_CORRUPT, "%s names a key of another tenant: refused", object);
	else
		memcpy(key_id, secret + strlen(expected_prefix), KEYS_ID_LEN + 1);
	free(secret);
	return rc;
}
