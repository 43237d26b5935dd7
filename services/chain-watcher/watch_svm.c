/* watch_svm - SPL token deposits to deposit token accounts, credited once. */
#include "watch_svm.h"
#include "fb_jsonrpc.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_solana.h"
#include "fb_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADDR_PAGE        5000  /* deposit addresses per ledger read */
#define SIG_PAGE         1000  /* signatures per getSignaturesForAddress (the node's maximum) */
#define JOBS_INFLIGHT    8     /* token accounts polled at once */
#define SIG_CHARS        100   /* room for a base58 signature */
#define CLUSTER_CHECK_MS 60000 /* how often the endpoints' genesis hash is asked again */

typedef struct {
    int64_t account;
    fb_sol_key_t owner, ata;
    char ata_text[48];
    bool cursor_loaded;
    char until[SIG_CHARS]; /* the newest signature handled, "" for none */
    int64_t until_slot;
} s_ata_t;

typedef struct {
    char sig[SIG_CHARS];
    int64_t slot;
    bool failed;
} s_sig_t;

/* One token account's poll. */
typedef struct {
    struct watch_svm_t *self;
    size_t ata; /* index in atas */
    s_sig_t *sigs;
    size_t n, cap;
    size_t next;  /* next signature to handle, counting from the oldest */
    bool trimmed; /* more than one poll handles: the newest were left for the next */
} s_job_t;

#define ENDPOINTS_MAX 8

/* With several endpoints, each one's genesis hash asked on its own: until it
 * answers the cluster's, the scanner's client does not use it (fb_jsonrpc_bar). */
typedef struct {
    struct watch_svm_t *owner;
    size_t index; /* its place among the URLs */
    char shown[256];
    fb_jsonrpc_t *rpc;
    int state;     /* 0 not answered yet, 1 the cluster's, -1 another */
    int64_t ok_ms; /* when it last answered the cluster's */
    bool asking;
} s_endpoint_t;

struct watch_svm_t {
    watcher_t *w;
    char network[64];
    fb_sol_key_t mint;
    char mint_text[48];
    fb_sol_key_t program; /* the mint's owner: Token or Token-2022 */
    bool program_known;
    char commitment[16];
    /* the endpoints must serve the cluster (fb_sol_cluster_checked): getGenesisHash is asked
     * before the first poll and every CLUSTER_CHECK_MS after */
    char genesis[64];
    bool cluster_check;
    int64_t cluster_checked_ms; /* 0: not (or no longer) confirmed */
    s_endpoint_t endpoints[ENDPOINTS_MAX];
    size_t nendpoints; /* checked one by one (2 or more URLs), else 0 */
    fb_jsonrpc_t *rpc;
    uint32_t poll_ms;
    size_t signatures_max; /* new signatures of one account handled in one poll */
    uv_timer_t timer;
    bool busy, stopping;
    s_ata_t *atas;
    size_t natas, capatas;
    int64_t addr_after;
    size_t next_ata; /* the next account to poll this round */
    size_t jobs;     /* polls in flight */
    uint64_t polls, credited, duplicates, conflicts, skipped_failed, errors, transactions;
    char last_error[200];
};

static void s_jobs_more(watch_svm_t *self);
static void s_job_next(s_job_t *j);

static void s_error(watch_svm_t *self, const char *what, const char *detail)
{
    self->errors++;
    snprintf(self->last_error, sizeof(self->last_error), "%s: %s", what, detail ? detail : "");
    fb_log(FB_LOG_WARN, NULL, "solana watch step failed", "network=%s step=%s detail=%s", self->network, what,
           detail ? detail : "");
}

static int s_int(json_t *v, int64_t *out)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = json_integer_value(v);
        return 0;
    }
    return -1;
}

/* a decimal string of base units, 0..2^63-1 */
static int s_units(json_t *v, int64_t *out)
{
    const char *s = json_string_value(v);
    if (!s || !s[0] || strlen(s) > 19)
        return -1;
    uint64_t x = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        x = x * 10 + (uint64_t)(*p - '0');
    }
    if (x > INT64_MAX)
        return -1;
    *out = (int64_t)x;
    return 0;
}

static void s_done(watch_svm_t *self)
{
    self->busy = false;
}

/* --- one token account -------------------------------------------------------------------- */

