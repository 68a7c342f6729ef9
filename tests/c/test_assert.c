/*
 * test_assert.c — the engine's debug checks (MC_ASSERT, src/internal.h) fire
 * on a violated precondition; below the public API (this test includes
 * src/internal.h).
 *
 * The precondition checked here is the one most of the engine rests on:
 * journaled state (allocator, ring, reference counts) changes only while
 * the calling thread holds the pool's lock. Each violation runs in a
 * forked child:
 *   - Debug builds (no NDEBUG: the clang, asan, tsan and valgrind stages):
 *     the child must die by SIGABRT, having printed the failed condition
 *     and the function it guards; the same calls with the lock held must
 *     run to the end. The lock-held check is per thread and per region:
 *     another thread's hold, or the lock of another region, does not count.
 *   - Release builds (NDEBUG: the gcc stage) compile the checks out: the
 *     same violations run to the end unnoticed, which the test checks too
 *     (a check left in a release build would cost every critical section).
 */
#include "harness.h"
#include "../../src/internal.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>

typedef struct region {
    mc_header *h;
    int memfd;
    size_t size;
} region;

/* A small region laid out enough for the arena and a ring of 8. */
static bool region_open(region *r)
{
    void *base;
    if (mc__region_create(MC_REGION_MIN, &r->memfd, &base, &r->size) != MC_OK)
        return false;
    mc_header *h = r->h = base;
    h->magic = MC_MAGIC;
    h->region_size = r->size;
    h->ring_off = MC_ALIGN_UP(sizeof(mc_header), MC_CACHELINE);
    h->ring_capacity = 8;
    mc__arena_init(h, 1 << 20, r->size);
    return mc__lock_init(h) == MC_OK;
}

static void region_close(region *r)
{
    mc__region_destroy(r->memfd, r->h, r->size);
}

/* The outcome of fn(a, b) in a child: its wait status and what it wrote
   on stderr. */
typedef struct outcome {
    int status;
    char err[2048];
} outcome;

static bool run_child(void (*fn)(region *, region *), region *a, region *b, outcome *out)
{
    int p[2];
    if (pipe(p) != 0)
        return false;
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core); /* an expected abort leaves no core file */
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        fn(a, b);
        _exit(0);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t got;
    while (n < sizeof out->err - 1 && (got = read(p[0], out->err + n, sizeof out->err - 1 - n)) != 0) {
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            break;
        n += (size_t)got;
    }
    out->err[n] = '\0';
    close(p[0]);
    while (waitpid(pid, &out->status, 0) < 0)
        if (errno != EINTR)
            return false;
    return true;
}

static bool aborted(const outcome *o) { return WIFSIGNALED(o->status) && WTERMSIG(o->status) == SIGABRT; }
static bool ran_to_end(const outcome *o) { return WIFEXITED(o->status) && WEXITSTATUS(o->status) == 0; }

/* ---- the violations, and the same calls done right -------------------- */

static void alloc_unlocked(region *a, region *b)
{
    (void)b;
    mc__arena_alloc(a->h, 64);
}

static void store_unlocked(region *a, region *b)
{
    (void)b;
    mc__txn_store(a->h, &a->h->arena.retained, 7);
}

static void push_unlocked(region *a, region *b)
{
    (void)b;
    mc__ring_push(a->h, 4096);
}

/* Take the lock and make a record with one reference (in a child). */
static uint64_t locked_record(mc_header *h)
{
    if (mc__lock(h) != MC_OK)
        _exit(10);
    uint64_t off = mc__arena_alloc(h, sizeof(mc_task));
    if (!off)
        _exit(11);
    mc__record_init(mc__task_at(h, off), MC_TS_PENDING, 0);
    return off;
}

static void unref_unlocked(region *a, region *b)
{
    (void)b;
    uint64_t off = locked_record(a->h);
    mc__unlock(a->h);
    mc__task_unref(a->h, off); /* the lock is gone: must be refused */
}

static void all_locked(region *a, region *b)
{
    (void)b;
    mc_header *h = a->h;
    uint64_t off = locked_record(h);
    mc__txn_store(h, &h->arena.retained, 7);
    if (!mc__ring_push(h, off) || mc__ring_pop(h) != off)
        _exit(12);
    mc__task_unref(h, off);
    mc__unlock(h);
}

