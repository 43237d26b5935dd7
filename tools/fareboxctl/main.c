/* fareboxctl - the operator's command line for the admin API of a running
 * farebox (README: Admin API). Reads FAREBOX_URL and FAREBOX_ADMIN_TOKEN (or
 * FAREBOX_ADMIN_TOKEN_FILE) from the environment, as .farebox/run.env sets
 * them; prints the answer's JSON on stdout. Exit 0 on success, 1 when the
 * edge refuses (its error JSON is printed), 2 on a usage or transport error.
 *
 *   fareboxctl account create [LABEL]
 *   fareboxctl account show ACCOUNT
 *   fareboxctl account history ACCOUNT [LIMIT] [--before ID] [--limit N]
 *   fareboxctl account holds ACCOUNT [STATE] [--state S] [--before ID] [--limit N]
 *   fareboxctl account charges ACCOUNT [LIMIT] [--hold ID] [--before ID] [--limit N]
 *   fareboxctl account advances ACCOUNT [--before ID] [--limit N]  (topups credited before settlement)
 *   fareboxctl account deposit-address ACCOUNT    (made on first use)
 *   fareboxctl account pending ACCOUNT            (deposits not confirmed yet)
 *   fareboxctl credit ACCOUNT AMOUNT_MICRO REFERENCE
 *   fareboxctl key mint ACCOUNT [--label L] [--cap MICRO] [--models a,b]
 *   fareboxctl key list ACCOUNT [--after ID] [--limit N]
 * A list answers one page; its next_before_id (next_after_id) is the --before
 * (--after) of the next.  *   fareboxctl key cap KEY MICRO|none
 *   fareboxctl key models KEY a,b|all
 *   fareboxctl key revoke KEY
 *   fareboxctl audit
 *   fareboxctl watcher */
#include "fb_config.h"
#include "fb_util.h"

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ANSWER_MAX (16 << 20)

typedef struct {
    char *buf;
    size_t len;
} s_buf_t;

static size_t s_write(char *p, size_t size, size_t n, void *arg)
{
    s_buf_t *b = arg;
    size_t add = size * n;
    if (b->len + add > ANSWER_MAX)
        return 0;
    b->buf = fb_realloc(b->buf, b->len + add + 1);
    memcpy(b->buf + b->len, p, add);
    b->len += add;
    b->buf[b->len] = '\0';
    return add;
}

static int s_usage(void)
{
    fprintf(stderr,
            "usage: fareboxctl account create [LABEL] | account show ACCOUNT\n"
            "                  | account history ACCOUNT [LIMIT] [--before ID] [--limit N]\n"
            "                  | account holds ACCOUNT [STATE] [--state S] [--before ID] [--limit N]\n"
            "                  | account charges ACCOUNT [LIMIT] [--hold ID] [--before ID] [--limit N]\n"
            "                  | account advances ACCOUNT [--before ID] [--limit N]\n"
            "                  | account deposit-address ACCOUNT | account pending ACCOUNT\n"
            "                  | credit ACCOUNT AMOUNT_MICRO REFERENCE\n"
            "                  | key mint ACCOUNT [--label L] [--cap MICRO] [--models a,b]\n"
            "                  | key list ACCOUNT [--after ID] [--limit N]\n"
            "                  | key cap KEY MICRO|none | key models KEY a,b|all | key revoke KEY | audit | "
            "watcher\n"
            "environment: FAREBOX_URL, FAREBOX_ADMIN_TOKEN (or FAREBOX_ADMIN_TOKEN_FILE)\n");
    return 2;
}

/* The admin token, read as the edge reads it: the variable, or the file its
 * _FILE names (trailing newlines and spaces cut), not both. */
static char *s_token(void)
{
    const char *empty = getenv("FAREBOX_ADMIN_TOKEN");
    if (empty && !empty[0])
        unsetenv("FAREBOX_ADMIN_TOKEN"); /* set empty: not set (run.env may name the file instead) */
    bool failed = false;
    char err[300];
    char *t = fb_config_read_secret("FAREBOX_ADMIN_TOKEN", &failed, err, sizeof(err));
    if (failed)
        fprintf(stderr, "fareboxctl: %s\n", err);
    if (t && !t[0]) {
        free(t);
        t = NULL;
    }
    return t;
}

/* A digits-only id or amount. */
static bool s_digits(const char *s)
{
    if (!s || !s[0] || strlen(s) > 18)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* A model list: "all" (null), or names separated by commas; NULL (a usage
 * error, said) when it names none: an empty allowlist would allow no model. */
static json_t *s_models(const char *list)
{
    if (strcmp(list, "all") == 0)
        return json_null();
    json_t *a = json_array();
    char *copy = strdup(list), *save = NULL;
    for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save))
        json_array_append_new(a, json_string(m));
    free(copy);
    if (json_array_size(a) == 0) {
        fprintf(stderr, "fareboxctl: a model list names at least one model (or is \"all\")\n");
        json_decref(a);
        return NULL;
    }
    return a;
}

