/* verifier - shared definitions of the verifier service: the networks it
 * serves, its RPC clients, and the result of a verification or settlement.
 *
 * Reason strings follow the official x402 2.27.0 implementation where one
 * exists (docs/x402-notes.md); farebox's own checks add a few, each listed in
 * proto/README.md. */
#ifndef VERIFIER_H
#define VERIFIER_H

#include "fb_eip712.h"
#include "fb_evm.h"
#include "fb_jsonrpc.h"
#include "fb_rpc_client.h"
#include "fb_solana.h"
#include "fb_x402.h"
#include "svm_exact.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* An EVM network farebox verifies and settles on. */
typedef struct {
    char caip2[96]; /* "eip155:84532" */
    uint64_t chain_id;
    fb_addr_t token;            /* the USDC-like EIP-3009 token accepted */
    char token_text[43];        /* its checksummed address */
    char name[64], version[16]; /* its EIP-712 domain */
    fb_jsonrpc_t *rpc;          /* chain JSON-RPC */
    bool has_key;               /* a settlement key is configured */
    uint8_t key[32];            /* settlement wallet secret key (wiped on exit) */
    fb_addr_t sender;           /* its address */
    char sender_text[43];
    int64_t valid_before_margin_s; /* validBefore must be at least now + this */
    uint64_t gas;                  /* gas limit of a settlement transaction */
    uint64_t confirmations;        /* a settlement's verdict stands once its blocks are this deep */
    int64_t
        reprice_after_ms; /* a transaction the base fee admits, unmined this long: tip raised (0: never) */
    uint64_t tip_max;     /* the highest tip (wei per gas) a settlement transaction offers */
    bool code_checked;    /* eth_getCode(token) was non-empty once */
    int64_t chain_checked_ms; /* when eth_chainId last answered chain_id (0: never) */
} verifier_evm_t;

/* A Solana cluster farebox verifies and settles on. */
typedef struct {
    char caip2[96];
    fb_sol_key_t mint;
    char mint_text[48];
    fb_jsonrpc_t *rpc;
    bool has_key;
    uint8_t secret[64]; /* fee payer's ed25519 secret key (wiped on exit) */
    fb_sol_key_t fee_payer;
    char fee_payer_text[48];
    svm_limits_t limits; /* what the fee payer accepts to pay */
    /* the endpoints must serve the cluster (fb_sol_cluster_checked): getGenesisHash is asked
     * with the chain checks and before tracking, again after a minute */
    char genesis[64];           /* the genesis hash expected (FAREBOX_SOLANA_GENESIS_HASH), or "" */
    bool cluster_check;         /* checked at all */
    int64_t cluster_checked_ms; /* when it last answered the right one (0: never) */
    char cluster_logged[64];    /* the last wrong answer logged by the tracker */
} verifier_svm_t;

typedef struct verifier_t {
    uv_loop_t *loop;
    fb_rpc_client_t *ledger;
    verifier_evm_t evm;      /* configured when evm.caip2[0] */
    verifier_svm_t svm;      /* configured when svm.caip2[0] */
    bool chain_checks;       /* verify asks the chain (balance, nonce state, simulation) */
    uint32_t settle_wait_ms; /* settle waits this long for a receipt before settlement_pending */
    uint32_t chain_timeout_ms;
    int64_t message_max_age_ms;  /* signed-message proofs: oldest timestamp accepted */
    int64_t message_max_skew_ms; /* ... and how far ahead of the clock */
    uv_timer_t tracker;          /* follows settlements left pending */
    bool tracking;
} verifier_t;

typedef struct {
    bool ok;                /* verify: isValid; settle: success */
    const char *reason;     /* x402 reason string when not ok */
    const char *error_code; /* set when the question could not be answered ("unavailable") */
    char message[512];      /* detail for people */
    char payer[100];
    char transaction[130]; /* settle: tx hash or signature ("" when none) */
    char network[96];      /* as the payment named it */
    /* a valid verify: the authorization's key in the ledger, and its terms */
    char auth_network[96], auth_payer[100], auth_nonce[130], pay_to[100];
    int64_t amount_micro;
    int64_t authorization_id;    /* verify with record: the ledger's id; or the earlier record's */
    char recorded_resource[256]; /* refused as already accepted: what the earlier record was for */
} verifier_result_t;

typedef void(verifier_done_fn)(void *arg, const verifier_result_t *result);

/* verifier_result_key - note a valid payment's ledger key (network, payer,
 * nonce: a map as the ledger takes it, borrowed) and terms in res. */
void verifier_result_key(verifier_result_t *res, json_t *key, int64_t amount_micro, const char *pay_to);

/* verifier_result_recorded - note the ledger's earlier record of a payment
 * (an authorization view: authorization_id, resource) in res. */
void verifier_result_recorded(verifier_result_t *res, const msgpack_object *view);

/* verifier_verify / verifier_settle - check (and settle) a payment against
 * requirements. payload and requirements are borrowed JSON documents; done
 * runs exactly once, from the loop or at once. A settlement waits for its
 * final receipt (up to settle_wait_ms) or, without wait, answers once its
 * transaction is broadcast (settlement_pending, with the transaction, unless
 * the chain decided at once); the tracker follows it either way. */
void verifier_verify(verifier_t *v, json_t *payload, json_t *requirements, const char *trace,
                     verifier_done_fn *done, void *arg);

/* What a run does: verify, settle, or settle once — the payment's success is answered to one
 * settle only (the first to see it confirmed, the ledger deciding: a settle answered
 * settlement_pending leaves it to the next); any other is told duplicate_settlement, as a
 * second settle of a used authorization fails on chain. */
typedef enum { VERIFIER_VERIFY = 0, VERIFIER_SETTLE, VERIFIER_SETTLE_ONCE } verifier_mode_t;

void verifier_settle(verifier_t *v, json_t *payload, json_t *requirements, bool wait, bool once,
                     const char *trace, verifier_done_fn *done, void *arg);

/* verifier_answer_ask - a settle-once run whose settlement is confirmed asks
 * the ledger for its one success answer (ledger.settlement_answer). */
void verifier_answer_ask(verifier_t *v, int64_t settlement_id, const char *trace, fb_rpc_done_fn *cb,
                         void *arg);

/* verifier_answer_apply - the ledger's reply applied to that successful
 * result: kept when this settle took the answer; else duplicate_settlement,
 * or settlement_pending (ask again) when the ledger could not say. */
void verifier_answer_apply(verifier_result_t *res, const fb_rpc_reply_t *reply);

#endif