static void s_job_end(s_job_t *j)
{
    watch_svm_t *self = j->self;
    free(j->sigs);
    free(j);
    self->jobs--;
    if (self->stopping) {
        if (self->jobs == 0)
            s_done(self);
        return;
    }
    s_jobs_more(self);
}

static void s_on_advanced(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    watch_svm_t *self = j->self;
    if (!reply->ok) {
        s_error(self, "advance_cursor", reply->message);
        return s_job_end(j);
    }
    s_ata_t *a = &self->atas[j->ata];
    const s_sig_t *newest = &j->sigs[0];
    snprintf(a->until, sizeof(a->until), "%s", newest->sig);
    a->until_slot = newest->slot;
    s_job_end(j);
}

static void s_cursor_key(const watch_svm_t *self, const s_ata_t *a, char *out, size_t cap)
{
    snprintf(out, cap, "%s:%s", self->network, a->ata_text);
}

/* every new signature handled: the account's cursor moves to the newest */
static void s_job_finish(s_job_t *j)
{
    watch_svm_t *self = j->self;
    if (j->n == 0)
        return s_job_end(j);
    char key[160], idem[64];
    s_cursor_key(self, &self->atas[j->ata], key, sizeof(key));
    watch_idem(self->w, "cursor", key, j->sigs[0].sig, "", idem);
    json_t *body = json_pack("{s:s, s:I, s:s}", "network", key, "block", (json_int_t)j->sigs[0].slot, "hash",
                             j->sigs[0].sig);
    watch_ledger_call(self->w, "ledger.advance_cursor", body, idem, s_on_advanced, j);
}

static void s_on_credited(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    watch_svm_t *self = j->self;
    const s_sig_t *s = &j->sigs[j->n - 1 - j->next];
    if (reply->ok) {
        /* a duplicate (another replica credited the source) or this
         * replica's own earlier call answered again: not a new credit */
        bool dup = false, replayed = false;
        fb_mp_get_bool(reply->body, "duplicate", &dup);
        fb_mp_get_bool(reply->body, "replayed", &replayed);
        if (dup || replayed)
            self->duplicates++;
        else
            self->credited++;
    } else if (strcmp(reply->code, "idempotency_conflict") == 0) {
        self->conflicts++;
        fb_log(FB_LOG_WARN, NULL, "deposit was credited before with other fields", "network=%s signature=%s",
               self->network, s->sig);
    } else if (strcmp(reply->code, "account_not_found") == 0 || strcmp(reply->code, "bad_request") == 0) {
        self->errors++;
        fb_log(FB_LOG_ERROR, NULL, "deposit cannot be credited", "network=%s signature=%s code=%s message=%s",
               self->network, s->sig, reply->code, reply->message);
    } else {
        s_error(self, "credit", reply->message);
        return s_job_end(j); /* again next poll: credits are idempotent */
    }
    j->next++;
    s_job_next(j);
}

/* The token account's balance increase for the mint in one transaction, or
 * -1 when the answer cannot be read. */
static int s_increase(const watch_svm_t *self, const s_ata_t *a, json_t *tx, int64_t *out)
{
    json_t *meta = json_object_get(tx, "meta");
    json_t *keys =
        json_object_get(json_object_get(json_object_get(tx, "transaction"), "message"), "accountKeys");
    if (!json_is_object(meta) || !json_is_array(keys))
        return -1;
    int64_t index = -1;
    size_t i;
    json_t *k;
    json_array_foreach(keys, i, k)
    {
        const char *pk =
            json_is_object(k) ? json_string_value(json_object_get(k, "pubkey")) : json_string_value(k);
        if (pk && strcmp(pk, a->ata_text) == 0)
            index = (int64_t)i;
    }
    *out = 0;
    if (index < 0)
        return 0; /* the account is not in it (a signature for another reason) */
    int64_t pre = 0, post = 0;
    const char *lists[2] = {"preTokenBalances", "postTokenBalances"};
    for (int l = 0; l < 2; l++) {
        json_t *list = json_object_get(meta, lists[l]), *b;
        if (!json_is_array(list))
            return -1;
        json_array_foreach(list, i, b)
        {
            int64_t at;
            const char *mint = json_string_value(json_object_get(b, "mint"));
            if (s_int(json_object_get(b, "accountIndex"), &at) != 0 || !mint)
                return -1;
            if (at != index)
                continue;
            if (strcmp(mint, self->mint_text) != 0)
                return 0; /* the account holds another mint: not a deposit account of ours */
            int64_t units;
            if (s_units(json_object_get(json_object_get(b, "uiTokenAmount"), "amount"), &units) != 0)
                return -1;
            if (l == 0)
                pre = units;
            else
                post = units;
        }
    }
    *out = post > pre ? post - pre : 0;
    return 0;
}

