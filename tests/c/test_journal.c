/*
 * test_journal.c — fault injection on the lock, the undo journal and the
 * arena, below the public API (this test includes src/internal.h).
 *
 * A child process takes the pool lock and is killed inside its critical
 * section — at a chosen point, then at random points under a stress loop of
 * allocations and frees. The parent must then get the lock (EOWNERDEAD is
 * handled inside mc__lock), find every shared word exactly as it was before
 * the dead child's unfinished change, and an arena whose blocks and free
 * lists still agree.
 */
#include "harness.h"
#include "../../src/internal.h"
#include "bare_region.h"

#include <sys/wait.h>

TEST(killed_inside_critical_section_is_rolled_back)
{
    int memfd;
    size_t size;
    mc_header *h = mc_t_bare_region((size_t)1 << 32, &memfd, &size);
    REQUIRE(h);

    /* Some state to be changed: a few allocations, one freed. */
    REQUIRE_OK(mc__lock(h));
    uint64_t a = mc__arena_alloc(h, 100), b = mc__arena_alloc(h, 5000), c = mc__arena_alloc(h, 300);
    mc__arena_free(h, b);
    mc__unlock(h);
    REQUIRE(a && b && c && mc__arena_check(h));
    mc_arena saved = h->arena;
    uint64_t saved_ring_tail = h->ring_tail;

    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        mc__lock(h);
        mc__arena_alloc(h, 64);
        mc__arena_free(h, a);
        mc__arena_alloc(h, 1 << 20);
        mc__txn_store(h, &h->ring_tail, 99);
        raise(SIGKILL); /* dies holding the lock, journal open */
        _exit(1);
    }
    int st;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    CHECK_OK(mc__lock(h)); /* recovers */
    CHECK_EQ_INT(h->journal.count, 0);
    CHECK(memcmp(&saved, &h->arena, sizeof saved) == 0);
    CHECK_EQ_INT(h->ring_tail, saved_ring_tail);
    CHECK(mc__arena_check(h));
    uint64_t d = mc__arena_alloc(h, 64);
    CHECK(d != 0);
    mc__arena_free(h, d);
    mc__unlock(h);
    /* The lock is usable again, without recovery. */
    CHECK_OK(mc__lock(h));
    mc__unlock(h);
    mc__region_destroy(memfd, h, size);
}

/* 1 if process pid is inside futex(2) on the word at addr (from
   /proc/PID/syscall: the call's number, then its arguments). */
static int asleep_on_futex(pid_t pid, const void *addr)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long nr = -1;
    unsigned long long arg0 = 0;
    int n = fscanf(f, "%ld %llx", &nr, &arg0);
    fclose(f);
    return n == 2 && nr == SYS_futex && arg0 == (unsigned long long)(uintptr_t)addr;
}

/*
 * The state a wake-up lost to a killed waiter leaves behind (txn.c, "Why
 * timed"): a process asleep on the lock's futex, the lock free, and no
 * wake-up coming. Made here on purpose: a holder that lets the lock go by
 * clearing its word, without waking anyone, after the sleeper is seen
 * asleep on it. The sleeper must get the lock within its next slice
 * (MC_LOCK_SLICE_NS) instead of sleeping for good.
 */
TEST(a_sleeper_on_the_lock_survives_a_lost_wake_up)
{
    int memfd;
    size_t size;
    mc_header *h = mc_t_bare_region((size_t)1 << 30, &memfd, &size);
    REQUIRE(h);
    int *word = &h->lock.__data.__lock;
    int ready[2];
    REQUIRE(pipe(ready) == 0);

    pid_t holder = fork();
    REQUIRE(holder >= 0);
    if (holder == 0) {
        close(ready[0]);
        if (mc__lock(h) != MC_OK)
            _exit(1);
        (void)!write(ready[1], "h", 1);
        pause(); /* until the parent says "let go", by SIGUSR1 */
        _exit(1);
    }
    char c;
    REQUIRE(read(ready[0], &c, 1) == 1);

    pid_t sleeper = fork();
    REQUIRE(sleeper >= 0);
    if (sleeper == 0) {
        if (mc__lock(h) != MC_OK)
            _exit(2);
        mc__unlock(h);
        _exit(0);
    }
    double t0 = mc_t_now();
    while (!asleep_on_futex(sleeper, word) && mc_t_now() - t0 < 30)
        mc_t_sleep_ms(1);
    REQUIRE(asleep_on_futex(sleeper, word));
    CHECK(__atomic_load_n(word, __ATOMIC_RELAXED) & FUTEX_WAITERS);

    /* The holder lets go without a wake-up: its word is cleared for it,
       and it dies (the kernel's robust-list walk then finds the word not
       its own and leaves it alone). */
    kill(holder, SIGSTOP);
    int st;
    REQUIRE(waitpid(holder, &st, WUNTRACED) == holder && WIFSTOPPED(st));
    __atomic_store_n(word, 0, __ATOMIC_SEQ_CST);
    kill(holder, SIGKILL);
    REQUIRE(waitpid(holder, &st, 0) == holder);
    double let_go = mc_t_now();

    /* Well past one slice, bounded so that a hang fails here. */
    pid_t r = 0;
    while ((r = waitpid(sleeper, &st, WNOHANG)) == 0 && mc_t_now() - let_go < 20)
        mc_t_sleep_ms(1);
    double took = mc_t_now() - let_go;
    if (r == 0) {
        kill(sleeper, SIGKILL);
        waitpid(sleeper, &st, 0);
        CHECK(!"the sleeper was still asleep on a free lock 20 s later");
    } else {
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        printf("  the sleeper had the lock %.0f ms after it was let go (slice %d ms)\n", took * 1e3,
               MC_LOCK_SLICE_NS / 1000000);
    }
    CHECK_OK(mc__lock(h)); /* and the lock is as good as ever */
    mc__unlock(h);
    close(ready[0]);
    close(ready[1]);
    mc__region_destroy(memfd, h, size);
}

