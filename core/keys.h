/*
 * The key hierarchy: master key (a file outside the database) wraps tenant keys;
 * tenant keys wrap each backup's data key (see stream.h). Key material lives only
 * in these structs, which callers wipe with keys_*_wipe().
 */
#ifndef TB_KEYS_H
#define TB_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "error.h"

#define KEYS_ID_LEN 16 /* hex characters: 8 of creation time, 8 random, so ids sort by age */

typedef struct master_key
{
	uint8_t key[CRYPTO_KEY_LEN];
	char id[KEYS_ID_LEN + 1]; /* derived from the key; names it without revealing it */
	/*
	 * The tenant's own key command (BYOK) that opens tenant keys wrapped by it, when the
	 * caller knows one; NULL: such keys cannot be opened here.
	 */
	const char *key_command;
} master_key;

typedef struct tenant_key
{
	char tenant[64];
	char id[KEYS_ID_LEN + 1];
	uint8_t key[CRYPTO_KEY_LEN];
} tenant_key;

/* Writes a new random master key to path (mode 0600); refuses to overwrite. */
int keys_master_generate(const char *path, tb_error *err);

/* Loads a master key file: 64 hex digits; refuses files readable by group or others. */
int keys_master_load(const char *path, master_key *out, tb_error *err);

/* Loads a master key from 64 hex digits held in memory (e.g. a key command's output). */
int keys_master_from_hex(const char *hex, master_key *out, tb_error *err);

/* A new random tenant key with a fresh id. */
int keys_tenant_generate(const char *tenant, tenant_key *out, tb_error *err);

/*
 * The wrapped form stored in storage and in the catalog: a JSON document with the
 * tenant, key id, creation time, master key id and the AES-256-GCM-wrapped key.
 * Caller frees the returned string.
 */
char *keys_tenant_wrap(const master_key *master, const tenant_key *key, tb_error *err);

/*
 * Unwraps a document from keys_tenant_wrap() or keys_tenant_wrap_command() (through
 * master->key_command); checks it belongs to tenant (and to key_id unless NULL). A
 * different master key gives TB_ERR_KEY naming both key ids.
 */
int keys_tenant_unwrap(const master_key *master, const char *json, const char *tenant, const char *key_id,
					   tenant_key *out, tb_error *err);

/*
 * Bring your own key: the tenant key wrapped by the tenant's own command instead of
 * the master key, so that reading the tenant's backups needs that command.
 *
 * The command contract: a command line split into words by subprocess_words() (quotes
 * as in /bin/sh, no shell, nothing expanded) and run by the subprocess runner with
 * TENANT_BACKUP_KEY_OP (wrap or unwrap), TENANT_BACKUP_TENANT and TENANT_BACKUP_KEY_ID
 * in its environment. wrap: stdin is the tenant key as 64 hex digits and a newline;
 * stdout is the wrapped key, printable ASCII on one line, at most
 * KEYS_COMMAND_OUTPUT_MAX bytes. unwrap: stdin is what wrap printed; stdout is the 64
 * hex digits. Exit 0 on success; anything else fails, and the first line of stderr
 * (never stdout) goes into the error. At most 60 s, then its process group is killed.
 */
#define KEYS_COMMAND_OUTPUT_MAX 16384

/* Runs command for op on input, its stdout into out (NUL-terminated, trailing newline dropped). */
int keys_command_run(const char *command, const char *op, const char *tenant, const char *key_id, const char *input,
					 char *out, size_t out_size, tb_error *err);

/*
 * The key document of a tenant key wrapped by command (checked by unwrapping it once),
 * with a check value so a command returning another key is noticed. Caller frees.
 */
char *keys_tenant_wrap_command(const char *command, const tenant_key *key, tb_error *err);

/* Whether a key document is wrapped by the tenant's own command (1), the master key (0), or invalid (-1). */
int keys_doc_is_command_wrapped(const char *json);

/*
 * Seals a small secret (a database password) with the master key, bound to context
 * (e.g. "source password"): "tbs1:<master key id>:<nonce hex>:<sealed hex>". Caller frees.
 */
char *keys_secret_seal(const master_key *master, const char *context, const char *secret, tb_error *err);

/* Opens a keys_secret_seal() result; *secret is malloc'd, the caller wipes and frees it. */
int keys_secret_open(const master_key *master, const char *context, const char *sealed, char **secret, tb_error *err);

void keys_master_wipe(master_key *key);
void keys_tenant_wipe(tenant_key *key);

#endif
