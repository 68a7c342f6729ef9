/*
 * fuzz_common.h — what the libFuzzer targets in tests/fuzz/ share.
 *
 * Each target builds a small but real pool region (header, two worker
 * slots, a task ring, an arena), lets its input decide what is in the
 * words that cross process boundaries, and then runs the engine's own code
 * on it: the EOWNERDEAD recovery in mc__lock(), the allocator, the check,
 * the recovery of a dead worker's task.
 *
 * The region is mapped MAP_SHARED (like the real memfd) between two
 * PROT_NONE guard areas as large as the region itself, so any access
 * outside it — the thing the engine must never do, whatever the shared
 * words say — is a SEGV that libFuzzer reports, even where ASan does not
 * look (it does not instrument accesses into mmap'd memory it did not
 * poison).
 *
 * Recovery is driven through the real mc__lock(): a robust mutex whose lock
 * word carries FUTEX_OWNER_DIED is what the kernel leaves when the owner
 * dies, and glibc then returns EOWNERDEAD to the next locker, exactly as
 * after a worker was killed inside its critical section. Faking that word
 * costs nothing, whereas a fork + kill per input would cost milliseconds.
 */
#ifndef MC_FUZZ_COMMON_H
#define MC_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "internal.h"

#include <linux/futex.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define FZ_REGION ((uint64_t)2 << 20)   /* 2 MiB: room for one >= 1 MiB block */
#define FZ_WORKERS 2u
#define FZ_RING 8u

static mc_header *fz_h;

/* Map the region once per process, between two guard areas. */
static inline mc_header *fz_region(void)
{
    if (fz_h)
        return fz_h;
    size_t total = 3 * (size_t)FZ_REGION;
    char *guard = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (guard == MAP_FAILED)
        abort();
    void *p = mmap(guard + FZ_REGION, FZ_REGION, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED,
                   -1, 0);
    if (p == MAP_FAILED)
        abort();
    fz_h = p;
    return fz_h;
}

/* Lay out a fresh pool region the way mc_pool_start() does. */
static inline mc_header *fz_reset(void)
{
    mc_header *h = fz_region();
    memset(h, 0, FZ_REGION);
    uint64_t slots_off = MC_ALIGN_UP(sizeof(mc_header), MC_CACHELINE);
    uint64_t ring_off = MC_ALIGN_UP(slots_off + FZ_WORKERS * sizeof(mc_worker_slot), MC_CACHELINE);
    uint64_t arena_off = MC_ALIGN_UP(ring_off + FZ_RING * sizeof(uint64_t), 4096);
    h->magic = MC_MAGIC;
    h->version = MC_LAYOUT_VERSION;
    h->nworkers = FZ_WORKERS;
    h->region_size = FZ_REGION;
    h->slots_off = slots_off;
    h->ring_off = ring_off;
    h->ring_capacity = FZ_RING;
    mc__arena_init(h, arena_off, FZ_REGION);
    if (mc__lock_init(h) != MC_OK)
        abort();
    return h;
}

/* Make the lock look like its owner died holding it (see the top comment). */
static inline void fz_owner_died(mc_header *h)
{
    __atomic_store_n(&h->lock.__data.__lock, FUTEX_OWNER_DIED, __ATOMIC_RELEASE);
}

static inline mc_worker_slot *fz_slot(mc_header *h, unsigned i)
{
    return mc__slot(h, i);
}

/* Reading the input. */
typedef struct {
    const uint8_t *p;
    size_t n;
} fz_in;

static inline int fz_more(const fz_in *in) { return in->n > 0; }

static inline uint8_t fz_u8(fz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint16_t fz_u16(fz_in *in)
{
    uint16_t v = fz_u8(in);
    return (uint16_t)(v | (uint16_t)fz_u8(in) << 8);
}

static inline uint64_t fz_u64(fz_in *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)fz_u8(in) << (8 * i);
    return v;
}

/* A value for a shared word: often a small or nearby number, sometimes a
   wild one, so that the interesting "almost valid" cases come up fast. */
static inline uint64_t fz_value(fz_in *in, uint64_t base)
{
    uint8_t kind = fz_u8(in);
    switch (kind & 7) {
    case 0:
        return 0;
    case 1:
        return base + (int64_t)(int16_t)fz_u16(in);        /* near base */
    case 2:
        return base + ((uint64_t)fz_u16(in) << 4);          /* above, 16-byte steps */
    case 3:
        return (uint64_t)fz_u16(in) * 64;                   /* a multiple of 64 */
    case 4:
        return ((uint64_t)fz_u16(in) * 64) | (fz_u8(in) & 3); /* a header word */
    case 5:
        return FZ_REGION - (uint64_t)fz_u16(in);            /* near the end */
    default:
        return fz_u64(in);                                  /* anything */
    }
}

/* An offset of a word the input may change: anywhere in the header, the
   slots and ring, or the first part of the arena. */
static inline uint64_t fz_offset(fz_in *in, mc_header *h)
{
    uint8_t kind = fz_u8(in);
    uint16_t v = fz_u16(in);
    switch (kind & 3) {
    case 0:
        return ((uint64_t)v * 8) % sizeof(mc_header);                       /* header word */
    case 1:
        return h->slots_off + ((uint64_t)v * 8) % (h->arena.start - h->slots_off); /* slots, ring */
    case 2:
        return h->arena.start - MC_BLOCK_HDR + ((uint64_t)v * 8) % (64 * 1024);   /* arena blocks */
    default:
        return fz_value(in, h->arena.start);                                 /* anything */
    }
}

/* Abort (a finding) with a message. */
#define FZ_ASSERT(cond)                                                              \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

#endif /* MC_FUZZ_COMMON_H */
