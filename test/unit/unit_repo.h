/* A repository for unit tests: file storage in a fresh temp dir and a fixed master key. */
#ifndef TB_TEST_UNIT_REPO_H
#define TB_TEST_UNIT_REPO_H

#include <stdio.h>
#include <stdlib.h>

#include "repo.h"

/* dir: a mkdtemp template, filled in; storage at file://dir. Returns 0 or -1. */
static inline int
unit_repo_open(char *dir, storage **st, master_key *master)
{
	char url[300];
	tb_error err = {0};

	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(url, sizeof(url), "file://%s", dir);
	*st = storage_open(url, &err);
	return *st && keys_master_from_hex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", master,
									   &err) == 0
			   ? 0
			   : -1;
}

static inline int
unit_repo_close(const char *dir, storage *st)
{
	char cmd[300];

	storage_close(st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

#endif
