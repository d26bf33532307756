/*
 * What a MySQL/MariaDB backup holds: the rows of every base table, as the JSON object
 * {"tables": {"<table>": <rows>, ...}} the catalog keeps in backups.contents. A backup
 * counts them in the dump tool's output as it passes (my_dump_count); a drill counts
 * them in the database it loaded the backup into. Both build the same object with
 * my_contents, so that the two compare as equal when nothing was lost.
 *
 * No MySQL headers here: the unit test builds this part alone.
 */
#ifndef TB_MYSQL_DUMP_COUNT_H
#define TB_MYSQL_DUMP_COUNT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct my_contents my_contents;

my_contents *my_contents_new(void);
/* Adds rows to table name (created with 0 rows first if new). */
int my_contents_add(my_contents *c, const char *name, int64_t rows, tb_error *err);
/*
 * The JSON text (caller frees), keys sorted; with detail, a short account such as
 * "3 tables, 1200 rows".
 */
char *my_contents_json(const my_contents *c, char *detail, size_t detail_size, tb_error *err);
void my_contents_free(my_contents *c);

/*
 * A dump tool's SQL script read as it streams, in pieces of any size: every
 * `CREATE TABLE \`t\`` at a line's start names a table (0 rows until data comes), every
 * `INSERT INTO \`t\` VALUES (...),(...);` adds its top-level parenthesised groups, read
 * past single-quoted strings with backslash escapes. Lines between `DELIMITER ;;` and
 * `DELIMITER ;` (the bodies of triggers, routines and events) are not data.
 */
typedef struct my_dump_count my_dump_count;

my_dump_count *my_dump_count_new(void);
void my_dump_count_feed(my_dump_count *d, const void *buf, size_t len);
/*
 * After the whole script: its contents as JSON (see my_contents_json), or NULL with err
 * set when the script had a shape this reader does not know (it was not counted).
 */
char *my_dump_count_finish(my_dump_count *d, char *detail, size_t detail_size, tb_error *err);
void my_dump_count_free(my_dump_count *d);

#endif