/* A block just taken from a free list is filled with plain stores in the
   same critical section (a record's first words, a submit's arguments):
   nobody else can see it, and a rollback gives the block back. Its first
   words held its free-list links, which the rollback must find intact. */
TEST(plain_stores_into_a_fresh_block_are_rolled_back)
{
    int memfd;
    size_t size;
    mc_header *h = mc_t_bare_region((size_t)1 << 32, &memfd, &size);
    REQUIRE(h);
    REQUIRE_OK(mc__lock(h));
    uint64_t keep[4], freed[3];
    for (int i = 0; i < 3; i++) {   /* three free blocks of one bin, kept apart */
        keep[i] = mc__arena_alloc(h, 100);
        freed[i] = mc__arena_alloc(h, 100);
    }
    keep[3] = mc__arena_alloc(h, 100);
    for (int i = 0; i < 3; i++)
        mc__arena_free(h, freed[i]);
    mc__unlock(h);
    REQUIRE(mc__arena_check(h));
    mc_arena saved = h->arena;

    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        mc__lock(h);
        uint64_t p = mc__arena_alloc(h, 100); /* the head of the list: links (next, 0) */
        if (p != freed[2])
            _exit(2);
        memset(mc__ptr(h, p), 0x5a, 100);     /* plain stores, as a record's init */
        raise(SIGKILL);
        _exit(1);
    }
    int st;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK_OK(mc__lock(h)); /* recovers, and the arena passes its full check */
    CHECK(memcmp(&saved, &h->arena, sizeof saved) == 0);
    CHECK(mc__arena_check(h));
    for (int i = 0; i < 3; i++)      /* every freed block comes back, the list intact */
        CHECK(mc__arena_alloc(h, 100) == freed[2 - i]);
    mc__unlock(h);
    (void)keep;
    mc__region_destroy(memfd, h, size);
}

#define STRESS_ROUNDS 500

/* Every FORCED_EVERY-th round the child stops itself inside an open change
   (after `seed % 8` steps of its first critical section) and opens
   `inside`: the kill then lands there for certain, while the other rounds
   kill at random points. */
#define FORCED_EVERY 10

static _Noreturn void stress_child(mc_header *h, unsigned seed, mc_t_gate *inside)
{
    uint64_t live[64] = {0};
    int stop_at = inside ? (int)(seed % 8) : -1;
    for (;;) {
        mc__lock(h);
        for (int k = 0; k < 8; k++) {
            unsigned i = rand_r(&seed) % 64;
            if (live[i]) {
                mc__arena_free(h, live[i]);
                live[i] = 0;
            } else {
                uint64_t len = (uint64_t)(rand_r(&seed) % 4 == 0 ? rand_r(&seed) % (256 << 10)
                                                                  : rand_r(&seed) % 2048);
                live[i] = mc__arena_alloc(h, len);
            }
            if (k == stop_at && h->journal.count != 0) {
                mc_t_gate_open(inside); /* journal open, lock held: kill me */
                for (;;)
                    pause();
            }
            mc__txn_commit(h);
        }
        mc__unlock(h);
        if (inside) /* the chosen step changed nothing: stop at the next */
            stop_at = 0;
    }
}

