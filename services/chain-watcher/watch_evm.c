/* watch_evm - USDC Transfer events to deposit addresses, credited once. */
#include "watch_evm.h"
#include "fb_codec.h"
#include "fb_evm.h"
#include "fb_jsonrpc.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_util.h"
#include "fb_x402.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRANSFER_TOPIC   "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
#define ADDR_PAGE        5000   /* deposit addresses per ledger read */
#define CREDITS_INFLIGHT 64     /* ledger.credit calls at once: the ledger groups them in commits */
#define WINDOW_MAX       256    /* unconfirmed block headers kept */
#define HEADERS_PER_POLL 64     /* new unconfirmed headers fetched per poll */
#define PENDING_MAX      1000   /* unconfirmed transfers listed */
#define CHAIN_CHECK_MS   60000  /* how often the endpoint's chain id is asked again */
#define LOGS_MAX         100000 /* transfers in one confirmed range; more halves the range */

typedef struct {
    fb_addr_t addr;
    int64_t account;
} s_watched_t;

typedef struct {
    int64_t account, amount, block, index;
    char tx[67], block_hash[67];
} s_transfer_t;

typedef struct {
    int64_t number;
    char hash[67], parent[67];
} s_header_t;

typedef struct {
    s_transfer_t *items;
    size_t n, cap;
} s_list_t;

#define PROVIDERS_MAX 8

/* One provider asked for its head on its own (the scanner's client picks
 * whichever answers), to see which ones fall behind. */
typedef struct {
    struct watch_evm_t *owner;
    char url[256];
    char shown[256]; /* fb_jsonrpc_url_shown */
    fb_jsonrpc_t *rpc;
    int64_t head;    /* -1 until it answered */
    int64_t head_ms; /* when it last answered its head */
    bool asking;
    /* its own chain id, asked before it is used and every CHAIN_CHECK_MS after: until it
     * answers the network's, the scanner's client does not use it (fb_jsonrpc_bar) */
    size_t index;       /* its place among the URLs */
    int chain_state;    /* 0 not answered yet, 1 the network's, -1 another */
    int64_t chain_seen; /* its last answer (-1 before) */
    int64_t chain_ms;   /* when it last answered the network's */
    bool chain_asking;
} s_provider_t;

struct watch_evm_t {
    watcher_t *w;
    char network[64];
    fb_addr_t token;
    char token_hex[43];
    fb_jsonrpc_t *rpc;
    int64_t depth; /* confirmations as a block count, when tag is "" */
    char tag[16];  /* "safe" / "finalized", or "" */
    int64_t start; /* first block of a network never scanned; -1: the confirmed head */
    uint32_t range_max, per_call, poll_ms;
    uv_timer_t timer;
    bool busy;       /* a poll is running */
    bool next_range; /* the round continues a scan: the head read this poll is kept */
    bool stopping;
    /* the endpoints must serve the configured chain: eth_chainId is asked
     * before the first round and every CHAIN_CHECK_MS after */
    int64_t chain_id;       /* from the network's CAIP-2 id */
    int64_t chain_seen;     /* what the endpoint answered last; -1 before */
    int64_t chain_check_ms; /* when it was last confirmed */
    /* watched addresses, sorted by address */
    s_watched_t *watched;
    size_t nwatched, capwatched;
    int64_t addr_after; /* the last deposit address id loaded */
    /* the cursor: every deposit up to this block is credited */
    bool have_cursor;
    int64_t cursor;
    char cursor_hash[67];
    int64_t head, confirmed;
    /* the confirmed range being scanned */
    uint32_t range;
    int64_t from, to;
    size_t batch; /* next address batch of the range */
    s_list_t found;
    char to_hash[67];
    size_t credit_next, credits_out;
    bool credit_failed;
    /* the unconfirmed window */
    s_header_t window[WINDOW_MAX];
    size_t nwindow; /* headers, ascending and linked by parent hash */
    s_list_t pending, pending_next;
    int64_t pending_from;
    s_provider_t providers[PROVIDERS_MAX];
    size_t nproviders;
    /* figures */
    uint64_t polls, credited, duplicates, conflicts, errors, reorgs, deep_reorgs, range_shrinks, logs,
        log_calls;
    int64_t scanned_at_ms;
    char last_error[200];
};

static void s_scan(watch_evm_t *self);
static void s_window(watch_evm_t *self);
static void s_pending_next(watch_evm_t *self);

/* --- small helpers ------------------------------------------------------------------------ */

static int s_qty(json_t *v, int64_t *out)
{
    fb_u256_t u;
    uint64_t x;
    const char *s = json_string_value(v);
    if (!s || fb_u256_from_hex(&u, s, strlen(s)) != 0 || !fb_u256_to_u64(&u, &x) || x > INT64_MAX)
        return -1;
    *out = (int64_t)x;
    return 0;
}

/* lowercase "0x" + 64 hex digits of a bytes32 string */
static int s_b32(json_t *v, char out[67])
{
    uint8_t b[32];
    const char *s = json_string_value(v);
    if (!s || fb_bytes32_parse(b, s, strlen(s)) != 0)
        return -1;
    out[0] = '0';
    out[1] = 'x';
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 + 2 * i, 3, "%02x", b[i]);
    return 0;
}

static json_t *s_hex_block(int64_t n)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "0x%llx", (unsigned long long)n);
    return json_string(buf);
}

static void s_list_push(s_list_t *l, const s_transfer_t *t)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->items = fb_realloc(l->items, l->cap * sizeof(*l->items));
    }
    l->items[l->n++] = *t;
}

static int s_watched_cmp(const void *a, const void *b)
{
    return memcmp(((const s_watched_t *)a)->addr.b, ((const s_watched_t *)b)->addr.b, 20);
}

