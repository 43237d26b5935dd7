/* edge_purse - prepaid calls served from slices of the balance.
 *
 * A slice is one ledger hold for a key, sized for many calls. Each worker keeps
 * one open slice per key taking calls (and, once it has less than a quarter
 * of its money left, the next one, opened ahead to take over when it runs
 * out) and reserves each call's ceiling in it in memory, with no ledger round
 * trip. When the call ends, its cost is charged:
 * the charges of every call that ended in the same loop turn go to the ledger
 * as one ledger.charge (one row per call, one transfer), and each call gets its
 * answer only once that write is durable (or, with
 * FAREBOX_PREPAID_CHARGE_DEFER_MS, at once, its charge written with those of
 * the next few milliseconds, and journaled first with
 * FAREBOX_PREPAID_JOURNAL_DIR: edge_journal.h, each write carrying such
 * charges sent once its record is on the disk; with
 * FAREBOX_PREPAID_JOURNAL_FSYNC too, answered once the charge's record is).
 * A call that fails before any output just gives its reservation back. A
 * slice is closed (ledger.void of its uncharged rest) when it runs short, when
 * it has been idle or open long enough, when its key is revoked, and when the
 * edge stops; an edge that dies leaves its slices to expire, and then only
 * their uncharged rest comes back: every served call stays charged, once.
 *
 * Slices start at FAREBOX_PREPAID_SLICE_CALLS times the call's ceiling and
 * grow fourfold each time one runs out within two seconds (a busy key), up to
 * FAREBOX_PREPAID_SLICE_MAX_MICRO; a refused slice (the balance or the key's
 * spend cap is short) is asked again at exactly the call's ceiling, so a small
 * balance serves calls one at a time as before. */
#ifndef EDGE_PURSE_H
#define EDGE_PURSE_H

#include "edge.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>

typedef struct edge_purse_t edge_purse_t;
typedef struct edge_slice_t edge_slice_t;

typedef struct {
    int64_t slice_calls;     /* a new slice covers this many ceilings */
    int64_t slice_max_micro; /* ... at most this much money */
    int64_t idle_ms;         /* a slice unused this long is closed */
    int64_t max_age_ms;      /* a slice this old takes no new calls */
    int64_t hold_ttl_ms;     /* the slice hold's expiry: outlives any call it covers */
    size_t answer_budget;    /* bytes of stored answers one ledger.charge may carry */
    int64_t defer_ms;        /* 0: a call is answered once its charge is durable; else at once, its
                                charge written within this long (edge_purse_charge) */
    const char
        *journal_dir; /* deferred charges are journaled there first (edge_journal.h); NULL or "": not */
    size_t journal_max_bytes; /* ... replaced by one of what is pending past this size */
    bool journal_fsync; /* ... and a deferred call is answered once its record is on the disk (fdatasync,
                           one for every record written while the one before ran) */
    bool recover;       /* this worker writes dead edges' journals found in journal_dir */
} edge_purse_conf_t;

/* One call's reservation in a slice. */
typedef struct {
    edge_slice_t *slice; /* NULL: nothing reserved */
    int64_t amount;      /* the call's ceiling */
    int64_t hold_id;     /* the slice's hold */
} edge_purse_res_t;

/* An answer from the ledger (or a local failure shaped like one). */
typedef void(edge_purse_fn)(void *arg, const fb_rpc_reply_t *reply);

edge_purse_t *edge_purse_new(edge_worker_t *w, const edge_purse_conf_t *conf);
/* edge_purse_shutdown - before the worker's ledger client goes: calls still
 * pending complete with "unavailable" and nothing new is sent. */
void edge_purse_shutdown(edge_purse_t *self);
void edge_purse_destroy(edge_purse_t **self_p);
/* edge_purse_alive - false once shut down: the worker's ledger client is going. */
bool edge_purse_alive(const edge_purse_t *self);

/* edge_purse_reserve - reserve amount for a call of key (on account), whose
 * spend cap is cap (-1: none) in the key's lookup for this call: a cap other
 * than the one the key's slices were opened under retires them. Returns
 * true when it is reserved at once (res filled, fn not called); false when a
 * slice is being opened: fn runs later, with res filled when reply->ok, or
 * with the ledger's refusal (insufficient_balance, spend_limit_exceeded,
 * key_revoked, ... with their bodies). */
bool edge_purse_reserve(edge_purse_t *self, int64_t account_id, int64_t key_id, int64_t cap, int64_t amount,
                        const char *rid, edge_purse_res_t *res, edge_purse_fn *fn, void *arg);

/* edge_purse_charge - charge cost (0..res->amount) for the call, with rid as
 * the charge's ref; fn runs once the charge is durable (reply->ok) or could
 * not be made. The reservation is consumed either way. call (stolen, may be
 * NULL) is an idempotent call's name and answer, stored with the charge
 * (edge_idem.h); one write carries at most answer_budget bytes of answers.
 * With defer_ms set, a charge without call is deferred: fn runs at once
 * (reply->ok), and the charge goes with the others queued within defer_ms; if
 * it can never be written (its slice's hold refused it, or the edge stopped
 * first) the call goes unpaid: logged, and counted as "unbilled" money. With
 * journal_dir set, a charge is deferred only once the journal is open, and
 * is in it before fn runs: charges the edge stops (or dies) before writing are
 * left in the journal for another edge (or its next start) to write. */
void edge_purse_charge(edge_purse_t *self, edge_purse_res_t *res, int64_t cost, const char *rid, json_t *call,
                       edge_purse_fn *fn, void *arg);

/* edge_purse_release - give an unused reservation back (nothing is charged). */
void edge_purse_release(edge_purse_t *self, edge_purse_res_t *res);

/* edge_purse_retire_key - the key's slices take no new call and close once
 * their calls ended (a revoked key). */
void edge_purse_retire_key(edge_purse_t *self, int64_t key_id);

/* edge_purse_drain - retire every slice (the edge stops); returns how many
 * are not closed yet. */
size_t edge_purse_drain(edge_purse_t *self);

#endif
