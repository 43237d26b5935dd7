/* edge_journal - the deferred charges' journal (see the header). */
#include "edge_journal.h"
#include "fb_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC  "farebox-charge-journal 1 "
#define PREFIX "charges-"
#define SUFFIX ".journal"
#define JOURNAL_MAX                                                                                          \
    (256u << 20)             /* a larger file is set aside unread (they are replaced past 64 MiB at most) */
#define CHARGES_A_WRITE 1000 /* the ledger's limit per ledger.charge */

struct edge_journal_t {
    int fd;
    char dir[3800];
    char path[4096];
    char ledger_id[EDGE_JOURNAL_LEDGER_MAX + 1];
    char *buf;
    size_t len, cap;
    size_t size;      /* bytes in the file */
    size_t rotate_at; /* the size that asks for a new file */
    size_t max_bytes;
    bool durable;  /* each file is on the disk before its name is (edge_journal_open) */
    bool snapshot; /* records go to the next file */
};

static void s_append(edge_journal_t *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_append(edge_journal_t *j, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(j->buf + j->len, j->cap - j->len, fmt, ap);
        va_end(ap);
        FB_ASSERT(n >= 0);
        if ((size_t)n < j->cap - j->len) {
            j->len += (size_t)n;
            return;
        }
        j->cap = (j->cap + (size_t)n + 1) * 2;
        j->buf = fb_realloc(j->buf, j->cap);
    }
}

static int s_write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Syncs dir's entries (a rename or a new name in it) to the disk. */
static int s_sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* Writes buf as a new file at path, locked (fd returned), by way of path.tmp
 * and a rename: the path never names a file that is partly written or not
 * locked. durable: the file's bytes are on the disk before the rename (the
 * rename itself is made durable by s_sync_dir). -1 on failure, nothing left
 * behind. */
static int s_replace(const char *path, const char *buf, size_t len, bool durable)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0 || s_write_all(fd, buf, len) != 0 ||
        (durable && fdatasync(fd) != 0) || rename(tmp, path) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    return fd;
}

edge_journal_t *edge_journal_open(const char *dir, const char *ledger_id, size_t max_bytes, bool durable,
                                  char *err, size_t errlen)
{
    if (strlen(dir) >= sizeof(((edge_journal_t *)0)->dir) || !ledger_id[0] ||
        strlen(ledger_id) > EDGE_JOURNAL_LEDGER_MAX || strpbrk(ledger_id, " \n")) {
        snprintf(err, errlen, "bad journal directory or ledger id");
        return NULL;
    }
    bool made = mkdir(dir, 0700) == 0;
    if (!made && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return NULL;
    }
    if (made && durable) {
        /* the directory's own name, in its parent */
        char parent[3800];
        fb_copy_str(parent, sizeof(parent), dir);
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = '\0';
        else if (slash)
            *slash = '\0';
        else
            fb_copy_str(parent, sizeof(parent), ".");
        if (s_sync_dir(parent) != 0) {
            snprintf(err, errlen, "cannot sync %s: %s", parent, strerror(errno));
            return NULL;
        }
    }
    edge_journal_t *j = fb_calloc(1, sizeof(*j));
    fb_copy_str(j->dir, sizeof(j->dir), dir);
    fb_copy_str(j->ledger_id, sizeof(j->ledger_id), ledger_id);
    char token[33];
    fb_random_hex(token, 16);
    snprintf(j->path, sizeof(j->path), "%s/" PREFIX "%s" SUFFIX, dir, token);
    j->cap = 1 << 16;
    j->buf = fb_malloc(j->cap);
    s_append(j, MAGIC "%s\n", ledger_id);
    j->durable = durable;
    j->fd = s_replace(j->path, j->buf, j->len, durable);
    if (j->fd >= 0 && durable && s_sync_dir(dir) != 0) {
        int e = errno;
        unlink(j->path);
        close(j->fd);
        j->fd = -1;
        errno = e;
    }
    if (j->fd < 0) {
        snprintf(err, errlen, "cannot write %s: %s", j->path, strerror(errno));
        free(j->buf);
        free(j);
        return NULL;
    }
    j->size = j->len;
    j->len = 0;
    j->max_bytes = max_bytes;
    j->rotate_at = max_bytes;
    return j;
}

const char *edge_journal_path(const edge_journal_t *j)
{
    return j->path;
}

void edge_journal_charge(edge_journal_t *j, uint64_t uid, int64_t hold_id, int64_t amount, const char *ref)
{
    /* "=" for no ref: a request id is never "=" (edge_id_text_ok), though it may be "-" */
    s_append(j, "C %" PRIu64 " %" PRId64 " %" PRId64 " %s\n", uid, hold_id, amount,
             ref && ref[0] ? ref : "=");
}

