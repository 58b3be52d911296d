/*
 * node.c: one event-loop thread's view of pubsub: its subscribers per channel, the live feed
 * from the engine, catch-up from history, and fan-out.
 *
 * Data flow. The engine posts each new message of a watched channel once to this node's
 * multithread queue (one allocation and one reference per node, never per subscriber). The
 * queue's callback runs on this thread with every message queued since the last wake-up, looks
 * up the local channel and hands the message to each subscriber whose position is behind it.
 * Transports coalesce their writes per loop iteration, so a burst costs one write per socket.
 *
 * The catch-up/live seam. A channel entry starts in READING: the node has asked the engine to
 * watch the channel (first local subscriber) and then reads a page of history after the
 * entry's position. Live messages that arrive while the entry is not LIVE are not buffered:
 * they are in history, and the entry only records that it skipped one (missed_live). When a
 * page is delivered, the entry goes LIVE only if that read reached the channel's newest message
 * and nothing was skipped since it was issued; otherwise it reads the next page. Every live
 * message after that has an ID above the entry's position, and anything at or below it is a
 * duplicate of history and is dropped, so the seam neither loses nor repeats a message. Memory
 * per catching-up subscriber is one page of references, however long the history.
 *
 * Rejected: buffering live messages per subscriber during catch-up (unbounded under load, and
 * the history has them anyway); one engine read per subscriber for live messages (the engine
 * would see N reads per message).
 *
 * Presence. A channel added with PE_SUB_PRESENCE_MEMBER registers the subscriber with the engine
 * (who it is comes from the transport's who callback) until the channel is removed; the engine
 * stores its join and leave as entries of the channel's history (pe_msg_t.kind). Fan-out passes
 * over those entries for channels added without PE_SUB_PRESENCE_EVENTS, moving their position
 * past them: one comparison per delivery, no lock (docs/architecture.md "Presence").
 *
 * Safe points: subscriber callbacks run from the run queue (catch-up) or the live feed, never
 * from inside pe_sub_add/remove/resume; transports must not dispose a subscriber from inside
 * one of its callbacks (asserted).
 */
#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <h2o.h>
#include <h2o/multithread.h>
#include "alloc.h"
#include "engine.h"
#include "stats.h"
#include "strmap.h"

/* Messages per history read: bounds the references a catching-up subscriber holds. */
#define PE_SUB_PAGE 128
/* Delay before a failed history read is tried again (the engine also resyncs on reconnect). */
#define PE_SUB_RETRY_MS 1000

const char pe_ps_err_unavailable[] = "the message engine is unavailable";
const char pe_ps_err_unconfirmed[] =
    "the message engine did not confirm the publish in time: it may have been stored (retry with the same idempotency key)";
const char pe_ps_err_too_many[] = "too many channels in one subscription";
const char pe_ps_err_channel_limit[] = "this node holds as many channels as it may (--max-channels); try again later";
const char pe_ps_err_duplicate[] = "already subscribed to that channel";
const char pe_ps_err_exhausted[] = "the channel's message IDs are exhausted";
const char pe_ps_err_bad_key[] = "idempotency keys are 1-64 characters of A-Z a-z 0-9 _ - . :";

/* The idempotency window when none is configured (docs/protocol.md "Publish": 300 s). */
#define PE_PS_DEFAULT_IDEMPOTENCY_WINDOW_MS 300000

/* No count delivered yet (pe_sub_chan_t.last_count, local_channel_t.last_count). */
#define COUNT_NONE UINT64_MAX
/* A long-poll's entry on a node that has seen no count of the channel: the first count is only
 * taken as known (pe_sub_chan_t.last_count). */
#define COUNT_LEARN (UINT64_MAX - 1)

typedef struct st_count_query_t count_query_t;

typedef struct st_local_channel_t {
    h2o_linklist_t subs; /* pe_sub_chan_t.lc_link: entries of this thread's subscribers */
    size_t count;
    /* Presence counts: entries that take presence events, the node's list of such channels
     * while there are any, the count last seen here (COUNT_NONE: none yet), and the engine
     * query in flight (weak: cleared if the channel goes first). */
    size_t presence_subs;
    h2o_linklist_t presence_link; /* in node->presence_channels while presence_subs != 0 */
    uint64_t last_count;
    count_query_t *count_query;
    size_t name_len;
    char name[];
} local_channel_t;

typedef enum en_chan_state_t { CHAN_READING, CHAN_CATCHUP, CHAN_LIVE } chan_state_t;

typedef struct st_read_req_t {
    pe_sub_chan_t *chan; /* weak: cleared when the entry is removed before the read completes */
} read_req_t;

struct st_pe_sub_chan_t {
    pe_sub_t *sub;
    local_channel_t *lc;
    h2o_linklist_t lc_link; /* in lc->subs */
    pe_id_t pos;            /* last message delivered (or the start position) */
    pe_id_t gap_base;       /* with gap_pending: where pos moves once the gap is delivered */
    uint32_t tag;           /* pe_cursor_tag(name) */
    chan_state_t state;
    pe_start_t start;     /* the first read's start; later reads start after pos */
    unsigned started : 1; /* the first read completed */
    unsigned missed_live : 1;
    unsigned gap_pending : 1;
    unsigned ready_pending : 1; /* the first read answered: on_ready is due */
    unsigned reached_end : 1;
    unsigned presence : 1;       /* deliver join/leave events (PE_SUB_PRESENCE_EVENTS); else skip them */
    unsigned member_pending : 1; /* PE_SUB_PRESENCE_MEMBER: register once the channel first goes live */
    pe_ps_member_t *member;      /* the subscriber's presence registration in this channel, or NULL */
    uint64_t last_count;         /* the member count last handed to it (or taken as known); COUNT_NONE: none */
    pe_msg_t **page;             /* owned references from the last read */
    size_t page_len, page_off;
    read_req_t *read;          /* the read in flight, if any */
    h2o_linklist_t retry_link; /* in node->retry_list after a failed read */
};

