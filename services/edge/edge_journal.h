/* edge_journal - the charges an edge answered before writing them, in a file
 * any edge of the deployment can finish writing.
 *
 * With FAREBOX_PREPAID_CHARGE_DEFER_MS an answer goes out before its charge is
 * in the ledger. With FAREBOX_PREPAID_JOURNAL_DIR, each such charge is first
 * appended to the worker's journal (a write(2): the page cache, which outlives
 * the process), and so is every ledger.charge write that carries deferred
 * charges, before it is sent (its idempotency key and body; the owner syncs it
 * to the disk first, so that a crash of the host cannot leave the charges
 * without the write that carried them), and its answer.
 * An edge killed outright leaves its journal behind, unlocked: every edge
 * looks in the directory each second, locks a journal whose owner is gone,
 * sends again each write not answered (the same key and body: the ledger's
 * first answer if it was applied), writes the charges no write carried, under
 * keys taken from the journal (a second recovery of the same journal uses the
 * same ones), closes the holds named in it, and deletes it.
 *
 * A journal is a text file, one record a line:
 *   farebox-charge-journal 1 <ledger_id>     the first line: the ledger it is for
 *   C <uid> <hold_id> <amount_micro> <ref>   a deferred charge, answered once this line was written
 *   W <hold_id> <idem> <uid,uid,...|-> <body> a ledger.charge about to be sent (its JSON body)
 *   A <idem>                                 ... answered (applied, or refused for good)
 *   h <hold_id>                              a slice the edge opened (closed by a recovery even
 *                                            if nothing was charged to it)
 * A record whose letter is lowercase only hastens a recovery: a reader that
 * does not know it skips it.
 * A last line without its newline was cut by the owner's death: what it
 * recorded was neither answered nor sent. The file is only ever replaced whole
 * (rename): when it grows past a limit, by one holding only what is still
 * pending, so a journal never names a charge twice. Ownership is an
 * exclusive flock(2) on the open file: the directory must be on one host's
 * file system (a volume shared by the edge containers of that host). */
#ifndef EDGE_JOURNAL_H
#define EDGE_JOURNAL_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EDGE_JOURNAL_LEDGER_MAX 64

typedef struct edge_journal_t edge_journal_t;

/* edge_journal_open - a new journal in dir (created if missing, mode 0700)
 * for the ledger named ledger_id, locked, to be replaced by a shorter one
 * once past max_bytes. durable: the file and each one replacing it are on
 * the disk (fdatasync, and fsync of dir) before their names are, so that the
 * records the owner syncs itself (edge_journal_dup) survive a crash of the
 * host. NULL with err filled on failure. */
edge_journal_t *edge_journal_open(const char *dir, const char *ledger_id, size_t max_bytes, bool durable,
                                  char *err, size_t errlen);
const char *edge_journal_path(const edge_journal_t *j);
/* Records, buffered until edge_journal_sync. */
void edge_journal_charge(edge_journal_t *j, uint64_t uid, int64_t hold_id, int64_t amount, const char *ref);
void edge_journal_write(edge_journal_t *j, int64_t hold_id, const char *idem, const uint64_t *uids, size_t n,
                        const char *body);
void edge_journal_answered(edge_journal_t *j, const char *idem);
void edge_journal_hold(edge_journal_t *j, int64_t hold_id);
/* edge_journal_sync - writes what is buffered; 0, or -1 (errno set): the
 * journal can no longer be trusted. */
int edge_journal_sync(edge_journal_t *j);
/* edge_journal_dup - a descriptor of the journal's file as it is now (to
 * fdatasync off the loop: it stays valid if the journal is replaced or
 * closed meanwhile), or -1 (errno set). The caller closes it. */
int edge_journal_dup(const edge_journal_t *j);
/* edge_journal_full - time to replace the file by one of what is pending. */
bool edge_journal_full(const edge_journal_t *j);
/* edge_journal_snapshot_begin - syncs, then the records until
 * edge_journal_snapshot_end make the new file; end replaces the file with it
 * (0), or keeps the old one, complete, and tries again only after as many
 * bytes more (-1); a durable journal whose new name could not be synced
 * answers -2 (replaced, but not to be trusted past a crash). */
int edge_journal_snapshot_begin(edge_journal_t *j);
int edge_journal_snapshot_end(edge_journal_t *j);
/* edge_journal_close - remove: nothing in it is pending any more (else it is
 * left, unlocked, for another edge to finish). */
void edge_journal_close(edge_journal_t **j_p, bool remove);

/* --- recovery ------------------------------------------------------------------------------ */

typedef struct {
    int64_t hold_id;
    char idem[160];
    char *body;     /* the ledger.charge body, JSON */
    int64_t amount; /* its charges' sum (of the deferred ones for a write sent before) */
    size_t calls;   /* ... and their count */
    bool again;     /* a write the dead edge sent (the same key and body again) */
} edge_journal_send_t;

typedef struct {
    char ledger_id[EDGE_JOURNAL_LEDGER_MAX + 1];
    edge_journal_send_t *sends;
    size_t nsends;
    int64_t *holds; /* every hold named, to close once the writes are done */
    size_t nholds;
} edge_journal_plan_t;

/* edge_journal_plan - what a journal's text (len bytes) leaves to do; token
 * (the file's own name) makes the keys of the charges no write carried.
 * 0, or -1 with err filled (not a journal, or a line it cannot read). */
int edge_journal_plan(const char *text, size_t len, const char *token, edge_journal_plan_t *plan, char *err,
                      size_t errlen);
void edge_journal_plan_free(edge_journal_plan_t *plan);

/* A dead edge's journal, locked by this process. */
typedef struct {
    int fd;
    char path[4096];
    char token[64];
    char *text;
    size_t len;
} edge_journal_claim_t;

/* edge_journal_claim - locks the first journal in dir whose owner is gone
 * and that names ledger_id (others are counted in *foreign).
 * 1: claimed; 0: none (this process's own journals are locked: never claimed). */
int edge_journal_claim(const char *dir, const char *ledger_id, edge_journal_claim_t *claim, size_t *foreign);
typedef enum { EDGE_JOURNAL_KEEP, EDGE_JOURNAL_DONE, EDGE_JOURNAL_BAD } edge_journal_end_t;
/* edge_journal_release - KEEP: unlocked for a later try; DONE: deleted;
 * BAD: renamed to *.bad for the operator (it could not be read). */
void edge_journal_release(edge_journal_claim_t *claim, edge_journal_end_t end);

int edge_journal_test(bool verbose);
#endif