static void *alloc_thread(void *arg)
{
    mc__arena_alloc(((region *)arg)->h, 64);
    return NULL;
}

/* This thread holds the lock; another thread of the process allocates. */
static void alloc_while_another_thread_holds(region *a, region *b)
{
    (void)b;
    if (mc__lock(a->h) != MC_OK)
        _exit(10);
    pthread_t t;
    if (pthread_create(&t, NULL, alloc_thread, a) != 0)
        _exit(13);
    pthread_join(t, NULL);
    mc__unlock(a->h);
}

/* The lock of region b is held, the allocation is in region a. */
static void alloc_under_another_regions_lock(region *a, region *b)
{
    if (mc__lock(b->h) != MC_OK)
        _exit(10);
    mc__arena_alloc(a->h, 64);
    mc__unlock(b->h);
}

/* ---- tests -------------------------------------------------------------- */

typedef struct violation {
    const char *name;
    void (*fn)(region *, region *);
    const char *guarded; /* the function whose check must fire */
} violation;

static const violation violations[] = {
    {"mc__arena_alloc without the lock", alloc_unlocked, "mc__arena_alloc"},
    {"mc__txn_store without the lock", store_unlocked, "mc__txn_store"},
    {"mc__ring_push without the lock", push_unlocked, "mc__ring_push"},
    {"mc__task_unref after mc__unlock", unref_unlocked, "mc__task_unref"},
    {"mc__arena_alloc while another thread holds the lock", alloc_while_another_thread_holds,
     "mc__arena_alloc"},
    {"mc__arena_alloc under another region's lock", alloc_under_another_regions_lock, "mc__arena_alloc"},
};

TEST(violated_lock_precondition_aborts_in_debug_builds)
{
    region a, b;
    REQUIRE(region_open(&a));
    REQUIRE(region_open(&b));
    for (size_t i = 0; i < sizeof violations / sizeof violations[0]; i++) {
        const violation *v = &violations[i];
        outcome o;
        REQUIRE(run_child(v->fn, &a, &b, &o));
        if (MC_DEBUG) {
            if (!aborted(&o) || !strstr(o.err, "assertion failed: mc__lock_held(h)") ||
                !strstr(o.err, v->guarded)) {
                fprintf(stderr, "%s: wait status 0x%x, stderr: %s\n", v->name, o.status, o.err);
                mc_t_fail();
            }
        } else if (!ran_to_end(&o) || strstr(o.err, "assertion failed")) {
            fprintf(stderr, "%s (release build): wait status 0x%x, stderr: %s\n", v->name, o.status, o.err);
            mc_t_fail();
        }
    }
    region_close(&b);
    region_close(&a);
}

TEST(same_calls_under_the_lock_run_in_every_build)
{
    region a, b;
    REQUIRE(region_open(&a));
    REQUIRE(region_open(&b));
    outcome o;
    REQUIRE(run_child(all_locked, &a, &b, &o));
    CHECK(ran_to_end(&o));
    CHECK(strstr(o.err, "assertion failed") == NULL);
    region_close(&b);
    region_close(&a);
}

#if MC_DEBUG
static void *held_elsewhere(void *arg)
{
    return (void *)(uintptr_t)mc__lock_held(arg);
}

TEST(lock_held_follows_the_thread_and_the_region)
{
    region a, b;
    REQUIRE(region_open(&a));
    REQUIRE(region_open(&b));
    CHECK(!mc__lock_held(a.h));
    REQUIRE_OK(mc__lock(a.h));
    CHECK(mc__lock_held(a.h));
    CHECK(!mc__lock_held(b.h));
    pthread_t t;
    void *seen = (void *)1;
    REQUIRE(pthread_create(&t, NULL, held_elsewhere, a.h) == 0);
    pthread_join(t, &seen);
    CHECK(seen == NULL);
    mc__unlock(a.h);
    CHECK(!mc__lock_held(a.h));
    region_close(&b);
    region_close(&a);
}
#endif