struct st_pe_ps_node_t {
    pe_ps_engine_t *engine;
    h2o_evloop_t *loop;
    unsigned index;
    h2o_multithread_queue_t *queue;
    h2o_multithread_receiver_t receiver;
    pe_strmap_t channels; /* name -> local_channel_t (owned) */
    /* deferred calls, run from a zero timeout after the current event */
    h2o_timeout_t zero_timeout;
    h2o_timeout_entry_t defer_entry;
    pe_ps_deferred_t *defer_head, **defer_tail;
    /* subscribers with catch-up work */
    pe_sub_t *run_head, *run_tail;
    pe_ps_deferred_t run_deferred;
    unsigned run_deferred_queued : 1;
    /* entries whose last read failed (engine unreachable): read again every PE_SUB_RETRY_MS */
    h2o_linklist_t retry_list;
    h2o_timeout_t retry_timeout;
    h2o_timeout_entry_t retry_entry;
    pe_ps_node_stats_t stats;
    pe_ps_control_cb control_cb; /* control messages from other processes, or NULL */
    void *control_ctx;
    /* Presence counts: local channels with presence subscribers (local_channel_t.presence_link),
     * asked for their member count every presence_count_interval_ms while the list is not empty. */
    h2o_linklist_t presence_channels;
    h2o_timeout_t count_timeout;
    h2o_timeout_entry_t count_entry;
};

struct st_count_query_t {
    pe_ps_node_t *node;
    local_channel_t *lc; /* weak: NULL once the channel is released */
};

typedef struct st_live_msg_t {
    h2o_multithread_message_t super;
    pe_msg_t *msg;
} live_msg_t;

static void schedule(pe_sub_t *sub);
static void issue_read(pe_sub_chan_t *chan);

/* ---- deferred calls -------------------------------------------------------------------------- */

static void
on_defer_timeout(h2o_timeout_entry_t *entry)
{
    pe_ps_node_t *node = H2O_STRUCT_FROM_MEMBER(pe_ps_node_t, defer_entry, entry);
    /* Take the list first: calls deferred by these callbacks run on the next round. */
    pe_ps_deferred_t *d = node->defer_head;
    node->defer_head = NULL;
    node->defer_tail = &node->defer_head;
    while (d != NULL) {
        pe_ps_deferred_t *next = d->_next;
        d->cb(d);
        d = next;
    }
}

void
pe_ps_node__defer(pe_ps_node_t *node, pe_ps_deferred_t *d)
{
    d->_next = NULL;
    *node->defer_tail = d;
    node->defer_tail = &d->_next;
    if (!h2o_timeout_is_linked(&node->defer_entry))
        h2o_timeout_link(node->loop, &node->zero_timeout, &node->defer_entry);
}

void
pe_ps_node__count_published(pe_ps_node_t *node)
{
    PE_STAT_ADD(node->stats.published, 1);
}

void
pe_ps_node__count_read(pe_ps_node_t *node, unsigned source)
{
    PE_STAT_ADD(node->stats.reads[source], 1);
}

void
pe_ps_node__count_replayed(pe_ps_node_t *node)
{
    PE_STAT_ADD(node->stats.replayed, 1);
}

uint64_t
pe_ps__idempotency_window_ms(const pe_ps_options_t *opts)
{
    return opts->idempotency_window_ms != 0 ? opts->idempotency_window_ms : PE_PS_DEFAULT_IDEMPOTENCY_WINDOW_MS;
}

/* ---- live feed ------------------------------------------------------------------------------- */

void
pe_ps_node__post_live(pe_ps_node_t *node, pe_msg_t *msg)
{
    live_msg_t *m = pe_malloc(sizeof(*m));
    m->super = (h2o_multithread_message_t){{NULL, NULL}};
    m->msg = msg;
    h2o_multithread_send_message(&node->receiver, &m->super);
}

static void
fan_out(pe_ps_node_t *node, pe_msg_t *msg)
{
    local_channel_t *lc = pe_strmap_get(&node->channels, msg->channel, msg->channel_len);
    if (lc == NULL)
        return; /* the last local subscriber left while the message was queued */
    uint64_t delivered = 0;
    for (h2o_linklist_t *l = lc->subs.next, *next; l != &lc->subs; l = next) {
        next = l->next;
        pe_sub_chan_t *e = H2O_STRUCT_FROM_MEMBER(pe_sub_chan_t, lc_link, l);
        if (pe_id_cmp(msg->id, e->pos) <= 0)
            continue; /* already delivered from history */
        if (e->state != CHAN_LIVE) {
            e->missed_live = 1; /* it is in history: the catch-up reads it */
            continue;
        }
        if (msg->kind != PE_MSG_DATA && !e->presence) {
            e->pos = msg->id; /* a presence event this subscriber did not ask for: passed over */
            continue;
        }
        pe_sub_t *sub = e->sub;
        e->pos = msg->id;
        sub->_dispatching = 1;
        sub->_live_dispatch = 1;
        sub->cb->on_message(sub, msg);
        sub->_live_dispatch = 0;
        sub->_dispatching = 0;
        ++delivered;
    }
    PE_STAT_ADD(node->stats.delivered, delivered);
}

void
pe_ps_node__deliver_live(pe_ps_node_t *node, pe_msg_t *msg)
{
    fan_out(node, msg);
}

