/*
 * arena.c — variable-size blocks in the shared region.
 *
 * A boundary-tag allocator (dlmalloc's shape, much reduced) whose every
 * metadata store goes through the undo journal, so a worker killed in the
 * middle of an allocation leaves nothing half-linked. All functions but
 * mc__arena_init() (before the first fork), mc__arena_block_size() and
 * mc__arena_check() run under the pool lock, as debug builds check.
 *
 * Layout: a block is a multiple of 64 bytes and starts with a 16-byte
 * header placed so that the payload after it is 64-byte aligned (cache
 * lines, SIMD loads, numpy buffers). Header word 0 is the size with two
 * flags (INUSE, PREV_INUSE); word 1 is the size of the previous block when
 * that one is free, so freeing can merge backwards. A third flag, BACKED,
 * says every page of the block is backed in the memfd. A large block is
 * populated (MADV_POPULATE_WRITE) when first handed out, so that a lack of
 * memory is an error then rather than SIGBUS in a write later; it keeps
 * the flag while its pages stay committed (freed and retained, split, or
 * merged with neighbours that are backed too, a small one being populated
 * for the purpose), so that reusing it skips a populate that costs about
 * as much as the copy into it. Giving pages back clears it; above top,
 * `backed_end` plays its part. A free block keeps its
 * free-list links in its first two payload words. Free blocks sit in 64
 * exact bins (64 B .. 4 KiB) and then 4 bins per power of two; a bitmap
 * finds the first non-empty bin in a few instructions. Beyond `top` lies
 * untouched address space: a free block is never left next to it (it is
 * merged into it), so the block just before top is always in use.
 *
 * Offsets are payload offsets; 0 is never a payload, so it means "none".
 *
 * Every process of the pool follows these words, and any of them may have
 * been scribbled on (a task writing past the end of its buffer lands on the
 * next block's header). So nothing read from the region is followed before
 * a few compares show it stays inside the arena: a payload offset must be
 * 64-byte aligned and in [start, top), a size must fit before top, a free
 * block's header and links must look like a free block's. A word that
 * fails is reported once on stderr and the operation fails closed (an
 * allocation returns 0, a free leaves the block where it is); the full
 * check, mc__arena_check(), then fails too. start and end are layout,
 * written once before the first fork and never through the journal.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define F_INUSE 1ull
#define F_PREV_INUSE 2ull
#define F_BACKED 4ull
#define F_MASK 63ull

/* Blocks at least this large give their pages back to the kernel when
   freed, once more than the retain budget of such memory is free: up to
   it, freed pages stay committed for the next large block, because
   faulting fresh zeroed pages in costs several times the copy into them
   (an 8 MiB array round trip was mostly page faults). The budget is an
   eighth of the arena, at most MC_RETAIN_MAX; `retained` is a heuristic
   count (coalescing blurs it), kept through the journal like the rest. */
#define MC_RELEASE_THRESHOLD ((uint64_t)1 << 20)
#define MC_RETAIN_MAX ((uint64_t)512 << 20)

static bool retain(mc_header *h, uint64_t bytes)
{
    mc_arena *a = &h->arena;
    uint64_t budget = (a->end - a->start) / 8;
    if (budget > MC_RETAIN_MAX)
        budget = MC_RETAIN_MAX;
    if (a->retained > budget || bytes > budget - a->retained)
        return false;
    mc__txn_store(h, &a->retained, a->retained + bytes);
    return true;
}

/* The block mc__arena_release_pages() just decided to keep committed, so
   that mc__arena_free() merging it into the rest neither counts it twice
   nor releases it after all. */
static _Thread_local uint64_t t_retained_block;

/* A large block was handed out: it may have reused retained pages. */
static void retain_taken(mc_header *h, uint64_t bytes)
{
    mc_arena *a = &h->arena;
    if (bytes >= MC_RELEASE_THRESHOLD && a->retained)
        mc__txn_store(h, &a->retained, a->retained > bytes ? a->retained - bytes : 0);
}