static const s_watched_t *s_find(const watch_evm_t *self, const fb_addr_t *a)
{
    if (self->nwatched == 0)
        return NULL;
    s_watched_t key = {.addr = *a};
    return bsearch(&key, self->watched, self->nwatched, sizeof(key), s_watched_cmp);
}

static void s_error(watch_evm_t *self, const char *what, const char *detail)
{
    self->errors++;
    snprintf(self->last_error, sizeof(self->last_error), "%s: %s", what, detail ? detail : "");
    fb_log(FB_LOG_WARN, NULL, "evm watch step failed", "network=%s step=%s detail=%s", self->network, what,
           detail ? detail : "");
}

/* the poll is over: wait for the next one */
static void s_done(watch_evm_t *self)
{
    self->busy = false;
}

/* --- poll: cursor, head, addresses ---------------------------------------------------------- */

static void s_on_head(void *arg, json_t *result, const char *error, int64_t code, const char *message);
static void s_on_chain_id(void *arg, json_t *result, const char *error, int64_t code, const char *message);
static void s_addresses_read(watch_evm_t *self);
static void s_on_anchor(void *arg, json_t *result, const char *error, int64_t code, const char *message);

/* One address from the ledger: watched when the keys give it for its account. */
static void s_add_address(void *arg, int64_t account, const char *text, size_t len)
{
    watch_evm_t *self = arg;
    s_watched_t wa = {.account = account};
    if (fb_addr_parse(&wa.addr, text, len) != 0)
        return;
    fb_addr_t expect;
    char path[64];
    if (self->w->keys && (watch_keys_evm(self->w->keys, account, &expect, path, sizeof(path)) != 0 ||
                          !fb_addr_eq(&expect, &wa.addr))) {
        fb_log(FB_LOG_ERROR, NULL, "deposit address does not derive from the seed; not watched",
               "account_id=%lld address=%.*s", (long long)account, (int)len, text);
        return;
    }
    if (self->nwatched == self->capwatched) {
        self->capwatched = self->capwatched ? self->capwatched * 2 : 256;
        self->watched = fb_realloc(self->watched, self->capwatched * sizeof(*self->watched));
    }
    self->watched[self->nwatched++] = wa;
}

static void s_on_addresses(void *arg, const fb_rpc_reply_t *reply)
{
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    bool more = false;
    const char *why = NULL;
    if (watch_address_page(reply, s_add_address, self, &self->addr_after, &more, &why) != 0) {
        s_error(self, "deposit_addresses", why);
        return s_done(self);
    }
    if (self->nwatched > 1)
        qsort(self->watched, self->nwatched, sizeof(s_watched_t), s_watched_cmp);
    if (more)
        return s_addresses_read(self);
    /* before a poll's first range: is the block the cursor stands on still
     * the one credited? */
    if (!self->next_range && self->cursor_hash[0] && self->cursor >= 0 && self->cursor <= self->confirmed) {
        json_t *params = json_pack("[o, b]", s_hex_block(self->cursor), 0);
        return fb_jsonrpc_call(self->rpc, "eth_getBlockByNumber", params, s_on_anchor, self);
    }
    self->next_range = false;
    s_scan(self);
}

static void s_addresses_read(watch_evm_t *self)
{
    json_t *body = json_pack("{s:s, s:I, s:i}", "chain", "evm", "after_id", (json_int_t)self->addr_after,
                             "limit", ADDR_PAGE);
    watch_ledger_call(self->w, "ledger.deposit_addresses", body, NULL, s_on_addresses, self);
}

/* The ledger's cursor of the network ({block, hash}) taken as this watcher's; false when it has none. */
static bool s_take_cursor(watch_evm_t *self, const msgpack_object *body)
{
    int64_t block;
    const char *hash;
    size_t len;
    if (!fb_mp_get_int64(body, "block", &block))
        return false;
    self->have_cursor = true;
    self->cursor = block;
    self->cursor_hash[0] = '\0';
    if (fb_mp_get_str(body, "hash", &hash, &len) && len < sizeof(self->cursor_hash)) {
        memcpy(self->cursor_hash, hash, len);
        self->cursor_hash[len] = '\0';
    }
    return true;
}

static void s_on_cursor(void *arg, const fb_rpc_reply_t *reply)
{
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    if (!reply->ok) {
        s_error(self, "watch_cursor", reply->message);
        return s_done(self);
    }
    if (s_take_cursor(self, reply->body))
        fb_log(FB_LOG_INFO, NULL, "evm watch resumes", "network=%s cursor=%lld", self->network,
               (long long)self->cursor);
    fb_jsonrpc_call(self->rpc, "eth_blockNumber", json_array(), s_on_head, self);
}

/* A round: the head, then the addresses made since the last round, then the
 * confirmed blocks after the cursor. The addresses are read after the head:
 * a deposit in a block up to that head went to an address made before the
 * block, so before the head was read, so it is in the list. Each range
 * scanned reads the addresses again before the next one (the poll's head is
 * kept), so a long backfill watches new addresses too. */
static void s_round(watch_evm_t *self)
{
    if (self->nproviders > 1) {
        /* each endpoint is checked on its own (s_probe_providers): scanned through those that
         * answered the network's chain id */
        bool any = false;
        for (size_t i = 0; i < self->nproviders; i++)
            any = any || self->providers[i].chain_state == 1;
        if (!any)
            return s_done(self); /* none answered yet (or each another chain: in last_error) */
    } else if (self->chain_seen != self->chain_id || fb_mono_ms() - self->chain_check_ms >= CHAIN_CHECK_MS) {
        return fb_jsonrpc_call(self->rpc, "eth_chainId", json_array(), s_on_chain_id, self);
    }
    if (self->next_range)
        return s_addresses_read(self);
    if (!self->have_cursor) {
        json_t *body = json_pack("{s:s}", "network", self->network);
        return watch_ledger_call(self->w, "ledger.watch_cursor", body, NULL, s_on_cursor, self);
    }
    fb_jsonrpc_call(self->rpc, "eth_blockNumber", json_array(), s_on_head, self);
}