static void s_on_transaction(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    watch_svm_t *self = j->self;
    if (self->stopping)
        return s_job_end(j);
    const s_sig_t *s = &j->sigs[j->n - 1 - j->next];
    if (error || !json_is_object(result)) {
        s_error(self, "getTransaction", error ? message : "no transaction (not at this commitment yet)");
        return s_job_end(j);
    }
    json_t *meta = json_object_get(result, "meta");
    if (!json_is_object(meta) || !json_object_get(meta, "err")) {
        /* no status to go by: neither skipped nor credited, read again next poll */
        s_error(self, "getTransaction", "the transaction has no meta.err (status unknown)");
        return s_job_end(j);
    }
    self->transactions++;
    if (!json_is_null(json_object_get(meta, "err"))) {
        self->skipped_failed++;
        j->next++;
        return s_job_next(j);
    }
    const s_ata_t *a = &self->atas[j->ata];
    int64_t amount;
    if (s_increase(self, a, result, &amount) != 0) {
        s_error(self, "getTransaction", "the token balances are not readable");
        return s_job_end(j);
    }
    if (amount <= 0) {
        j->next++;
        return s_job_next(j);
    }
    char idem[64];
    watch_idem(self->w, "deposit", self->network, s->sig, a->ata_text, idem);
    json_t *body = json_pack("{s:I, s:I, s:s, s:{s:s, s:s, s:s}}", "account_id", (json_int_t)a->account,
                             "amount_micro", (json_int_t)amount, "kind", "deposit", "source", "chain",
                             self->network, "tx", s->sig, "index", a->ata_text);
    fb_log(FB_LOG_INFO, NULL, "solana deposit found",
           "network=%s account_id=%lld amount_micro=%lld signature=%s", self->network, (long long)a->account,
           (long long)amount, s->sig);
    watch_ledger_call(self->w, "ledger.credit", body, idem, s_on_credited, j);
}

/* Handles the next signature, oldest first; sigs[] is newest first. */
static void s_job_next(s_job_t *j)
{
    watch_svm_t *self = j->self;
    while (j->next < j->n && j->sigs[j->n - 1 - j->next].failed) {
        self->skipped_failed++;
        j->next++;
    }
    if (j->next == j->n)
        return s_job_finish(j);
    const s_sig_t *s = &j->sigs[j->n - 1 - j->next];
    json_t *params = json_pack("[s, {s:s, s:s, s:i}]", s->sig, "encoding", "jsonParsed", "commitment",
                               self->commitment, "maxSupportedTransactionVersion", 0);
    fb_jsonrpc_call(self->rpc, "getTransaction", params, s_on_transaction, j);
}

static void s_signatures_page(s_job_t *j);

static void s_on_signatures(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    s_job_t *j = arg;
    watch_svm_t *self = j->self;
    if (self->stopping)
        return s_job_end(j);
    if (error || !json_is_array(result)) {
        s_error(self, "getSignaturesForAddress", error ? message : "the answer is not a list");
        return s_job_end(j);
    }
    size_t i;
    json_t *e;
    json_array_foreach(result, i, e)
    {
        const char *sig = json_string_value(json_object_get(e, "signature"));
        int64_t slot;
        if (!sig || strlen(sig) >= SIG_CHARS || s_int(json_object_get(e, "slot"), &slot) != 0) {
            s_error(self, "getSignaturesForAddress", "an entry is not readable");
            return s_job_end(j);
        }
        if (j->n == j->cap) {
            j->cap = j->cap ? j->cap * 2 : 16;
            j->sigs = fb_realloc(j->sigs, j->cap * sizeof(*j->sigs));
        }
        s_sig_t *s = &j->sigs[j->n++];
        snprintf(s->sig, sizeof(s->sig), "%s", sig);
        s->slot = slot;
        s->failed = !json_is_null(json_object_get(e, "err")) && json_object_get(e, "err") != NULL;
    }
    size_t max = self->signatures_max;
    if (j->n > max) {
        /* more new signatures than one poll handles (the list runs newest
         * first, down to the cursor): the oldest max are kept and handled
         * now, the cursor moves to the newest of them, and the next poll goes
         * on from there — a flood of transfers to an address delays its
         * deposits, it never stops them being credited */
        size_t drop = j->n - max;
        memmove(j->sigs, j->sigs + drop, max * sizeof(*j->sigs));
        j->n = max;
        j->trimmed = true;
    }
    if (json_array_size(result) == SIG_PAGE)
        return s_signatures_page(j);
    if (j->trimmed)
        fb_log(FB_LOG_WARN, NULL, "more new signatures than one poll handles: the oldest are handled first",
               "network=%s address=%s handled=%zu", self->network, self->atas[j->ata].ata_text, max);
    j->next = 0;
    s_job_next(j);
}

