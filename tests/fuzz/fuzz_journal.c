/*
 * fuzz_journal.c — the undo journal, as replayed by whoever takes the lock
 * after its owner died (mc__lock() on EOWNERDEAD, txn.c).
 *
 * Input:
 *   byte 0      how many allocations/frees build the starting state
 *   ...         those operations (see op() below)
 *   next byte   how many operations the "dead" owner made inside its
 *               critical section (genuine journal entries, never committed)
 *   ...         those operations
 *   rest        edits to the journal: its count and up to 64 entries
 *               (offset, old value) rewritten
 *
 * Then the lock is made to look abandoned and mc__lock() recovers. The
 * engine must either report the state as unrecoverable (mc__lock() !=
 * MC_OK, and so for every later locker) or hand over a state that is
 * consistent: mc__arena_check() passes and allocations and frees work. It
 * must never write outside the region (guard pages: SEGV), loop forever
 * (libFuzzer's -timeout) or trip ASan/UBSan. With no edit to the journal,
 * recovery must succeed and restore the starting state exactly.
 */
#include "fuzz_common.h"

#define FZ_LIVE 32

typedef struct {
    uint64_t off[FZ_LIVE];
} fz_live;

/* One allocator operation decided by the input. */
static void op(mc_header *h, fz_in *in, fz_live *live)
{
    uint8_t b = fz_u8(in);
    unsigned i = b % FZ_LIVE;
    if (live->off[i]) {
        mc__arena_free(h, live->off[i]);
        live->off[i] = 0;
        return;
    }
    uint64_t len;
    switch (b >> 6) {
    case 0:
        len = fz_u8(in);                    /* tiny */
        break;
    case 1:
        len = fz_u16(in) % 8192;            /* small bins */
        break;
    case 2:
        len = (uint64_t)fz_u16(in) * 8;     /* up to 512 KiB: log bins */
        break;
    default:
        len = ((uint64_t)1 << 20) + fz_u8(in); /* one large block */
        break;
    }
    live->off[i] = mc__arena_alloc(h, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    mc_header *h = fz_reset();
    fz_live live = {{0}};

    /* The starting state, committed. */
    FZ_ASSERT(mc__lock(h) == MC_OK);
    for (unsigned n = fz_u8(&in) % 48; n > 0; n--) {
        op(h, &in, &live);
        mc__txn_commit(h);
    }
    FZ_ASSERT(mc__arena_check(h));
    mc__unlock(h);
    mc_arena saved = h->arena;
    uint64_t saved_tail = h->ring_tail;

    /* The dead owner's unfinished change: genuine journal entries. */
    FZ_ASSERT(mc__lock(h) == MC_OK);
    fz_live dead = live;
    for (unsigned n = fz_u8(&in) % 16; n > 0; n--)
        op(h, &in, &dead);
    if (fz_u8(&in) & 1)
        mc__txn_store(h, &h->ring_tail, fz_value(&in, h->ring_tail));

    /* Edits to the journal. */
    bool edited = false;
    if (fz_more(&in)) {
        uint8_t c = fz_u8(&in);
        uint64_t count = atomic_load(&h->journal.count);
        switch (c & 3) {
        case 0:
            break;
        case 1:
            count += (c >> 2) % 8;
            break;
        case 2:
            count = (c >> 2) * 8;
            break;
        default:
            count = fz_value(&in, count);
            break;
        }
        edited = count != atomic_load(&h->journal.count);
        atomic_store(&h->journal.count, count);
    }
    for (unsigned k = 0; k < 64 && fz_more(&in); k++) {
        unsigned i = fz_u8(&in) % MC_JOURNAL_MAX;
        h->journal.e[i].off = fz_offset(&in, h);
        h->journal.e[i].old = fz_value(&in, h->journal.e[i].old);
        edited = true;
    }

    /* The owner is gone; the next locker recovers. */
    fz_owner_died(h);
    int r = mc__lock(h);
    if (r != MC_OK) {
        /* Refused: so must every later attempt be. */
        FZ_ASSERT(edited);
        FZ_ASSERT(mc__lock(h) != MC_OK);
        return 0;
    }
    FZ_ASSERT(atomic_load(&h->journal.count) == 0);
    FZ_ASSERT(mc__arena_check(h));
    if (!edited) {
        FZ_ASSERT(memcmp(&saved, &h->arena, sizeof saved) == 0);
        FZ_ASSERT(h->ring_tail == saved_tail);
    }

    /* The recovered state works: allocate, free, check. */
    uint64_t a = mc__arena_alloc(h, 100), b = mc__arena_alloc(h, 7000), c = mc__arena_alloc(h, 70000);
    mc__txn_commit(h);
    FZ_ASSERT(mc__arena_check(h));
    if (!edited) {
        for (unsigned i = 0; i < FZ_LIVE; i++)
            if (live.off[i])
                mc__arena_free(h, live.off[i]);
    }
    if (a)
        mc__arena_free(h, a);
    if (c)
        mc__arena_free(h, c);
    if (b)
        mc__arena_free(h, b);
    mc__txn_commit(h);
    FZ_ASSERT(mc__arena_check(h));
    if (!edited)
        FZ_ASSERT(h->arena.in_use == 0 && h->arena.top == h->arena.start);
    mc__unlock(h);
    return 0;
}
