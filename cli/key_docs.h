/*
 * The tenant key documents in storage (<tenant>/keys/<key id>.json), as rotate-master
 * and the control-plane-free check list and open them (cmd_keys.c).
 */
#ifndef TB_CLI_KEY_DOCS_H
#define TB_CLI_KEY_DOCS_H

#include <stdbool.h>
#include <stddef.h>

#include "keys.h"
#include "storage/storage.h"

#define CLI_KEY_DOC_MAX (64 * 1024)

typedef struct cli_key_doc
{
	char tenant[64];
	char key_id[KEYS_ID_LEN + 1];
} cli_key_doc;

/* The key documents found in storage, in the listing's (lexical) order: a tenant's together. */
typedef struct cli_key_docs
{
	cli_key_doc *docs;
	size_t count, cap;
	bool out_of_memory;
} cli_key_docs;

/* A storage_list callback (arg: a cli_key_docs) noting <tenant>/keys/<key id>.json; anything else is skipped. */
int cli_key_docs_collect(const char *key, const storage_info *info, void *arg);

/* Whether doc opens with master as the key d (its tenant and key id): 0, or -1 with err set. */
int cli_key_doc_opens(const master_key *master, const char *doc, const cli_key_doc *d, tb_error *err);

#endif
