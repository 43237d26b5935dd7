/* watch_metrics - the chain-watcher's figures in Prometheus text format on
 * GET /metrics (FAREBOX_METRICS_LISTEN; off when empty): per network the head,
 * the confirmed block, the cursor and the lag, credits by result, errors,
 * reorgs, eth_getLogs calls, watched addresses; per chain endpoint its calls,
 * failures, last latency and whether it is resting after failures. */
#ifndef WATCH_METRICS_H
#define WATCH_METRICS_H
#include "watch.h"

#include <stdio.h>

typedef struct watch_metrics_t watch_metrics_t;

/* watch_metrics_new - listen on hostport. Returns the server (caller owns it)
 * or NULL with err. */
watch_metrics_t *watch_metrics_new(watcher_t *w, const char *hostport, char *err, size_t errlen);
/* watch_metrics_destroy - stop listening. Nulls *self_p. */
void watch_metrics_destroy(watch_metrics_t **self_p);
/* watch_metrics_write - the text exposition of w's figures into out. */
void watch_metrics_write(const watcher_t *w, FILE *out);
#endif
