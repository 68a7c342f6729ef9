/*
 * test_backed.c — the arena's BACKED flag (arena.c): a large block reused
 * from memory that was populated and never given back skips the populate
 * (it costs about as much as the copy into the block), and a block whose
 * pages were given back is never taken for backed.
 *
 * On a real memfd region (as a pool's), below the public API. mincore()
 * tells which pages of the shared mapping the memfd holds, so every claim
 * of the flag is checked against the kernel's own account.
 */
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "../../src/internal.h"
#include "bare_region.h"

#define MIB ((uint64_t)1 << 20)

/* Pages of [p, p + len) (payload offsets) the memfd holds. */
static size_t resident_pages(mc_header *h, uint64_t p, uint64_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)mc__ptr(h, p) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)mc__ptr(h, p) + len + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    size_t n = (hi - lo) / (size_t)page, in = 0;
    unsigned char *v = malloc(n);
    if (!v || mincore((void *)lo, hi - lo, v) != 0) {
        free(v);
        return (size_t)-1;
    }
    for (size_t i = 0; i < n; i++)
        in += v[i] & 1;
    free(v);
    return in;
}

static size_t pages_of(mc_header *h, uint64_t p, uint64_t len)
{
    long page = sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)mc__ptr(h, p) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)mc__ptr(h, p) + len + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    return (hi - lo) / (size_t)page;
}

/* Under the lock: the block carries the BACKED flag (asked as if it were
   large, since small blocks are never populated whatever their flag). */
static bool flagged(mc_header *h, uint64_t p)
{
    return mc__arena_to_populate(h, p, MC_POPULATE_THRESHOLD) == 0;
}

/* Released as record.c releases a block: its pages first, then the block. */
static void release(mc_header *h, uint64_t p)
{
    mc__arena_release_pages(h, p);
    mc__arena_free(h, p);
}

/* A task record and its 4 MiB result, both freed, the record last (it
   merges with the free result memory): the next 4 MiB block is backed,
   and the memfd does hold every page of it. */
TEST(a_reused_large_block_is_backed)
{
    int memfd;
    size_t size;
    mc_header *h = mc_t_bare_region((size_t)1 << 32, &memfd, &size);
    REQUIRE(h);
    for (int round = 0; round < 3; round++) {
        REQUIRE_OK(mc__lock(h));
        uint64_t rec = mc__arena_alloc(h, 100), big = mc__arena_alloc(h, 4 * MIB);
        uint64_t populate = big ? mc__arena_to_populate(h, big, 4 * MIB) : 0;
        bool backed = big && populate == 0;
        mc__unlock(h);
        REQUIRE(rec && big);
        /* fresh memory the first time, reused from then on */
        CHECK_EQ_INT(backed, round > 0);
        uint64_t cap = mc__arena_block_size(h, big);
        if (backed)
            CHECK_EQ_INT(resident_pages(h, big, cap), pages_of(h, big, cap));
        CHECK_OK(mc__arena_commit(h, big, populate));
        CHECK_EQ_INT(resident_pages(h, big, cap), pages_of(h, big, cap));
        memset(mc__ptr(h, big), round + 1, 4 * MIB);
        REQUIRE_OK(mc__lock(h));
        release(h, big);
        release(h, rec);
        CHECK(mc__arena_check(h));
        mc__unlock(h);
    }
    mc__region_destroy(memfd, h, size);
}

/* Over the retain budget (an eighth of the arena), a freed large block
   gives its pages back: the block made again of that memory is not
   backed, and is populated again. */
TEST(given_back_pages_are_populated_again)
{
    int memfd;
    size_t size;
    mc_header *h = mc_t_bare_region((size_t)64 << 20, &memfd, &size); /* budget: 8 MiB */
    REQUIRE(h);
    for (int round = 0; round < 2; round++) {
        REQUIRE_OK(mc__lock(h));
        uint64_t keep = mc__arena_alloc(h, 100); /* keeps the block off top */
        uint64_t big = mc__arena_alloc(h, 16 * MIB), after = mc__arena_alloc(h, 100);
        uint64_t populate = big ? mc__arena_to_populate(h, big, 16 * MIB) : 0;
        bool backed = big && populate == 0;
        mc__unlock(h);
        REQUIRE(keep && big && after);
        CHECK(!backed);
        uint64_t cap = mc__arena_block_size(h, big);
        CHECK(resident_pages(h, big, cap) < pages_of(h, big, cap) / 2);
        CHECK_OK(mc__arena_commit(h, big, populate));
        CHECK_EQ_INT(resident_pages(h, big, cap), pages_of(h, big, cap));
        REQUIRE_OK(mc__lock(h));
        release(h, big); /* 16 MiB > the budget: given back */
        CHECK(resident_pages(h, big, cap) < pages_of(h, big, cap) / 2);
        release(h, after);
        release(h, keep);
        CHECK(mc__arena_check(h));
        mc__unlock(h);
    }
    mc__region_destroy(memfd, h, size);
}

/* A large block split for a smaller one keeps the flag in both parts; a
   backed block merged with a small block that never was keeps it too
   (the small one is populated on the way). */
TEST(split_and_merged_blocks_keep_the_flag)
{
    int memfd;
    size_t size;
    mc_header *h = mc_t_bare_region((size_t)1 << 32, &memfd, &size);
    REQUIRE(h);
    REQUIRE_OK(mc__lock(h));
    uint64_t big = mc__arena_alloc(h, 8 * MIB), tail = mc__arena_alloc(h, 100);
    mc__unlock(h);
    REQUIRE(big && tail);
    CHECK_OK(mc__arena_commit(h, big, mc__arena_block_size(h, big)));
    REQUIRE_OK(mc__lock(h));
    release(h, big); /* free, backed, kept (under the budget) */
    uint64_t a = mc__arena_alloc(h, 2 * MIB), b = mc__arena_alloc(h, 3 * MIB);
    CHECK(a == big); /* carved from the freed block */
    CHECK(flagged(h, a) && flagged(h, b));
    uint64_t small = mc__arena_alloc(h, 200); /* from the backed rest too */
    CHECK(flagged(h, small));
    release(h, a);
    release(h, b);
    release(h, small);
    release(h, tail); /* the small block next to top, never flagged */
    CHECK(mc__arena_check(h));
    uint64_t again = mc__arena_alloc(h, 8 * MIB);
    CHECK(again == big && flagged(h, again));
    uint64_t cap = mc__arena_block_size(h, again);
    CHECK_EQ_INT(resident_pages(h, again, cap), pages_of(h, again, cap));
    release(h, again);
    CHECK(mc__arena_check(h));
    mc__unlock(h);
    mc__region_destroy(memfd, h, size);
}