void
pe_ps_node__resync(pe_ps_node_t *node, const char *channel, size_t len)
{
    local_channel_t *lc = pe_strmap_get(&node->channels, channel, len);
    if (lc == NULL)
        return;
    for (h2o_linklist_t *l = lc->subs.next; l != &lc->subs; l = l->next) {
        pe_sub_chan_t *e = H2O_STRUCT_FROM_MEMBER(pe_sub_chan_t, lc_link, l);
        if (h2o_linklist_is_linked(&e->retry_link)) {
            h2o_linklist_unlink(&e->retry_link);
            issue_read(e);
        } else if (e->state == CHAN_LIVE) {
            /* From its position: issue_read starts after pos once the first read is done. */
            e->sub->_live_announced = 0;
            issue_read(e);
        } else {
            /* A read in flight or a page being delivered: read once more after it. */
            e->missed_live = 1;
        }
    }
}

/* Calls on_engine once per subscriber whose last notice differs. */
static int
notify_channel(const char *key, size_t len, void *value, void *arg)
{
    local_channel_t *lc = value;
    int up = *(int *)arg;
    for (h2o_linklist_t *l = lc->subs.next; l != &lc->subs; l = l->next) {
        pe_sub_chan_t *e = H2O_STRUCT_FROM_MEMBER(pe_sub_chan_t, lc_link, l);
        pe_sub_t *sub = e->sub;
        if (sub->_engine_down == !up)
            continue;
        sub->_engine_down = !up;
        if (sub->cb->on_engine != NULL) {
            sub->_dispatching = 1;
            sub->cb->on_engine(sub, up);
            sub->_dispatching = 0;
        }
    }
    return 0;
}

void
pe_ps_node__engine_state(pe_ps_node_t *node, int up)
{
    pe_strmap_foreach(&node->channels, notify_channel, &up);
}

unsigned
pe_ps_node__index(pe_ps_node_t *node)
{
    return node->index;
}

h2o_evloop_t *
pe_ps_node__loop(pe_ps_node_t *node)
{
    return node->loop;
}

static void
on_live_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    pe_ps_node_t *node = H2O_STRUCT_FROM_MEMBER(pe_ps_node_t, receiver, receiver);
    while (!h2o_linklist_is_empty(messages)) {
        live_msg_t *m = H2O_STRUCT_FROM_MEMBER(live_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&m->super.link);
        fan_out(node, m->msg);
        pe_msg_release(m->msg);
        pe_free(m);
    }
}

/* ---- local channels -------------------------------------------------------------------------- */

static local_channel_t *
acquire_channel(pe_ps_node_t *node, const char *name, size_t len)
{
    local_channel_t *lc = pe_strmap_get(&node->channels, name, len);
    if (lc != NULL)
        return lc;
    lc = pe_calloc(1, sizeof(*lc) + len + 1);
    h2o_linklist_init_anchor(&lc->subs);
    lc->last_count = COUNT_NONE;
    memcpy(lc->name, name, len);
    lc->name_len = len;
    pe_strmap_set(&node->channels, name, len, lc);
    PE_STAT_ADD(node->stats.channels, 1);
    __atomic_add_fetch(&node->engine->num_local_channels, 1, __ATOMIC_RELAXED);
    /* Watch before the first read, so the read and the live feed overlap (see the seam above). */
    node->engine->ops->watch(node->engine, node, name, len);
    return lc;
}

static void
release_channel(pe_ps_node_t *node, local_channel_t *lc)
{
    if (lc->count != 0)
        return;
    assert(lc->presence_subs == 0);
    if (lc->count_query != NULL)
        lc->count_query->lc = NULL;
    node->engine->ops->unwatch(node->engine, node, lc->name, lc->name_len);
    pe_strmap_remove(&node->channels, lc->name, lc->name_len);
    PE_STAT_ADD(node->stats.channels, (uint64_t)-1);
    __atomic_sub_fetch(&node->engine->num_local_channels, 1, __ATOMIC_RELAXED);
    pe_free(lc);
}

/* ---- subscriber run queue -------------------------------------------------------------------- */

static void
release_page(pe_sub_chan_t *chan)
{
    for (size_t i = chan->page_off; i < chan->page_len; ++i)
        pe_msg_release(chan->page[i]);
    pe_free(chan->page);
    chan->page = NULL;
    chan->page_len = chan->page_off = 0;
}

static void
unschedule(pe_sub_t *sub)
{
    if (!sub->_scheduled)
        return;
    pe_ps_node_t *node = sub->_node;
    if (sub->_sched_prev != NULL)
        sub->_sched_prev->_sched_next = sub->_sched_next;
    else
        node->run_head = sub->_sched_next;
    if (sub->_sched_next != NULL)
        sub->_sched_next->_sched_prev = sub->_sched_prev;
    else
        node->run_tail = sub->_sched_prev;
    sub->_sched_prev = sub->_sched_next = NULL;
    sub->_scheduled = 0;
}

static pe_ps_member_t *member_new(pe_ps_member_kind_t kind, const char *key, size_t key_len, const pe_ps_who_t *who);

/*
 * Registers the subscriber as a member of the channel, when the channel first goes live: its
 * own join then arrives on the live feed like any later event (the subscriber receives it, and
 * no second history read is needed, as one stored during the catch-up would cause).
 */
static void
register_member(pe_sub_t *sub, pe_sub_chan_t *chan)
{
    chan->member_pending = 0;
    pe_ps_who_t who = {.transport = "?"};
    sub->cb->who(sub, &who);
    chan->member = member_new(PE_PS_MEMBER_PRESENCE, chan->lc->name, chan->lc->name_len, &who);
    pe_ps_engine_t *engine = sub->_node->engine;
    engine->ops->member_add(engine, sub->_node, chan->member);
}

