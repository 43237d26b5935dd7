/* farebox-ledger - the only writer of money.
 *
 *   configuration  database, API-key HMAC secret, connections, batch size
 *   schema         ledger_migrate.c: migrations applied at start, once
 *                  (--migrate: only that, then exit: compose's one-shot)
 *   engine         ledger_engine.c: group commit of operations in Postgres
 *   rpc            ledger_rpc.c: the ledger.* methods of proto/README.md
 *   sweeper        expires holds past their expiry and forgets idempotent calls
 *                  kept past theirs, in every replica
 *   stop           SIGTERM: stop taking calls, finish those in flight, exit */
#include "fb_apikey.h"
#include "fb_log.h"
#include "fb_msgpack.h"
#include "fb_service.h"
#include "fb_util.h"
#include "ledger_engine.h"
#include "ledger_migrate.h"
#include "ledger_rpc.h"

#include <libpq-fe.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SWEEP_LIMIT "1000"

static const fb_config_var_t s_vars[] = {
    {"FAREBOX_DATABASE_URL", FB_CFG_SECRET, NULL, 0, 0, NULL, NULL,
     "Postgres connection string (URI or key=value); holds the database password"},
    {"FAREBOX_KEY_HMAC_SECRET", FB_CFG_SECRET, NULL, 0, 0, NULL, fb_apikey_check_secret,
     "secret keying the HMAC of API keys (only HMACs are stored); the edge needs the same"},
    {"FAREBOX_LEDGER_WRITERS", FB_CFG_INT, "2", 1, 64, NULL, NULL,
     "database connections running write transactions (each one batch at a time)"},
    {"FAREBOX_LEDGER_READERS", FB_CFG_INT, "1", 1, 64, NULL, NULL, "database connections running reads"},
    {"FAREBOX_LEDGER_BATCH_MAX", FB_CFG_INT, "256", 1, 4000, NULL, NULL,
     "operations one write transaction may carry (1 turns group commit off)"},
    {"FAREBOX_LEDGER_SWEEP_MS", FB_CFG_INT, "1000", 50, 60000, NULL, NULL,
     "how often expired holds are released"},
    {"FAREBOX_TOPUP_CREDIT_AFTER_S", FB_CFG_INT, "300", 1, 86400, NULL, NULL,
     "a topup whose transfer confirmed and that no edge credited (the edge gone, the caller never back) is "
     "credited by the sweeper this long after its confirmation"},
    {"FAREBOX_DATABASE_WAIT_MS", FB_CFG_INT, "60000", 0, 3600000, NULL, NULL,
     "at start, how long to wait for the database to accept connections"},
};

static const fb_service_def_t s_def = {
    .name = "ledger",
    .summary = "the money ledger of farebox",
    .rpc_bind = "tcp://127.0.0.1:7110-7119",
    .vars = s_vars,
    .var_count = FB_ARRAY_SIZE(s_vars),
    .flag = "--migrate",
    .flag_help = "apply the migrations the database lacks, then exit (0: the schema is current)",
};

typedef struct {
    fb_service_t *service;
    ledger_engine_t *engine;
    ledger_rpc_t *rpc;
    uv_timer_t sweep;
    bool sweeping;
    int schema_version;
    char sweep_args[48]; /* the sweep's "limit,topup_credit_after_ms" */
} s_ledger_t;

static void s_on_notice(void *arg, const char *message)
{
    FB_UNUSED(arg);
    /* the functions' warnings are for the operator (a due topup refused) */
    fb_log(strncmp(message, "WARNING", 7) == 0 ? FB_LOG_WARN : FB_LOG_DEBUG, NULL, "postgres notice",
           "text=%s", message);
}

/* Migrates at start, waiting (with backoff) for the database to come up:
 * replicas and Postgres may start in any order. */
static int s_migrate(const char *conninfo, int64_t wait_ms, int *version)
{
    int64_t until = fb_mono_ms() + wait_ms, delay = 100;
    for (;;) {
        PGconn *conn = PQconnectdb(conninfo);
        if (PQstatus(conn) == CONNECTION_OK) {
            PQsetNoticeProcessor(conn, s_on_notice, NULL);
            char err[1024];
            int applied = ledger_migrate(conn, version, err, sizeof(err));
            PQfinish(conn);
            if (applied < 0) {
                fb_log(FB_LOG_ERROR, NULL, "could not migrate the database", "reason=%s", err);
                return -1;
            }
            return 0;
        }
        char why[512];
        snprintf(why, sizeof(why), "%s", PQerrorMessage(conn));
        PQfinish(conn);
        if (fb_mono_ms() >= until) {
            fb_log(FB_LOG_ERROR, NULL, "could not connect to the database", "reason=%s", why);
            return -1;
        }
        fb_log(FB_LOG_INFO, NULL, "waiting for the database", "reason=%s retry_ms=%lld", why,
               (long long)delay);
        usleep((useconds_t)delay * 1000);
        delay = delay * 2 > 2000 ? 2000 : delay * 2;
    }
}