static void s_signatures_page(s_job_t *j)
{
    watch_svm_t *self = j->self;
    const s_ata_t *a = &self->atas[j->ata];
    json_t *opts = json_pack("{s:i, s:s}", "limit", SIG_PAGE, "commitment", self->commitment);
    if (a->until[0])
        json_object_set_new(opts, "until", json_string(a->until));
    if (j->n)
        json_object_set_new(opts, "before", json_string(j->sigs[j->n - 1].sig));
    fb_jsonrpc_call(self->rpc, "getSignaturesForAddress", json_pack("[s, o]", a->ata_text, opts),
                    s_on_signatures, j);
}

static void s_on_cursor(void *arg, const fb_rpc_reply_t *reply)
{
    s_job_t *j = arg;
    watch_svm_t *self = j->self;
    if (self->stopping)
        return s_job_end(j);
    if (!reply->ok) {
        s_error(self, "watch_cursor", reply->message);
        return s_job_end(j);
    }
    s_ata_t *a = &self->atas[j->ata];
    int64_t slot;
    const char *hash;
    size_t len;
    if (fb_mp_get_int64(reply->body, "block", &slot) && fb_mp_get_str(reply->body, "hash", &hash, &len) &&
        len < sizeof(a->until)) {
        memcpy(a->until, hash, len);
        a->until[len] = '\0';
        a->until_slot = slot;
    }
    a->cursor_loaded = true;
    s_signatures_page(j);
}

static void s_job_start(watch_svm_t *self, size_t index)
{
    s_job_t *j = fb_calloc(1, sizeof(*j));
    j->self = self;
    j->ata = index;
    self->jobs++;
    const s_ata_t *a = &self->atas[index];
    if (!a->cursor_loaded) {
        char key[160];
        s_cursor_key(self, a, key, sizeof(key));
        return watch_ledger_call(self->w, "ledger.watch_cursor", json_pack("{s:s}", "network", key), NULL,
                                 s_on_cursor, j);
    }
    s_signatures_page(j);
}

static void s_jobs_more(watch_svm_t *self)
{
    while (!self->stopping && self->jobs < JOBS_INFLIGHT && self->next_ata < self->natas)
        s_job_start(self, self->next_ata++);
    if (self->jobs == 0)
        s_done(self);
}

/* --- poll: mint program, addresses -------------------------------------------------------- */

/* One owner from the ledger: its token account watched when the keys give
 * it for its account. */
static void s_add_owner(void *arg, int64_t account, const char *text, size_t len)
{
    watch_svm_t *self = arg;
    s_ata_t a = {.account = account};
    if (fb_sol_key_parse(&a.owner, text, len) != 0)
        return;
    fb_sol_key_t expect;
    char path[64];
    if (self->w->keys && (watch_keys_solana(self->w->keys, account, &expect, path, sizeof(path)) != 0 ||
                          !fb_sol_key_eq(&expect, &a.owner))) {
        fb_log(FB_LOG_ERROR, NULL, "deposit owner does not derive from the seed; not watched",
               "account_id=%lld owner=%.*s", (long long)account, (int)len, text);
        return;
    }
    if (fb_sol_ata(&a.ata, &a.owner, &self->mint, &self->program) != 0)
        return;
    fb_sol_key_format(a.ata_text, &a.ata);
    if (self->natas == self->capatas) {
        self->capatas = self->capatas ? self->capatas * 2 : 64;
        self->atas = fb_realloc(self->atas, self->capatas * sizeof(*self->atas));
    }
    self->atas[self->natas++] = a;
}

