/*
 * A backup has two copies when its tenant has a replica storage (the same keys below
 * another root, bytes as sealed): which failures of reading one copy the other may
 * not share, and how a read that used the replica says so.
 */
#ifndef TB_REPO_COPY_H
#define TB_REPO_COPY_H

#include <stddef.h>

#include "error.h"

/*
 * Why reading one copy of a backup failed when the copy itself is at fault: "was
 * missing" (the object, its manifest or its tenant key document), "failed
 * authentication" (a chunk, the header, the trailer, the manifest or the recorded
 * SHA-256 did not check out), "could not be read" (its storage did not answer or
 * refused our credentials). NULL when every copy would fail the same way (bad input,
 * local I/O, memory): then the other copy is not tried.
 */
const char *repo_copy_failure(const tb_error *err);

/*
 * "restored from the replica <where>: the primary copy <how>: <why>" into out
 * (verb: "restored", "read"; where: storage_describe of the replica, nothing secret).
 * Returns out.
 */
const char *repo_copy_fallback_note(char *out, size_t size, const char *verb, const char *where, const char *how,
									const char *why);

#endif