/* Delivers what the subscriber's catching-up channels hold, until its transport pauses it. */
static void
run_sub(pe_sub_t *sub)
{
    pe_ps_node_t *node = sub->_node;
    uint64_t delivered = 0;
    int all_live = 1;

    sub->_dispatching = 1;
    for (size_t i = 0; i != sub->_num_chans; ++i) {
        pe_sub_chan_t *chan = sub->_chans[i];
        if (chan->state == CHAN_CATCHUP && !sub->_paused) {
            if (chan->ready_pending) {
                chan->ready_pending = 0;
                if (sub->cb->on_ready != NULL)
                    sub->cb->on_ready(sub, chan->lc->name, chan->lc->name_len);
            }
            if (chan->gap_pending) {
                pe_id_t before = chan->pos;
                chan->pos = chan->gap_base; /* backwards too: after lost data, the new history */
                if (sub->cb->on_gap(sub, chan->lc->name, chan->lc->name_len) == PE_SUB_PAUSE) {
                    /* Not now: nothing moves, and pe_sub_resume offers the gap again. */
                    chan->pos = before;
                    sub->_paused = 1;
                } else {
                    chan->gap_pending = 0;
                    PE_STAT_ADD(node->stats.gaps, 1);
                }
            }
            while (chan->page_off < chan->page_len && !sub->_paused) {
                pe_msg_t *msg = chan->page[chan->page_off++];
                if (pe_id_cmp(msg->id, chan->pos) > 0 && msg->kind != PE_MSG_DATA && !chan->presence) {
                    chan->pos = msg->id; /* a presence event not asked for: passed over */
                } else if (pe_id_cmp(msg->id, chan->pos) > 0) {
                    chan->pos = msg->id;
                    ++delivered;
                    if (sub->cb->on_message(sub, msg) == PE_SUB_PAUSE)
                        sub->_paused = 1;
                }
                pe_msg_release(msg);
            }
            /* A gap not taken yet keeps its (maybe empty) page: the channel is not caught up. */
            if (chan->page_off == chan->page_len && !chan->gap_pending) {
                release_page(chan);
                if (chan->reached_end && !chan->missed_live) {
                    chan->state = CHAN_LIVE;
                    if (chan->member_pending)
                        register_member(sub, chan);
                } else {
                    issue_read(chan);
                }
            }
        }
        if (chan->state != CHAN_LIVE)
            all_live = 0;
    }
    if (all_live && sub->_num_chans != 0 && !sub->_live_announced) {
        sub->_live_announced = 1;
        sub->cb->on_live(sub);
    }
    sub->_dispatching = 0;
    PE_STAT_ADD(node->stats.delivered, delivered);
}

static void
on_run_queue(pe_ps_deferred_t *d)
{
    pe_ps_node_t *node = H2O_STRUCT_FROM_MEMBER(pe_ps_node_t, run_deferred, d);
    node->run_deferred_queued = 0;
    /* Subscribers scheduled while this runs wait for the next round (no recursion). */
    pe_sub_t *tail = node->run_tail;
    while (node->run_head != NULL) {
        pe_sub_t *sub = node->run_head;
        unschedule(sub);
        run_sub(sub);
        if (sub == tail)
            break;
    }
}

static void
schedule(pe_sub_t *sub)
{
    pe_ps_node_t *node = sub->_node;
    if (!sub->_scheduled) {
        sub->_scheduled = 1;
        sub->_sched_next = NULL;
        sub->_sched_prev = node->run_tail;
        if (node->run_tail != NULL)
            node->run_tail->_sched_next = sub;
        else
            node->run_head = sub;
        node->run_tail = sub;
    }
    if (!node->run_deferred_queued) {
        node->run_deferred_queued = 1;
        pe_ps_node__defer(node, &node->run_deferred);
    }
}

/* ---- history reads --------------------------------------------------------------------------- */

static void
on_read(void *ctx, pe_ps_read_result_t *r)
{
    read_req_t *req = ctx;
    pe_sub_chan_t *chan = req->chan;
    pe_free(req);
    if (chan == NULL) {
        /* The entry left while the read was in flight. */
        for (size_t i = 0; i != r->num_msgs; ++i)
            pe_msg_release(r->msgs[i]);
        pe_free(r->msgs);
        return;
    }
    chan->read = NULL;
    if (r->err != NULL) {
        /* Still READING, with nothing in flight: read again later (or at the engine's resync). */
        pe_ps_node_t *node = chan->sub->_node;
        for (size_t i = 0; i != r->num_msgs; ++i)
            pe_msg_release(r->msgs[i]);
        pe_free(r->msgs);
        h2o_linklist_insert(&node->retry_list, &chan->retry_link);
        if (!h2o_timeout_is_linked(&node->retry_entry))
            h2o_timeout_link(node->loop, &node->retry_timeout, &node->retry_entry);
        return;
    }
    /* The engine computed base from our position; a gap moves it past the loss, but only once the
     * gap is delivered (run_sub): until then the cursor keeps the old position, so a client that
     * resumes from a cursor taken before it sees the gap is told again. */
    if (r->gap) {
        chan->gap_pending = 1;
        chan->gap_base = r->base;
    } else if (!chan->started) {
        chan->pos = r->base;
    }
    if (!chan->started)
        chan->ready_pending = 1;
    chan->started = 1;
    chan->page = r->msgs;
    chan->page_len = r->num_msgs;
    chan->page_off = 0;
    chan->reached_end = r->reached_end;
    chan->state = CHAN_CATCHUP;
    schedule(chan->sub);
}

static void
on_retry_timeout(h2o_timeout_entry_t *entry)
{
    pe_ps_node_t *node = H2O_STRUCT_FROM_MEMBER(pe_ps_node_t, retry_entry, entry);
    /* Reads failing again are linked anew and wait for the next round. */
    h2o_linklist_t list;
    h2o_linklist_init_anchor(&list);
    h2o_linklist_insert_list(&list, &node->retry_list);
    while (!h2o_linklist_is_empty(&list)) {
        pe_sub_chan_t *chan = H2O_STRUCT_FROM_MEMBER(pe_sub_chan_t, retry_link, list.next);
        h2o_linklist_unlink(&chan->retry_link);
        issue_read(chan);
    }
}

