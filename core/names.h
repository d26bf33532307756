/* Validation of the names that become parts of storage keys: tenants and engines. */
#ifndef TB_NAMES_H
#define TB_NAMES_H

#include "error.h"

#define NAMES_TENANT_MAX 63

/* [a-z0-9][a-z0-9_-]{0,62} */
int names_check_tenant(const char *tenant, tb_error *err);

/* postgres, mysql, mongodb or redis. */
int names_check_engine(const char *engine, tb_error *err);

#endif