/* Address range merged into the untouched rest by the open change of this
   thread, to give back to the kernel once the change has committed. */
static _Thread_local struct {
    mc_header *h;
    uint64_t lo, hi;
} t_release;

static inline uint64_t *word(mc_header *h, uint64_t off) { return (uint64_t *)mc__ptr(h, off); }
static inline uint64_t *hdr_size(mc_header *h, uint64_t p) { return word(h, p - 16); }
static inline uint64_t *hdr_prev(mc_header *h, uint64_t p) { return word(h, p - 8); }
static inline uint64_t block_size(mc_header *h, uint64_t p) { return *hdr_size(h, p) & ~F_MASK; }

/* ---- validation of shared words (cheap: compares on lines already read) */

/* The allocator state itself: top inside [start, end], block-aligned. */
static inline bool top_ok(const mc_arena *a)
{
    return a->top >= a->start && a->top <= a->end && (a->top - a->start) % MC_BLOCK_ALIGN == 0;
}

/* A payload offset the arena may have handed out: aligned, at least one
   block before top. With top_ok(), its header and links are in the arena. */
static inline bool payload_ok(const mc_arena *a, uint64_t p)
{
    return p % MC_BLOCK_ALIGN == 0 && p >= a->start && p < a->top && a->top - p >= MC_BLOCK_ALIGN;
}

/* A block at p said to be free with `size` (by a list, a neighbour's flag
   or boundary tag): its header agrees, it ends before top (a free block
   never touches top) and its links point into the arena. */
static inline bool free_block_ok(mc_header *h, uint64_t p, uint64_t size)
{
    const mc_arena *a = &h->arena;
    if (!payload_ok(a, p) || size < MC_BLOCK_ALIGN || size >= a->top - p)
        return false;
    uint64_t w = *hdr_size(h, p), next = *word(h, p), prev = *word(h, p + 8);
    return !(w & F_INUSE) && (w & ~F_MASK) == size && (!next || payload_ok(a, next)) &&
           (!prev || payload_ok(a, prev));
}

/* A shared word failed validation: say so once per process; the caller
   fails the operation. */
#define unlikely(x) __builtin_expect(!!(x), 0)
__attribute__((cold, noinline)) static uint64_t corrupt(const char *what, uint64_t off)
{
    static _Atomic int said;
    if (!atomic_exchange_explicit(&said, 1, memory_order_relaxed))
        fprintf(stderr, "libmulticore: shared region corrupt (%s at offset %llu): not followed\n", what,
                (unsigned long long)off);
    return 0;
}

static unsigned bin_of(uint64_t size)
{
    if (size <= (uint64_t)MC_SMALL_BINS * MC_BLOCK_ALIGN)
        return (unsigned)(size / MC_BLOCK_ALIGN) - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(size); /* >= 12 */
    unsigned sub = (unsigned)(size >> (e - 2)) & 3u;
    unsigned idx = MC_SMALL_BINS + (e - 12) * 4 + sub;
    return idx < MC_NBINS ? idx : MC_NBINS - 1;
}

static void bitmap_set(mc_header *h, unsigned b, bool on)
{
    uint64_t *w = &h->arena.bitmap[b / 64];
    uint64_t bit = 1ull << (b % 64);
    mc__txn_store(h, w, on ? (*w | bit) : (*w & ~bit));
}

static void freelist_insert(mc_header *h, uint64_t p, uint64_t size)
{
    unsigned b = bin_of(size);
    uint64_t head = h->arena.bins[b];
    if (unlikely(head && !payload_ok(&h->arena, head)))
        head = corrupt("free list head", head); /* drop the list rather than follow it */
    mc__txn_store(h, word(h, p), head);
    mc__txn_store(h, word(h, p + 8), 0);
    if (head)
        mc__txn_store(h, word(h, head + 8), p);
    mc__txn_store(h, &h->arena.bins[b], p);
    bitmap_set(h, b, true);
}