static void s_on_addresses(void *arg, const fb_rpc_reply_t *reply)
{
    watch_svm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    bool more = false;
    const char *why = NULL;
    if (watch_address_page(reply, s_add_owner, self, &self->addr_after, &more, &why) != 0) {
        s_error(self, "deposit_addresses", why);
        return s_done(self);
    }
    if (more) {
        json_t *body = json_pack("{s:s, s:I, s:i}", "chain", "solana", "after_id",
                                 (json_int_t)self->addr_after, "limit", ADDR_PAGE);
        return watch_ledger_call(self->w, "ledger.deposit_addresses", body, NULL, s_on_addresses, self);
    }
    self->next_ata = 0;
    s_jobs_more(self);
}

static void s_addresses_read(watch_svm_t *self)
{
    json_t *body = json_pack("{s:s, s:I, s:i}", "chain", "solana", "after_id", (json_int_t)self->addr_after,
                             "limit", ADDR_PAGE);
    watch_ledger_call(self->w, "ledger.deposit_addresses", body, NULL, s_on_addresses, self);
}

static void s_on_mint(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_svm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    const char *owner = json_string_value(json_object_get(json_object_get(result, "value"), "owner"));
    fb_sol_key_t program;
    if (error || !owner || fb_sol_key_parse(&program, owner, strlen(owner)) != 0) {
        s_error(self, "mint account", error ? message : "the mint does not exist");
        return s_done(self);
    }
    if (!fb_sol_key_eq(&program, &fb_sol_token_program) &&
        !fb_sol_key_eq(&program, &fb_sol_token_2022_program)) {
        s_error(self, "mint account", "the mint is not owned by the Token or Token-2022 program");
        return s_done(self);
    }
    self->program = program;
    self->program_known = true;
    s_addresses_read(self);
}

static void s_poll(watch_svm_t *self);

static void s_on_genesis(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_svm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    const char *hash = json_string_value(result);
    if (error || !hash) {
        s_error(self, "getGenesisHash", error ? message : "not a hash");
        return s_done(self);
    }
    if (!fb_sol_cluster_ok(self->network, self->genesis, hash)) {
        /* a deposit read from another cluster would be credited for nothing */
        self->cluster_checked_ms = 0;
        self->errors++;
        snprintf(self->last_error, sizeof(self->last_error),
                 "the chain endpoint serves another cluster (genesis hash %.60s): nothing is scanned", hash);
        fb_log(FB_LOG_ERROR, NULL, "solana endpoint serves another cluster; nothing is scanned or credited",
               "network=%s genesis_hash=%s", self->network, hash);
        return s_done(self);
    }
    self->cluster_checked_ms = fb_mono_ms();
    s_poll(self);
}

static void s_on_endpoint_genesis(void *arg, json_t *result, const char *error, int64_t code,
                                  const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_endpoint_t *e = arg;
    watch_svm_t *self = e->owner;
    e->asking = false;
    const char *hash = json_string_value(result);
    if (self->stopping || error || !hash)
        return; /* not answered: it stays as it was */
    bool ok = fb_sol_cluster_ok(self->network, self->genesis, hash);
    if (ok)
        e->ok_ms = fb_mono_ms();
    if (!ok && e->state != -1) {
        /* a deposit read from another cluster would be credited for nothing */
        self->errors++;
        snprintf(self->last_error, sizeof(self->last_error),
                 "the chain endpoint %.80s serves another cluster (genesis hash %.60s): it is not used",
                 e->shown, hash);
        fb_log(FB_LOG_ERROR, NULL, "solana endpoint serves another cluster; it is not used",
               "network=%s endpoint=%s genesis_hash=%s", self->network, e->shown, hash);
    }
    e->state = ok ? 1 : -1;
    fb_jsonrpc_bar(self->rpc, e->index, !ok);
}

/* Each endpoint's cluster, asked before it is used and every CLUSTER_CHECK_MS after; true when
 * one may be used. */
