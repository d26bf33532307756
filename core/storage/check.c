/*
 * The storage round trip shared by the extension's check() and the CLI's check: one
 * probe object written, read, listed and deleted through the storage interface.
 */
#include "check.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../crypto.h"

#define STORAGE_CHECK_DETAIL_MAX 1400

typedef struct storage_check_listing
{
	const char *key;
	bool found;
} storage_check_listing;

static int
storage_check_list_cb(const char *key, const storage_info *info, void *arg)
{
	storage_check_listing *listing = arg;

	(void) info;
	if (strcmp(key, listing->key) == 0)
		listing->found = true;
	return 0;
}

int
storage_check_round_trip(storage *st, const char *body, const char *access_hint, storage_check_report_fn report,
						 void *ctx, tb_error *err)
{
	uint8_t random[8];
	char hex[2 * sizeof(random) + 1], key[64], detail[STORAGE_CHECK_DETAIL_MAX];
	char *got = NULL;
	size_t got_len = 0;
	bool read_back;
	storage_info info;
	storage_check_listing listing = {.key = key, .found = false};
	tb_error step = {0};
	int failed = 0;

	if (crypto_random(random, sizeof(random), err) != 0)
		return tb_error_prefix(err, "could not generate a name for the storage probe");
	crypto_hex_encode(random, sizeof(random), hex);
	snprintf(key, sizeof(key), STORAGE_CHECK_PREFIX "%s.probe", hex);

	if (storage_put(st, key, body, strlen(body), &step) != 0)
	{
		report(ctx, "storage write", "error", step.msg, access_hint);
		return 1;
	}
	snprintf(detail, sizeof(detail), "wrote %s", key);
	report(ctx, "storage write", "ok", detail, NULL);

	if (storage_get(st, key, 4096, &got, &got_len, &step) != 0)
	{
		failed = 1;
		report(ctx, "storage read", "error", step.msg, access_hint);
	}
	else
	{
		read_back = got_len == strlen(body) && memcmp(got, body, got_len) == 0;
		free(got);
		failed = !read_back;
		snprintf(detail, sizeof(detail), read_back ? "read %s back" : "%s read back with other bytes than were written",
				 key);
		report(ctx, "storage read", read_back ? "ok" : "error", detail,
			   read_back ? NULL : "Another writer changed the probe, or the storage does not keep what it is given.");
	}

	if (storage_list(st, STORAGE_CHECK_PREFIX, storage_check_list_cb, &listing, &step) != 0)
	{
		failed = 1;
		report(ctx, "storage list", "error", step.msg, access_hint);
	}
	else
	{
		failed |= !listing.found;
		snprintf(detail, sizeof(detail),
				 listing.found ? "listing " STORAGE_CHECK_PREFIX " shows %s"
							   : "listing " STORAGE_CHECK_PREFIX " does not show %s",
				 key);
		report(ctx, "storage list", listing.found ? "ok" : "error", detail,
			   listing.found ? NULL
							 : "Retention, tenant_drop and the CLI find objects by listing: the storage must list what "
							   "it holds.");
	}

	if (storage_delete(st, key, &step) != 0)
	{
		report(ctx, "storage delete", "error", step.msg, access_hint);
		return 1;
	}
	if (storage_head(st, key, &info, &step) == 0)
	{
		snprintf(detail, sizeof(detail), "%s is still there after it was deleted", key);
		report(ctx, "storage delete", "error", detail,
			   "Retention and tenant_drop delete objects: the storage must remove what it is told to.");
		return 1;
	}
	snprintf(detail, sizeof(detail), "deleted %s", key);
	report(ctx, "storage delete", "ok", detail, NULL);
	return failed;
}
