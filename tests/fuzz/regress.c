/*
 * regress.c — the bugs the fuzz targets found, as plain deterministic
 * cases (tests/fuzz/run.sh builds and runs this before fuzzing). Each case
 * runs in a child process, so that the old behaviour, a store outside the
 * region (SEGV on the guard pages of fuzz_common.h), fails that case only.
 *
 *   journal_rewrites_region_size  the newest journal entry rewrote
 *       h->region_size, and the older entries were then bounds-checked
 *       against the forged size and replayed past the region's end.
 *   journal_forges_free_list  every entry inside the region, but the words
 *       restored point a free list into a live block's data: mc__lock()
 *       reported a successful recovery and the next allocation followed a
 *       forged block size out of the region.
 *   overrun_into_next_header  a task writing 16 bytes past its buffer
 *       rewrote the next block's header; freeing that block followed the
 *       forged boundary tag out of the region.
 *   double_free  freeing a block twice relinked it into a free list twice.
 */
#include "fuzz_common.h"

#include <sys/wait.h>
#include <unistd.h>

static void journal_rewrites_region_size(void)
{
    mc_header *h = fz_reset();
    h->journal.e[0].off = FZ_REGION + 4096; /* past the end */
    h->journal.e[0].old = 0xdead;
    h->journal.e[1].off = offsetof(mc_header, region_size); /* replayed first */
    h->journal.e[1].old = (uint64_t)1 << 40;
    atomic_store(&h->journal.count, 2);
    fz_owner_died(h);
    FZ_ASSERT(mc__lock(h) == MC_ESYSTEM); /* refused, and for good */
    FZ_ASSERT(mc__lock(h) == MC_ESYSTEM);
    FZ_ASSERT(h->region_size == FZ_REGION);
}

static void journal_forges_free_list(void)
{
    mc_header *h = fz_reset();
    FZ_ASSERT(mc__lock(h) == MC_OK);
    uint64_t a = mc__arena_alloc(h, 256);
    mc__unlock(h);
    uint64_t fake = a + 64; /* inside a's payload: a task's bytes */
    *(uint64_t *)mc__ptr(h, fake - 16) = (uint64_t)1 << 40;
    *(uint64_t *)mc__ptr(h, fake) = 0;
    *(uint64_t *)mc__ptr(h, fake + 8) = 0;
    h->journal.e[0].off = offsetof(mc_header, arena.bitmap[0]);
    h->journal.e[0].old = 1;
    h->journal.e[1].off = offsetof(mc_header, arena.bins[0]);
    h->journal.e[1].old = fake;
    atomic_store(&h->journal.count, 2);
    fz_owner_died(h);
    FZ_ASSERT(mc__lock(h) == MC_ESYSTEM);
}

static void overrun_into_next_header(void)
{
    mc_header *h = fz_reset();
    FZ_ASSERT(mc__lock(h) == MC_OK);
    uint64_t a = mc__arena_alloc(h, 100), b = mc__arena_alloc(h, 100), c = mc__arena_alloc(h, 100);
    mc__unlock(h);
    uint64_t overrun[2] = {128 | 1 /* in use, PREV_INUSE cleared */, (uint64_t)1 << 40 /* previous size */};
    memcpy((char *)mc__ptr(h, a) + mc__arena_block_size(h, a), overrun, sizeof overrun);
    FZ_ASSERT(mc__lock(h) == MC_OK);
    mc__arena_free(h, b);          /* refused: left where it is */
    mc__txn_commit(h);
    FZ_ASSERT(!mc__arena_check(h)); /* and the corruption is visible */
    mc__arena_free(h, c);          /* the rest of the arena still works */
    mc__unlock(h);
}

static void double_free(void)
{
    mc_header *h = fz_reset();
    FZ_ASSERT(mc__lock(h) == MC_OK);
    uint64_t a = mc__arena_alloc(h, 100), b = mc__arena_alloc(h, 100);
    (void)b;
    mc__arena_free(h, a);
    mc__txn_commit(h);
    mc__arena_free(h, a); /* refused */
    mc__txn_commit(h);
    FZ_ASSERT(mc__arena_check(h));
    mc__unlock(h);
}

static const struct {
    const char *name;
    void (*fn)(void);
} cases[] = {
    {"journal_rewrites_region_size", journal_rewrites_region_size},
    {"journal_forges_free_list", journal_forges_free_list},
    {"overrun_into_next_header", overrun_into_next_header},
    {"double_free", double_free},
};

int main(void)
{
    int failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            cases[i].fn();
            _exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (ok)
            printf("check: fuzz regression %s: ok\n", cases[i].name);
        else
            printf("check: fuzz regression %s (%s %d): FAILED\n", cases[i].name,
                   WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        failed |= !ok;
    }
    return failed;
}
