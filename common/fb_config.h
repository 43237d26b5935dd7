/* fb_config - configuration from FAREBOX_* environment variables, validated at
 * start.
 *
 * Each service declares a table of variables (name, type, default, bounds, one
 * line of documentation). fb_config_load() reads them all; the first bad or
 * missing value fails the load with one line naming the variable. A secret
 * variable may instead be given as a file path in NAME_FILE (one of the two, not
 * both); its value is registered with fb_log_redact() and never printed. */
#ifndef FB_CONFIG_H
#define FB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum {
    FB_CFG_STRING, /* text; empty allowed only when the default is "" */
    FB_CFG_INT,    /* decimal integer within [min, max] */
    FB_CFG_BOOL,   /* true/false, 1/0, yes/no, on/off */
    FB_CFG_ENUM,   /* one of the '|'-separated choices */
    FB_CFG_SECRET, /* text, or NAME_FILE naming a file that holds it */
} fb_config_type_t;

/* fb_config_check_fn - extra validation of a non-empty value. Returns 0, or -1
 * with a short reason written to err. */
typedef int(fb_config_check_fn)(const char *value, char *err, size_t errlen);

typedef struct {
    const char *name;          /* FAREBOX_... */
    fb_config_type_t type;     /* how the value is read */
    const char *def;           /* default text; NULL means required */
    int64_t min, max;          /* FB_CFG_INT bounds, inclusive */
    const char *choices;       /* FB_CFG_ENUM choices, "a|b|c" */
    fb_config_check_fn *check; /* optional extra validation */
    const char *doc;           /* one line for README */
} fb_config_var_t;

typedef struct fb_config_t fb_config_t;

/* fb_config_load - read and validate every variable of the table.
 * Returns: the configuration (caller owns it), or NULL with one line naming the
 * variable and the reason written to err.
 * In: vars, count - the table (must outlive the configuration). */
fb_config_t *fb_config_load(const fb_config_var_t *vars, size_t count, char *err, size_t errlen);

/* fb_config_destroy - free the configuration; secrets are wiped. Nulls *self_p. */
void fb_config_destroy(fb_config_t **self_p);

/* Getters. The name must be in the table (asserted). Strings stay owned by the
 * configuration; an unset optional string is "". */
const char *fb_config_str(const fb_config_t *self, const char *name);
int64_t fb_config_int(const fb_config_t *self, const char *name);
bool fb_config_bool(const fb_config_t *self, const char *name);

/* fb_config_read_secret - a secret named outside the table (the catalog's
 * routes name their keys' variables): NAME, or the contents of the file
 * NAME_FILE names, trailing newlines and spaces cut. Returns a malloc'ed
 * value (the caller wipes and frees it), NULL when neither is set, or NULL
 * with *failed set and one line in err (both set, an unreadable file). */
char *fb_config_read_secret(const char *name, bool *failed, char *err, size_t errlen);

/* fb_config_print_doc - write the table as Markdown rows:
 * | `NAME` | default | meaning | */
void fb_config_print_doc(const fb_config_var_t *vars, size_t count, FILE *out);

int fb_config_test(bool verbose);

#endif