void edge_journal_hold(edge_journal_t *j, int64_t hold_id)
{
    s_append(j, "h %" PRId64 "\n", hold_id);
}

void edge_journal_write(edge_journal_t *j, int64_t hold_id, const char *idem, const uint64_t *uids, size_t n,
                        const char *body)
{
    s_append(j, "W %" PRId64 " %s ", hold_id, idem);
    for (size_t i = 0; i < n; i++)
        s_append(j, "%s%" PRIu64, i ? "," : "", uids[i]);
    s_append(j, "%s %s\n", n ? "" : "-", body);
}

void edge_journal_answered(edge_journal_t *j, const char *idem)
{
    s_append(j, "A %s\n", idem);
}

int edge_journal_sync(edge_journal_t *j)
{
    if (j->snapshot || j->len == 0)
        return 0;
    if (s_write_all(j->fd, j->buf, j->len) != 0)
        return -1;
    j->size += j->len;
    j->len = 0;
    return 0;
}

int edge_journal_dup(const edge_journal_t *j)
{
    return fcntl(j->fd, F_DUPFD_CLOEXEC, 0);
}

bool edge_journal_full(const edge_journal_t *j)
{
    return j->size + j->len >= j->rotate_at;
}

int edge_journal_snapshot_begin(edge_journal_t *j)
{
    FB_ASSERT(!j->snapshot);
    if (edge_journal_sync(j) != 0)
        return -1;
    j->snapshot = true;
    s_append(j, MAGIC "%s\n", j->ledger_id);
    return 0;
}

int edge_journal_snapshot_end(edge_journal_t *j)
{
    FB_ASSERT(j->snapshot);
    j->snapshot = false;
    int fd = s_replace(j->path, j->buf, j->len, j->durable);
    size_t len = j->len;
    j->len = 0;
    if (fd < 0) {
        /* the old file stays, complete: every record since was the snapshot's */
        j->rotate_at = j->size + j->max_bytes;
        return -1;
    }
    close(j->fd); /* the old file, unlinked by the rename: its lock no longer guards anything */
    j->fd = fd;
    j->size = len;
    j->rotate_at = len < j->max_bytes / 2 ? j->max_bytes : len + j->max_bytes / 2;
    /* the new file is in place; if its name may not survive a crash, the
     * records appended to it from now on may not either */
    return j->durable && s_sync_dir(j->dir) != 0 ? -2 : 0;
}

void edge_journal_close(edge_journal_t **j_p, bool remove)
{
    edge_journal_t *j = *j_p;
    if (!j)
        return;
    *j_p = NULL;
    if (remove) {
        /* emptied on the disk first: a journal given up after a write failed may lack a write's
         * record, and if its unlink were lost in a crash, a recovery of what the disk kept would
         * charge that write's calls again (best effort: the disk is failing) */
        if (ftruncate(j->fd, 0) == 0)
            fdatasync(j->fd);
        unlink(j->path); /* before the lock goes: nobody can claim it in between */
        if (j->durable)
            s_sync_dir(j->dir);
    } else
        edge_journal_sync(j);
    close(j->fd);
    free(j->buf);
    free(j);
}

/* --- recovery ------------------------------------------------------------------------------ */

typedef struct {
    uint64_t uid;
    int64_t hold, amount;
    char ref[EDGE_JOURNAL_LEDGER_MAX * 2 + 1];
    bool carried; /* a write recorded carries it */
} s_charge_t;

static int s_uid_cmp(const void *a, const void *b)
{
    uint64_t x = ((const s_charge_t *)a)->uid, y = ((const s_charge_t *)b)->uid;
    return (x > y) - (x < y);
}

/* A hold named in a journal, and the order it was first named in. */
typedef struct {
    int64_t hold;
    size_t order;
} s_seen_t;

static int s_seen_hold_cmp(const void *a, const void *b)
{
    const s_seen_t *x = a, *y = b;
    if (x->hold != y->hold)
        return (x->hold > y->hold) - (x->hold < y->hold);
    return (x->order > y->order) - (x->order < y->order);
}

static int s_seen_hold_only_cmp(const void *a, const void *b)
{
    const s_seen_t *x = a, *y = b;
    return (x->hold > y->hold) - (x->hold < y->hold);
}

static int s_seen_order_cmp(const void *a, const void *b)
{
    const s_seen_t *x = a, *y = b;
    return (x->order > y->order) - (x->order < y->order);
}

/* The plan's holds: each of the n named once, in the order first named.
 * Returns them by hold, each with its place in the plan (free it). */