static void freelist_remove(mc_header *h, uint64_t p, uint64_t size)
{
    unsigned b = bin_of(size);
    uint64_t next = *word(h, p), prev = *word(h, p + 8);
    if (prev)
        mc__txn_store(h, word(h, prev), next);
    else
        mc__txn_store(h, &h->arena.bins[b], next);
    if (next)
        mc__txn_store(h, word(h, next + 8), prev);
    if (!h->arena.bins[b])
        bitmap_set(h, b, false);
}

/* First non-empty bin at or above b, or MC_NBINS. */
static unsigned next_bin(mc_header *h, unsigned b)
{
    while (b < MC_NBINS) {
        uint64_t bits = h->arena.bitmap[b / 64] >> (b % 64);
        if (bits)
            return b + (unsigned)__builtin_ctzll(bits);
        b = (b / 64 + 1) * 64;
    }
    return MC_NBINS;
}

void mc__arena_init(mc_header *h, uint64_t start, uint64_t end)
{
    /* Direct stores: nothing else can see the region yet. */
    mc_arena *a = &h->arena;
    uint64_t first = MC_ALIGN_UP(start + MC_BLOCK_HDR, MC_BLOCK_ALIGN);
    a->start = first;
    a->top = first;
    a->end = end;
    a->in_use = 0;
    a->retained = 0;
    a->backed_end = first;
    for (unsigned i = 0; i < MC_BITMAP_WORDS; i++)
        a->bitmap[i] = 0;
    for (unsigned i = 0; i < MC_NBINS; i++)
        a->bins[i] = 0;
}

/* Mark block p (of `size`, currently free and unlinked) as in use with
   `want` bytes, splitting off the rest when it is worth a block. */
static void take_block(mc_header *h, uint64_t p, uint64_t size, uint64_t want)
{
    /* The block's first words held its free-list links. Whoever gets it
       fills it with plain stores in the same critical section (nobody else
       can see it yet), so a rollback, which puts the block back on its
       list, must find them in the journal. */
    mc__txn_note(h, word(h, p));
    mc__txn_note(h, word(h, p + 8));
    uint64_t prev_flag = *hdr_size(h, p) & F_PREV_INUSE, backed = *hdr_size(h, p) & F_BACKED;
    if (size - want >= MC_BLOCK_ALIGN) {
        uint64_t rest = p + want, rest_size = size - want;
        mc__txn_store(h, hdr_size(h, rest), rest_size | F_PREV_INUSE | backed);
        mc__txn_store(h, hdr_prev(h, p + size), rest_size); /* next stays !PREV_INUSE */
        freelist_insert(h, rest, rest_size);
        size = want;
    } else {
        uint64_t next = p + size; /* a free block never touches top */
        mc__txn_store(h, hdr_size(h, next), *hdr_size(h, next) | F_PREV_INUSE);
    }
    mc__txn_store(h, hdr_size(h, p), size | F_INUSE | prev_flag | backed);
    mc__txn_store(h, &h->arena.in_use, h->arena.in_use + size);
    retain_taken(h, size);
}

