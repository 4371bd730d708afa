/* The daemon's listeners of the event bus: the JSON log, the audit chain,
 * /metrics counters, per-credential accounting and webhooks. */
#ifndef SLUICE_CLI_OBSERVE_H
#define SLUICE_CLI_OBSERVE_H

#include <stddef.h>

struct relay;
struct metrics_snapshot;

/* Installed as r->observer once observe_open() has succeeded. */
extern const struct events_observer observe_listeners;

/* Opens what the listeners feed (audit file, privacy key, webhooks) from
 * r->cfg. Returns 0 or -1 with err set. */
int observe_open(struct relay *r, char *err, size_t errlen);
void observe_close(struct relay *r);

/* Fills a /metrics snapshot (the callback given to metrics_http_open). */
void observe_fill_metrics(struct relay *r, struct metrics_snapshot *s);

#endif