static bool s_check_endpoints(watch_svm_t *self)
{
    int64_t now = fb_mono_ms();
    bool any = false;
    for (size_t i = 0; i < self->nendpoints; i++) {
        s_endpoint_t *e = &self->endpoints[i];
        if (!e->asking && (e->state != 1 || now - e->ok_ms >= CLUSTER_CHECK_MS)) {
            e->asking = true;
            fb_jsonrpc_call(e->rpc, "getGenesisHash", json_array(), s_on_endpoint_genesis, e);
        }
        any = any || e->state == 1;
    }
    return any;
}

static void s_on_timer(uv_timer_t *t)
{
    watch_svm_t *self = t->data;
    if (self->stopping)
        return;
    bool usable = self->nendpoints == 0 || s_check_endpoints(self);
    if (self->busy || !usable)
        return;
    self->busy = true;
    self->polls++;
    if (self->nendpoints == 0 && self->cluster_check &&
        (!self->cluster_checked_ms || fb_mono_ms() - self->cluster_checked_ms >= CLUSTER_CHECK_MS))
        return fb_jsonrpc_call(self->rpc, "getGenesisHash", json_array(), s_on_genesis, self);
    s_poll(self);
}

static void s_poll(watch_svm_t *self)
{
    if (!self->program_known) {
        json_t *params = json_pack("[s, {s:s}]", self->mint_text, "encoding", "base64");
        return fb_jsonrpc_call(self->rpc, "getAccountInfo", params, s_on_mint, self);
    }
    s_addresses_read(self);
}

/* --- life ------------------------------------------------------------------------------------- */

watch_svm_t *watch_svm_new(watcher_t *w, const watch_svm_config_t *config, char *err, size_t errlen)
{
    watch_svm_t *self = fb_calloc(1, sizeof(*self));
    self->w = w;
    snprintf(self->network, sizeof(self->network), "%s", config->network);
    if (fb_sol_key_parse(&self->mint, config->mint, strlen(config->mint)) != 0) {
        snprintf(err, errlen, "FAREBOX_SOLANA_MINT: not a base58 address");
        free(self);
        return NULL;
    }
    fb_sol_key_format(self->mint_text, &self->mint);
    if (strcmp(config->commitment, "finalized") != 0 && strcmp(config->commitment, "confirmed") != 0) {
        snprintf(err, errlen, "FAREBOX_SOLANA_COMMITMENT: must be finalized or confirmed");
        free(self);
        return NULL;
    }
    snprintf(self->commitment, sizeof(self->commitment), "%s", config->commitment);
    const char *genesis = config->genesis ? config->genesis : "", *why;
    if (strlen(genesis) >= sizeof(self->genesis) ||
        fb_sol_cluster_config(self->network, genesis, &why) != 0) {
        snprintf(err, errlen, "FAREBOX_SOLANA_GENESIS_HASH: %s",
                 strlen(genesis) >= sizeof(self->genesis) ? "too long" : why);
        free(self);
        return NULL;
    }
    snprintf(self->genesis, sizeof(self->genesis), "%s", genesis);
    self->cluster_check = fb_sol_cluster_checked(self->network, self->genesis);
    self->poll_ms = config->poll_ms;
    self->signatures_max = config->signatures_max > 0 ? config->signatures_max : 20000;
    fb_jsonrpc_config_t rc = {.chain = self->network,
                              .urls = config->rpc_urls,
                              .timeout_ms = config->timeout_ms,
                              .attempts = 3,
                              .max_response = 16u << 20};
    self->rpc = fb_jsonrpc_new(w->loop, &rc, err, errlen);
    if (!self->rpc) {
        free(self);
        return NULL;
    }
    /* with several endpoints and a cluster to check, each one is checked on its own */
    size_t n = 0;
    char urls[ENDPOINTS_MAX][256];
    for (const char *p = config->rpc_urls; *p && n < ENDPOINTS_MAX;) {
        p += strspn(p, ", ");
        size_t len = strcspn(p, ", ");
        if (len == 0 || len >= sizeof(urls[0]))
            break;
        snprintf(urls[n++], sizeof(urls[0]), "%.*s", (int)len, p);
        p += len;
    }
    if (self->cluster_check && n > 1) {
        for (size_t i = 0; i < n; i++) {
            s_endpoint_t *e = &self->endpoints[self->nendpoints];
            fb_jsonrpc_config_t one = {.chain = self->network,
                                       .urls = urls[i],
                                       .timeout_ms = config->timeout_ms,
                                       .attempts = 1,
                                       .max_response = 4096};
            e->rpc = fb_jsonrpc_new(w->loop, &one, err, errlen);
            if (!e->rpc)
                break;
            e->owner = self;
            e->index = self->nendpoints++;
            fb_jsonrpc_url_shown(urls[i], e->shown, sizeof(e->shown));
            fb_jsonrpc_bar(self->rpc, i, true); /* until it answers the cluster's genesis hash */
        }
        if (self->nendpoints < n) {
            for (size_t i = 0; i < self->nendpoints; i++)
                fb_jsonrpc_destroy(&self->endpoints[i].rpc);
            fb_jsonrpc_destroy(&self->rpc);
            free(self);
            return NULL;
        }
    }
    uv_timer_init(w->loop, &self->timer);
    self->timer.data = self;
    uv_timer_start(&self->timer, s_on_timer, 0, self->poll_ms);
    return self;
}

