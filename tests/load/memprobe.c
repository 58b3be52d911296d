/*
 * memprobe.c: an LD_PRELOAD helper for memory measurements (tests/load/tls_idle_mem.mjs): a
 * thread of its own in the measured process that, on request, runs glibc's malloc_trim(0) and
 * reports mallinfo2(), so a reading counts what the process holds rather than the allocator's
 * high-water mark, without attaching a debugger (gdb's `call` cannot run in every sandbox).
 *
 *   MEMPROBE_DIR=DIR LD_PRELOAD=build-rel/tests/load/libmemprobe.so pushedge ...
 *
 * The requester creates DIR/req; within 20 ms the thread removes it, trims, and writes
 * DIR/resp (written to DIR/resp.tmp, then renamed) as one JSON line:
 * {"seq":N,"in_use":bytes malloc'd and not freed,"mmapped":bytes in mmap'd chunks,
 *  "arena":bytes of the heaps from the kernel}. Nothing happens without MEMPROBE_DIR.
 * glibc only (mallinfo2, malloc_trim); a measuring tool, never linked into the server.
 */
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static char req_path[PATH_MAX], resp_path[PATH_MAX], tmp_path[PATH_MAX];

static void *
probe_main(void *arg)
{
    (void)arg;
    unsigned long seq = 0;
    for (;;) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (unlink(req_path) != 0)
            continue;
        malloc_trim(0);
        struct mallinfo2 mi = mallinfo2();
        FILE *fp = fopen(tmp_path, "w");
        if (fp == NULL)
            continue;
        fprintf(fp, "{\"seq\":%lu,\"in_use\":%zu,\"mmapped\":%zu,\"arena\":%zu}\n", ++seq, mi.uordblks + mi.hblkhd, mi.hblkhd,
                mi.arena);
        fclose(fp);
        rename(tmp_path, resp_path);
    }
    return NULL;
}

__attribute__((constructor)) static void
probe_init(void)
{
    const char *dir = getenv("MEMPROBE_DIR");
    if (dir == NULL || dir[0] == '\0')
        return;
    snprintf(req_path, sizeof(req_path), "%s/req", dir);
    snprintf(resp_path, sizeof(resp_path), "%s/resp", dir);
    snprintf(tmp_path, sizeof(tmp_path), "%s/resp.tmp", dir);
    /* No signal for this thread: the process's own signal handling stays as it is. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_t t;
    if (pthread_create(&t, NULL, probe_main, NULL) == 0)
        pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}