static int s_health(void *arg, msgpack_packer *pk)
{
    s_ledger_t *self = arg;
    ledger_engine_stats_t st;
    ledger_engine_stats(self->engine, &st);
    fb_mp_pack_kv_int(pk, "schema_version", self->schema_version);
    fb_mp_pack_kv_int(pk, "db_writers_up", st.writers_up);
    fb_mp_pack_kv_int(pk, "db_readers_up", st.readers_up);
    fb_mp_pack_kv_uint(pk, "queued", st.queued);
    fb_mp_pack_kv_uint(pk, "batches", st.batches);
    fb_mp_pack_kv_uint(pk, "ops", st.ops);
    fb_mp_pack_kv_uint(pk, "largest_batch", st.largest_batch);
    fb_mp_pack_kv_uint(pk, "retries", st.retries);
    return 8;
}

/* --- the sweeper ---------------------------------------------------------------------- */

static void s_sweep_now(s_ledger_t *self);

static void s_swept(void *arg, const char *result, const char *code, const char *message)
{
    s_ledger_t *self = arg;
    self->sweeping = false;
    if (!result) {
        fb_log(FB_LOG_WARN, NULL, "hold sweep failed", "code=%s reason=%s", code, message);
        return;
    }
    /* {"status":"ok","body":{"expired":N}}: a full sweep means more are waiting */
    const char *n = strstr(result, "\"expired\" : ");
    if (!n)
        n = strstr(result, "\"expired\":");
    long expired = n ? strtol(strchr(n, ':') + 1, NULL, 10) : 0;
    if (expired > 0)
        fb_log(FB_LOG_INFO, NULL, "expired holds released", "count=%ld", expired);
    const char *t = strstr(result, "\"topups_credited\"");
    long topups = t ? strtol(strchr(t, ':') + 1, NULL, 10) : 0;
    if (topups > 0)
        fb_log(FB_LOG_WARN, NULL, "confirmed topups no edge credited were credited by the sweeper",
               "count=%ld", topups);
    if (expired >= atol(SWEEP_LIMIT))
        s_sweep_now(self);
}

static void s_sweep_now(s_ledger_t *self)
{
    if (self->sweeping)
        return;
    self->sweeping = true;
    ledger_op_spec_t spec = {.kind = LEDGER_OP_SWEEP, .method = "sweep", .args = self->sweep_args};
    ledger_engine_submit(self->engine, &spec, s_swept, self);
}

static void s_on_sweep(uv_timer_t *t)
{
    s_sweep_now(t->data);
}

/* --- stopping ------------------------------------------------------------------------- */

static void s_idle(void *arg)
{
    s_ledger_t *self = arg;
    fb_service_exit(self->service, 0);
}

static void s_on_stop(void *arg)
{
    s_ledger_t *self = arg;
    fb_rpc_server_pause(fb_service_rpc(self->service));
    uv_timer_stop(&self->sweep);
    ledger_engine_on_idle(self->engine, s_idle, self);
}

int main(int argc, char **argv)
{
    FB_ASSERT(sodium_init() >= 0);
    s_ledger_t self = {0};
    self.service = fb_service_new(argc, argv, &s_def);
    const fb_config_t *cfg = fb_service_config(self.service);
    const char *conninfo = fb_config_str(cfg, "FAREBOX_DATABASE_URL");

    if (s_migrate(conninfo, fb_config_int(cfg, "FAREBOX_DATABASE_WAIT_MS"), &self.schema_version) != 0) {
        fb_service_destroy(&self.service);
        return 1;
    }
    fb_log(FB_LOG_INFO, NULL, "database ready", "schema_version=%d", self.schema_version);
    if (fb_service_flag(self.service)) {
        fb_service_destroy(&self.service);
        return 0;
    }

    ledger_engine_config_t ec = {
        .conninfo = conninfo,
        .writers = (int)fb_config_int(cfg, "FAREBOX_LEDGER_WRITERS"),
        .readers = (int)fb_config_int(cfg, "FAREBOX_LEDGER_READERS"),
        .batch_max = (int)fb_config_int(cfg, "FAREBOX_LEDGER_BATCH_MAX"),
    };
    uv_loop_t *loop = fb_service_loop(self.service);
    self.engine = ledger_engine_new(loop, &ec);
    self.rpc = ledger_rpc_new(fb_service_rpc(self.service), self.engine,
                              fb_config_str(cfg, "FAREBOX_KEY_HMAC_SECRET"));
    fb_rpc_server_on_health(fb_service_rpc(self.service), s_health, &self);

    uv_timer_init(loop, &self.sweep);
    self.sweep.data = &self;
    snprintf(self.sweep_args, sizeof(self.sweep_args), "%s,%lld", SWEEP_LIMIT,
             (long long)fb_config_int(cfg, "FAREBOX_TOPUP_CREDIT_AFTER_S") * 1000);
    uint64_t every = (uint64_t)fb_config_int(cfg, "FAREBOX_LEDGER_SWEEP_MS");
    uv_timer_start(&self.sweep, s_on_sweep, every, every);
    fb_service_on_stop(self.service, s_on_stop, &self);

    int code = fb_service_run(self.service);

    uv_close((uv_handle_t *)&self.sweep, NULL);
    ledger_engine_destroy(&self.engine);
    ledger_rpc_destroy(&self.rpc);
    fb_service_destroy(&self.service);
    return code;
}
