/* Files compiled into the binary by build-aux/embed.sh (see Makefile.am). */
#ifndef TAPWIRE_EMBEDDED_H
#define TAPWIRE_EMBEDDED_H

#include <stddef.h>

/* sql/schema.sql, NUL-terminated. */
extern const unsigned char embedded_schema_sql[];
extern const size_t embedded_schema_sql_len;

#endif