static s_seen_t *s_holds_collect(edge_journal_plan_t *plan, const int64_t *named, size_t n)
{
    s_seen_t *seen = fb_calloc(n + 1, sizeof(*seen));
    for (size_t i = 0; i < n; i++)
        seen[i] = (s_seen_t){.hold = named[i], .order = i};
    qsort(seen, n, sizeof(*seen), s_seen_hold_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || seen[k - 1].hold != seen[i].hold)
            seen[k++] = seen[i];
    qsort(seen, k, sizeof(*seen), s_seen_order_cmp);
    plan->holds = fb_calloc(k + 1, sizeof(*plan->holds));
    plan->nholds = k;
    for (size_t i = 0; i < k; i++) {
        plan->holds[i] = seen[i].hold;
        seen[i].order = i;
    }
    qsort(seen, k, sizeof(*seen), s_seen_hold_only_cmp); /* one each now */
    return seen;
}

/* A charge no write carried, with its hold's place in the plan. */
typedef struct {
    size_t rank;
    const s_charge_t *c;
} s_uncarried_t;

static int s_uncarried_cmp(const void *a, const void *b)
{
    const s_uncarried_t *x = a, *y = b;
    if (x->rank != y->rank)
        return (x->rank > y->rank) - (x->rank < y->rank);
    return (x->c->uid > y->c->uid) - (x->c->uid < y->c->uid);
}

static edge_journal_send_t *s_send_add(edge_journal_plan_t *plan)
{
    plan->sends = fb_realloc(plan->sends, (plan->nsends + 1) * sizeof(*plan->sends));
    edge_journal_send_t *s = &plan->sends[plan->nsends++];
    memset(s, 0, sizeof(*s));
    return s;
}

static void s_send_body(edge_journal_send_t *s, json_t *list)
{
    json_t *body = json_pack("{sI so}", "hold_id", (json_int_t)s->hold_id, "charges", list);
    s->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
}

/* Writes for the charges no write carried: by hold in the plan's order, by
 * uid within one, at most CHARGES_A_WRITE each, under keys made of the
 * journal's token and the first charge's hold and uid (the same keys if the
 * same journal is recovered again). */
static void s_plan_uncarried(edge_journal_plan_t *plan, const s_charge_t *charges, size_t ncharges,
                             const s_seen_t *ranks, const char *token)
{
    s_uncarried_t *list = fb_calloc(ncharges + 1, sizeof(*list));
    size_t n = 0;
    for (size_t i = 0; i < ncharges; i++) {
        if (charges[i].carried)
            continue;
        s_seen_t key = {.hold = charges[i].hold};
        const s_seen_t *seen = bsearch(&key, ranks, plan->nholds, sizeof(*ranks), s_seen_hold_only_cmp);
        FB_ASSERT(seen);
        list[n++] = (s_uncarried_t){.rank = seen->order, .c = &charges[i]};
    }
    qsort(list, n, sizeof(*list), s_uncarried_cmp);
    edge_journal_send_t *s = NULL;
    json_t *items = NULL;
    for (size_t i = 0; i < n; i++) {
        const s_charge_t *c = list[i].c;
        if (s && (s->hold_id != c->hold || s->calls == CHARGES_A_WRITE)) {
            s_send_body(s, items);
            s = NULL;
        }
        if (!s) {
            s = s_send_add(plan);
            s->hold_id = c->hold;
            snprintf(s->idem, sizeof(s->idem), "slice-recover:%s:%" PRId64 ":%" PRIu64, token, c->hold,
                     c->uid);
            items = json_array();
        }
        json_array_append_new(items,
                              json_pack("{sI ss}", "amount_micro", (json_int_t)c->amount, "ref", c->ref));
        s->amount += c->amount;
        s->calls++;
    }
    if (s)
        s_send_body(s, items);
    free(list);
}

static bool s_int(const char **p, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(*p, &end, 10);
    if (end == *p || errno != 0 || v < 0 || (*end != ' ' && *end != '\n' && *end != ','))
        return false;
    *out = v;
    *p = end;
    return true;
}

/* the next space-free word at *p into out; false if empty or too long */
static bool s_word(const char **p, char *out, size_t cap)
{
    const char *s = *p;
    size_t n = strcspn(s, " \n");
    if (n == 0 || n >= cap)
        return false;
    memcpy(out, s, n);
    out[n] = '\0';
    *p = s + n;
    return true;
}

static int s_fail(char *err, size_t errlen, size_t line, const char *why)
{
    snprintf(err, errlen, "line %zu: %s", line, why);
    return -1;
}