uint64_t mc__arena_alloc(mc_header *h, uint64_t len)
{
    MC_ASSERT_LOCKED(h);
    mc_arena *a = &h->arena;
    if (len > a->end)
        return 0;
    if (unlikely(!top_ok(a)))
        return corrupt("arena top", a->top);
    uint64_t want = MC_ALIGN_UP(len + MC_BLOCK_HDR, MC_BLOCK_ALIGN);

    unsigned b = bin_of(want);
    if (b >= MC_SMALL_BINS && a->bins[b]) {
        /* A size-range bin: its blocks may be smaller than wanted. */
        unsigned looked = 0;
        for (uint64_t p = a->bins[b]; p && looked < 32; p = *word(h, p), looked++) {
            if (unlikely(!payload_ok(a, p)))
                return corrupt("free list link", p);
            uint64_t size = block_size(h, p);
            if (size >= want) {
                if (unlikely(!free_block_ok(h, p, size)))
                    return corrupt("free block", p);
                freelist_remove(h, p, size);
                take_block(h, p, size, want);
                return p;
            }
        }
        b++;
    }
    b = next_bin(h, b);
    if (b < MC_NBINS) {
        uint64_t p = a->bins[b];
        if (unlikely(!payload_ok(a, p)))
            return corrupt("free list head", p);
        uint64_t size = block_size(h, p);
        if (unlikely(size < want || !free_block_ok(h, p, size)))
            return corrupt("free block", p);
        freelist_remove(h, p, size);
        take_block(h, p, size, want);
        return p;
    }

    /* Carve from the untouched rest. */
    uint64_t p = a->top;
    if (p - MC_BLOCK_HDR + want > a->end || p - MC_BLOCK_HDR + want < p)
        return 0;
    uint64_t backed = p - MC_BLOCK_HDR + want <= a->backed_end ? F_BACKED : 0;
    mc__txn_store(h, hdr_size(h, p), want | F_INUSE | F_PREV_INUSE | backed);
    mc__txn_store(h, &a->top, p + want);
    mc__txn_store(h, &a->in_use, a->in_use + want);
    retain_taken(h, want);
    return p;
}

/* Whether the block made by freeing p (of size) and merging it with its
   free neighbours (of prev_size before, next_size after; 0: none) is
   backed; backed_above: it merges into top, with backed pages above.
   Only if every part is, except that when the large parts are, a small
   part that is not gets populated now (a page or two, usually a task
   record: without it, a freed record next to a large block would cost the
   block its flag, and every reuse of it a populate). */
static bool merged_backed(mc_header *h, uint64_t p, uint64_t size, uint64_t prev_size, uint64_t next_size,
                          bool backed_above)
{
    uint64_t part[3] = {p - prev_size, p, p + size}, len[3] = {prev_size, size, next_size};
    bool any = backed_above;
    for (int i = 0; i < 3; i++) {
        if (!len[i])
            continue;
        if (*hdr_size(h, part[i]) & F_BACKED)
            any = true;
        else if (len[i] >= MC_POPULATE_THRESHOLD)
            return false; /* a large part that may have holes */
    }
    if (!any)
        return false;
    for (int i = 0; i < 3; i++)
        if (len[i] && !(*hdr_size(h, part[i]) & F_BACKED) &&
            mc__region_populate(mc__ptr(h, part[i]), len[i] - MC_BLOCK_HDR) != MC_OK)
            return false;
    return true;
}