static void s_on_chain_id(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    int64_t id;
    if (error || s_qty(result, &id) != 0) {
        s_error(self, "eth_chainId", error ? message : "not a quantity");
        return s_done(self);
    }
    self->chain_seen = id;
    if (id != self->chain_id) {
        /* a deposit read from another chain would be credited for nothing */
        self->errors++;
        snprintf(self->last_error, sizeof(self->last_error),
                 "the chain endpoint serves chain id %lld, not %lld: nothing is scanned", (long long)id,
                 (long long)self->chain_id);
        fb_log(FB_LOG_ERROR, NULL, "evm endpoint serves another chain; nothing is scanned or credited",
               "network=%s chain_id=%lld", self->network, (long long)id);
        return s_done(self);
    }
    self->chain_check_ms = fb_mono_ms();
    s_round(self);
}

static void s_on_provider_head(void *arg, json_t *result, const char *error, int64_t code,
                               const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_provider_t *p = arg;
    p->asking = false;
    int64_t head;
    if (!error && s_qty(result, &head) == 0) {
        p->head = head;
        p->head_ms = fb_mono_ms();
    }
}

/* every poll, each provider's own head (one call each, skipped while one is out) */
static void s_on_provider_chain(void *arg, json_t *result, const char *error, int64_t code,
                                const char *message)
{
    FB_UNUSED(code);
    FB_UNUSED(message);
    s_provider_t *p = arg;
    watch_evm_t *self = p->owner;
    p->chain_asking = false;
    int64_t id;
    if (self->stopping || error || s_qty(result, &id) != 0)
        return; /* not answered: it stays as it was */
    p->chain_seen = id;
    bool ok = id == self->chain_id;
    if (ok)
        p->chain_ms = fb_mono_ms();
    if (!ok && p->chain_state != -1) {
        /* a deposit read from another chain would be credited for nothing, and a range read
         * there would be passed as empty */
        self->errors++;
        snprintf(self->last_error, sizeof(self->last_error),
                 "the chain endpoint %s serves chain id %lld, not %lld: it is not used", p->shown,
                 (long long)id, (long long)self->chain_id);
        fb_log(FB_LOG_ERROR, NULL, "evm endpoint serves another chain; it is not used",
               "network=%s endpoint=%s chain_id=%lld", self->network, p->shown, (long long)id);
    }
    p->chain_state = ok ? 1 : -1;
    self->chain_seen = id;
    for (size_t i = 0; i < self->nproviders; i++)
        if (self->providers[i].chain_state == -1)
            self->chain_seen = self->providers[i].chain_seen; /* a mismatch shows */
    fb_jsonrpc_bar(self->rpc, p->index, !ok);
}

static void s_probe_providers(watch_evm_t *self)
{
    int64_t now = fb_mono_ms();
    for (size_t i = 0; i < self->nproviders; i++) {
        s_provider_t *p = &self->providers[i];
        if (!p->asking && p->rpc) {
            p->asking = true;
            fb_jsonrpc_call(p->rpc, "eth_blockNumber", json_array(), s_on_provider_head, p);
        }
        if (!p->chain_asking && p->rpc && (p->chain_state != 1 || now - p->chain_ms >= CHAIN_CHECK_MS)) {
            p->chain_asking = true;
            fb_jsonrpc_call(p->rpc, "eth_chainId", json_array(), s_on_provider_chain, p);
        }
    }
}

static void s_on_timer(uv_timer_t *t)
{
    watch_evm_t *self = t->data;
    if (self->stopping)
        return;
    if (self->nproviders > 1)
        s_probe_providers(self);
    if (self->busy)
        return;
    self->busy = true;
    self->next_range = false;
    self->polls++;
    s_round(self);
}

static void s_on_anchor(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    char hash[67];
    if (error || s_b32(json_object_get(result, "hash"), hash) != 0) {
        s_error(self, "anchor block", error ? message : "no block hash");
        return s_done(self);
    }
    if (strcmp(hash, self->cursor_hash) != 0) {
        /* the block the cursor stands on was replaced: a reorg deeper than the
         * confirmation depth. What was credited stays credited. */
        self->deep_reorgs++;
        fb_log(FB_LOG_ERROR, NULL, "reorg below the confirmation depth: credited deposits may be gone",
               "network=%s block=%lld credited_hash=%s chain_hash=%s", self->network, (long long)self->cursor,
               self->cursor_hash, hash);
        memcpy(self->cursor_hash, hash, sizeof(hash));
    }
    s_scan(self);
}

static void s_on_started(void *arg, const fb_rpc_reply_t *reply)
{
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    /* the ledger's: this one's, or a replica's that wrote first */
    if (!reply->ok || !s_take_cursor(self, reply->body)) {
        s_error(self, "advance_cursor (start)", reply->ok ? "no block" : reply->message);
        return s_done(self);
    }
    fb_log(FB_LOG_INFO, NULL, "evm watch starts", "network=%s after_block=%lld", self->network,
           (long long)self->cursor);
    s_addresses_read(self);
}

/* The confirmed head is known: a network never scanned starts here (or at
 * the configured block), written to the ledger first — a watcher restarted
 * before its first range went through starts there again, not at a later
 * head; then the addresses. */
static void s_confirmed(watch_evm_t *self, int64_t confirmed)
{
    self->confirmed = confirmed;
    if (!self->have_cursor) {
        int64_t start = self->start >= 0 ? self->start - 1 : confirmed;
        if (start >= 0) {
            json_t *body = json_pack("{s:s, s:I, s:b}", "network", self->network, "block", (json_int_t)start,
                                     "start", 1);
            char idem[64], block[24];
            snprintf(block, sizeof(block), "%lld", (long long)start);
            watch_idem(self->w, "cursor-start", self->network, block, "", idem);
            return watch_ledger_call(self->w, "ledger.advance_cursor", body, idem, s_on_started, self);
        }
        self->have_cursor = true; /* from the genesis block: nothing before it to keep */
        self->cursor = start;
        self->cursor_hash[0] = '\0';
        fb_log(FB_LOG_INFO, NULL, "evm watch starts", "network=%s after_block=%lld", self->network,
               (long long)start);
    }
    s_addresses_read(self);
}

