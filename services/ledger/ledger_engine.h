/* ledger_engine - group commit: operations that arrive together run in one
 * Postgres transaction, each with its own result and idempotency.
 *
 * Writes queue up while the writer connections are busy; an idle writer takes
 * everything queued (up to the batch limit) and sends, in one pipelined round
 * trip, BEGIN, ledger_lock() of every row the batch touches (holds, accounts,
 * keys, in id order: no deadlock between batches), one ledger_apply() per
 * operation, and COMMIT (durable: synchronous_commit stays on). A lone
 * operation never waits for company: it goes out at once when a writer is
 * idle. Refusals are per-operation answers; a deadlock or serialization
 * failure retries the whole batch; any other failure reruns the batch's
 * operations one per transaction so that only the faulty one fails. Reads run
 * pipelined on their own connections, without waiting behind commits. */
#ifndef LEDGER_ENGINE_H
#define LEDGER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct ledger_engine_t ledger_engine_t;

typedef enum {
    LEDGER_OP_WRITE, /* ledger_apply(method, idem, fingerprint, args), batched */
    LEDGER_OP_READ,  /* ledger_read(method, args), on a reader */
    LEDGER_OP_AUDIT, /* ledger_audit(), alone in its transaction */
    LEDGER_OP_SWEEP, /* ledger_expire_holds(args as the limit), alone */
} ledger_op_kind_t;

typedef struct {
    ledger_op_kind_t kind;
    const char *method;      /* "ledger.hold" */
    const char *idem;        /* idempotency key (writes) */
    const char *fingerprint; /* "\\x" + hex SHA-256 of method and arguments (writes) */
    const char *args;        /* arguments as JSON text (or the sweep limit) */
    int64_t lock_hold;       /* row ids to lock first, 0 for none; a hold locks its account and key too */
    bool lock_hold_only;     /* ... unless this is set: the hold's row alone (ledger.charge) */
    int64_t lock_account;
    int64_t lock_key;
    const char *lock_code; /* a system account code to lock (and create), or NULL */
    int64_t deadline;      /* monotonic ms after which nobody waits for the answer */
    const char *trace;     /* request id for logs, or NULL */
} ledger_op_spec_t;

/* Completion: result is the operation's JSON answer
 * ({"status":"ok"|"error", ...}), or NULL with code ("unavailable",
 * "deadline_exceeded", "internal") and a message. */
typedef void(ledger_op_done_fn)(void *arg, const char *result, const char *code, const char *message);

typedef struct {
    const char *conninfo; /* Postgres connection string */
    int writers;          /* connections running write batches */
    int readers;          /* connections running reads */
    int batch_max;        /* operations per write transaction, at most */
} ledger_engine_config_t;

ledger_engine_t *ledger_engine_new(uv_loop_t *loop, const ledger_engine_config_t *config);
void ledger_engine_destroy(ledger_engine_t **self_p);

/* ledger_engine_submit - queue an operation (strings are copied). done runs
 * exactly once, from the loop. */
void ledger_engine_submit(ledger_engine_t *self, const ledger_op_spec_t *spec, ledger_op_done_fn *done,
                          void *arg);

/* ledger_engine_on_idle - fn runs once nothing is queued or in flight (used to
 * stop gracefully); at once if that is already so. */
void ledger_engine_on_idle(ledger_engine_t *self, void (*fn)(void *arg), void *arg);

typedef struct {
    int writers_up, readers_up;
    size_t queued, inflight;
    uint64_t batches, ops, retries, isolations, largest_batch;
} ledger_engine_stats_t;

void ledger_engine_stats(const ledger_engine_t *self, ledger_engine_stats_t *out);

#endif