/* The query parameter an option names in opts ("--option=parameter ...", and
 * "=parameter" for the one argument that may stand alone, first), or NULL. */
static const char *s_option(const char *opts, const char *option, size_t *plen)
{
    size_t olen = strlen(option);
    for (const char *t = opts; *t;) {
        size_t tlen = strcspn(t, " ");
        const char *eq = memchr(t, '=', tlen);
        if (eq && (size_t)(eq - t) == olen && memcmp(t, option, olen) == 0) {
            *plen = tlen - olen - 1;
            return eq + 1;
        }
        t += tlen + (t[tlen] == ' ');
    }
    return NULL;
}

/* A list's page: base with the query its options make (see s_option). Values
 * are digits, or lowercase letters for state. Returns false on a usage error. */
static bool s_list_path(char *path, size_t size, const char *base, int argc, char **argv, const char *opts)
{
    size_t n = (size_t)snprintf(path, size, "%s", base);
    for (int i = 0; i < argc && n < size; i++) {
        bool named = strncmp(argv[i], "--", 2) == 0;
        if ((named && i + 1 >= argc) || (!named && i != 0))
            return false;
        size_t plen;
        const char *param = s_option(opts, named ? argv[i] : "", &plen);
        const char *value = named ? argv[++i] : argv[i];
        if (!param)
            return false;
        bool word = plen == 5 && memcmp(param, "state", 5) == 0;
        if (word ? !value[0] || strlen(value) > 16 ||
                       strspn(value, "abcdefghijklmnopqrstuvwxyz") != strlen(value)
                 : !s_digits(value))
            return false;
        n += (size_t)snprintf(path + n, size - n, "%c%.*s=%s", strchr(path, '?') ? '&' : '?', (int)plen,
                              param, value);
    }
    return n < size;
}

/* One admin call; prints the answer. */
static int s_call(const char *method, const char *path, json_t *body)
{
    const char *url = getenv("FAREBOX_URL");
    char *token = s_token();
    if (!url || !url[0] || !token) {
        fprintf(stderr,
                "fareboxctl: FAREBOX_URL and FAREBOX_ADMIN_TOKEN are required (. .farebox/run.env)\n");
        free(token);
        json_decref(body);
        return 2;
    }
    char full[2048];
    snprintf(full, sizeof(full), "%s%s", url, path);
    size_t auth_len = strlen(token) + 32;
    char *auth = fb_malloc(auth_len);
    snprintf(auth, auth_len, "Authorization: Bearer %s", token);
    sodium_memzero(token, strlen(token));
    free(token);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, auth);
    h = curl_slist_append(h, "Content-Type: application/json");
    s_buf_t answer = {0};
    curl_easy_setopt(c, CURLOPT_URL, full);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
    if (text)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    sodium_memzero(auth, strlen(auth));
    free(auth);
    curl_easy_cleanup(c);
    free(text);
    int exit_code;
    if (rc != CURLE_OK) {
        fprintf(stderr, "fareboxctl: %s %s: %s\n", method, full, curl_easy_strerror(rc));
        exit_code = 2;
    } else {
        printf("%s\n", answer.buf ? answer.buf : "");
        exit_code = status >= 200 && status < 300 ? 0 : 1;
    }
    free(answer.buf);
    return exit_code;
}

static int s_account(int argc, char **argv)
{
    char path[256];
    if (argc >= 1 && strcmp(argv[0], "create") == 0 && argc <= 2)
        return s_call("POST", "/admin/accounts",
                      argc == 2 ? json_pack("{ss}", "label", argv[1]) : json_object());
    if (argc < 2 || !s_digits(argv[1]))
        return s_usage();
    if (strcmp(argv[0], "show") == 0 && argc == 2) {
        snprintf(path, sizeof(path), "/admin/accounts/%s", argv[1]);
        return s_call("GET", path, NULL);
    }
    static const struct {
        const char *word, *opts;
    } lists[] = {
        {"history", "=limit --before=before_id --limit=limit"},
        {"charges", "=limit --hold=hold_id --before=before_id --limit=limit"},
        {"holds", "=state --state=state --before=before_id --limit=limit"},
        {"advances", "--before=before_id --limit=limit"},
    };
    for (size_t i = 0; i < FB_ARRAY_SIZE(lists); i++) {
        if (strcmp(argv[0], lists[i].word) != 0)
            continue;
        char base[128];
        snprintf(base, sizeof(base), "/admin/accounts/%s/%s", argv[1], argv[0]);
        if (!s_list_path(path, sizeof(path), base, argc - 2, argv + 2, lists[i].opts))
            return s_usage();
        return s_call("GET", path, NULL);
    }
    if (strcmp(argv[0], "deposit-address") == 0 && argc == 2) {
        snprintf(path, sizeof(path), "/admin/accounts/%s/deposit-addresses", argv[1]);
        return s_call("POST", path, json_object());
    }
    if (strcmp(argv[0], "pending") == 0 && argc == 2) {
        snprintf(path, sizeof(path), "/admin/accounts/%s/deposits/pending", argv[1]);
        return s_call("GET", path, NULL);
    }
    return s_usage();
}

