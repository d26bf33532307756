/* tenant-backup keygen: a new master key file, mode 0600, never overwriting one. */
#include <stdio.h>

#include "cli.h"

static const char keygen_usage[] = "Usage: tenant-backup keygen --out FILE\n"
								   "\n"
								   "Writes a new random 256-bit master key to FILE (mode 0600). Refuses to\n"
								   "overwrite an existing file: losing a master key makes every backup whose\n"
								   "tenant keys it wraps unreadable.\n";

static int
keygen_option(int opt, const char *arg, void *state)
{
	if (opt != 'o')
		return cli_usage_error("keygen", "invalid option");
	*(const char **) state = arg;
	return 0;
}

int
cmd_keygen(int argc, char **argv)
{
	static const struct option options[] = {
		{"out", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	const char *out = NULL;
	cli_context ctx;
	tb_error err = {0};
	int rc = cli_parse("keygen", keygen_usage, argc, argv, options, &ctx, keygen_option, &out);

	if (rc != 0)
		return rc < 0 ? 0 : rc;
	if (out == NULL || optind != argc)
		return cli_usage_error("keygen", "--out FILE is required");
	if (keys_master_generate(out, &err) != 0)
		return cli_fail("keygen", &err);
	fprintf(stderr, "tenant-backup keygen: wrote master key to %s (mode 0600); keep a copy somewhere safe\n", out);
	return 0;
}
