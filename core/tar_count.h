/*
 * Counts the regular files of a tar stream, and their bytes, as it passes by in
 * pieces of any size: what a base backup held when it was taken, for a restore drill
 * to compare with what it unpacked. Memory: one header.
 */
#ifndef TB_TAR_COUNT_H
#define TB_TAR_COUNT_H

#include <stddef.h>
#include <stdint.h>

typedef struct tar_count
{
	uint64_t files;
	uint64_t bytes;
	/* internal */
	unsigned char header[512];
	size_t have;   /* bytes of the header gathered so far */
	uint64_t skip; /* bytes of the current member's data and padding still to pass */
	int zero_blocks;
	int broken; /* not a tar stream: the counts mean nothing */
} tar_count;

void tar_count_init(tar_count *t);
void tar_count_feed(tar_count *t, const void *buf, size_t len);

#endif