void mc__arena_free(mc_header *h, uint64_t p)
{
    MC_ASSERT_LOCKED(h);
    mc_arena *a = &h->arena;
    bool was_retained = t_retained_block == p;
    t_retained_block = 0;
    /* Everything this free will follow is checked before the first store:
       the block (a double free ends here), the free neighbours it merges. */
    if (unlikely(!top_ok(a) || !payload_ok(a, p))) {
        corrupt("freed offset", p);
        return;
    }
    uint64_t w = *hdr_size(h, p), size = w & ~F_MASK;
    if (unlikely(!(w & F_INUSE) || size < MC_BLOCK_ALIGN || size > a->top - p)) {
        corrupt("freed block header", p);
        return;
    }
    uint64_t prev_size = 0, next = p + size, next_size = 0;
    if (!(w & F_PREV_INUSE)) {
        prev_size = *hdr_prev(h, p);
        if (unlikely(prev_size > p - a->start || !free_block_ok(h, p - prev_size, prev_size))) {
            corrupt("previous block", p);
            return;
        }
    }
    if (next != a->top && !(*hdr_size(h, next) & F_INUSE)) {
        next_size = block_size(h, next);
        if (unlikely(!free_block_ok(h, next, next_size))) {
            corrupt("next block", next);
            return;
        }
    }

    bool backed = merged_backed(h, p, size, prev_size, next_size, next == a->top && a->backed_end > next);
    uint64_t start = p, total = size;
    mc__txn_store(h, &a->in_use, a->in_use - size);

    if (prev_size) {
        start = p - prev_size;
        freelist_remove(h, start, prev_size);
        total += prev_size;
    }

    if (next == a->top) {
        /* Merge into the untouched rest. Its pages are returned to the
           kernel only after the change commits (mc__arena_after_commit):
           done now, a rollback would restore headers into zeroed pages. */
        mc__txn_store(h, &a->top, start);
        /* A large free block before it that is backed is retained memory
           (counted when it was freed): it stays committed too. */
        bool kept = was_retained || (size >= MC_RELEASE_THRESHOLD && retain(h, size)) ||
                    (prev_size >= MC_RELEASE_THRESHOLD && (*hdr_size(h, start) & F_BACKED));
        bool released = next - start >= MC_RELEASE_THRESHOLD && !kept;
        /* [next, backed_end) was backed; [start, next) joins it, or
           nothing above the new top is known to be. */
        if (!backed || released)
            mc__txn_store(h, &a->backed_end, start);
        else if (a->backed_end < next)
            mc__txn_store(h, &a->backed_end, next);
        if (released) {
            if (t_release.h != h || t_release.lo > start)
                t_release.lo = start;
            if (t_release.h != h || t_release.hi < next)
                t_release.hi = next;
            t_release.h = h;
        }
        return;
    }
    if (next_size) {
        freelist_remove(h, next, next_size);
        total += next_size;
    }
    uint64_t after = start + total;
    mc__txn_store(h, hdr_size(h, after), *hdr_size(h, after) & ~F_PREV_INUSE);
    mc__txn_store(h, hdr_prev(h, after), total);
    mc__txn_store(h, hdr_size(h, start), total | F_PREV_INUSE | (backed ? F_BACKED : 0));
    freelist_insert(h, start, total);
}

void mc__arena_after_commit(mc_header *h)
{
    MC_ASSERT_LOCKED(h);
    if (t_release.h != h)
        return;
    t_release.h = NULL;
    /* Still under the lock: nothing beyond top can be handed out yet, and
       top may have moved up again later in the same critical section. */
    long page = sysconf(_SC_PAGESIZE);
    uint64_t lo = t_release.lo > h->arena.top ? t_release.lo : h->arena.top;
    lo = MC_ALIGN_UP(lo, (uint64_t)page);
    uint64_t hi = t_release.hi & ~((uint64_t)page - 1);
    if (hi > lo)
        madvise(mc__ptr(h, lo), hi - lo, MADV_REMOVE);
}

/* The block's extent as its header says, if that stays inside the arena
   (start and end are layout, so this needs no lock); else 0. */
static uint64_t owned_block_size(mc_header *h, uint64_t p)
{
    const mc_arena *a = &h->arena;
    if (p % MC_BLOCK_ALIGN || p < a->start || p >= a->end)
        return 0;
    /* Atomic: mc__arena_block_size() is called without the lock (by a
       worker sizing the task it runs), while a lock holder may be
       changing this word's flag bits, freeing the block before it. */
    uint64_t size = __atomic_load_n(hdr_size(h, p), __ATOMIC_RELAXED) & ~F_MASK;
    return size >= MC_BLOCK_ALIGN && size <= a->end - p + MC_BLOCK_HDR ? size : 0;
}

uint64_t mc__arena_block_size(mc_header *h, uint64_t p)
{
    uint64_t size = owned_block_size(h, p);
    return size ? size - MC_BLOCK_HDR : 0;
}

void mc__arena_release_pages(mc_header *h, uint64_t p)
{
    MC_ASSERT_LOCKED(h);
    /* A corrupt size must not punch a hole past the region's end (in
       whatever is mapped after it). */
    uint64_t size = owned_block_size(h, p);
    t_retained_block = 0;
    if (size < MC_RELEASE_THRESHOLD)
        return;
    if (retain(h, size)) {
        t_retained_block = p;
        return;
    }
    mc__txn_store(h, hdr_size(h, p), *hdr_size(h, p) & ~F_BACKED); /* holes from here on */
    long page = sysconf(_SC_PAGESIZE);
    /* Keep the free-list links at the start and the next block's header. */
    uint64_t lo = MC_ALIGN_UP(p + 16, (uint64_t)page);
    uint64_t hi = (p - MC_BLOCK_HDR + size) & ~((uint64_t)page - 1);
    if (hi > lo)
        madvise(mc__ptr(h, lo), hi - lo, MADV_REMOVE);
}