int edge_journal_plan(const char *text, size_t len, const char *token, edge_journal_plan_t *plan, char *err,
                      size_t errlen)
{
    memset(plan, 0, sizeof(*plan));
    /* only whole lines count: a last one without its newline was cut */
    size_t whole = len;
    while (whole > 0 && text[whole - 1] != '\n')
        whole--;
    char *t = fb_malloc(whole + 1);
    memcpy(t, text, whole);
    t[whole] = '\0';
    if (memchr(t, '\0', whole)) {
        free(t);
        return s_fail(err, errlen, 1, "not text");
    }
    const char *nl = strchr(t, '\n');
    size_t magic = strlen(MAGIC);
    if (!nl || strncmp(t, MAGIC, magic) != 0 || (size_t)(nl - t) - magic == 0 ||
        (size_t)(nl - t) - magic > EDGE_JOURNAL_LEDGER_MAX) {
        free(t);
        return s_fail(err, errlen, 1, "not a charge journal");
    }
    memcpy(plan->ledger_id, t + magic, (size_t)(nl - t) - magic);
    s_charge_t *charges = NULL;
    int64_t *opened = NULL; /* the slices named by h records */
    size_t nopened = 0;
    const char **uid_at = NULL; /* each write's list of uids in t, or NULL */
    size_t ncharges = 0, line = 2;
    int rc = 0;
    for (const char *p = nl + 1; *p && rc == 0; line++) {
        const char *end = strchr(p, '\n');
        const char *q = p + 2;
        if (p[1] != ' ') {
            rc = s_fail(err, errlen, line, "no record");
        } else if (p[0] == 'C') {
            charges = fb_realloc(charges, (ncharges + 1) * sizeof(*charges));
            s_charge_t *c = &charges[ncharges];
            memset(c, 0, sizeof(*c));
            int64_t uid;
            if (!s_int(&q, &uid) || *q++ != ' ' || !s_int(&q, &c->hold) || *q++ != ' ' ||
                !s_int(&q, &c->amount) || *q++ != ' ' || !s_word(&q, c->ref, sizeof(c->ref)) || q != end ||
                c->hold == 0)
                rc = s_fail(err, errlen, line, "a bad charge");
            c->uid = (uint64_t)uid;
            if (strcmp(c->ref, "=") == 0)
                c->ref[0] = '\0';
            ncharges++;
        } else if (p[0] == 'W') {
            edge_journal_send_t *s = s_send_add(plan);
            s->again = true;
            uid_at = fb_realloc(uid_at, plan->nsends * sizeof(*uid_at));
            uid_at[plan->nsends - 1] = NULL;
            if (!s_int(&q, &s->hold_id) || *q++ != ' ' || !s_word(&q, s->idem, sizeof(s->idem)) ||
                *q++ != ' ') {
                rc = s_fail(err, errlen, line, "a bad write");
            } else if (*q == '-') {
                q++;
            } else {
                /* resolved once every charge is read: a file that replaced
                 * another lists a write's charges before their lines */
                uid_at[plan->nsends - 1] = q;
                int64_t uid;
                while (s_int(&q, &uid) && *q == ',')
                    q++;
            }
            if (rc == 0 && *q++ != ' ')
                rc = s_fail(err, errlen, line, "a bad write");
            if (rc == 0) {
                s->body = fb_malloc((size_t)(end - q) + 1);
                memcpy(s->body, q, (size_t)(end - q));
                s->body[end - q] = '\0';
                json_error_t jerr;
                json_t *body = json_loads(s->body, 0, &jerr);
                if (!json_is_object(body) ||
                    json_integer_value(json_object_get(body, "hold_id")) != s->hold_id ||
                    !json_is_array(json_object_get(body, "charges")))
                    rc = s_fail(err, errlen, line, "a bad write body");
                json_decref(body);
            }
        } else if (p[0] == 'A') {
            char idem[160];
            if (!s_word(&q, idem, sizeof(idem)) || q != end) {
                rc = s_fail(err, errlen, line, "a bad answer");
            } else {
                for (size_t i = plan->nsends; i-- > 0;) {
                    if (plan->sends[i].again && strcmp(plan->sends[i].idem, idem) == 0) {
                        plan->sends[i].again = false; /* answered: nothing to send */
                        break;
                    }
                }
            }
        } else if (p[0] == 'h') {
            int64_t hold;
            if (!s_int(&q, &hold) || q != end || hold <= 0) {
                rc = s_fail(err, errlen, line, "a bad slice");
            } else {
                opened = fb_realloc(opened, (nopened + 1) * sizeof(*opened));
                opened[nopened++] = hold;
            }
        } else if (!(p[0] >= 'a' && p[0] <= 'z')) {
            rc = s_fail(err, errlen, line, "an unknown record");
        }
        p = end + 1;
    }
    if (rc == 0) {
        /* which charges a write carried: its uid list, read again */
        qsort(charges, ncharges, sizeof(*charges), s_uid_cmp);
        for (size_t i = 0; i < plan->nsends; i++) {
            const char *q = uid_at[i];
            int64_t uid;
            while (q && s_int(&q, &uid)) {
                s_charge_t key = {.uid = (uint64_t)uid};
                s_charge_t *c = bsearch(&key, charges, ncharges, sizeof(*charges), s_uid_cmp);
                if (c) {
                    c->carried = true;
                    plan->sends[i].amount += c->amount;
                }
                plan->sends[i].calls++;
                q = *q == ',' ? q + 1 : NULL;
            }
        }
    }
    /* the writes the dead edge sent and saw no answer to, in order; then the
     * charges no write carried, by hold, in order, at most a write's worth each */
    if (rc == 0) {
        size_t n = 0;
        int64_t *named = fb_calloc(plan->nsends + ncharges + nopened + 1, sizeof(*named));
        for (size_t i = 0; i < plan->nsends; i++)
            named[n++] = plan->sends[i].hold_id;
        /* (by uid: the uids grow with the journal within a file's writer; a
         * replacement file lists pending charges by slice: by uid is a stable,
         * repeatable order either way) */
        for (size_t i = 0; i < ncharges; i++)
            named[n++] = charges[i].hold;
        for (size_t i = 0; i < nopened; i++) /* slices nothing was charged to are closed too */
            named[n++] = opened[i];
        s_seen_t *ranks = s_holds_collect(plan, named, n);
        free(named);
        size_t kept = 0;
        for (size_t i = 0; i < plan->nsends; i++) {
            if (plan->sends[i].again) {
                plan->sends[kept++] = plan->sends[i];
            } else {
                free(plan->sends[i].body);
            }
        }
        plan->nsends = kept;
        s_plan_uncarried(plan, charges, ncharges, ranks, token);
        free(ranks);
    }
    free(opened);
    free(charges);
    free(uid_at);
    free(t);
    if (rc != 0)
        edge_journal_plan_free(plan);
    return rc;
}

