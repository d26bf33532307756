/*
 * Point-in-time recovery targets as a user gives them (a time, an LSN), parsed strictly
 * and formatted again by us for postgresql.auto.conf, and which base backup ids can
 * never be a base backup's.
 */
#ifndef TB_PITR_H
#define TB_PITR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define PITR_TEXT_MAX 40

typedef struct pitr_time
{
	time_t seconds; /* since the epoch, UTC */
	int microseconds;
} pitr_time;

/*
 * "YYYY-MM-DD HH:MM:SS[.f{1,6}](Z|+HH[[:]MM]|-HH[[:]MM])" (a T for the space allowed),
 * all of text and nothing else; -1 if not, or not a real time.
 */
int pitr_parse_time(const char *text, pitr_time *out);

/* "YYYY-MM-DD HH:MM:SS[.ffffff]+00" into out (PITR_TEXT_MAX). */
void pitr_format_time(const pitr_time *t, char *out, size_t size);

/* "X/X": 1 to 8 hex digits, one slash, 1 to 8 hex digits, nothing else; -1 if not. */
int pitr_parse_lsn(const char *text, uint64_t *out);

/* "%X/%X", as PostgreSQL writes an LSN. */
void pitr_format_lsn(uint64_t lsn, char *out, size_t size);

/*
 * A WAL segment file's name: 24 upper-case hex digits, its timeline, then the two
 * halves of its number (log, and segment within the log's 4 GiB).
 */
typedef struct pitr_wal_name
{
	uint32_t timeline;
	uint32_t log;
	uint32_t seg;
} pitr_wal_name;

#define PITR_WAL_NAME_LEN 24

/* Parses exactly PITR_WAL_NAME_LEN upper-case hex digits (nothing else); -1 if name is not one. */
int pitr_wal_name_parse(const char *name, pitr_wal_name *out);

/*
 * The segment's number counted from the start of WAL, for segments of segment_bytes
 * (a power of two from 1 MiB to 1 GiB, as wal_segment_size).
 */
uint64_t pitr_wal_segno(const pitr_wal_name *name, uint64_t segment_bytes);

/* The file name of segment segno of timeline (out: at least PITR_WAL_NAME_LEN + 1 bytes). */
void pitr_wal_name_format(uint32_t timeline, uint64_t segno, uint64_t segment_bytes, char *out, size_t size);

/* Whether backup_id is the one an archived WAL file's header carries (names_wal_object). */
bool pitr_is_wal_backup_id(const char *backup_id);

#endif