uint64_t mc__arena_to_populate(mc_header *h, uint64_t p, uint64_t len)
{
    MC_ASSERT_LOCKED(h);
    if (len < MC_POPULATE_THRESHOLD || (*hdr_size(h, p) & F_BACKED))
        return 0;
    return mc__arena_block_size(h, p); /* all of it: a later user may fill it */
}

int mc__arena_commit(mc_header *h, uint64_t p, uint64_t n)
{
    if (!n)
        return MC_OK;
    if (mc__region_populate(mc__ptr(h, p), n) != MC_OK)
        return MC_ENOMEM;
    /* Under the lock: a neighbour's free changes this header's PREV_INUSE
       bit. Unrecorded if the lock fails: the next user populates again. */
    if (mc__lock(h) == MC_OK) {
        mc__txn_store(h, hdr_size(h, p), *hdr_size(h, p) | F_BACKED);
        mc__unlock(h);
    }
    return MC_OK;
}

/* A keyed mix of a block offset (splitmix64's finalizer), summed over the
   free blocks met walking the arena and over the free lists: equal sums
   (with equal counts) mean the lists hold exactly the free blocks, without
   a set in memory, and no list can smuggle in an offset inside a live
   block that merely looks free. */
static uint64_t mix(uint64_t x)
{
    x ^= 0x6d756c7469636f72ull; /* "multicor" */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Walk every block and every free list and check they agree. Run after a
   dead owner's change was rolled back (txn.c), by the fault-injection
   tests and the fuzz harness; never on a hot path. Whatever the region
   holds, it reads only inside the arena and terminates; when it passes,
   the allocator can trust every word it follows. */
bool mc__arena_check(mc_header *h)
{
    mc_arena *a = &h->arena;
    if (a->start < MC_BLOCK_HDR || a->start % MC_BLOCK_ALIGN || a->end > h->region_size || !top_ok(a) ||
        a->backed_end > a->end)
        return false;
    uint64_t p = a->start, free_blocks = 0, in_use = 0, free_sum = 0, listed_sum = 0;
    bool prev_free = false;
    while (p < a->top) {
        uint64_t w = *hdr_size(h, p), size = w & ~F_MASK;
        if (size < MC_BLOCK_ALIGN || size % MC_BLOCK_ALIGN || size > a->top - p)
            return false;
        if (!(w & F_PREV_INUSE) != prev_free)
            return false;
        if (w & F_INUSE) {
            in_use += size;
            prev_free = false;
        } else {
            if (prev_free || p + size == a->top || *hdr_prev(h, p + size) != size)
                return false;
            free_blocks++;
            free_sum += mix(p);
            prev_free = true;
        }
        p += size;
    }
    if (p != a->top || in_use != a->in_use)
        return false;
    uint64_t listed = 0;
    for (unsigned b = 0; b < MC_NBINS; b++) {
        bool bit = (a->bitmap[b / 64] >> (b % 64)) & 1;
        if (bit != (a->bins[b] != 0))
            return false;
        uint64_t back = 0;
        for (uint64_t q = a->bins[b]; q; q = *word(h, q)) {
            if (!payload_ok(a, q) || ++listed > free_blocks)
                return false;
            uint64_t w = *hdr_size(h, q);
            if ((w & F_INUSE) || bin_of(w & ~F_MASK) != b || *word(h, q + 8) != back)
                return false;
            listed_sum += mix(q);
            back = q;
        }
    }
    return listed == free_blocks && listed_sum == free_sum;
}