void edge_journal_plan_free(edge_journal_plan_t *plan)
{
    for (size_t i = 0; i < plan->nsends; i++)
        free(plan->sends[i].body);
    free(plan->sends);
    free(plan->holds);
    memset(plan, 0, sizeof(*plan));
}

int edge_journal_claim(const char *dir, const char *ledger_id, edge_journal_claim_t *claim, size_t *foreign)
{
    memset(claim, 0, sizeof(*claim));
    claim->fd = -1;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t pre = strlen(PREFIX), suf = strlen(SUFFIX), id = strlen(ledger_id);
    int found = 0;
    for (struct dirent *e; !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n <= pre + suf || n - pre - suf >= sizeof(claim->token) || strncmp(e->d_name, PREFIX, pre) != 0 ||
            strcmp(e->d_name + n - suf, SUFFIX) != 0)
            continue;
        char path[sizeof(claim->path)];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path))
            continue;
        /* only regular files: not blocking, since opening a FIFO by that name to read would wait
         * for a writer on the loop (O_NONBLOCK changes nothing for a regular file's reads) */
        if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN)
            continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
            continue;
        /* its owner holds the lock while it lives; a file it replaced has no
         * name any more (the lock was on the old one) */
        struct stat a, b;
        /* and only this user's: edges write their journals as themselves (0600), and a file
         * another user put there is not a journal of theirs to charge from */
        if (fstat(fd, &a) != 0 || !S_ISREG(a.st_mode) || a.st_uid != geteuid() ||
            flock(fd, LOCK_EX | LOCK_NB) != 0 || a.st_nlink == 0 || fstat(fd, &a) != 0 ||
            stat(path, &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
            close(fd);
            continue;
        }
        /* too large to read: claimed empty, to be set aside as unreadable */
        size_t size = a.st_size > (off_t)JOURNAL_MAX ? 0 : (size_t)a.st_size;
        char *text = fb_malloc(size + 1);
        size_t len = 0;
        for (ssize_t r; len < size; len += (size_t)r) {
            r = pread(fd, text + len, size - len, (off_t)len);
            if (r <= 0)
                break;
        }
        text[len] = '\0';
        /* its first line names its ledger (a file that does not start so is
         * claimed, to be set aside as unreadable) */
        size_t magic = strlen(MAGIC);
        const char *nl = memchr(text, '\n', len);
        if (nl && len > magic && strncmp(text, MAGIC, magic) == 0 &&
            ((size_t)(nl - text) != magic + id || strncmp(text + magic, ledger_id, id) != 0)) {
            (*foreign)++; /* another ledger's: not ours to write, nor to delete */
            free(text);
            close(fd);
            continue;
        }
        claim->fd = fd;
        fb_copy_str(claim->path, sizeof(claim->path), path);
        memcpy(claim->token, e->d_name + pre, n - pre - suf);
        claim->token[n - pre - suf] = '\0';
        claim->text = text;
        claim->len = len;
        found = 1;
    }
    closedir(d);
    return found;
}