static int s_key(int argc, char **argv)
{
    char path[256];
    if (argc < 2 || !s_digits(argv[1]))
        return s_usage();
    if (strcmp(argv[0], "mint") == 0) {
        json_t *body = json_object();
        for (int i = 2; i < argc; i += 2) {
            if (i + 1 >= argc) {
                json_decref(body);
                return s_usage();
            }
            if (strcmp(argv[i], "--label") == 0) {
                json_object_set_new(body, "label", json_string(argv[i + 1]));
            } else if (strcmp(argv[i], "--cap") == 0 && s_digits(argv[i + 1])) {
                json_object_set_new(body, "spend_cap_micro", json_integer(strtoll(argv[i + 1], NULL, 10)));
            } else if (strcmp(argv[i], "--models") == 0) {
                json_t *models = s_models(argv[i + 1]);
                if (!models) {
                    json_decref(body);
                    return 2;
                }
                json_object_set_new(body, "models", models);
            } else {
                json_decref(body);
                return s_usage();
            }
        }
        snprintf(path, sizeof(path), "/admin/accounts/%s/keys", argv[1]);
        return s_call("POST", path, body);
    }
    if (strcmp(argv[0], "list") == 0) {
        char base[128];
        snprintf(base, sizeof(base), "/admin/accounts/%s/keys", argv[1]);
        if (!s_list_path(path, sizeof(path), base, argc - 2, argv + 2, "--after=after_id --limit=limit"))
            return s_usage();
        return s_call("GET", path, NULL);
    }
    snprintf(path, sizeof(path), "/admin/keys/%s", argv[1]);
    if (strcmp(argv[0], "revoke") == 0 && argc == 2)
        return s_call("DELETE", path, NULL);
    if (strcmp(argv[0], "cap") == 0 && argc == 3) {
        if (strcmp(argv[2], "none") == 0)
            return s_call("PATCH", path, json_pack("{sn}", "spend_cap_micro"));
        if (!s_digits(argv[2]))
            return s_usage();
        return s_call("PATCH", path,
                      json_pack("{sI}", "spend_cap_micro", (json_int_t)strtoll(argv[2], NULL, 10)));
    }
    if (strcmp(argv[0], "models") == 0 && argc == 3) {
        json_t *models = s_models(argv[2]);
        return models ? s_call("PATCH", path, json_pack("{so}", "models", models)) : 2;
    }
    return s_usage();
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return s_usage();
    for (int i = 1; i < argc; i++) {
        /* what goes into a JSON body must be UTF-8: jansson makes no string of anything else */
        json_t *s = json_string(argv[i]);
        if (!s) {
            fprintf(stderr, "fareboxctl: argument %d is not UTF-8 text\n", i);
            return 2;
        }
        json_decref(s);
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc;
    const char *cmd = argv[1];
    if (strcmp(cmd, "account") == 0 && argc >= 3) {
        rc = s_account(argc - 2, argv + 2);
    } else if (strcmp(cmd, "key") == 0 && argc >= 3) {
        rc = s_key(argc - 2, argv + 2);
    } else if (strcmp(cmd, "credit") == 0 && argc == 5 && s_digits(argv[2]) && s_digits(argv[3])) {
        char path[256];
        snprintf(path, sizeof(path), "/admin/accounts/%s/credits", argv[2]);
        rc = s_call("POST", path,
                    json_pack("{sI ss}", "amount_micro", (json_int_t)strtoll(argv[3], NULL, 10), "reference",
                              argv[4]));
    } else if (strcmp(cmd, "audit") == 0 && argc == 2) {
        rc = s_call("GET", "/admin/audit", NULL);
    } else if (strcmp(cmd, "watcher") == 0 && argc == 2) {
        rc = s_call("GET", "/admin/chain-watcher", NULL);
    } else {
        rc = s_usage();
    }
    curl_global_cleanup();
    return rc;
}
