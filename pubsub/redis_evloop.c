/*
 * redis_evloop.c: the hiredis <-> h2o evloop adapter.
 *
 * hiredis 0.14 asks its event library for read and write interest through five hooks (ac->ev).
 * The fd is wrapped in an h2o socket created with H2O_SOCKET_FLAG_DONT_READ, which turns h2o's
 * read callback into a readiness notice: hiredis does its own read() in redisAsyncHandleRead.
 * Write interest is h2o_socket_notify_write, which is one-shot; hiredis asks again while it has
 * output left. h2o cannot cancel a notify_write, so delWrite does nothing: a spurious writable
 * notice only makes hiredis find nothing to write.
 *
 * Teardown: hiredis calls cleanup from redisAsyncFree (possibly from inside our own read
 * callback). h2o_socket_close defers freeing the socket struct to the loop, so that is safe; the
 * fd is h2o's to close from then on, hence ac->c.fd = -1 (hiredis would close it again).
 */
#include <h2o.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include "alloc.h"
#include "redis_evloop.h"

typedef struct st_adapter_t {
    redisAsyncContext *ac;
    h2o_socket_t *sock;
    int reading;
} adapter_t;

static void
on_readable(h2o_socket_t *sock, const char *err)
{
    adapter_t *a = sock->data;
    /* On a socket error hiredis's own read() sees it and runs its disconnect path. */
    redisAsyncHandleRead(a->ac); /* may free a */
}

static void
on_writable(h2o_socket_t *sock, const char *err)
{
    adapter_t *a = sock->data;
    redisAsyncHandleWrite(a->ac); /* may free a */
}

static void
add_read(void *p)
{
    adapter_t *a = p;
    if (!a->reading) {
        a->reading = 1;
        h2o_socket_read_start(a->sock, on_readable);
    }
}

static void
del_read(void *p)
{
    adapter_t *a = p;
    if (a->reading) {
        a->reading = 0;
        h2o_socket_read_stop(a->sock);
    }
}

static void
add_write(void *p)
{
    adapter_t *a = p;
    if (!h2o_socket_is_writing(a->sock))
        h2o_socket_notify_write(a->sock, on_writable);
}

static void
del_write(void *p)
{
}

static void
cleanup(void *p)
{
    adapter_t *a = p;
    a->sock->data = NULL;
    h2o_socket_close(a->sock);
    a->ac->c.fd = -1;
    a->ac->ev.data = NULL;
    pe_free(a);
}

int
pe_redis_evloop_attach(redisAsyncContext *ac, h2o_evloop_t *loop)
{
    if (ac->ev.data != NULL)
        return -1;
    adapter_t *a = pe_calloc(1, sizeof(*a));
    a->ac = ac;
    a->sock = h2o_evloop_socket_create(loop, ac->c.fd, H2O_SOCKET_FLAG_DONT_READ);
    a->sock->data = a;
    ac->ev.data = a;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return 0;
}