static void
issue_read(pe_sub_chan_t *chan)
{
    pe_ps_node_t *node = chan->sub->_node;
    pe_start_t start = chan->started ? (pe_start_t){PE_START_AFTER, chan->pos, 1} : chan->start;
    read_req_t *req = pe_malloc(sizeof(*req));
    req->chan = chan;
    chan->read = req;
    chan->state = CHAN_READING;
    chan->missed_live = 0;
    node->engine->ops->read(node->engine, node, chan->lc->name, chan->lc->name_len, start, PE_SUB_PAGE, on_read, req);
}

/* ---- subscribers ----------------------------------------------------------------------------- */

void
pe_sub_init(pe_sub_t *sub, pe_ps_node_t *node, const pe_sub_callbacks_t *cb)
{
    *sub = (pe_sub_t){.cb = cb, ._node = node};
    PE_STAT_ADD(node->stats.subscribers, 1);
}

static ssize_t
find_chan(const pe_sub_t *sub, const char *name, size_t len)
{
    for (size_t i = 0; i != sub->_num_chans; ++i) {
        local_channel_t *lc = sub->_chans[i]->lc;
        if (lc->name_len == len && memcmp(lc->name, name, len) == 0)
            return (ssize_t)i;
    }
    return -1;
}

/* The node's side of a registration: the member's JSON from who (the engine stores it as is). */
static pe_ps_member_t *
member_new(pe_ps_member_kind_t kind, const char *key, size_t key_len, const pe_ps_who_t *who)
{
    pe_ps_member_t *m = pe_calloc(1, sizeof(*m));
    m->kind = kind;
    m->key = pe_strndup(key, key_len);
    m->key_len = key_len;
    m->client_len = strlen(who->client);
    memcpy(m->client, who->client, m->client_len + 1);
    if (who->user != NULL) {
        json_t *u = json_stringn(who->user, who->user_len);
        m->user_json = u != NULL ? json_dumps(u, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(u);
    }
    if (m->user_json == NULL)
        m->user_json = pe_strndup("null", 4);
    /* The layout matters: the event is cut out of it before ,"transport": (engine.h), here and
     * in redis_lib.lua; info (an object whose text the token's issuer chose) comes before. */
    const char *node = who->node != NULL ? who->node : "";
    int info_len = who->info != NULL ? (int)who->info_len : 0;
    const char *info_head = who->info != NULL ? ",\"info\":" : "";
    const char *info = who->info != NULL ? who->info : "";
    int n = snprintf(NULL, 0, "{\"client\":\"%s\",\"user\":%s,\"node\":\"%s\"%s%.*s", m->client, m->user_json, node, info_head,
                     info_len, info);
    m->event_len = (size_t)n;
    int tail = snprintf(NULL, 0, ",\"transport\":\"%s\",\"since\":%llu}", who->transport, (unsigned long long)who->since_ms);
    m->json = pe_malloc((size_t)n + (size_t)tail + 1);
    snprintf(m->json, (size_t)n + 1, "{\"client\":\"%s\",\"user\":%s,\"node\":\"%s\"%s%.*s", m->client, m->user_json, node,
             info_head, info_len, info);
    snprintf(m->json + n, (size_t)tail + 1, ",\"transport\":\"%s\",\"since\":%llu}", who->transport,
             (unsigned long long)who->since_ms);
    m->json_len = (size_t)n + (size_t)tail;
    return m;
}

void
pe_ps__member_free(pe_ps_member_t *m)
{
    pe_free(m->key);
    pe_free(m->json);
    free(m->user_json); /* jansson's (or pe_strndup's: both the libc heap, alloc.h) */
    pe_free(m);
}

char *
pe_ps__presence_event(const pe_ps_member_t *m, size_t *len)
{
    /* {"channel":"<key>", + the member's fields json[1..event_len) + } */
    int n = snprintf(NULL, 0, "{\"channel\":\"%s\",%.*s}", m->key, (int)m->event_len - 1, m->json + 1);
    char *s = pe_malloc((size_t)n + 1);
    snprintf(s, (size_t)n + 1, "{\"channel\":\"%s\",%.*s}", m->key, (int)m->event_len - 1, m->json + 1);
    *len = (size_t)n;
    return s;
}

pe_msg_t *
pe_ps__msg_new_kind(pe_id_t id, const char *channel, size_t channel_len, const char *data, size_t data_len, uint8_t kind)
{
    pe_msg_t *msg = pe_msg_new(id, channel, channel_len, data, data_len);
    msg->kind = kind;
    return msg;
}

const char *
pe_sub_add(pe_sub_t *sub, const char *channel, size_t len, pe_start_t start)
{
    return pe_sub_add_flags(sub, channel, len, start, 0);
}

const char *
pe_sub_add_flags(pe_sub_t *sub, const char *channel, size_t len, pe_start_t start, unsigned flags)
{
    if (!pe_channel_is_valid(channel, len))
        return pe_ps_err_bad_channel;
    if (find_chan(sub, channel, len) >= 0)
        return pe_ps_err_duplicate;
    if (sub->_num_chans == PE_CURSOR_MAX_ENTRIES)
        return pe_ps_err_too_many;

    if (sub->_num_chans == sub->_capacity) {
        sub->_capacity = sub->_capacity == 0 ? 4 : sub->_capacity * 2;
        sub->_chans = pe_realloc(sub->_chans, sub->_capacity * sizeof(*sub->_chans));
    }
    pe_sub_chan_t *chan = pe_calloc(1, sizeof(*chan));
    chan->sub = sub;
    chan->lc = acquire_channel(sub->_node, channel, len);
    chan->tag = pe_cursor_tag(channel, len);
    chan->start = start;
    /* Until the first read answers, the cursor shows the requested position (NEW has none). */
    if (start.kind == PE_START_AFTER)
        chan->pos = start.after;
    h2o_linklist_insert(chan->lc->subs.next, &chan->lc_link); /* at the front, as before */
    ++chan->lc->count;
    sub->_chans[sub->_num_chans++] = chan;
    sub->_live_announced = 0;
    chan->presence = (flags & PE_SUB_PRESENCE_EVENTS) != 0;
    chan->member_pending = (flags & PE_SUB_PRESENCE_MEMBER) != 0 && sub->cb->who != NULL;
    /* A member (SSE, WebSocket) gets a large channel's count within one interval of going live;
     * a long-poll (no member, a new subscriber each poll) only when it changes from what this
     * node last saw (or, if it saw none, from the first one it sees), or every poll would be
     * answered by the same count. */
    chan->last_count = chan->member_pending ? COUNT_NONE : chan->lc->last_count != COUNT_NONE ? chan->lc->last_count : COUNT_LEARN;
    if (chan->presence && chan->lc->presence_subs++ == 0) {
        h2o_linklist_insert(&sub->_node->presence_channels, &chan->lc->presence_link);
        if (!h2o_timeout_is_linked(&sub->_node->count_entry))
            h2o_timeout_link(sub->_node->loop, &sub->_node->count_timeout, &sub->_node->count_entry);
    }
    issue_read(chan);
    return NULL;
}

static void
free_chan(pe_ps_node_t *node, pe_sub_chan_t *chan)
{
    local_channel_t *lc = chan->lc;
    if (chan->member != NULL)
        node->engine->ops->member_remove(node->engine, node, chan->member); /* the leave; the engine frees it */
    h2o_linklist_unlink(&chan->lc_link);
    --lc->count;
    if (chan->presence && --lc->presence_subs == 0)
        h2o_linklist_unlink(&lc->presence_link);
    if (chan->read != NULL)
        chan->read->chan = NULL;
    if (h2o_linklist_is_linked(&chan->retry_link))
        h2o_linklist_unlink(&chan->retry_link);
    release_page(chan);
    pe_free(chan);
    release_channel(node, lc);
}

int
pe_sub_remove(pe_sub_t *sub, const char *channel, size_t len)
{
    assert(!sub->_dispatching);
    ssize_t i = find_chan(sub, channel, len);
    if (i < 0)
        return -1;
    free_chan(sub->_node, sub->_chans[i]);
    memmove(sub->_chans + i, sub->_chans + i + 1, (sub->_num_chans - (size_t)i - 1) * sizeof(*sub->_chans));
    --sub->_num_chans;
    /* Removing the last channel that was catching up makes the rest live: announce it, later. */
    if (!sub->_live_announced && sub->_num_chans != 0 && pe_sub_is_live(sub))
        schedule(sub);
    return 0;
}

void
pe_sub_resume(pe_sub_t *sub)
{
    if (!sub->_paused)
        return;
    sub->_paused = 0;
    schedule(sub);
}

void
pe_sub_dispose(pe_sub_t *sub)
{
    assert(!sub->_dispatching);
    unschedule(sub);
    for (size_t i = 0; i != sub->_num_chans; ++i)
        free_chan(sub->_node, sub->_chans[i]);
    pe_free(sub->_chans);
    sub->_chans = NULL;
    sub->_num_chans = sub->_capacity = 0;
    PE_STAT_ADD(sub->_node->stats.subscribers, (uint64_t)-1);
    sub->_node = NULL;
}

const char *
pe_sub_channel(const pe_sub_t *sub, size_t i, size_t *len)
{
    const local_channel_t *lc = sub->_chans[i]->lc;
    *len = lc->name_len;
    return lc->name;
}

int
pe_sub_has(const pe_sub_t *sub, const char *channel, size_t len)
{
    return find_chan(sub, channel, len) >= 0;
}

int
pe_sub_position(const pe_sub_t *sub, const char *channel, size_t len, pe_id_t *out)
{
    ssize_t i = find_chan(sub, channel, len);
    if (i < 0)
        return -1;
    *out = sub->_chans[i]->pos;
    return 0;
}

int
pe_sub_is_live(const pe_sub_t *sub)
{
    for (size_t i = 0; i != sub->_num_chans; ++i)
        if (sub->_chans[i]->state != CHAN_LIVE)
            return 0;
    return 1;
}

size_t
pe_sub_cursor(const pe_sub_t *sub, char *buf, size_t cap)
{
    pe_cursor_entry_t entries[PE_CURSOR_MAX_ENTRIES];
    if (sub->_num_chans == 0) {
        if (cap != 0)
            buf[0] = '\0';
        return 0;
    }
    for (size_t i = 0; i != sub->_num_chans; ++i)
        entries[i] = (pe_cursor_entry_t){sub->_chans[i]->tag, sub->_chans[i]->pos};
    return pe_cursor_format(entries, sub->_num_chans, buf, cap);
}

pe_start_t
pe_start_from_cursor(const pe_cursor_t *cursor, const char *channel, size_t len, size_t num_channels)
{
    pe_id_t pos;
    switch (cursor->kind) {
    case PE_CURSOR_OLDEST:
        return (pe_start_t){PE_START_OLDEST, PE_ID_ZERO, 0};
    case PE_CURSOR_ID:
        /* With several channels a bare ID is a point in time, not each channel's own position. */
        return (pe_start_t){PE_START_AFTER, cursor->id, num_channels == 1};
    case PE_CURSOR_MULTI:
        if (pe_cursor_position(cursor, channel, len, &pos))
            return (pe_start_t){PE_START_AFTER, pos, 1};
        break;
    case PE_CURSOR_NONE:
        break;
    }
    return (pe_start_t){PE_START_NEW, PE_ID_ZERO, 0};
}

/* ---- presence counts ------------------------------------------------------------------------- */

/*
 * Large channels (docs/protocol.md "Large channels"). Past --presence-max-members the engine
 * stores no join or leave, so a subscriber would hear nothing of the crowd. Instead, every
 * interval, the node asks the engine for the member count of each local channel that has
 * presence subscribers (one HLEN per channel and thread on Redis; one locked read in memory)
 * and hands each of them whose last count differs a PE_MSG_COUNT, when the channel is past the
 * bound, or was at the subscriber's last count (a last count once it is back within it, after
 * which joins and leaves speak again). So a subscriber gets at most one count per channel per
 * interval however fast members come and go. The count is live only: not stored, no ID, not
 * replayed, moving no position; every node computes it from the same registry, so nodes agree
 * within an interval. Rejected: a count entry in the channel's history (one writer per cluster
 * would need electing, and every count would cost a stored entry and a cursor step).
 */
static void
deliver_count(pe_ps_node_t *node, local_channel_t *lc, uint64_t count)
{
    uint64_t max = node->engine->opts.presence_max_members;
    pe_msg_t *msg = NULL;
    for (h2o_linklist_t *l = lc->subs.next, *next; l != &lc->subs; l = next) {
        next = l->next;
        pe_sub_chan_t *e = H2O_STRUCT_FROM_MEMBER(pe_sub_chan_t, lc_link, l);
        if (!e->presence || e->state != CHAN_LIVE || e->last_count == count)
            continue;
        if (e->last_count == COUNT_LEARN) {
            e->last_count = count;
            continue;
        }
        int say = count > max || (e->last_count != COUNT_NONE && e->last_count > max);
        e->last_count = count; /* within the bound: known from the joins and leaves */
        if (!say)
            continue;
        if (msg == NULL) {
            char data[PE_CHANNEL_MAXLEN + 64];
            int n = snprintf(data, sizeof(data), "{\"channel\":\"%s\",\"count\":%llu}", lc->name, (unsigned long long)count);
            msg = pe_ps__msg_new_kind(PE_ID_ZERO, lc->name, lc->name_len, data, (size_t)n, PE_MSG_COUNT);
        }
        pe_sub_t *sub = e->sub;
        sub->_dispatching = 1;
        sub->cb->on_message(sub, msg); /* a pause only concerns catch-up: nothing to resume */
        sub->_dispatching = 0;
    }
    lc->last_count = count;
    if (msg != NULL)
        pe_msg_release(msg);
}

static void
on_count_answer(void *ctx, const char *err, uint64_t count, const char *members, size_t members_len)
{
    count_query_t *q = ctx;
    local_channel_t *lc = q->lc;
    pe_ps_node_t *node = q->node;
    pe_free(q);
    if (lc == NULL)
        return; /* the channel went meanwhile */
    lc->count_query = NULL;
    if (err == NULL)
        deliver_count(node, lc, count); /* an unreachable engine: the next interval asks again */
}

static void
on_count_timeout(h2o_timeout_entry_t *entry)
{
    pe_ps_node_t *node = H2O_STRUCT_FROM_MEMBER(pe_ps_node_t, count_entry, entry);
    for (h2o_linklist_t *l = node->presence_channels.next; l != &node->presence_channels; l = l->next) {
        local_channel_t *lc = H2O_STRUCT_FROM_MEMBER(local_channel_t, presence_link, l);
        if (lc->count_query != NULL)
            continue; /* the last one has not answered yet */
        count_query_t *q = pe_malloc(sizeof(*q));
        *q = (count_query_t){node, lc};
        lc->count_query = q;
        if (pe_ps_presence_query(node, lc->name, lc->name_len, 0, on_count_answer, q) != NULL) {
            lc->count_query = NULL;
            pe_free(q);
        }
    }
    if (!h2o_linklist_is_empty(&node->presence_channels))
        h2o_timeout_link(node->loop, &node->count_timeout, &node->count_entry);
}

/* ---- nodes ----------------------------------------------------------------------------------- */

pe_ps_node_t *
pe_ps_node_create(pe_ps_engine_t *engine, h2o_evloop_t *loop, unsigned index)
{
    pe_ps_node_t *node = pe_calloc(1, sizeof(*node));
    node->engine = engine;
    node->loop = loop;
    node->index = index;
    node->queue = h2o_multithread_create_queue(loop);
    h2o_multithread_register_receiver(node->queue, &node->receiver, on_live_messages);
    pe_strmap_init(&node->channels);
    h2o_timeout_init(loop, &node->zero_timeout, 0);
    node->defer_entry = (h2o_timeout_entry_t){0};
    node->defer_entry.cb = on_defer_timeout;
    node->defer_tail = &node->defer_head;
    node->run_deferred.cb = on_run_queue;
    h2o_linklist_init_anchor(&node->retry_list);
    h2o_timeout_init(loop, &node->retry_timeout, PE_SUB_RETRY_MS);
    node->retry_entry.cb = on_retry_timeout;
    h2o_linklist_init_anchor(&node->presence_channels);
    uint64_t every = engine->opts.presence_count_interval_ms;
    h2o_timeout_init(loop, &node->count_timeout, every != 0 ? every : PE_PS_DEFAULT_COUNT_INTERVAL_MS);
    node->count_entry.cb = on_count_timeout;
    engine->ops->attach(engine, node, index);
    return node;
}

void
pe_ps_node_destroy(pe_ps_node_t *node)
{
    assert(node->channels.size == 0);
    node->engine->ops->detach(node->engine, node, node->index);
    /* Run what is still deferred or queued (read and publish completions free themselves). */
    for (int i = 0; i != 100 && (node->defer_head != NULL || !h2o_linklist_is_empty(&node->receiver._messages)); ++i)
        h2o_evloop_run(node->loop, 0);
    if (h2o_timeout_is_linked(&node->defer_entry))
        h2o_timeout_unlink(&node->defer_entry);
    h2o_timeout_dispose(node->loop, &node->zero_timeout);
    if (h2o_timeout_is_linked(&node->retry_entry))
        h2o_timeout_unlink(&node->retry_entry);
    h2o_timeout_dispose(node->loop, &node->retry_timeout);
    if (h2o_timeout_is_linked(&node->count_entry))
        h2o_timeout_unlink(&node->count_entry);
    h2o_timeout_dispose(node->loop, &node->count_timeout);
    h2o_multithread_unregister_receiver(node->queue, &node->receiver);
    h2o_multithread_destroy_queue(node->queue);
    pe_strmap_dispose(&node->channels);
    pe_free(node);
}

void
pe_ps_node_get_stats(pe_ps_node_t *node, pe_ps_node_stats_t *out)
{
    out->published = __atomic_load_n(&node->stats.published, __ATOMIC_RELAXED);
    out->replayed = __atomic_load_n(&node->stats.replayed, __ATOMIC_RELAXED);
    out->delivered = __atomic_load_n(&node->stats.delivered, __ATOMIC_RELAXED);
    out->gaps = __atomic_load_n(&node->stats.gaps, __ATOMIC_RELAXED);
    out->subscribers = __atomic_load_n(&node->stats.subscribers, __ATOMIC_RELAXED);
    out->channels = __atomic_load_n(&node->stats.channels, __ATOMIC_RELAXED);
    for (unsigned i = 0; i != 3; ++i)
        out->reads[i] = __atomic_load_n(&node->stats.reads[i], __ATOMIC_RELAXED);
}

pe_ps_engine_t *
pe_ps_node_engine(pe_ps_node_t *node)
{
    return node->engine;
}

void
pe_ps_node_set_control(pe_ps_node_t *node, pe_ps_control_cb cb, void *ctx)
{
    node->control_cb = cb;
    node->control_ctx = ctx;
}

void
pe_ps_node__control(pe_ps_node_t *node, const char *text, size_t len)
{
    if (node->control_cb != NULL)
        node->control_cb(node->control_ctx, text, len);
}

const char *
pe_ps_control_publish(pe_ps_node_t *node, const char *text, size_t len)
{
    if (node->engine->ops->control_publish == NULL)
        return NULL;
    return node->engine->ops->control_publish(node->engine, node, text, len);
}

/* ---- engine front door ----------------------------------------------------------------------- */

const char *
pe_ps_publish(pe_ps_node_t *node, const char *channel, size_t len, const char *key, size_t key_len, const char *data,
              size_t data_len, pe_ps_publish_cb cb, void *ctx)
{
    if (!pe_channel_is_valid(channel, len))
        return pe_ps_err_bad_channel;
    if (key != NULL && !pe_ps_key_is_valid(key, key_len))
        return pe_ps_err_bad_key;
    if (!node->engine->ops->is_ready(node->engine))
        return pe_ps_err_unavailable;
    return node->engine->ops->publish(node->engine, node, channel, len, key, key_len, data, data_len, cb, ctx);
}

pe_ps_member_t *
pe_ps_user_register(pe_ps_node_t *node, const pe_ps_who_t *who)
{
    pe_ps_member_t *m = member_new(PE_PS_MEMBER_USER, who->user, who->user_len, who);
    node->engine->ops->member_add(node->engine, node, m);
    return m;
}

void
pe_ps_user_unregister(pe_ps_node_t *node, pe_ps_member_t *m)
{
    node->engine->ops->member_remove(node->engine, node, m);
}

const char *
pe_ps_presence_query(pe_ps_node_t *node, const char *channel, size_t len, int with_members, pe_ps_registry_cb cb, void *ctx)
{
    if (!pe_channel_is_valid(channel, len))
        return pe_ps_err_bad_channel;
    pe_ps_query_t q = {PE_PS_MEMBER_PRESENCE, with_members, cb, ctx};
    return node->engine->ops->query(node->engine, node, channel, len, &q);
}

const char *
pe_ps_user_query(pe_ps_node_t *node, const char *user, size_t len, pe_ps_registry_cb cb, void *ctx)
{
    pe_ps_query_t q = {PE_PS_MEMBER_USER, 1, cb, ctx};
    return node->engine->ops->query(node->engine, node, user, len, &q);
}

const char *
pe_ps_engine_node_id(pe_ps_engine_t *engine)
{
    return engine->node_id;
}

void
pe_ps__engine_init(pe_ps_engine_t *engine, const pe_ps_engine_ops_t *ops, const char *name, const pe_ps_options_t *opts)
{
    engine->ops = ops;
    engine->name = name;
    engine->opts = *opts;
    /* Random per start: a restarted process never inherits its previous life's registrations
     * (they are swept when that life's heartbeat runs out). */
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint64_t)time(NULL) * 6364136223846793005ULL ^ (uint64_t)getpid();
    snprintf(engine->node_id, sizeof(engine->node_id), "%016llx", (unsigned long long)r);
}

int
pe_ps_engine_idempotency_stats(pe_ps_engine_t *engine, uint64_t *keys, uint64_t *evictions)
{
    if (engine->ops->idempotency_stats == NULL)
        return -1;
    return engine->ops->idempotency_stats(engine, keys, evictions);
}

int
pe_ps_engine_is_ready(pe_ps_engine_t *engine)
{
    return engine->ops->is_ready(engine);
}

size_t
pe_ps_engine_num_channels(pe_ps_engine_t *engine)
{
    return __atomic_load_n(&engine->num_channels, __ATOMIC_RELAXED);
}

int
pe_ps_engine_channels_full(pe_ps_engine_t *engine, size_t adding)
{
    size_t max = engine->opts.max_channels;
    /* Checked before subscribing, so threads may overshoot together by a few subscriptions'
     * worth (at most threads x 64): a bound on memory, not an exact count. */
    return max != 0 && __atomic_load_n(&engine->num_local_channels, __ATOMIC_RELAXED) + adding > max;
}

const char *
pe_ps_engine_name(pe_ps_engine_t *engine)
{
    return engine->name;
}

void
pe_ps_engine_destroy(pe_ps_engine_t *engine)
{
    engine->ops->destroy(engine);
}
