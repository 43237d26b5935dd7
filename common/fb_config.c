/* fb_config - environment configuration with validation and secret files. */
#include "fb_config.h"
#include "fb_log.h"
#include "fb_util.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <strings.h>
#include <unistd.h>

#define SECRET_FILE_MAX 65536

struct fb_config_t {
    const fb_config_var_t *vars; /* the table, not owned */
    size_t count;                /* entries in vars and values */
    char **values;               /* text of each variable (default applied) */
    int64_t *ints;               /* parsed FB_CFG_INT and FB_CFG_BOOL values */
};

static int s_parse_int(const char *text, int64_t *out)
{
    /* digits, with a '-' where one fits: strtoll would also take spaces and a '+' */
    if (!(isdigit((unsigned char)text[0]) || (text[0] == '-' && isdigit((unsigned char)text[1]))))
        return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (errno || *end)
        return -1;
    *out = v;
    return 0;
}

static int s_parse_bool(const char *text, int64_t *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < FB_ARRAY_SIZE(yes); i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static bool s_enum_has(const char *choices, const char *value)
{
    size_t vl = strlen(value);
    const char *p = choices;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vl && strncmp(p, value, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

char *fb_config_read_secret(const char *name, bool *failed, char *err, size_t errlen)
{
    char fname[256];
    snprintf(fname, sizeof(fname), "%s_FILE", name);
    const char *direct = getenv(name), *path = getenv(fname);
    if (direct && path) {
        snprintf(err, errlen, "invalid configuration: set %s or %s, not both", name, fname);
        *failed = true;
        return NULL;
    }
    if (direct)
        return fb_strdup(direct);
    if (!path)
        return NULL;
    size_t len;
    char *text = fb_read_file(path, SECRET_FILE_MAX, &len);
    if (!text) {
        snprintf(err, errlen, "invalid configuration: %s: could not read file \"%s\": %s", fname, path,
                 strerror(errno));
        *failed = true;
        return NULL;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    if (len == 0) {
        /* a secret file made and left empty would turn its feature off without a word */
        snprintf(err, errlen, "invalid configuration: %s: the file \"%s\" is empty", fname, path);
        *failed = true;
        free(text);
        return NULL;
    }
    return text;
}

fb_config_t *fb_config_load(const fb_config_var_t *vars, size_t count, char *err, size_t errlen)
{
    fb_config_t *self = fb_calloc(1, sizeof(*self));
    self->vars = vars;
    self->count = count;
    self->values = fb_calloc(count, sizeof(char *));
    self->ints = fb_calloc(count, sizeof(int64_t));

    for (size_t i = 0; i < count; i++) {
        const fb_config_var_t *v = &vars[i];
        char *value = NULL;
        if (v->type == FB_CFG_SECRET) {
            bool failed = false;
            value = fb_config_read_secret(v->name, &failed, err, errlen);
            if (failed)
                goto fail;
        } else {
            const char *env = getenv(v->name);
            if (env)
                value = fb_strdup(env);
        }
        if (value == NULL) {
            if (v->def == NULL) {
                snprintf(err, errlen, "invalid configuration: %s is required (%s)", v->name, v->doc);
                goto fail;
            }
            value = fb_strdup(v->def);
        }
        self->values[i] = value;
        bool empty_ok = v->def && v->def[0] == '\0';
        if (value[0] == '\0') {
            if (!empty_ok) {
                snprintf(err, errlen, "invalid configuration: %s must not be empty (%s)", v->name, v->doc);
                goto fail;
            }
            continue;
        }
        switch (v->type) {
        case FB_CFG_INT:
            if (s_parse_int(value, &self->ints[i]) != 0) {
                snprintf(err, errlen, "invalid configuration: %s=\"%s\" is not an integer", v->name, value);
                goto fail;
            }
            if (self->ints[i] < v->min || self->ints[i] > v->max) {
                snprintf(err, errlen,
                         "invalid configuration: %s=%" PRId64 " is out of range %" PRId64 "..%" PRId64,
                         v->name, self->ints[i], v->min, v->max);
                goto fail;
            }
            break;
        case FB_CFG_BOOL:
            if (s_parse_bool(value, &self->ints[i]) != 0) {
                snprintf(err, errlen, "invalid configuration: %s=\"%s\" is not a boolean (true or false)",
                         v->name, value);
                goto fail;
            }
            break;
        case FB_CFG_ENUM:
            if (!s_enum_has(v->choices, value)) {
                snprintf(err, errlen, "invalid configuration: %s=\"%s\" is not one of %s", v->name, value,
                         v->choices);
                goto fail;
            }
            break;
        case FB_CFG_SECRET:
            fb_log_redact(value);
            break;
        case FB_CFG_STRING:
            break;
        }
        if (v->check) {
            char why[256] = "";
            if (v->check(value, why, sizeof(why)) != 0) {
                /* a secret, or an http(s) URL (a hosted node's API key is in its path), is not shown */
                if (v->type == FB_CFG_SECRET || strstr(value, "http://") || strstr(value, "https://"))
                    snprintf(err, errlen, "invalid configuration: %s: %s", v->name, why);
                else
                    snprintf(err, errlen, "invalid configuration: %s=\"%s\": %s", v->name, value, why);
                goto fail;
            }
        }
    }
    return self;
fail:
    fb_config_destroy(&self);
    return NULL;
}

void fb_config_destroy(fb_config_t **self_p)
{
    FB_ASSERT(self_p);
    fb_config_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->count; i++) {
        if (self->values[i]) {
            if (self->vars[i].type == FB_CFG_SECRET)
                sodium_memzero(self->values[i], strlen(self->values[i]));
            free(self->values[i]);
        }
    }
    free(self->values);
    free(self->ints);
    free(self);
    *self_p = NULL;
}

static size_t s_index(const fb_config_t *self, const char *name)
{
    for (size_t i = 0; i < self->count; i++)
        if (strcmp(self->vars[i].name, name) == 0)
            return i;
    fb_assert_fail(name, __FILE__, __LINE__);
}

const char *fb_config_str(const fb_config_t *self, const char *name)
{
    return self->values[s_index(self, name)];
}

int64_t fb_config_int(const fb_config_t *self, const char *name)
{
    size_t i = s_index(self, name);
    FB_ASSERT(self->vars[i].type == FB_CFG_INT);
    return self->ints[i];
}

bool fb_config_bool(const fb_config_t *self, const char *name)
{
    size_t i = s_index(self, name);
    FB_ASSERT(self->vars[i].type == FB_CFG_BOOL);
    return self->ints[i] != 0;
}

void fb_config_print_doc(const fb_config_var_t *vars, size_t count, FILE *out)
{
    for (size_t i = 0; i < count; i++) {
        const fb_config_var_t *v = &vars[i];
        const char *def = v->def == NULL ? "(required)" : v->def[0] == '\0' ? "(unset)" : v->def;
        fprintf(out, "| `%s`%s | %s%s%s | %s |\n", v->name, v->type == FB_CFG_SECRET ? " (or `_FILE`)" : "",
                v->def && v->def[0] ? "`" : "", def, v->def && v->def[0] ? "`" : "", v->doc);
    }
}

static int s_test_check(const char *value, char *err, size_t errlen)
{
    if (strncmp(value, "tcp://", 6) != 0) {
        snprintf(err, errlen, "must start with tcp://");
        return -1;
    }
    return 0;
}

int fb_config_test(bool verbose)
{
    static const fb_config_var_t vars[] = {
        {"FBT_NAME", FB_CFG_STRING, "dflt", 0, 0, NULL, NULL, "a name"},
        {"FBT_PORT", FB_CFG_INT, "8402", 1, 65535, NULL, NULL, "a port"},
        {"FBT_FLAG", FB_CFG_BOOL, "false", 0, 0, NULL, NULL, "a flag"},
        {"FBT_LEVEL", FB_CFG_ENUM, "info", 0, 0, "debug|info|warn|error", NULL, "a level"},
        {"FBT_TOKEN", FB_CFG_SECRET, "", 0, 0, NULL, NULL, "a secret"},
        {"FBT_EP", FB_CFG_STRING, "tcp://x:1", 0, 0, NULL, s_test_check, "an endpoint"},
        {"FBT_OPT", FB_CFG_STRING, "", 0, 0, NULL, NULL, "optional"},
    };
    char err[512];
    const char *names[] = {"FBT_NAME",       "FBT_PORT", "FBT_FLAG", "FBT_LEVEL", "FBT_TOKEN",
                           "FBT_TOKEN_FILE", "FBT_EP",   "FBT_OPT",  "FBT_REQ"};
    for (size_t i = 0; i < FB_ARRAY_SIZE(names); i++)
        unsetenv(names[i]);

    /* defaults */
    fb_config_t *c = fb_config_load(vars, FB_ARRAY_SIZE(vars), err, sizeof(err));
    FB_ASSERT(c);
    FB_ASSERT(strcmp(fb_config_str(c, "FBT_NAME"), "dflt") == 0);
    FB_ASSERT(fb_config_int(c, "FBT_PORT") == 8402);
    FB_ASSERT(!fb_config_bool(c, "FBT_FLAG"));
    FB_ASSERT(strcmp(fb_config_str(c, "FBT_TOKEN"), "") == 0);
    fb_config_destroy(&c);
    FB_ASSERT(c == NULL);

    /* values, and a secret from a file */
    char path[] = "/tmp/fb_config_testXXXXXX";
    int fd = mkstemp(path);
    FB_ASSERT(fd >= 0 && write(fd, "from-file-secret\n", 17) == 17);
    close(fd);
    setenv("FBT_PORT", "9000", 1);
    setenv("FBT_FLAG", "yes", 1);
    setenv("FBT_LEVEL", "warn", 1);
    setenv("FBT_TOKEN_FILE", path, 1);
    c = fb_config_load(vars, FB_ARRAY_SIZE(vars), err, sizeof(err));
    FB_ASSERT(c);
    FB_ASSERT(fb_config_int(c, "FBT_PORT") == 9000);
    FB_ASSERT(fb_config_bool(c, "FBT_FLAG"));
    FB_ASSERT(strcmp(fb_config_str(c, "FBT_LEVEL"), "warn") == 0);
    FB_ASSERT(strcmp(fb_config_str(c, "FBT_TOKEN"), "from-file-secret") == 0);
    fb_config_destroy(&c);

    /* each bad value fails with one line naming the variable */
    struct {
        const char *name, *value, *expect;
    } bad[] = {
        {"FBT_PORT", "70000", "FBT_PORT=70000 is out of range 1..65535"},
        {"FBT_PORT", "12x", "FBT_PORT=\"12x\" is not an integer"},
        {"FBT_PORT", " 90", "FBT_PORT=\" 90\" is not an integer"},
        {"FBT_PORT", "+90", "FBT_PORT=\"+90\" is not an integer"},
        {"FBT_PORT", "99999999999999999999", "is not an integer"},
        {"FBT_FLAG", "maybe", "FBT_FLAG=\"maybe\" is not a boolean"},
        {"FBT_LEVEL", "loud", "FBT_LEVEL=\"loud\" is not one of debug|info|warn|error"},
        {"FBT_NAME", "", "FBT_NAME must not be empty"},
        {"FBT_EP", "udp://x", "FBT_EP=\"udp://x\": must start with tcp://"},
        {"FBT_EP", "https://h/KEY", "FBT_EP: must start with tcp://"},
        {"FBT_TOKEN", "direct", "set FBT_TOKEN or FBT_TOKEN_FILE, not both"},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(bad); i++) {
        char *saved = getenv(bad[i].name) ? fb_strdup(getenv(bad[i].name)) : NULL;
        setenv(bad[i].name, bad[i].value, 1);
        c = fb_config_load(vars, FB_ARRAY_SIZE(vars), err, sizeof(err));
        if (verbose)
            printf("  %s\n", err);
        FB_ASSERT(c == NULL);
        FB_ASSERT(strstr(err, bad[i].expect) != NULL);
        FB_ASSERT(strchr(err, '\n') == NULL);
        if (saved) {
            setenv(bad[i].name, saved, 1);
            free(saved);
        } else {
            unsetenv(bad[i].name);
        }
    }
    setenv("FBT_TOKEN_FILE", "/nonexistent/secret", 1);
    FB_ASSERT(fb_config_load(vars, FB_ARRAY_SIZE(vars), err, sizeof(err)) == NULL);
    FB_ASSERT(strstr(err, "FBT_TOKEN_FILE: could not read file \"/nonexistent/secret\""));
    /* a secret file left empty (or only a newline) is an error, not "unset" */
    FILE *empty = fopen(path, "w");
    FB_ASSERT(empty && fputs("\n", empty) >= 0 && fclose(empty) == 0);
    setenv("FBT_TOKEN_FILE", path, 1);
    FB_ASSERT(fb_config_load(vars, FB_ARRAY_SIZE(vars), err, sizeof(err)) == NULL);
    FB_ASSERT(strstr(err, "FBT_TOKEN_FILE: the file") && strstr(err, "is empty"));

    /* a required variable */
    static const fb_config_var_t req[] = {{"FBT_REQ", FB_CFG_STRING, NULL, 0, 0, NULL, NULL, "needed"}};
    FB_ASSERT(fb_config_load(req, 1, err, sizeof(err)) == NULL);
    FB_ASSERT(strstr(err, "FBT_REQ is required"));

    unlink(path);
    for (size_t i = 0; i < FB_ARRAY_SIZE(names); i++)
        unsetenv(names[i]);
    return 0;
}