static void s_on_confirmed(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    int64_t n;
    if (error || s_qty(json_object_get(result, "number"), &n) != 0) {
        s_error(self, "confirmed block", error ? message : "no block number");
        return s_done(self);
    }
    /* the tag's block, from whichever provider answered, no higher than the
     * lowest head: a provider short of it answers the range's eth_getLogs with
     * what it has, and the cursor would pass its missing blocks for good */
    s_confirmed(self, n < self->head ? n : self->head);
}

static void s_on_head(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    int64_t head;
    if (error || s_qty(result, &head) != 0) {
        s_error(self, "eth_blockNumber", error ? message : "not a quantity");
        return s_done(self);
    }
    /* a provider behind the last head seen moves nothing back: the cursor
     * only follows the confirmed head forward. With several providers, a
     * range's calls may be answered by any of them, and one that has not
     * reached the range's end answers eth_getLogs with what it has (no
     * error): the head is the lowest one the providers answered last */
    int64_t recent =
        fb_mono_ms() - 5 * (int64_t)self->poll_ms - 10000; /* a provider gone quiet is left out */
    for (size_t i = 0; i < self->nproviders; i++) {
        const s_provider_t *p = &self->providers[i];
        if (p->chain_state == 1 && p->head > 0 && p->head_ms >= recent && p->head < head)
            head = p->head; /* another chain's endpoint is not used, nor its head */
    }
    self->head = head;
    if (self->tag[0]) {
        json_t *params = json_pack("[s, b]", self->tag, 0);
        return fb_jsonrpc_call(self->rpc, "eth_getBlockByNumber", params, s_on_confirmed, self);
    }
    /* a block has 1 confirmation when it is the head; on a chain shorter than
     * the depth nothing is confirmed yet (-1) */
    int64_t confirmed = head - (self->depth - 1);
    s_confirmed(self, confirmed >= 0 ? confirmed : -1);
}

/* --- the confirmed range ---------------------------------------------------------------------- */

static json_t *s_logs_params(const watch_evm_t *self, int64_t from, int64_t to, size_t first, size_t count)
{
    json_t *recipients = json_array();
    for (size_t i = first; i < first + count; i++) {
        uint8_t word[32] = {0}; /* the address as an ABI word: the Transfer's indexed "to" */
        char topic[67] = "0x";
        memcpy(word + 12, self->watched[i].addr.b, 20);
        fb_hex_encode(topic + 2, word, sizeof(word));
        json_array_append_new(recipients, json_string(topic));
    }
    return json_pack("[{s:o, s:o, s:s, s:[s, n, o]}]", "fromBlock", s_hex_block(from), "toBlock",
                     s_hex_block(to), "address", self->token_hex, "topics", TRANSFER_TOPIC, recipients);
}

/* Reads one log; returns 1 for a transfer to a watched address in
 * [from, to], 0 for a log to skip, -1 for an answer that is not a log. */
static int s_parse_log(const watch_evm_t *self, json_t *log, int64_t from, int64_t to, s_transfer_t *t)
{
    json_t *topics = json_object_get(log, "topics");
    const char *addr = json_string_value(json_object_get(log, "address"));
    const char *data = json_string_value(json_object_get(log, "data"));
    fb_addr_t a;
    if (!json_is_array(topics) || !addr || !data || fb_addr_parse(&a, addr, strlen(addr)) != 0)
        return -1;
    if (json_is_true(json_object_get(log, "removed")))
        return 0;
    if (!fb_addr_eq(&a, &self->token) || json_array_size(topics) != 3)
        return 0;
    const char *t0 = json_string_value(json_array_get(topics, 0));
    if (!t0 || strcasecmp(t0, TRANSFER_TOPIC) != 0)
        return 0;
    uint8_t to_topic[32];
    const char *t2 = json_string_value(json_array_get(topics, 2));
    if (!t2 || fb_bytes32_parse(to_topic, t2, strlen(t2)) != 0)
        return -1;
    static const uint8_t zeros[12] = {0};
    if (memcmp(to_topic, zeros, 12) != 0)
        return 0;
    fb_addr_t rcpt;
    memcpy(rcpt.b, to_topic + 12, 20);
    const s_watched_t *wa = s_find(self, &rcpt);
    if (!wa)
        return 0;
    fb_u256_t amount;
    uint64_t value;
    if (strlen(data) != 66 || fb_u256_from_hex(&amount, data, 66) != 0)
        return -1;
    if (s_b32(json_object_get(log, "transactionHash"), t->tx) != 0 ||
        s_b32(json_object_get(log, "blockHash"), t->block_hash) != 0 ||
        s_qty(json_object_get(log, "logIndex"), &t->index) != 0 ||
        s_qty(json_object_get(log, "blockNumber"), &t->block) != 0)
        return -1;
    if (t->block < from || t->block > to)
        return -1;
    if (!fb_u256_to_u64(&amount, &value) || value > INT64_MAX) {
        fb_log(FB_LOG_ERROR, NULL, "deposit too large to credit", "network=%s tx=%s index=%lld",
               self->network, t->tx, (long long)t->index);
        return 0;
    }
    if (value == 0)
        return 0;
    t->amount = (int64_t)value;
    t->account = wa->account;
    return 1;
}

static void s_logs_next(watch_evm_t *self);
static void s_to_header(watch_evm_t *self);

