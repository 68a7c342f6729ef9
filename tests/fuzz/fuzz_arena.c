/*
 * fuzz_arena.c — the allocator's block headers, boundary tags and free
 * lists (arena.c), which every process of a pool follows.
 *
 * Input: a sequence of operations, each one byte and its arguments:
 *   alloc (three size classes), free, block size query, check, and
 *   "corrupt": an 8-byte store at an offset chosen by the input (a live
 *   block's header or payload start, the allocator's mutable state in the
 *   header (top, in_use, bitmap, bins: not the layout words start and end), a
 *   free block's links, anywhere in the arena) — what a task overrunning
 *   its argument or result buffer does to the block after it.
 *
 * Before any corruption the allocator must be exact: mc__arena_check()
 * passes after every operation, blocks never overlap (each payload keeps
 * the tag written into it) and are large enough.
 *
 * After a corruption, whatever the shared words say, neither the allocator
 * nor the check may crash, hang or touch memory outside the region (guard
 * pages), and the check must be complete: whenever it passes, fresh
 * allocations and frees keep it passing. That is the property that lets
 * the engine trust a state that passed mc__arena_check() (mc__lock() checks
 * the arena after recovering a dead owner's change).
 */
#include "fuzz_common.h"

#define FZ_LIVE 32

typedef struct {
    uint64_t off, len, tag;
} fz_block;

static uint64_t tag_of(uint64_t off, unsigned i) { return (off * 0x9e3779b97f4a7c15ull) ^ (i + 1); }

static void put_tags(mc_header *h, const fz_block *b)
{
    if (b->len >= 8)
        memcpy(mc__ptr(h, b->off), &b->tag, 8);
    if (b->len >= 16)
        memcpy((char *)mc__ptr(h, b->off) + b->len - 8, &b->tag, 8);
}

static bool tags_ok(mc_header *h, const fz_block *b)
{
    uint64_t x = b->tag, y = b->tag;
    if (b->len >= 8)
        memcpy(&x, mc__ptr(h, b->off), 8);
    if (b->len >= 16)
        memcpy(&y, (char *)mc__ptr(h, b->off) + b->len - 8, 8);
    return x == b->tag && y == b->tag;
}

/* On a state that passed the check: fresh blocks keep it consistent. */
static void probe(mc_header *h)
{
    uint64_t x = mc__arena_alloc(h, 40), y = mc__arena_alloc(h, 5000), z = mc__arena_alloc(h, 200000);
    mc__txn_commit(h);
    FZ_ASSERT(mc__arena_check(h));
    if (y)
        mc__arena_free(h, y);
    if (x)
        mc__arena_free(h, x);
    if (z)
        mc__arena_free(h, z);
    mc__txn_commit(h);
    FZ_ASSERT(mc__arena_check(h));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    mc_header *h = fz_reset();
    fz_block live[FZ_LIVE];
    memset(live, 0, sizeof live);
    bool corrupted = false;
    const uint64_t start = h->arena.start;

    FZ_ASSERT(mc__lock(h) == MC_OK);
    for (unsigned steps = 0; fz_more(&in) && steps < 256; steps++) {
        uint8_t code = fz_u8(&in);
        unsigned i = fz_u8(&in) % FZ_LIVE;
        fz_block *b = &live[i];
        switch (code % 8) {
        case 0: case 1: case 2: { /* alloc */
            if (b->off)
                break;
            uint64_t len = code % 8 == 0 ? fz_u8(&in)
                         : code % 8 == 1 ? fz_u16(&in) % 12000
                                         : (uint64_t)fz_u16(&in) * 24;
            if ((code & 0xf8) == 0xf8)
                len = ((uint64_t)1 << 20) + fz_u16(&in);  /* a large block now and then */
            uint64_t off = mc__arena_alloc(h, len);
            if (!off)
                break;
            FZ_ASSERT(off % MC_BLOCK_ALIGN == 0 && off >= h->arena.start && off + len <= FZ_REGION);
            if (!corrupted)
                FZ_ASSERT(mc__arena_block_size(h, off) >= len);
            b->off = off;
            b->len = len;
            b->tag = tag_of(off, i);
            put_tags(h, b);
            break;
        }
        case 3: case 4: /* free */
            if (!b->off)
                break;
            if (!corrupted)
                FZ_ASSERT(tags_ok(h, b));
            mc__arena_release_pages(h, b->off);
            mc__arena_free(h, b->off);
            b->off = 0;
            break;
        case 5: { /* corrupt one word */
            uint64_t off;
            uint8_t where = fz_u8(&in);
            switch (where % 4) {
            case 0: /* a live block's header or first payload words */
                off = b->off ? b->off - MC_BLOCK_HDR + (where >> 2) % 4 * 8
                             : start - MC_BLOCK_HDR;
                break;
            case 1: /* the allocator's mutable state: top, in_use, bitmap, bins
                       (start and end are layout, written once at start) */
                off = offsetof(mc_header, arena) + offsetof(mc_arena, top);
                off += (uint64_t)(where >> 2) % ((sizeof(mc_arena) - offsetof(mc_arena, top)) / 8) * 8;
                if (off == offsetof(mc_header, arena) + offsetof(mc_arena, end))
                    off += 8;
                break;
            case 2: /* just past a live block: the next header */
                off = b->off ? b->off + mc__arena_block_size(h, b->off) + (where >> 2) % 2 * 8
                             : h->arena.top - MC_BLOCK_HDR;
                break;
            default:
                off = start - MC_BLOCK_HDR + (uint64_t)fz_u16(&in) * 8;
                break;
            }
            /* Only the allocator's words: the arena state in the header and
               the arena itself (not the lock or the journal, which this
               process holds open). */
            uint64_t a_lo = offsetof(mc_header, arena) + offsetof(mc_arena, in_use);
            uint64_t a_hi = offsetof(mc_header, arena) + sizeof(mc_arena);
            if (off == offsetof(mc_header, arena) + offsetof(mc_arena, top))
                a_lo = off;
            /* Compared without off + 8: an offset computed from a corrupt
               top or block size can be near 2^64, where off + 8 wraps. */
            if (!((off >= a_lo && off <= a_hi - 8) || (off >= start - MC_BLOCK_HDR && off <= FZ_REGION - 8)))
                break;
            uint64_t old;
            memcpy(&old, mc__ptr(h, off), 8);
            uint64_t v = fz_value(&in, old);
            memcpy(mc__ptr(h, off), &v, 8);
            corrupted |= v != old;
            break;
        }
        case 6: /* check */
            if (corrupted) {
                if (mc__arena_check(h))
                    probe(h);
            } else {
                FZ_ASSERT(mc__arena_check(h));
            }
            break;
        default: /* size */
            if (b->off && !corrupted)
                FZ_ASSERT(mc__arena_block_size(h, b->off) >= b->len);
            break;
        }
        mc__txn_commit(h);
        if (!corrupted) {
            FZ_ASSERT(mc__arena_check(h));
            for (unsigned k = 0; k < FZ_LIVE; k++)
                if (live[k].off)
                    FZ_ASSERT(tags_ok(h, &live[k]));
        }
    }
    if (corrupted) {
        if (mc__arena_check(h))
            probe(h);
    } else {
        for (unsigned k = 0; k < FZ_LIVE; k++)
            if (live[k].off)
                mc__arena_free(h, live[k].off);
        mc__txn_commit(h);
        FZ_ASSERT(mc__arena_check(h));
        FZ_ASSERT(h->arena.in_use == 0 && h->arena.top == h->arena.start);
    }
    mc__unlock(h);
    return 0;
}