void watch_svm_stop(watch_svm_t *self)
{
    self->stopping = true;
    uv_timer_stop(&self->timer);
    fb_jsonrpc_destroy(&self->rpc);
    for (size_t i = 0; i < self->nendpoints; i++)
        fb_jsonrpc_destroy(&self->endpoints[i].rpc);
}

static void s_on_closed(uv_handle_t *h)
{
    watch_svm_t *self = h->data;
    free(self->atas);
    free(self);
}

void watch_svm_destroy(watch_svm_t **self_p)
{
    watch_svm_t *self = *self_p;
    if (!self)
        return;
    if (!self->stopping)
        watch_svm_stop(self);
    uv_close((uv_handle_t *)&self->timer, s_on_closed);
    *self_p = NULL;
}

void watch_svm_metrics(const watch_svm_t *self, FILE *out)
{
    const char *n = self->network;
    fprintf(out, "farebox_watch_solana_watched_addresses{network=\"%s\"} %zu\n", n, self->natas);
    fprintf(out, "farebox_watch_solana_transactions_total{network=\"%s\"} %llu\n", n,
            (unsigned long long)self->transactions);
    fprintf(out, "farebox_watch_solana_failed_transactions_total{network=\"%s\"} %llu\n", n,
            (unsigned long long)self->skipped_failed);
    fprintf(out, "farebox_watch_solana_credits_total{network=\"%s\",result=\"credited\"} %llu\n", n,
            (unsigned long long)self->credited);
    fprintf(out, "farebox_watch_solana_credits_total{network=\"%s\",result=\"duplicate\"} %llu\n", n,
            (unsigned long long)self->duplicates);
    fprintf(out, "farebox_watch_solana_credits_total{network=\"%s\",result=\"conflict\"} %llu\n", n,
            (unsigned long long)self->conflicts);
    fprintf(out, "farebox_watch_solana_errors_total{network=\"%s\"} %llu\n", n,
            (unsigned long long)self->errors);
}

const struct fb_jsonrpc_t *watch_svm_rpc(const watch_svm_t *self, const char **network)
{
    *network = self->network;
    return self->rpc;
}

void watch_svm_status(const watch_svm_t *self, msgpack_packer *pk)
{
    msgpack_pack_map(pk, 12);
    fb_mp_pack_kv_cstr(pk, "network", self->network);
    fb_mp_pack_kv_cstr(pk, "mint", self->mint_text);
    fb_mp_pack_kv_cstr(pk, "commitment", self->commitment);
    fb_mp_pack_kv_uint(pk, "watched", self->natas);
    fb_mp_pack_kv_uint(pk, "polls", self->polls);
    fb_mp_pack_kv_uint(pk, "transactions", self->transactions);
    fb_mp_pack_kv_uint(pk, "credited", self->credited);
    fb_mp_pack_kv_uint(pk, "duplicates", self->duplicates);
    fb_mp_pack_kv_uint(pk, "conflicts", self->conflicts);
    fb_mp_pack_kv_uint(pk, "skipped_failed", self->skipped_failed);
    fb_mp_pack_kv_uint(pk, "errors", self->errors);
    fb_mp_pack_kv_cstr(pk, "last_error", self->last_error);
}
