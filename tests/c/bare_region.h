/*
 * bare_region.h — a real memfd region with an arena and a lock, and no
 * pool: for the tests that work below the public API (test_journal.c,
 * test_backed.c). Include after harness.h and src/internal.h.
 */
#ifndef MC_T_BARE_REGION_H
#define MC_T_BARE_REGION_H

/* A region of about `want` bytes (mc__region_create may give less), its
   header, arena and lock initialised as a pool's are; NULL on failure.
   Destroy with mc__region_destroy(*memfd, h, *size). */
static inline mc_header *mc_t_bare_region(size_t want, int *memfd, size_t *size)
{
    void *base;
    if (mc__region_create(want, memfd, &base, size) != MC_OK)
        return NULL;
    mc_header *h = base;
    h->magic = MC_MAGIC;
    h->region_size = *size;
    mc__arena_init(h, 1 << 20, *size);
    if (mc__lock_init(h) != MC_OK)
        return NULL;
    return h;
}

#endif
