/* Recovery targets and base backup ids for point-in-time recovery (see pitr.h). */
#include "pitr.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "manifest.h"
#include "names.h"

/* Exactly n decimal digits at *p, advancing it; -1 if not. */
static int
pitr_digits(const char **p, int n)
{
	int value = 0;

	for (int i = 0; i < n; i++, (*p)++)
	{
		if (**p < '0' || **p > '9')
			return -1;
		value = value * 10 + (**p - '0');
	}
	return value;
}

/* One of the characters allowed at *p, advancing past it; false if another is there. */
static bool
pitr_expect(const char **p, const char *allowed)
{
	if (**p == '\0' || strchr(allowed, **p) == NULL)
		return false;
	(*p)++;
	return true;
}

int
pitr_parse_time(const char *text, pitr_time *out)
{
	const char *p = text;
	int year, month, day, hour, minute, second, micro = 0, offset = 0;

	if ((year = pitr_digits(&p, 4)) < 0 || !pitr_expect(&p, "-") || (month = pitr_digits(&p, 2)) < 0 ||
		!pitr_expect(&p, "-") || (day = pitr_digits(&p, 2)) < 0 || !pitr_expect(&p, " T") ||
		(hour = pitr_digits(&p, 2)) < 0 || !pitr_expect(&p, ":") || (minute = pitr_digits(&p, 2)) < 0 ||
		!pitr_expect(&p, ":") || (second = pitr_digits(&p, 2)) < 0)
		return -1;
	if (pitr_expect(&p, "."))
	{
		int scale = 100000, digits = 0;

		for (; *p >= '0' && *p <= '9'; p++, digits++, scale /= 10)
			if (digits < 6)
				micro += (*p - '0') * scale;
		if (digits == 0 || digits > 6)
			return -1;
	}
	if (!pitr_expect(&p, "Zz"))
	{
		int sign = *p == '-' ? -1 : 1, off_hours, off_minutes = 0;

		if (!pitr_expect(&p, "+-") || (off_hours = pitr_digits(&p, 2)) < 0 || off_hours > 15)
			return -1;
		/* +HH, +HHMM or +HH:MM */
		if ((pitr_expect(&p, ":") || *p != '\0') && ((off_minutes = pitr_digits(&p, 2)) < 0 || off_minutes > 59))
			return -1;
		offset = sign * (off_hours * 3600 + off_minutes * 60);
	}
	if (*p != '\0' || manifest_utc_time(year, month, day, hour, minute, second, &out->seconds) != 0)
		return -1;
	out->seconds -= offset;
	out->microseconds = micro;
	return 0;
}

void
pitr_format_time(const pitr_time *t, char *out, size_t size)
{
	struct tm tm;
	char seconds[32];

	gmtime_r(&t->seconds, &tm);
	strftime(seconds, sizeof(seconds), "%Y-%m-%d %H:%M:%S", &tm);
	if (t->microseconds)
		snprintf(out, size, "%s.%06d+00", seconds, t->microseconds);
	else
		snprintf(out, size, "%s+00", seconds);
}

/* 1 to 8 hex digits at *p, advancing it; -1 if not. */
static int
pitr_hex32(const char **p, uint32_t *out)
{
	size_t n = strspn(*p, "0123456789abcdefABCDEF");
	uint32_t value = 0;

	if (n == 0 || n > 8)
		return -1;
	for (size_t i = 0; i < n; i++, (*p)++)
		value = value << 4 |
				(uint32_t) (isdigit((unsigned char) **p) ? **p - '0' : tolower((unsigned char) **p) - 'a' + 10);
	*out = value;
	return 0;
}

int
pitr_parse_lsn(const char *text, uint64_t *out)
{
	const char *p = text;
	uint32_t hi, lo;

	if (pitr_hex32(&p, &hi) != 0 || *p++ != '/' || pitr_hex32(&p, &lo) != 0 || *p != '\0')
		return -1;
	*out = (uint64_t) hi << 32 | lo;
	return 0;
}

void
pitr_format_lsn(uint64_t lsn, char *out, size_t size)
{
	snprintf(out, size, "%X/%X", (unsigned) (lsn >> 32), (unsigned) (lsn & 0xffffffff));
}

int
pitr_wal_name_parse(const char *name, pitr_wal_name *out)
{
	const char *p = name;
	uint32_t part[3];

	if (strlen(name) != PITR_WAL_NAME_LEN || strspn(name, "0123456789ABCDEF") != PITR_WAL_NAME_LEN)
		return -1;
	for (int i = 0; i < 3; i++)
	{
		part[i] = 0;
		for (int d = 0; d < 8; d++, p++)
			part[i] = part[i] << 4 | (uint32_t) (isdigit((unsigned char) *p) ? *p - '0' : *p - 'A' + 10);
	}
	out->timeline = part[0];
	out->log = part[1];
	out->seg = part[2];
	return 0;
}

/* How many segments of segment_bytes make one log (the 4 GiB the middle 8 digits count). */
static uint64_t
pitr_wal_segments_per_log(uint64_t segment_bytes)
{
	return segment_bytes ? UINT64_C(0x100000000) / segment_bytes : 0;
}

uint64_t
pitr_wal_segno(const pitr_wal_name *name, uint64_t segment_bytes)
{
	return (uint64_t) name->log * pitr_wal_segments_per_log(segment_bytes) + name->seg;
}

void
pitr_wal_name_format(uint32_t timeline, uint64_t segno, uint64_t segment_bytes, char *out, size_t size)
{
	uint64_t per_log = pitr_wal_segments_per_log(segment_bytes);

	snprintf(out, size, "%08X%08X%08X", (unsigned) timeline, (unsigned) (per_log ? segno / per_log : 0),
			 (unsigned) (per_log ? segno % per_log : segno));
}

bool
pitr_is_wal_backup_id(const char *backup_id)
{
	char file[NAMES_WAL_OBJECT_MAX], object[NAMES_WAL_OBJECT_MAX], id[NAMES_WAL_OBJECT_MAX];
	size_t len = strlen(backup_id);
	char *suffix;
	tb_error ignored = {0};

	if (len >= sizeof(file))
		return false;
	/* names_wal_object lower-cases the file name and writes '.' as '-': undo that, but for the suffix word. */
	for (size_t i = 0; i <= len; i++)
		file[i] = backup_id[i] == '-' ? '.' : (char) toupper((unsigned char) backup_id[i]);
	if ((suffix = strrchr(file, '.')) != NULL &&
		(strcmp(suffix, ".HISTORY") == 0 || strcmp(suffix, ".PARTIAL") == 0 || strcmp(suffix, ".BACKUP") == 0))
		for (char *c = suffix; *c; c++)
			*c = (char) tolower((unsigned char) *c);
	return names_wal_object(file, object, sizeof(object), id, sizeof(id), &ignored) == 0 && strcmp(id, backup_id) == 0;
}