TEST(random_kills_never_corrupt_the_arena)
{
    int memfd;
    size_t size;
    mc_header *h = mc_t_bare_region((size_t)1 << 32, &memfd, &size);
    REQUIRE(h);
    mc_t_gate *inside = mc_t_gate_new();
    REQUIRE(inside);
    unsigned seed = 777;
    int recovered = 0, forced = 0;
    for (int round = 0; round < STRESS_ROUNDS; round++) {
        bool force = round % FORCED_EVERY == 0;
        __atomic_store_n(&inside->open, 0, __ATOMIC_SEQ_CST);
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0)
            stress_child(h, seed + (unsigned)round, force ? inside : NULL);
        if (force) {
            CHECK(mc_t_gate_wait(inside, 60) == 0);
        } else {
            struct timespec ts = {0, (long)(rand_r(&seed) % 2000) * 1000};
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        int st;
        REQUIRE(waitpid(pid, &st, 0) == pid);
        bool open = h->journal.count != 0;
        if (force) {
            CHECK(open);
            forced += open;
        }
        REQUIRE_OK(mc__lock(h));
        recovered += open;
        bool ok = mc__arena_check(h);
        mc__unlock(h);
        if (!ok) {
            fprintf(stderr, "  arena inconsistent after round %d\n", round);
            CHECK(ok);
            break;
        }
    }
    printf("  %d kills, %d of them inside an open change (%d forced there)\n", STRESS_ROUNDS,
           recovered, forced);
    CHECK_EQ_INT(forced, STRESS_ROUNDS / FORCED_EVERY);
    mc_t_gate_free(inside);
    REQUIRE_OK(mc__lock(h));
    uint64_t x = mc__arena_alloc(h, 12345);
    CHECK(x != 0);
    mc__arena_free(h, x);
    CHECK(mc__arena_check(h));
    mc__unlock(h);
    mc__region_destroy(memfd, h, size);
}

TEST(corrupt_journal_is_refused_not_followed)
{
    int memfd;
    size_t size;
    mc_header *h = mc_t_bare_region((size_t)1 << 32, &memfd, &size);
    REQUIRE(h);
    uint64_t before = h->arena.top;
    h->journal.e[0].off = size + 4096;   /* outside the region */
    h->journal.e[0].old = 1;
    h->journal.e[1].off = 12;            /* misaligned */
    h->journal.e[1].old = 1;
    h->journal.e[2].off = offsetof(mc_header, arena) + offsetof(mc_arena, top);
    h->journal.e[2].old = before;        /* a valid one still applies */
    h->arena.top = before + 4096;
    atomic_store(&h->journal.count, 3);
    CHECK(!mc__journal_rollback(h));
    CHECK_EQ_INT(h->arena.top, before);
    CHECK_EQ_INT(h->journal.count, 0);
    atomic_store(&h->journal.count, MC_JOURNAL_MAX + 5);
    CHECK(!mc__journal_rollback(h));
    mc__region_destroy(memfd, h, size);
}

static int nap_task(const void *a, size_t n, mc_task_ctx *c)
{
    (void)a, (void)n, (void)c;
    usleep(300000);
    return 0;
}

/*
 * A pool whose region is refused after a crash (a corrupt journal) cannot
 * run anything: the zygote must take it down at once, not respawn workers
 * that die on the lock, and a waiting caller must hear MC_EPOOLDIED.
 */
TEST(refused_region_takes_the_pool_down)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 1;
    o.region_size = 64 << 20;
    mc_pool *pool;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    mc_header *h = pool->hdr;
    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(mc_submit(g, nap_task, NULL, 0, 1)); /* the worker will want the lock after */
    mc_t_sleep_ms(100);

    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) { /* dies holding the lock, with a journal entry outside the region */
        mc__lock(h);
        h->journal.e[0].off = h->region_size + 4096;
        h->journal.e[0].old = 1;
        atomic_store(&h->journal.count, 1);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    mc_group *g2;
    REQUIRE_OK(mc_group_create(pool, &g2));
    int forever = 0;
    /* the submit itself may fail (the lock is unrecoverable) or queue */
    int rc = mc_submit(g2, nap_task, &forever, sizeof forever, 1);
    CHECK(rc == MC_OK || rc == MC_ESYSTEM);
    double t0 = mc_t_now();
    if (rc == MC_OK)
        CHECK_RC(mc_group_wait(g2, 10), MC_EPOOLDIED);
    /* the zygote exits soon (a zombie until mc_pool_stop reaps it), with
       no respawn storm before */
    char state = 0;
    pid_t ppid;
    long long ticks;
    /* (a bound that tells "goes down" from "keeps going"; under valgrind on
       a loaded machine the zygote's own exit, leak check included, took
       over 2 s) */
    while (mc_t_proc_stat(pp.zygote, &state, &ppid, &ticks) == 0 && state != 'Z' &&
           mc_t_now() - t0 < 20)
        mc_t_sleep_ms(5);
    CHECK_EQ_INT(state, 'Z');
    mc_worker_stats ws;
    CHECK(mc_pool_get_stats(pool, NULL, &ws, 1) != 1 || ws.respawns < 3);
    printf("  pool down %.0f ms after the refused recovery\n", (mc_t_now() - t0) * 1e3);
    mc_group_destroy(g2);
    mc_group_destroy(g);
    mc_pool_stop(pool);
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK_NOTHING_LEFT(&snap);
}