static void s_shrink(watch_evm_t *self, const char *why)
{
    if (self->range > 1) {
        self->range = self->range / 2;
        self->range_shrinks++;
        fb_log(FB_LOG_INFO, NULL, "log range shrinks", "network=%s range=%u reason=%s", self->network,
               (unsigned)self->range, why);
        return s_scan(self);
    }
    s_error(self, "eth_getLogs", why);
    s_done(self);
}

static void s_on_logs(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    if (error)
        return s_shrink(self, message && message[0] ? message : error);
    if (!json_is_array(result)) {
        s_error(self, "eth_getLogs", "the answer is not a list");
        return s_done(self);
    }
    if (self->found.n + json_array_size(result) > LOGS_MAX)
        return s_shrink(self, "too many transfers in the range");
    size_t i;
    json_t *log;
    json_array_foreach(result, i, log)
    {
        s_transfer_t t;
        int rc = s_parse_log(self, log, self->from, self->to, &t);
        if (rc < 0) {
            s_error(self, "eth_getLogs", "a log entry is not readable");
            return s_done(self);
        }
        if (rc == 1)
            s_list_push(&self->found, &t);
    }
    self->logs += json_array_size(result);
    self->batch++;
    s_logs_next(self);
}

static void s_logs_next(watch_evm_t *self)
{
    size_t first = self->batch * self->per_call;
    if (first >= self->nwatched)
        return s_to_header(self);
    size_t count = self->nwatched - first < self->per_call ? self->nwatched - first : self->per_call;
    self->log_calls++;
    fb_jsonrpc_call(self->rpc, "eth_getLogs", s_logs_params(self, self->from, self->to, first, count),
                    s_on_logs, self);
}

static void s_credit_more(watch_evm_t *self);

static void s_on_advanced(void *arg, const fb_rpc_reply_t *reply)
{
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    if (!reply->ok) {
        s_error(self, "advance_cursor", reply->message);
        return s_done(self);
    }
    int64_t block = self->to;
    fb_mp_get_int64(reply->body, "block", &block);
    const char *hash;
    size_t len;
    if (block > self->to && fb_mp_get_str(reply->body, "hash", &hash, &len) &&
        len < sizeof(self->cursor_hash)) {
        /* another watcher is further: continue from there */
        memcpy(self->cursor_hash, hash, len);
        self->cursor_hash[len] = '\0';
        self->cursor = block;
    } else {
        self->cursor = self->to;
        memcpy(self->cursor_hash, self->to_hash, sizeof(self->to_hash));
    }
    self->scanned_at_ms = fb_mono_ms();
    if (self->range < self->range_max)
        self->range = self->range * 2 < self->range_max ? self->range * 2 : self->range_max;
    self->next_range = true;
    s_round(self);
}

typedef struct {
    watch_evm_t *self;
    size_t item;
} s_credit_t;

static void s_on_credited(void *arg, const fb_rpc_reply_t *reply)
{
    s_credit_t *c = arg;
    watch_evm_t *self = c->self;
    const s_transfer_t *t = &self->found.items[c->item];
    free(c);
    self->credits_out--;
    if (reply->ok) {
        /* a duplicate (another replica credited the source) or this
         * replica's own earlier call answered again: not a new credit */
        bool dup = false, replayed = false;
        fb_mp_get_bool(reply->body, "duplicate", &dup);
        fb_mp_get_bool(reply->body, "replayed", &replayed);
        if (dup || replayed)
            self->duplicates++;
        else {
            self->credited++;
            fb_log(FB_LOG_INFO, NULL, "deposit credited",
                   "network=%s account_id=%lld amount_micro=%lld tx=%s index=%lld", self->network,
                   (long long)t->account, (long long)t->amount, t->tx, (long long)t->index);
        }
    } else if (strcmp(reply->code, "idempotency_conflict") == 0) {
        /* credited before with other fields (the same transfer in another
         * block after a reorg): it is credited, once */
        self->conflicts++;
        fb_log(FB_LOG_WARN, NULL, "deposit was credited before with other fields",
               "network=%s tx=%s index=%lld", self->network, t->tx, (long long)t->index);
    } else if (strcmp(reply->code, "account_not_found") == 0 || strcmp(reply->code, "bad_request") == 0) {
        self->errors++;
        fb_log(FB_LOG_ERROR, NULL, "deposit cannot be credited",
               "network=%s tx=%s index=%lld code=%s message=%s", self->network, t->tx, (long long)t->index,
               reply->code, reply->message);
    } else {
        self->credit_failed = true;
        s_error(self, "credit", reply->message);
    }
    if (self->stopping) {
        if (self->credits_out == 0)
            s_done(self);
        return;
    }
    s_credit_more(self);
}

static void s_credit_more(watch_evm_t *self)
{
    while (!self->credit_failed && self->credits_out < CREDITS_INFLIGHT &&
           self->credit_next < self->found.n) {
        size_t i = self->credit_next++;
        const s_transfer_t *t = &self->found.items[i];
        /* a retry from this replica answers its first call again; another
         * replica crediting the same source is told it is a duplicate */
        char idem[64], index[24];
        snprintf(index, sizeof(index), "%lld", (long long)t->index);
        watch_idem(self->w, "deposit", self->network, t->tx, index, idem);
        json_t *body =
            json_pack("{s:I, s:I, s:s, s:{s:s, s:s, s:I, s:s}}", "account_id", (json_int_t)t->account,
                      "amount_micro", (json_int_t)t->amount, "kind", "deposit", "source", "chain",
                      self->network, "tx", t->tx, "index", (json_int_t)t->index, "block_hash", t->block_hash);
        s_credit_t *c = fb_malloc(sizeof(*c));
        c->self = self;
        c->item = i;
        self->credits_out++;
        watch_ledger_call(self->w, "ledger.credit", body, idem, s_on_credited, c);
    }
    if (self->credits_out > 0)
        return;
    if (self->credit_failed)
        return s_done(self); /* the range is scanned again next poll: credits are idempotent */
    json_t *body = json_pack("{s:s, s:I, s:s}", "network", self->network, "block", (json_int_t)self->to,
                             "hash", self->to_hash);
    char idem[160];
    snprintf(idem, sizeof(idem), "cursor:%s:%lld:%s", self->network, (long long)self->to, self->to_hash);
    watch_ledger_call(self->w, "ledger.advance_cursor", body, idem, s_on_advanced, self);
}

