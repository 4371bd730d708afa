/* A small thread pool for work that must not block the event loop (argon2
 * password checks, capture file writes). Completions run on the loop thread. */
#ifndef SLUICE_CORE_WORKER_H
#define SLUICE_CORE_WORKER_H

struct event_base;
struct worker;

struct worker *worker_new(struct event_base *base, int threads);

/* Runs work(arg) on a pool thread, then done(arg) on the loop thread.
 * Returns 0 or -1 (out of memory). */
int worker_submit(struct worker *w, void (*work)(void *arg), void (*done)(void *arg), void *arg);

/* Finishes queued jobs, joins the threads, runs pending completions. */
void worker_free(struct worker *w);

#endif
