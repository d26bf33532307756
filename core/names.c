/* Tenant and engine name validation (see names.h). */
#include "names.h"

#include <string.h>

static const char *const names_engines[] = {"postgres", "mysql", "mongodb", "redis"};

int
names_check_tenant(const char *tenant, tb_error *err)
{
	size_t len;

	if (tenant == NULL || tenant[0] == '\0')
		return tb_error_set(err, TB_ERR_INVALID, "tenant name is empty");
	len = strlen(tenant);
	if (len > NAMES_TENANT_MAX)
		return tb_error_set(err, TB_ERR_INVALID, "tenant name '%.*s…' is longer than %d characters", 20, tenant,
							NAMES_TENANT_MAX);
	for (size_t i = 0; i < len; i++)
	{
		char c = tenant[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '_' || c == '-'));

		if (!ok)
			return tb_error_set(err, TB_ERR_INVALID,
								"invalid tenant name '%s': use lower-case letters, digits, '_' and '-', "
								"starting with a letter or digit",
								tenant);
	}
	return 0;
}

int
names_check_engine(const char *engine, tb_error *err)
{
	if (engine != NULL)
		for (size_t i = 0; i < sizeof(names_engines) / sizeof(names_engines[0]); i++)
			if (strcmp(engine, names_engines[i]) == 0)
				return 0;
	return tb_error_set(err, TB_ERR_INVALID, "unknown engine '%s': use postgres, mysql, mongodb or redis",
						engine ? engine : "");
}
