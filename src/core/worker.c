/* Thread pool with a FIFO of jobs; finished jobs go to a second list that an
 * eventfd hands back to the loop thread. */
#include "core/worker.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct job {
    void (*work)(void *);
    void (*done)(void *);
    void *arg;
    struct job *next;
};

struct worker {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct job *todo, *todo_tail, *finished;
    bool stop;
    int n_threads;
    pthread_t *threads;
    int efd;
    struct event *ev;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->todo && !w->stop)
            pthread_cond_wait(&w->cond, &w->mu);
        if (!w->todo)
            break;
        struct job *j = w->todo;
        w->todo = j->next;
        if (!w->todo)
            w->todo_tail = NULL;
        pthread_mutex_unlock(&w->mu);
        j->work(j->arg);
        pthread_mutex_lock(&w->mu);
        j->next = w->finished;
        w->finished = j;
        uint64_t one = 1;
        ssize_t r = write(w->efd, &one, sizeof one);
        (void)r;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void run_finished(struct worker *w)
{
    pthread_mutex_lock(&w->mu);
    struct job *list = w->finished;
    w->finished = NULL;
    pthread_mutex_unlock(&w->mu);
    /* the list is newest first; reverse to finish in completion order */
    struct job *rev = NULL;
    while (list) {
        struct job *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct job *n = rev->next;
        if (rev->done)
            rev->done(rev->arg);
        free(rev);
        rev = n;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
    (void)what;
    run_finished(arg);
}

struct worker *worker_new(struct event_base *base, int threads)
{
    struct worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, on_wake, w);
    event_add(w->ev, NULL);
    w->threads = calloc((size_t)threads, sizeof *w->threads);
    for (int i = 0; i < threads; i++)
        if (pthread_create(&w->threads[i], NULL, worker_main, w) == 0)
            w->n_threads++;
    return w;
}

int worker_submit(struct worker *w, void (*work)(void *arg), void (*done)(void *arg), void *arg)
{
    struct job *j = malloc(sizeof *j);
    if (!j)
        return -1;
    *j = (struct job){.work = work, .done = done, .arg = arg};
    pthread_mutex_lock(&w->mu);
    if (w->todo_tail)
        w->todo_tail->next = j;
    else
        w->todo = j;
    w->todo_tail = j;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    for (int i = 0; i < w->n_threads; i++)
        pthread_join(w->threads[i], NULL);
    run_finished(w);
    event_free(w->ev);
    close(w->efd);
    free(w->threads);
    free(w);
}
