/* TLS handshakes on handshake threads (tls_offload.h). Jobs travel in two
 * mutex-protected lists, each with an eventfd that wakes the loop on the
 * other side: loop -> thread (new handshakes), thread -> loop (finished
 * ones). Each event base is only ever touched by its own thread, so
 * libevent needs no locking. */
#include "net/tls_offload.h"

#include <errno.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

struct job {
    SSL *ssl;
    int fd;
    int64_t deadline_ms; /* CLOCK_MONOTONIC */
    tls_offload_fn done;
    void *arg;
    const char *error; /* NULL, or a constant, or err_buf */
    char err_buf[256];
    struct event *ev; /* on the thread's base while the handshake runs */
    struct tls_thread *t;
    struct job *next;
};

struct queue {
    pthread_mutex_t mu;
    struct job *head, *tail;
    int efd;
};

struct tls_thread {
    struct tls_offload *o;
    pthread_t th;
    struct event_base *base;
    struct event *wake;
    struct queue in;    /* from the loop */
    bool stop;          /* under in.mu */
    struct job *active; /* jobs with an event on base, for shutdown */
};

struct tls_offload {
    struct event_base *loop;
    struct event *done_ev;
    struct queue done; /* to the loop */
    struct tls_thread *t;
    int n;
    unsigned next;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void queue_push(struct queue *q, struct job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
    pthread_mutex_unlock(&q->mu);
    uint64_t one = 1;
    ssize_t w = write(q->efd, &one, sizeof one);
    (void)w; /* a full counter still wakes the reader */
}

static struct job *queue_take_all(struct queue *q)
{
    uint64_t v;
    ssize_t r = read(q->efd, &v, sizeof v);
    (void)r; /* EAGAIN: a wake-up already consumed */
    pthread_mutex_lock(&q->mu);
    struct job *all = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return all;
}

static int queue_init(struct queue *q)
{
    memset(q, 0, sizeof *q);
    q->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (q->efd < 0)
        return -1;
    pthread_mutex_init(&q->mu, NULL);
    return 0;
}

static void queue_destroy(struct queue *q)
{
    if (q->efd >= 0)
        close(q->efd);
    pthread_mutex_destroy(&q->mu);
}

/* ---- on a handshake thread ---- */

static void unlink_active(struct tls_thread *t, struct job *j)
{
    for (struct job **p = &t->active; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            return;
        }
}

static void finish(struct job *j, const char *error)
{
    struct tls_thread *t = j->t;
    if (j->ev) {
        event_free(j->ev);
        j->ev = NULL;
    }
    unlink_active(t, j);
    j->error = error;
    queue_push(&t->o->done, j);
}

static void step(evutil_socket_t fd, short what, void *arg)
{
    struct job *j = arg;
    (void)fd;
    if (what & EV_TIMEOUT) {
        finish(j, "handshake timed out");
        return;
    }
    ERR_clear_error();
    int r = SSL_accept(j->ssl);
    if (r == 1) {
        finish(j, NULL);
        return;
    }
    int e = SSL_get_error(j->ssl, r);
    short want = e == SSL_ERROR_WANT_READ ? EV_READ : e == SSL_ERROR_WANT_WRITE ? EV_WRITE : 0;
    if (!want) {
        unsigned long code = ERR_get_error();
        if (code) {
            ERR_error_string_n(code, j->err_buf, sizeof j->err_buf);
            finish(j, j->err_buf);
        } else {
            finish(j, "connection lost during the handshake");
        }
        return;
    }
    int64_t left = j->deadline_ms - mono_ms();
    if (left <= 0) {
        finish(j, "handshake timed out");
        return;
    }
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    event_del(j->ev);
    event_assign(j->ev, j->t->base, j->fd, want, step, j);
    event_add(j->ev, &tv);
}

static void on_thread_wake(evutil_socket_t fd, short what, void *arg)
{
    struct tls_thread *t = arg;
    (void)fd, (void)what;
    struct job *j = queue_take_all(&t->in);
    pthread_mutex_lock(&t->in.mu);
    bool stop = t->stop;
    pthread_mutex_unlock(&t->in.mu);
    while (j) {
        struct job *next = j->next;
        j->t = t;
        j->ev = event_new(t->base, j->fd, EV_READ, step, j);
        j->next = t->active;
        t->active = j;
        if (!j->ev)
            finish(j, "out of memory");
        else if (stop)
            finish(j, "shutting down");
        else
            step(j->fd, EV_READ, j);
        j = next;
    }
    if (stop) {
        while (t->active)
            finish(t->active, "shutting down");
        event_base_loopbreak(t->base);
    }
}

static void *thread_main(void *arg)
{
    struct tls_thread *t = arg;
    event_base_dispatch(t->base);
    return NULL;
}

/* ---- on the loop thread ---- */

static void on_loop_wake(evutil_socket_t fd, short what, void *arg)
{
    struct tls_offload *o = arg;
    (void)fd, (void)what;
    struct job *j = queue_take_all(&o->done);
    while (j) {
        struct job *next = j->next;
        j->done(j->arg, j->ssl, j->fd, j->error);
        free(j);
        j = next;
    }
}

struct tls_offload *tls_offload_new(struct event_base *loop, int threads, char *err, size_t errlen)
{
    struct tls_offload *o = calloc(1, sizeof *o);
    if (!o || threads < 1 || queue_init(&o->done) < 0) {
        snprintf(err, errlen, "cannot set up TLS handshake threads: %s", strerror(errno));
        free(o);
        return NULL;
    }
    o->loop = loop;
    o->done_ev = event_new(loop, o->done.efd, EV_READ | EV_PERSIST, on_loop_wake, o);
    o->t = calloc((size_t)threads, sizeof *o->t);
    if (!o->done_ev || !o->t || event_add(o->done_ev, NULL) < 0) {
        snprintf(err, errlen, "cannot set up TLS handshake threads: out of memory");
        tls_offload_free(o);
        return NULL;
    }
    for (int i = 0; i < threads; i++) {
        struct tls_thread *t = &o->t[i];
        t->o = o;
        t->in.efd = -1;
        if (queue_init(&t->in) < 0 || !(t->base = event_base_new()) ||
            !(t->wake = event_new(t->base, t->in.efd, EV_READ | EV_PERSIST, on_thread_wake, t)) ||
            event_add(t->wake, NULL) < 0 || pthread_create(&t->th, NULL, thread_main, t) != 0) {
            snprintf(err, errlen, "cannot start TLS handshake thread %d", i + 1);
            if (t->wake)
                event_free(t->wake);
            if (t->base)
                event_base_free(t->base);
            queue_destroy(&t->in);
            t->base = NULL;
            tls_offload_free(o);
            return NULL;
        }
        o->n++;
    }
    return o;
}

int tls_offload_accept(struct tls_offload *o, SSL *ssl, int fd, int timeout_s, tls_offload_fn done,
                       void *arg)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        return -1;
    j->ssl = ssl;
    j->fd = fd;
    j->deadline_ms = mono_ms() + (int64_t)(timeout_s > 0 ? timeout_s : 60) * 1000;
    j->done = done;
    j->arg = arg;
    SSL_set_fd(ssl, fd);
    SSL_set_accept_state(ssl);
    queue_push(&o->t[o->next++ % (unsigned)o->n].in, j);
    return 0;
}

int tls_offload_threads(const struct tls_offload *o)
{
    return o ? o->n : 0;
}

void tls_offload_free(struct tls_offload *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->n; i++) {
        struct tls_thread *t = &o->t[i];
        pthread_mutex_lock(&t->in.mu);
        t->stop = true;
        pthread_mutex_unlock(&t->in.mu);
        uint64_t one = 1;
        ssize_t w = write(t->in.efd, &one, sizeof one);
        (void)w;
        pthread_join(t->th, NULL);
        event_free(t->wake);
        event_base_free(t->base);
        queue_destroy(&t->in);
    }
    on_loop_wake(-1, 0, o); /* callbacks of what the threads gave back */
    if (o->done_ev)
        event_free(o->done_ev);
    queue_destroy(&o->done);
    free(o->t);
    free(o);
}