static void s_on_to_header(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    if (error || s_b32(json_object_get(result, "hash"), self->to_hash) != 0) {
        s_error(self, "range end block", error ? message : "no block hash");
        return s_done(self);
    }
    /* the logs of the last block must be of this very block */
    for (size_t i = 0; i < self->found.n; i++) {
        if (self->found.items[i].block == self->to &&
            strcmp(self->found.items[i].block_hash, self->to_hash) != 0) {
            s_error(self, "range end block", "the block changed while it was read");
            return s_done(self);
        }
    }
    self->credit_next = 0;
    self->credits_out = 0;
    self->credit_failed = false;
    s_credit_more(self);
}

static void s_to_header(watch_evm_t *self)
{
    json_t *params = json_pack("[o, b]", s_hex_block(self->to), 0);
    fb_jsonrpc_call(self->rpc, "eth_getBlockByNumber", params, s_on_to_header, self);
}

static void s_scan(watch_evm_t *self)
{
    if (self->stopping)
        return s_done(self);
    if (self->cursor >= self->confirmed)
        return s_window(self);
    self->from = self->cursor + 1;
    self->to = self->from + (int64_t)self->range - 1;
    if (self->to > self->confirmed)
        self->to = self->confirmed;
    self->batch = 0;
    self->found.n = 0;
    s_logs_next(self);
}

/* --- the unconfirmed window --------------------------------------------------------------------- */

static void s_window_reset(watch_evm_t *self, const char *why, int64_t at)
{
    if (self->nwindow) {
        self->reorgs++;
        fb_log(FB_LOG_WARN, NULL, "reorg in the unconfirmed blocks", "network=%s block=%lld reason=%s",
               self->network, (long long)at, why);
    }
    self->nwindow = 0;
}

static void s_on_window_header(void *arg, json_t *result, const char *error, int64_t code,
                               const char *message)
{
    FB_UNUSED(code);
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    s_header_t h;
    if (error || s_qty(json_object_get(result, "number"), &h.number) != 0 ||
        s_b32(json_object_get(result, "hash"), h.hash) != 0 ||
        s_b32(json_object_get(result, "parentHash"), h.parent) != 0) {
        s_error(self, "unconfirmed block", error ? message : "not a block");
        return s_done(self);
    }
    if (self->nwindow) {
        const s_header_t *top = &self->window[self->nwindow - 1];
        if (top->number == h.number - 1 && strcmp(top->hash, h.parent) != 0)
            s_window_reset(self, "parent hash mismatch", h.number);
    }
    if (self->nwindow == WINDOW_MAX) {
        memmove(self->window, self->window + 1, (WINDOW_MAX - 1) * sizeof(s_header_t));
        self->nwindow--;
    }
    self->window[self->nwindow++] = h;
    s_window(self);
}

/* Follows the headers up to the head: each new one must link to the one
 * before it (the window's top), and a head below the top means blocks were
 * taken away. Then lists the pending transfers of the unconfirmed blocks. */
static void s_window(watch_evm_t *self)
{
    if (self->nwindow && self->window[self->nwindow - 1].number > self->head)
        s_window_reset(self, "the head went back", self->head);
    int64_t floor = self->head - HEADERS_PER_POLL + 1;
    int64_t next = self->nwindow ? self->window[self->nwindow - 1].number + 1 : self->confirmed + 1;
    if (next < floor) {
        self->nwindow = 0; /* too far behind to follow block by block: start again near the head */
        next = floor;
    }
    if (next <= self->head && next >= 0) {
        json_t *params = json_pack("[o, b]", s_hex_block(next), 0);
        return fb_jsonrpc_call(self->rpc, "eth_getBlockByNumber", params, s_on_window_header, self);
    }
    /* keep the confirmed head as the anchor the next block must link to */
    size_t drop = 0;
    while (drop + 1 < self->nwindow && self->window[drop].number < self->confirmed)
        drop++;
    if (drop) {
        memmove(self->window, self->window + drop, (self->nwindow - drop) * sizeof(s_header_t));
        self->nwindow -= drop;
    }
    /* the pending transfers of the unconfirmed blocks */
    self->pending_next.n = 0;
    self->batch = 0;
    self->pending_from = self->confirmed + 1 > self->cursor + 1 ? self->confirmed + 1 : self->cursor + 1;
    if (self->pending_from > self->head || self->nwatched == 0) {
        self->pending.n = 0;
        return s_done(self);
    }
    s_pending_next(self);
}

static void s_on_pending_logs(void *arg, json_t *result, const char *error, int64_t code, const char *message)
{
    FB_UNUSED(code);
    watch_evm_t *self = arg;
    if (self->stopping)
        return s_done(self);
    if (error || !json_is_array(result)) {
        /* the pending list is informational: keep the last one */
        s_error(self, "pending eth_getLogs", error ? message : "the answer is not a list");
        return s_done(self);
    }
    size_t i;
    json_t *log;
    json_array_foreach(result, i, log)
    {
        s_transfer_t t;
        if (self->pending_next.n < PENDING_MAX &&
            s_parse_log(self, log, self->pending_from, self->head, &t) == 1)
            s_list_push(&self->pending_next, &t);
    }
    self->batch++;
    s_pending_next(self);
}

