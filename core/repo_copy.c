/* Which failures of one copy of a backup send a read to its other copy; the note that says it did. */
#include <stdio.h>

#include "repo_copy.h"

const char *
repo_copy_failure(const tb_error *err)
{
	switch (err->code)
	{
		case TB_ERR_NOT_FOUND:
			return "was missing";
		case TB_ERR_CORRUPT:
		case TB_ERR_KEY:
			return "failed authentication";
		case TB_ERR_STORAGE:
		case TB_ERR_STORAGE_AUTH:
			return "could not be read";
		default:
			return NULL;
	}
}

const char *
repo_copy_fallback_note(char *out, size_t size, const char *verb, const char *where, const char *how, const char *why)
{
	snprintf(out, size, "%s from the replica %s: the primary copy %s: %s", verb, where, how, why);
	return out;
}