void edge_journal_release(edge_journal_claim_t *claim, edge_journal_end_t end)
{
    if (claim->fd < 0)
        return;
    char other[sizeof(claim->path) + 8];
    if (end == EDGE_JOURNAL_DONE) {
        unlink(claim->path);
        snprintf(other, sizeof(other), "%s.tmp", claim->path); /* a replacement it did not finish */
        unlink(other);
    } else if (end == EDGE_JOURNAL_BAD) {
        snprintf(other, sizeof(other), "%s.bad", claim->path);
        rename(claim->path, other);
    }
    close(claim->fd);
    free(claim->text);
    claim->fd = -1;
    claim->text = NULL;
}

/* --- self-test ----------------------------------------------------------------------------- */

static char *s_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    FB_ASSERT(f);
    char *buf = fb_malloc(1 << 20);
    *len = fread(buf, 1, (1 << 20) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

int edge_journal_test(bool verbose)
{
    FB_UNUSED(verbose);
    char dir[] = "/tmp/farebox-journal-test-XXXXXX";
    FB_ASSERT(mkdtemp(dir));
    char sub[sizeof(dir) + 8], err[256];
    snprintf(sub, sizeof(sub), "%s/j", dir);
    edge_journal_t *j = edge_journal_open(sub, "ledger-1", 1 << 20, false, err, sizeof(err));
    FB_ASSERT(j);
    FB_ASSERT(!edge_journal_open(sub, "two words", 1 << 20, false, err, sizeof(err)));
    edge_journal_charge(j, 1, 7, 5, "r1");
    edge_journal_charge(j, 2, 7, 6, "r2");
    edge_journal_charge(j, 3, 8, 1, "");
    uint64_t u1[] = {1}, u2[] = {2};
    edge_journal_write(j, 7, "slice-charge:7:1", u1, 1,
                       "{\"hold_id\":7,\"charges\":[{\"amount_micro\":5,\"ref\":\"r1\"}]}");
    edge_journal_answered(j, "slice-charge:7:1");
    edge_journal_write(j, 7, "slice-charge:7:2", u2, 1,
                       "{\"hold_id\":7,\"charges\":[{\"amount_micro\":6,\"ref\":\"r2\"}]}");
    edge_journal_write(j, 9, "slice-charge:9:1", NULL, 0,
                       "{\"hold_id\":9,\"charges\":[{\"amount_micro\":2,\"ref\":\"w\"}]}");
    edge_journal_answered(j, "slice-charge:9:1");
    FB_ASSERT(edge_journal_sync(j) == 0);
    /* a live owner's journal is not claimed */
    edge_journal_claim_t claim;
    size_t foreign = 0;
    FB_ASSERT(edge_journal_claim(sub, "ledger-1", &claim, &foreign) == 0 && foreign == 0);
    char path[4096];
    fb_copy_str(path, sizeof(path), edge_journal_path(j));
    edge_journal_close(&j, false); /* its owner is gone */
    /* a torn last line: written, not answered */
    FILE *f = fopen(path, "ab");
    FB_ASSERT(f && fputs("C 4 8 3 torn", f) >= 0 && fclose(f) == 0);
    FB_ASSERT(edge_journal_claim(sub, "ledger-2", &claim, &foreign) == 0 && foreign == 1);
    FB_ASSERT(edge_journal_claim(sub, "ledger-1-and-much-longer-than-the-whole-file-is-xxxxxxxxxxxxxxx",
                                 &claim, &foreign) == 0 &&
              foreign == 2);
    FB_ASSERT(edge_journal_claim(sub, "ledger-", &claim, &foreign) == 0 && foreign == 3);
    FB_ASSERT(edge_journal_claim(sub, "ledger-1", &claim, &foreign) == 1);
    FB_ASSERT(strcmp(claim.path, path) == 0 && strlen(claim.token) == 32);
    edge_journal_claim_t second;
    FB_ASSERT(edge_journal_claim(sub, "ledger-1", &second, &foreign) == 0); /* locked by the first claim */
    edge_journal_plan_t plan;
    FB_ASSERT(edge_journal_plan(claim.text, claim.len, claim.token, &plan, err, sizeof(err)) == 0);
    FB_ASSERT(strcmp(plan.ledger_id, "ledger-1") == 0);
    /* the write not answered, again; then the charge no write carried */
    FB_ASSERT(plan.nsends == 2);
    FB_ASSERT(plan.sends[0].again && strcmp(plan.sends[0].idem, "slice-charge:7:2") == 0);
    FB_ASSERT(plan.sends[0].amount == 6 && plan.sends[0].calls == 1 && plan.sends[0].hold_id == 7);
    FB_ASSERT(strstr(plan.sends[0].body, "\"amount_micro\":6"));
    char want[200];
    snprintf(want, sizeof(want), "slice-recover:%s:8:3", claim.token);
    FB_ASSERT(!plan.sends[1].again && strcmp(plan.sends[1].idem, want) == 0 && plan.sends[1].hold_id == 8);
    FB_ASSERT(plan.sends[1].amount == 1 && plan.sends[1].calls == 1);
    FB_ASSERT(strcmp(plan.sends[1].body, "{\"hold_id\":8,\"charges\":[{\"amount_micro\":1,\"ref\":\"\"}]}") ==
              0);
    FB_ASSERT(plan.nholds == 3 && plan.holds[0] == 7 && plan.holds[1] == 9 && plan.holds[2] == 8);
    /* the same journal planned again: the same keys */
    edge_journal_plan_t again;
    FB_ASSERT(edge_journal_plan(claim.text, claim.len, claim.token, &again, err, sizeof(err)) == 0);
    FB_ASSERT(again.nsends == 2 && strcmp(again.sends[1].idem, want) == 0);
    edge_journal_plan_free(&again);
    edge_journal_plan_free(&plan);
    edge_journal_release(&claim, EDGE_JOURNAL_DONE);
    FB_ASSERT(access(path, F_OK) != 0);

    /* a replacement holds only what is pending, and replaces the file whole */
    j = edge_journal_open(sub, "ledger-1", 1 << 20, false, err, sizeof(err));
    FB_ASSERT(j);
    for (uint64_t u = 1; u <= 100; u++)
        edge_journal_charge(j, u, 3, 10, "x");
    FB_ASSERT(edge_journal_snapshot_begin(j) == 0);
    uint64_t carried[] = {99};
    edge_journal_write(j, 3, "slice-charge:3:9", carried, 1,
                       "{\"hold_id\":3,\"charges\":[{\"amount_micro\":10,\"ref\":\"x\"}]}");
    edge_journal_charge(j, 100, 3, 10, "x");
    FB_ASSERT(edge_journal_snapshot_end(j) == 0);
    edge_journal_charge(j, 101, 3, 4, "y");
    FB_ASSERT(edge_journal_sync(j) == 0);
    fb_copy_str(path, sizeof(path), edge_journal_path(j));
    size_t len;
    char *text = s_file(path, &len);
    FB_ASSERT(edge_journal_plan(text, len, "t", &plan, err, sizeof(err)) == 0);
    FB_ASSERT(plan.nsends == 2 && plan.sends[0].again && plan.sends[0].calls == 1 &&
              plan.sends[0].amount == 0);
    FB_ASSERT(!plan.sends[1].again && plan.sends[1].calls == 2 && plan.sends[1].amount == 14);
    FB_ASSERT(strcmp(plan.sends[1].idem, "slice-recover:t:3:100") == 0);
    edge_journal_plan_free(&plan);
    free(text);
    FB_ASSERT(!edge_journal_full(j));
    edge_journal_close(&j, true);
    FB_ASSERT(access(path, F_OK) != 0);

    /* past its size, the journal asks to be replaced; a replacement as large
     * as the limit asks again only after half as much more; durable or not.
     * A descriptor taken before the replacement stays usable (a sync in
     * flight), and the replacement holds what was pending */
    for (int durable = 0; durable < 2; durable++) {
        j = edge_journal_open(sub, "ledger-1", 4096, durable, err, sizeof(err));
        FB_ASSERT(j && !edge_journal_full(j));
        uint64_t u = 0;
        while (!edge_journal_full(j) && u < 10000)
            edge_journal_charge(j, ++u, 3, 10, "a-reference-of-some-length");
        FB_ASSERT(u > 50 && u < 200);
        FB_ASSERT(edge_journal_sync(j) == 0);
        int before = edge_journal_dup(j);
        FB_ASSERT(before >= 0);
        FB_ASSERT(edge_journal_snapshot_begin(j) == 0);
        for (uint64_t k = 1; k <= u; k++)
            edge_journal_charge(j, k, 3, 10, "a-reference-of-some-length");
        FB_ASSERT(edge_journal_snapshot_end(j) == 0 && !edge_journal_full(j));
        FB_ASSERT(fdatasync(before) == 0 && close(before) == 0);
        for (uint64_t k = 0; k < 40; k++)
            edge_journal_charge(j, ++u, 3, 10, "a-reference-of-some-length");
        FB_ASSERT(edge_journal_sync(j) == 0 && !edge_journal_full(j));
        fb_copy_str(path, sizeof(path), edge_journal_path(j));
        text = s_file(path, &len);
        FB_ASSERT(text && edge_journal_plan(text, len, "t", &plan, err, sizeof(err)) == 0);
        FB_ASSERT(plan.nsends == 1 && plan.sends[0].calls == (size_t)u);
        edge_journal_plan_free(&plan);
        free(text);
        edge_journal_close(&j, true);
        FB_ASSERT(access(path, F_OK) != 0);
    }

    /* slices opened (h) are closed, charged or not, each once; a lowercase
     * record a reader does not know is skipped */
    static const char opened[] =
        "farebox-charge-journal 1 ledger-1\nh 5\nC 1 6 3 r\nh 6\nq what is this\nh 4\n"
        "h 5\n";
    FB_ASSERT(edge_journal_plan(opened, strlen(opened), "t", &plan, err, sizeof(err)) == 0);
    FB_ASSERT(plan.nsends == 1 && plan.sends[0].hold_id == 6 && plan.sends[0].amount == 3);
    FB_ASSERT(plan.nholds == 3 && plan.holds[0] == 6 && plan.holds[1] == 5 && plan.holds[2] == 4);
    edge_journal_plan_free(&plan);
    /* "=" is no ref; "-" is a request id like any other */
    static const char refs[] = "farebox-charge-journal 1 ledger-1\nC 1 6 3 -\nC 2 6 4 =\n";
    FB_ASSERT(edge_journal_plan(refs, strlen(refs), "t", &plan, err, sizeof(err)) == 0);
    FB_ASSERT(plan.nsends == 1 &&
              strcmp(plan.sends[0].body, "{\"hold_id\":6,\"charges\":[{\"amount_micro\":3,"
                                         "\"ref\":\"-\"},{\"amount_micro\":4,\"ref\":\"\"}]}") == 0);
    edge_journal_plan_free(&plan);
    /* many slices, their charges interleaved: one write a slice, in the
     * order the slices were first named, its charges by uid */
    size_t cap = 64 + 3000 * 40, at = 0;
    char *many = fb_malloc(cap);
    at += (size_t)snprintf(many + at, cap - at, "farebox-charge-journal 1 ledger-1\n");
    for (int k = 0; k < 3000; k++)
        at += (size_t)snprintf(many + at, cap - at, "C %d %d %d r%d\n", k + 1, 1000 - k % 1000, k + 1, k);
    FB_ASSERT(edge_journal_plan(many, at, "t", &plan, err, sizeof(err)) == 0);
    FB_ASSERT(plan.nholds == 1000 && plan.holds[0] == 1000 && plan.holds[999] == 1 && plan.nsends == 1000);
    for (size_t k = 0; k < plan.nsends; k++) {
        FB_ASSERT(plan.sends[k].hold_id == 1000 - (int64_t)k && plan.sends[k].calls == 3);
        FB_ASSERT(plan.sends[k].amount == (int64_t)(3 * (k + 1) + 3000));
        snprintf(want, sizeof(want), "slice-recover:t:%" PRId64 ":%zu", 1000 - (int64_t)k, k + 1);
        FB_ASSERT(strcmp(plan.sends[k].idem, want) == 0);
    }
    edge_journal_plan_free(&plan);
    free(many);

    /* a journal another user owns is not claimed (the test can give one away as root only) */
    snprintf(path, sizeof(path), "%s/" PREFIX "theirs" SUFFIX, sub);
    f = fopen(path, "wb");
    FB_ASSERT(f && fputs("farebox-charge-journal 1 ledger-1\nC 1 6 3 r\n", f) >= 0 && fclose(f) == 0);
    if (chown(path, geteuid() + 1, (gid_t)-1) == 0)
        FB_ASSERT(edge_journal_claim(sub, "ledger-1", &claim, &foreign) == 0);
    unlink(path);

    /* a file that is not a journal's, or has a line it cannot read, is set aside */
    static const char *bad[] = {"hello\n",
                                "farebox-charge-journal 1 ledger-1\nC 1 x 1 r\n",
                                "farebox-charge-journal 1 ledger-1\nW 1 k - {\"hold_id\":2,\"charges\":[]}\n",
                                "farebox-charge-journal 1 ledger-1\nZ 1\n",
                                "farebox-charge-journal 1 ledger-1\nh x\n",
                                "farebox-charge-journal 1 ledger-1\nh 0\n"};
    for (size_t i = 0; i < FB_ARRAY_SIZE(bad); i++)
        FB_ASSERT(edge_journal_plan(bad[i], strlen(bad[i]), "t", &plan, err, sizeof(err)) == -1);
    snprintf(path, sizeof(path), "%s/" PREFIX "bad" SUFFIX, sub);
    f = fopen(path, "wb");
    FB_ASSERT(f && fputs(bad[1], f) >= 0 && fclose(f) == 0);
    FB_ASSERT(edge_journal_claim(sub, "ledger-1", &claim, &foreign) == 1);
    FB_ASSERT(edge_journal_plan(claim.text, claim.len, claim.token, &plan, err, sizeof(err)) == -1);
    edge_journal_release(&claim, EDGE_JOURNAL_BAD);
    char bad_path[4200];
    snprintf(bad_path, sizeof(bad_path), "%s.bad", path);
    FB_ASSERT(access(bad_path, F_OK) == 0 && edge_journal_claim(sub, "ledger-1", &claim, &foreign) == 0);
    unlink(bad_path);
    rmdir(sub);
    rmdir(dir);
    return 0;
}