static void s_pending_next(watch_evm_t *self)
{
    size_t first = self->batch * self->per_call;
    if (first >= self->nwatched) {
        s_list_t done = self->pending;
        self->pending = self->pending_next;
        self->pending_next = done;
        return s_done(self);
    }
    size_t count = self->nwatched - first < self->per_call ? self->nwatched - first : self->per_call;
    fb_jsonrpc_call(self->rpc, "eth_getLogs",
                    s_logs_params(self, self->pending_from, self->head, first, count), s_on_pending_logs,
                    self);
}

/* --- life ------------------------------------------------------------------------------------- */

watch_evm_t *watch_evm_new(watcher_t *w, const watch_evm_config_t *config, char *err, size_t errlen)
{
    watch_evm_t *self = fb_calloc(1, sizeof(*self));
    self->w = w;
    snprintf(self->network, sizeof(self->network), "%s", config->network);
    fb_x402_network_t net;
    if (fb_x402_network(config->network, &net) != 0 || net.family != FB_X402_EVM || net.chain_id == 0 ||
        net.chain_id > INT64_MAX) {
        snprintf(err, errlen, "FAREBOX_EVM_NETWORK: must be eip155:<chain id>");
        free(self);
        return NULL;
    }
    self->chain_id = (int64_t)net.chain_id;
    self->chain_seen = -1;
    if (fb_addr_parse(&self->token, config->token, strlen(config->token)) != 0) {
        snprintf(err, errlen, "FAREBOX_EVM_TOKEN: not an address");
        free(self);
        return NULL;
    }
    fb_addr_lower(self->token_hex, &self->token);
    if (strcmp(config->confirm, "safe") == 0 || strcmp(config->confirm, "finalized") == 0) {
        snprintf(self->tag, sizeof(self->tag), "%s", config->confirm);
    } else {
        char *end;
        errno = 0;
        long long d = strtoll(config->confirm, &end, 10);
        /* 1: the head block itself (0 would name a block that is not there yet) */
        if (!isdigit((unsigned char)config->confirm[0]) || *end || errno || d < 1 || d > 100000) {
            snprintf(err, errlen,
                     "FAREBOX_EVM_CONFIRMATIONS: must be a block count (1..100000), safe or finalized");
            free(self);
            return NULL;
        }
        self->depth = d;
    }
    if (strcmp(config->start, "latest") == 0) {
        self->start = -1;
    } else {
        char *end;
        errno = 0;
        long long s = strtoll(config->start, &end, 10);
        if (!isdigit((unsigned char)config->start[0]) || *end || errno || s < 0) {
            snprintf(err, errlen, "FAREBOX_EVM_START_BLOCK: must be latest or a block number");
            free(self);
            return NULL;
        }
        self->start = s;
    }
    self->range_max = config->range_max;
    self->range = config->range_max;
    self->per_call = config->per_call;
    self->poll_ms = config->poll_ms;
    self->head = -1;
    self->confirmed = -1;
    fb_jsonrpc_config_t rc = {.chain = self->network,
                              .urls = config->rpc_urls,
                              .timeout_ms = config->timeout_ms,
                              .attempts = 3,
                              .max_response = 64u << 20};
    self->rpc = fb_jsonrpc_new(w->loop, &rc, err, errlen);
    if (!self->rpc) {
        free(self);
        return NULL;
    }
    /* with several providers, each one's head is followed too */
    const char *p = config->rpc_urls;
    while (*p && self->nproviders < PROVIDERS_MAX) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t len = strcspn(p, ", ");
        if (len == 0)
            break;
        s_provider_t *pr = &self->providers[self->nproviders];
        pr->owner = self;
        pr->index = self->nproviders++;
        pr->head = -1;
        pr->chain_seen = -1;
        snprintf(pr->url, sizeof(pr->url), "%.*s", (int)len, p);
        fb_jsonrpc_url_shown(pr->url, pr->shown, sizeof(pr->shown));
        p += len;
    }
    if (self->nproviders > 1) {
        for (size_t i = 0; i < self->nproviders; i++) {
            s_provider_t *pr = &self->providers[i];
            fb_jsonrpc_config_t one = {.chain = self->network,
                                       .urls = pr->url,
                                       .timeout_ms = config->timeout_ms,
                                       .attempts = 1,
                                       .max_response = 4096};
            pr->rpc = fb_jsonrpc_new(w->loop, &one, err, errlen);
            fb_jsonrpc_bar(self->rpc, i, true); /* until it answers the network's chain id */
        }
    }
    uv_timer_init(w->loop, &self->timer);
    self->timer.data = self;
    uv_timer_start(&self->timer, s_on_timer, 0, self->poll_ms);
    return self;
}

static void s_on_closed(uv_handle_t *h)
{
    watch_evm_t *self = h->data;
    free(self->watched);
    free(self->found.items);
    free(self->pending.items);
    free(self->pending_next.items);
    free(self);
}

void watch_evm_stop(watch_evm_t *self)
{
    self->stopping = true;
    uv_timer_stop(&self->timer);
    fb_jsonrpc_destroy(&self->rpc);
    for (size_t i = 0; i < self->nproviders; i++)
        fb_jsonrpc_destroy(&self->providers[i].rpc);
}

void watch_evm_destroy(watch_evm_t **self_p)
{
    watch_evm_t *self = *self_p;
    if (!self)
        return;
    if (!self->stopping)
        watch_evm_stop(self);
    uv_close((uv_handle_t *)&self->timer, s_on_closed);
    *self_p = NULL;
}

const struct fb_jsonrpc_t *watch_evm_rpc(const watch_evm_t *self, const char **network)
{
    *network = self->network;
    return self->rpc;
}

