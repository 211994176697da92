/* Files compiled into the binary by build-aux/embed.sh (see Makefile.am). */
#ifndef TAPWIRE_EMBEDDED_H
#define TAPWIRE_EMBEDDED_H

#include <stddef.h>

/* sql/schema.sql, NUL-terminated. */
extern const unsigned char embedded_schema_sql[];
extern const size_t embedded_schema_sql_len;

/* web/index.html, web/app.js and web/style.css, NUL-terminated: the
 * dashboard page, served unless --web-root names a directory. */
extern const unsigned char embedded_web_index_html[];
extern const size_t embedded_web_index_html_len;
extern const unsigned char embedded_web_app_js[];
extern const size_t embedded_web_app_js_len;
extern const unsigned char embedded_web_interact_js[];
extern const size_t embedded_web_interact_js_len;
extern const unsigned char embedded_web_style_css[];
extern const size_t embedded_web_style_css_len;

#endif