void watch_evm_status(const watch_evm_t *self, msgpack_packer *pk)
{
    msgpack_pack_map(pk, 21);
    fb_mp_pack_cstr(pk, "providers");
    msgpack_pack_array(pk, (uint32_t)self->nproviders);
    for (size_t i = 0; i < self->nproviders; i++) {
        msgpack_pack_map(pk, 3);
        fb_mp_pack_kv_cstr(pk, "url", self->providers[i].shown);
        fb_mp_pack_kv_int(pk, "head", self->nproviders > 1 ? self->providers[i].head : self->head);
        fb_mp_pack_kv_int(pk, "chain_id",
                          self->nproviders > 1 ? self->providers[i].chain_seen : self->chain_seen);
    }
    fb_mp_pack_kv_cstr(pk, "network", self->network);
    fb_mp_pack_kv_cstr(pk, "token", self->token_hex);
    fb_mp_pack_kv_int(pk, "head", self->head);
    fb_mp_pack_kv_int(pk, "confirmed", self->confirmed);
    fb_mp_pack_kv_int(pk, "cursor", self->have_cursor ? self->cursor : -1);
    fb_mp_pack_kv_int(pk, "lag_blocks",
                      self->have_cursor && self->head >= 0 ? self->head - self->cursor : -1);
    fb_mp_pack_kv_uint(pk, "watched", self->nwatched);
    fb_mp_pack_kv_uint(pk, "range", self->range);
    fb_mp_pack_kv_uint(pk, "polls", self->polls);
    fb_mp_pack_kv_uint(pk, "credited", self->credited);
    fb_mp_pack_kv_uint(pk, "duplicates", self->duplicates);
    fb_mp_pack_kv_uint(pk, "conflicts", self->conflicts);
    fb_mp_pack_kv_uint(pk, "errors", self->errors);
    fb_mp_pack_kv_uint(pk, "reorgs", self->reorgs);
    fb_mp_pack_kv_uint(pk, "deep_reorgs", self->deep_reorgs);
    fb_mp_pack_kv_uint(pk, "range_shrinks", self->range_shrinks);
    fb_mp_pack_kv_uint(pk, "log_calls", self->log_calls);
    fb_mp_pack_kv_uint(pk, "logs", self->logs);
    fb_mp_pack_kv_cstr(pk, "last_error", self->last_error);
    fb_mp_pack_kv_int(pk, "chain_id_seen", self->chain_seen);
}

void watch_evm_metrics(const watch_evm_t *self, FILE *out)
{
    const char *n = self->network;
    fprintf(out, "farebox_watch_evm_head{network=\"%s\"} %lld\n", n, (long long)self->head);
    fprintf(out, "farebox_watch_evm_confirmed_block{network=\"%s\"} %lld\n", n, (long long)self->confirmed);
    fprintf(out, "farebox_watch_evm_cursor{network=\"%s\"} %lld\n", n,
            (long long)(self->have_cursor ? self->cursor : -1));
    fprintf(out, "farebox_watch_evm_lag_blocks{network=\"%s\"} %lld\n", n,
            (long long)(self->have_cursor && self->head >= 0 ? self->head - self->cursor : -1));
    fprintf(out, "farebox_watch_evm_watched_addresses{network=\"%s\"} %zu\n", n, self->nwatched);
    fprintf(out, "farebox_watch_evm_credits_total{network=\"%s\",result=\"credited\"} %llu\n", n,
            (unsigned long long)self->credited);
    fprintf(out, "farebox_watch_evm_credits_total{network=\"%s\",result=\"duplicate\"} %llu\n", n,
            (unsigned long long)self->duplicates);
    fprintf(out, "farebox_watch_evm_credits_total{network=\"%s\",result=\"conflict\"} %llu\n", n,
            (unsigned long long)self->conflicts);
    fprintf(out, "farebox_watch_evm_errors_total{network=\"%s\"} %llu\n", n,
            (unsigned long long)self->errors);
    fprintf(out, "farebox_watch_evm_reorgs_total{network=\"%s\",depth=\"unconfirmed\"} %llu\n", n,
            (unsigned long long)self->reorgs);
    fprintf(out, "farebox_watch_evm_reorgs_total{network=\"%s\",depth=\"confirmed\"} %llu\n", n,
            (unsigned long long)self->deep_reorgs);
    fprintf(out, "farebox_watch_evm_log_calls_total{network=\"%s\"} %llu\n", n,
            (unsigned long long)self->log_calls);
    fprintf(out, "farebox_watch_evm_log_range_blocks{network=\"%s\"} %u\n", n, (unsigned)self->range);
    fprintf(out, "farebox_watch_evm_pending_transfers{network=\"%s\"} %zu\n", n, self->pending.n);
    fprintf(out, "farebox_watch_evm_chain_mismatch{network=\"%s\"} %d\n", n,
            self->chain_seen >= 0 && self->chain_seen != self->chain_id ? 1 : 0);
    for (size_t i = 0; i < self->nproviders; i++)
        fprintf(out, "farebox_watch_evm_provider_head{network=\"%s\",endpoint=\"%s\"} %lld\n", n,
                self->providers[i].shown,
                (long long)(self->nproviders > 1 ? self->providers[i].head : self->head));
}

void watch_evm_pending(const watch_evm_t *self, int64_t account, msgpack_packer *pk)
{
    size_t n = 0;
    for (size_t i = 0; i < self->pending.n; i++)
        n += account == 0 || self->pending.items[i].account == account;
    msgpack_pack_array(pk, (uint32_t)n);
    for (size_t i = 0; i < self->pending.n; i++) {
        const s_transfer_t *t = &self->pending.items[i];
        if (account != 0 && t->account != account)
            continue;
        msgpack_pack_map(pk, 7);
        fb_mp_pack_kv_cstr(pk, "network", self->network);
        fb_mp_pack_kv_int(pk, "account_id", t->account);
        fb_mp_pack_kv_int(pk, "amount_micro", t->amount);
        fb_mp_pack_kv_cstr(pk, "tx", t->tx);
        fb_mp_pack_kv_int(pk, "index", t->index);
        fb_mp_pack_kv_int(pk, "block", t->block);
        fb_mp_pack_kv_int(pk, "confirmations", self->head - t->block + 1);
    }
}
