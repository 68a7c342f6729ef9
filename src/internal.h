/*
 * internal.h — the shared region's layout and the engine's internal API.
 *
 * Everything the caller, the zygote and the workers share lives in ONE
 * memfd mapping created before the first fork, so it sits at the same
 * address in every process. Structures inside it refer to each other by
 * 64-bit offsets from the region's base (never raw pointers), which keeps
 * every cross-process reference checkable: a decoder validates an offset
 * against the region's bounds before following it.
 *
 *   [ header | worker slots | task ring | arena ...................... ]
 *     lock, journal,                     blocks of any size: task records
 *     allocator state,                   with their arguments, results,
 *     futex words                        error messages
 *
 * Crash safety. Workers can die at any instruction. All state that more
 * than one process mutates under the lock (ring indices, allocator
 * metadata, reference counts, the task a worker holds) is written only
 * through the undo journal (txn.c): a process killed inside a critical
 * section leaves the journal non-empty, and the next process to take the
 * robust mutex (EOWNERDEAD) rolls the changes back before going on. A
 * task's completion state is a separate 32-bit futex word that moves from
 * PENDING to exactly one final state by compare-and-swap, outside the
 * lock, so a waiting caller never needs the lock to see a result.
 *
 * Names. Functions declared here start with mc__ (libuv's uv__ model): a
 * static library has to carry them as global symbols, and the prefix keeps
 * them apart from the public mc_ API of include/multicore.h (which
 * tests/stages/exports.sh checks is all that libmulticore exports under
 * mc_). Types and macros of the layout keep their mc_ / MC_ names: they
 * are not symbols.
 */
#ifndef MC_INTERNAL_H
#define MC_INTERNAL_H

#include "multicore.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MC_MAGIC 0x4e4f494745524d43ull /* "CMREGION" little-endian */
#define MC_LAYOUT_VERSION 5u /* 2: the 48-byte task record, links out of line; 3: backed blocks;
                                4: the lock, ring and arena on lines of their own; the hand-off word;
                                5: a handed task's fn and extent in the slot's first line; clock_tsc */

#define MC_CACHELINE 64
#define MC_ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((uint64_t)(a) - 1))

/* ---- undo journal (txn.c) ------------------------------------------- */

#define MC_JOURNAL_MAX 256

typedef struct mc_journal_entry {
    uint64_t off; /* region offset of an 8-byte word */
    uint64_t old; /* its value before the critical section changed it */
} mc_journal_entry;

typedef struct mc_journal {
    _Atomic uint64_t count; /* entries recorded; 0 when no change is open */
    mc_journal_entry e[MC_JOURNAL_MAX];
} mc_journal;

/* ---- arena (arena.c) ------------------------------------------------ */

/* Blocks are multiples of 64 bytes; each starts with a 16-byte header and
   hands out a 64-byte-aligned payload (the header sits just before it). */
#define MC_BLOCK_ALIGN 64u
#define MC_BLOCK_HDR 16u
#define MC_SMALL_BINS 64  /* exact bins: 64, 128, ... 4096 bytes */
#define MC_LOG_BINS 160   /* then 4 bins per power of two */
#define MC_NBINS (MC_SMALL_BINS + MC_LOG_BINS)
#define MC_BITMAP_WORDS ((MC_NBINS + 63) / 64)

typedef struct mc_arena {
    uint64_t start;  /* offset of the first block header */
    uint64_t top;    /* offset of the untouched rest (the "wilderness") */
    uint64_t end;    /* region size */
    uint64_t in_use; /* bytes in allocated blocks, headers included */
    uint64_t retained; /* (about) bytes of free large blocks whose pages stay committed */
    uint64_t backed_end; /* pages in [top, backed_end) are backed in the memfd (arena.c) */
    uint64_t bitmap[MC_BITMAP_WORDS];
    uint64_t bins[MC_NBINS]; /* heads of free lists (payload offsets) */
} mc_arena;

/* ---- task records ---------------------------------------------------- */

/* mc_task.state: a futex word. Only PENDING may carry the WAITER bit. */
enum {
    MC_TS_PENDING = 1,   /* queued or running */
    MC_TS_DONE = 2,      /* the worker published a result */
    MC_TS_FAILED = 3,    /* the worker died running it */
    MC_TS_CANCELLED = 4, /* the caller gave up on it */
    MC_TS_BUFFER = 5,    /* not a task: a shared buffer (mc_buffer_alloc) */
};
#define MC_TS_WAITER 0x80000000u
#define MC_TS_MASK 0x7fffffffu

/* The record at the start of every task block and every shared buffer's
   block; the argument (or buffer) bytes follow it, and a small result may
   follow them in the same block (worker.c). Six words, so that a task with
   a short argument costs one 64-byte block beyond its payload (16-byte
   block header + this record), however long that argument is below
   MC_DATA_ALIGN_MIN. Fields marked (journal) change only under the lock,
   through txn_store; the others are written by one process at a time:
   the submitter before the task is queued, the worker (or the zygote, when
   that worker died) once it has taken it, before the final state is
   published. So a word that only matters while the task is queued is
   reused once a worker holds it: fn becomes the outcome, arg_len the
   result's length. Shared buffers (MC_TS_BUFFER) never run: their arg_len
   stays their length. */
typedef struct mc_task {
    _Atomic uint32_t state;
    int32_t worker_pid;
    uint64_t refs;      /* (journal) group + queue/worker, holds, links to a buffer */
    /* (journal) Shared buffers this record keeps alive, linked by the
       submitter for its arguments and by the worker for its result: the
       payload offset of a links block (MC_SHARE_MAX offsets, 0 = unused),
       allocated at the first link; 0 = none. Only buffer records are
       linked, and they link nothing, so a release never recurses further. */
    uint64_t links_off;
    union {
        uint64_t fn;    /* queued: the mc_task_fn, as an integer */
        struct {        /* taken: how it ended */
            int32_t task_code;   /* DONE: what fn returned (non-zero: MC_ETASK) */
            int16_t term_signal; /* FAILED: the signal that killed the worker */
            int16_t exit_status; /* FAILED: or its exit status */
        } out;
    };
    union {
        uint64_t arg_len;    /* queued (and a buffer's length) */
        uint64_t result_len; /* DONE */
    };
    /* DONE: region offset of the result bytes, 0 = none. Either inside this
       record's own block (a small result) or the payload of a block of its
       own, which the record owns. */
    uint64_t result_off;
} mc_task;
_Static_assert(sizeof(mc_task) == 48, "mc_task and a block header fill one cache line");
_Static_assert(sizeof(mc_task) + MC_BLOCK_HDR == MC_BLOCK_ALIGN, "the record's block costs one line");
_Static_assert(MC_SHARE_MAX * sizeof(uint64_t) + MC_BLOCK_HDR <= MC_BLOCK_ALIGN,
               "a links block is one 64-byte block");

/* Where a record's data starts: right after the record (16-byte aligned)
   for fewer than MC_DATA_ALIGN_MIN bytes, else on the next cache line, so
   that large arguments and buffers are 64-byte aligned (numpy, SIMD). */
#define MC_DATA_LINE_OFF 64u
_Static_assert(sizeof(mc_task) % 16 == 0, "short data stays 16-byte aligned");
static inline uint64_t mc__data_offset(uint64_t len)
{
    return len >= MC_DATA_ALIGN_MIN ? MC_DATA_LINE_OFF : sizeof(mc_task);
}
/* Block payload a record with len data bytes needs (len < 2^63). */
static inline uint64_t mc__record_size(uint64_t len) { return mc__data_offset(len) + len; }

/* ---- workers --------------------------------------------------------- */

enum {
    MC_WS_EMPTY = 0,     /* no process in this slot */
    MC_WS_STARTING = 1,  /* forked, init callback not finished */
    MC_WS_READY = 2,     /* taking tasks */
    MC_WS_INIT_FAILED = 3,
    MC_WS_RETIRED = 4,   /* left after max_tasks_per_worker tasks: replace, no failure */
};

typedef struct mc_worker_slot {
    /* First line: what a caller handing a task to this worker reads and
       writes (handoff.c), and what the worker reads as it takes it. */
    _Atomic int32_t pid;
    _Atomic uint32_t state;
    uint64_t task_off;       /* (journal) payload offset of the task in hand, 0 = none */
    uint64_t pending_result; /* (journal) result block not yet published */
    /* The direct hand-off (handoff.c): MC_HO_* state and the spin's
       generation above it. */
    _Atomic uint32_t handoff;
    /* Set by the zygote, under the lock, just before it kills this worker
       for running a cancelled task: the worker must not take another task
       in the instant before the signal lands. */
    _Atomic uint32_t doomed;
    /* A handed task (handoff.c): what the worker needs to start it, written
       by the caller before its go and read by the worker once it sees the
       go, so that the worker runs it from this line alone. The record's
       fn and arg_len, and the end of its block (its header's size). */
    uint64_t go_fn;
    uint64_t go_arg_len;
    uint64_t go_block_end;
    /* Counters, written by the worker after each task: a line of their own. */
    _Alignas(MC_CACHELINE) _Atomic uint64_t tasks_done;
    _Atomic uint64_t busy_ns;       /* time spent inside task functions */
    _Atomic uint64_t bytes_out;     /* result bytes this slot's workers set */
    _Atomic uint32_t respawns;
    _Atomic uint32_t cancel_kills;  /* workers stopped because their task was cancelled */
    _Atomic uint32_t start_failures; /* deaths before READY, in a row (replacements) */
    _Atomic uint32_t failing;       /* 1 while counted in header.workers_failing */
    _Atomic uint32_t retirements;   /* workers that left after max_tasks_per_worker tasks */
    uint64_t holds[MC_WORKER_HOLDS]; /* (journal) tasks this worker holds (mc_task_hold), 0 = free */
    /* Cold: off the lines of a task's round trip. */
    _Alignas(MC_CACHELINE) uint64_t error_off; /* (journal) init error message block */
    uint64_t error_len;      /* (journal) */
    int64_t respawn_at_ns;   /* zygote-only: when to fork the next try, 0 = none due */
} __attribute__((aligned(MC_CACHELINE))) mc_worker_slot;
_Static_assert(offsetof(mc_worker_slot, go_block_end) + sizeof(uint64_t) <= MC_CACHELINE,
               "a hand-off reads and writes the slot's first line only");

/* ---- the header ------------------------------------------------------ */

typedef struct mc_header {
    uint64_t magic;
    uint32_t version;
    uint32_t nworkers;
    uint64_t region_size;
    uint64_t slots_off;   /* mc_worker_slot[nworkers] */
    uint64_t ring_off;    /* uint64_t[ring_capacity]: task payload offsets */
    uint64_t ring_capacity;
    pid_t zygote_pid;
    /* Workers may time tasks with the CPU's counter (clock.c): the kernel's
       clocksource is "tsc". Layout, written once before the first fork. */
    uint32_t clock_tsc;

    /* Each on its own cache lines: every critical section writes the
       lock's words and the arena's, while a worker spinning for work
       reads the ring indices and nothing else of these (sharing a line
       with the lock, they cost that worker a miss and the locker an
       invalidation at every lock and unlock). */
    _Alignas(MC_CACHELINE) pthread_mutex_t lock; /* robust, process-shared: guards all (journal) state */

    /* ring indices (journal); head == tail means empty */
    _Alignas(MC_CACHELINE) uint64_t ring_head;
    uint64_t ring_tail;

    _Alignas(MC_CACHELINE) mc_arena arena;

    /* futex words, each on its own line to keep the hot ones apart */
    _Alignas(MC_CACHELINE) _Atomic uint32_t work_seq;   /* bumped to wake idle workers */
    _Atomic uint32_t work_sleepers;
    /* While a worker spins for work: when its spin ends (CLOCK_MONOTONIC
       ns), else 0. Only one idle worker spins at a time (queue.c). */
    _Atomic int64_t work_spin_until;
    /* While a wake-up for a task is on its way to a sleeping worker: when
       the mark lapses (CLOCK_MONOTONIC ns), else 0. Cleared by the first
       sleeper that comes back (queue.c). */
    _Atomic int64_t work_wake_until;
    _Alignas(MC_CACHELINE) _Atomic uint32_t space_seq;  /* bumped when the ring frees room */
    _Atomic uint32_t space_sleepers;
    _Alignas(MC_CACHELINE) _Atomic uint32_t done_seq;   /* bumped when a task finishes, if watched */
    _Atomic uint32_t done_watchers;
    _Alignas(MC_CACHELINE) _Atomic uint32_t ready_seq;  /* bumped when a worker is ready or failed */
    _Atomic uint32_t stopping;    /* set by mc_pool_stop: workers leave when idle */
    _Atomic uint32_t init_failed; /* a first-generation worker's init failed */
    /* Slots whose replacement workers keep failing to start (each after
       MC_START_FAILURES_MAX tries in a row); when it reaches nworkers no
       task can run, and waiting callers get MC_EWORKERINIT. */
    _Atomic uint32_t workers_failing;
    /* Written by callers on every submit: kept off the lines workers write. */
    _Alignas(MC_CACHELINE) _Atomic uint64_t bytes_in; /* argument bytes submitted */
    /* 1 + the index of the worker that last armed its hand-off (handoff.c),
       0 before any did: read by callers at every submit, written by a
       worker only when another one armed last. */
    _Atomic uint32_t handoff_slot;

    _Alignas(MC_CACHELINE) mc_journal journal;
} mc_header;

/* ---- the caller's handle --------------------------------------------- */

struct mc_pool {
    mc_header *hdr;        /* == region base */
    uint64_t region_size;
    int memfd;
    int alive_fd;          /* write end of the alive pipe: EOF tells the zygote we are gone */
    int zygote_pidfd;      /* readable once the zygote exits */
    int zygote_ctl_fd;     /* eventfd: wakes the zygote for a stop */
    pid_t zygote_pid;
    pid_t owner_pid;       /* the process that started the pool */
    unsigned long fork_generation; /* differs in a fork() child's copy */
    mc_pool_options opts;
    _Atomic int closing;   /* mc_pool_stop() has begun */
    _Atomic long active;   /* public calls in progress (enter/leave), but... */
    /* ...the starting thread's, counted here without a locked instruction
       (pool.c, "the way in"). fast_owner: that thread's pthread_self(), or
       0 when membarrier(2) is not available and every call counts in
       `active`. Written once, before the handle is returned. */
    uintptr_t fast_owner;
    _Atomic long fast_active;
    _Atomic long refs;     /* 1 for the pool + 1 per live group */
    struct mc_pool *next_live; /* the process's list of pools, for fork */
    char *error;           /* copied init error message, "" if none */
};

/* ---- ThreadSanitizer ------------------------------------------------ */

/* TSan sees threads, not the other processes of the pool. When the caller
   learns through a shared word that a worker finished, the real chain
   "another caller thread freed this block under the lock -> a worker took
   the lock, reused the block, released the result" is invisible to it, so
   we tell it that the caller now has what the lock had published. */
#if defined(__SANITIZE_THREAD__)
#define MC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MC_TSAN 1
#endif
#endif
#ifdef MC_TSAN
void __tsan_acquire(void *addr);
#define MC_TSAN_ACQUIRE(addr) __tsan_acquire((void *)(addr))
#else
#define MC_TSAN_ACQUIRE(addr) ((void)0)
#endif

/* ---- debug checks (txn.c) -------------------------------------------- */

/* MC_ASSERT(cond): a precondition or invariant the engine relies on, checked
   in builds without NDEBUG (CMake's Debug: the clang, asan, tsan and
   valgrind stages; the fuzz targets). A failure prints the condition and
   where it failed on stderr and aborts the process. In release builds the
   condition is compiled (so it stays valid code) but never evaluated. */
#ifndef NDEBUG
#define MC_DEBUG 1
_Noreturn void mc__assert_fail(const char *cond, const char *file, int line, const char *func);
#define MC_ASSERT(cond) ((cond) ? (void)0 : mc__assert_fail(#cond, __FILE__, __LINE__, __func__))
#else
#define MC_DEBUG 0
#define MC_ASSERT(cond) ((void)sizeof(!(cond)))
#endif
/* Debug builds: whether the calling thread holds h's lock (mc__lock() ..
   mc__unlock()). Defined only when MC_DEBUG; use it through MC_ASSERT. */
bool mc__lock_held(const mc_header *h);
/* What "called under the lock" means, checked. */
#define MC_ASSERT_LOCKED(h) MC_ASSERT(mc__lock_held(h))

/* ---- region.c -------------------------------------------------------- */

int mc__region_create(size_t want, int *memfd, void **base, size_t *size);
void mc__region_destroy(int memfd, void *base, size_t size);
/* Commit the pages behind [addr, addr+len) now, so that running out of
   memory is an MC_ENOMEM here rather than a SIGBUS on first touch. */
int mc__region_populate(void *addr, size_t len);
/* Allocations at least this large are populated up front. */
#define MC_POPULATE_THRESHOLD ((uint64_t)1 << 20)

static inline void *mc__ptr(mc_header *h, uint64_t off) { return (char *)h + off; }
static inline uint64_t mc__off(mc_header *h, const void *p) { return (uint64_t)((const char *)p - (const char *)h); }

/* Worker slot i (0 .. nworkers-1). */
static inline mc_worker_slot *mc__slot(mc_header *h, uint32_t i)
{
    return (mc_worker_slot *)mc__ptr(h, h->slots_off) + i;
}

/* ---- txn.c: the lock and the undo journal ------------------------------ */

int mc__lock_init(mc_header *h);
int mc__lock(mc_header *h);     /* MC_OK or MC_ESYSTEM; rolls back a dead owner's changes */
void mc__unlock(mc_header *h);  /* commits the open change first */
void mc__txn_store(mc_header *h, uint64_t *word, uint64_t value);
/* Record a word's present value, unchanged, so that a rollback restores it
   even if the open change then overwrites it with plain stores. */
void mc__txn_note(mc_header *h, uint64_t *word);
void mc__txn_commit(mc_header *h);
/* Undo what the journal records; exposed for the fuzz/fault tests. Returns
   false if the journal is corrupt (an entry outside the region). */
bool mc__journal_rollback(mc_header *h);

/* ---- arena.c (under the lock, but block_size and check) --------------- */

void mc__arena_init(mc_header *h, uint64_t start, uint64_t end);
/* Payload offset of a new block of at least len bytes, or 0 if full. */
uint64_t mc__arena_alloc(mc_header *h, uint64_t len);
void mc__arena_free(mc_header *h, uint64_t payload_off);
/* Before freeing a large block: return its interior pages to the kernel
   (or count them as retained for the next large block). */
void mc__arena_release_pages(mc_header *h, uint64_t payload_off);
/* Under the lock, right after mc__arena_alloc(len): how many bytes of the
   block to populate before use (MADV_POPULATE_WRITE, so that a lack of
   memory is ENOMEM now, not SIGBUS in a write later): 0 below
   MC_POPULATE_THRESHOLD, or when every page of the block is known to be
   backed (reused memory that was populated and never given back: the
   populate would cost about as much as the copy into it). */
uint64_t mc__arena_to_populate(mc_header *h, uint64_t payload_off, uint64_t len);
/* Without the lock: populate those n bytes of our block (nothing if 0) and
   record it for the block's next users. MC_OK, or MC_ENOMEM (the caller
   frees the block). */
int mc__arena_commit(mc_header *h, uint64_t payload_off, uint64_t n);
/* Payload bytes of the block, if its header stays inside the arena; else
   0. Needs no lock (it reads the block's own header and the layout). */
uint64_t mc__arena_block_size(mc_header *h, uint64_t payload_off);
/* After a change commits (still under the lock): return the pages of a
   large range the change merged into the untouched rest. */
void mc__arena_after_commit(mc_header *h);
/* Full consistency check of blocks and free lists (after a recovery,
   tests, fuzzing): the caller makes sure nobody changes them meanwhile. */
bool mc__arena_check(mc_header *h);

/* ---- queue.c --------------------------------------------------------- */

/* Under the lock. push: false if full. pop: 0 if empty. */
bool mc__ring_push(mc_header *h, uint64_t task_off);
uint64_t mc__ring_pop(mc_header *h);
bool mc__ring_has_work(mc_header *h);  /* lock-free peek */
bool mc__ring_has_room(mc_header *h);  /* lock-free peek */
/* The producer's half of the sleep protocol (queue.c): wake up to n
   sleepers of a word, with a system call only if a sleeper is counted. */
void mc__wake_workers(mc_header *h, uint32_t n);
/* After queueing one task: wake a sleeping worker unless one spins. */
void mc__wake_for_task(mc_header *h);
/* After a task's state became final: wake callers watching completions. */
void mc__wake_done(mc_header *h);
void mc__wake_space(mc_header *h);
/* Worker side, as a task ends: claim the spinner's mark (queue.c) for the
   moment until this worker has looked at the ring, so that a caller that
   submits as soon as it sees the result wakes no sleeper for a task this
   worker is about to take. now: mc__now_ns() of a moment ago. The mark,
   or 0 if another worker spins. */
int64_t mc__claim_spin(mc_header *h, int64_t now);
/* Give the mark back (the worker took a task); then look at the ring. */
void mc__release_spin(mc_header *h, int64_t mark);
/* Worker side: spin for work for a while, if no other idle worker already
   does: true if work (or a stop) showed up, or if *also (when not NULL)
   no longer reads `armed`. mark: from mc__claim_spin (it becomes this
   worker's spin), or 0. The spinner's mark is given back either way. */
bool mc__spin_for_work(mc_header *h, int64_t mark, _Atomic uint32_t *also, uint32_t armed);
/* Worker side: sleep until work may be there or the pool stops; spin
   first (mc__spin_for_work with mark) unless spin is false. */
void mc__wait_for_work(mc_header *h, int64_t mark, bool spin);
/* Caller side: sleep until room may be there; MC_OK, MC_ETIMEDOUT, MC_EINTR. */
int mc__wait_for_space(mc_pool *pool, int64_t deadline_ns);

/* ---- handoff.c: a task handed to a spinning worker, past the ring ------- */

/* mc_worker_slot.handoff: the state in the low bits and above them the
   generation, which the worker advances each time it arms (so a caller's
   go names one spin of one worker, never a later one). */
enum {
    MC_HO_NONE = 0, /* not spinning for a hand-off */
    MC_HO_SPIN = 1, /* armed: spinning, ready to be handed a task */
    MC_HO_GO = 2,   /* a caller handed it slot.task_off, under the lock */
};
#define MC_HO_STATE 3u
#define MC_HO_GEN_SHIFT 2

/* Worker, right after publishing its task's outcome, holding the
   spinner's mark (mc__claim_spin): arm the hand-off and spin for work.
   Returns the payload offset of a task a caller handed over (it is the
   slot's task_off now, and the caller releases the finished one), or 0
   with the hand-off disarmed; then *idle is true if the spin ended with
   nothing to do (sleep without spinning again), false if work showed up
   in the ring or the pool is stopping. */
uint64_t mc__handoff_wait(mc_header *h, mc_worker_slot *slot, uint32_t index, int64_t mark, bool *idle);
/* Caller, before it takes the lock to submit: start reading the slot line
   of the worker that armed last, which the hand-off reads first. For
   reading only: the worker keeps its copy and spins on, and the line is
   near by the time of the go (taking it for writing instead made the
   spinning worker pull it back before the go: slower, measured). */
void mc__handoff_prefetch(mc_header *h);
/* Caller, under the lock, with a PENDING record at off that is its only
   reference so far: if the ring is empty and a worker is armed, hand it
   off (mc__handoff_go). Returns the slot, or NULL (queue it in the ring). */
mc_worker_slot *mc__handoff_give(mc_header *h, uint64_t off);
/* Caller, under the lock: make off the task of the worker whose word read
   `armed` (SPIN) and let it go, then release the task it finished; the
   record's references are then two (the group's and the worker's). false,
   with nothing changed, if the word is no longer `armed`: under the lock
   only the worker's own disarm moves it (a stale `armed` fails the same
   way, which is how tests/c/test_handoff.c forces it). */
bool mc__handoff_go(mc_header *h, mc_worker_slot *slot, uint64_t off, uint32_t armed);
/* Under the lock, as a dead worker's slot is recovered: disarm. */
void mc__handoff_reset(mc_worker_slot *slot);

/* ---- record.c: the task record's life -------------------------------- */

static inline mc_task *mc__task_at(mc_header *h, uint64_t off) { return (mc_task *)mc__ptr(h, off); }
/* The len data bytes after the record: a task's arguments (valid while
   its arg_len is: until a worker has taken it), a buffer's contents. */
static inline void *mc__record_data(mc_task *t, uint64_t len) { return (char *)t + mc__data_offset(len); }
/* The state without the WAITER bit. */
static inline uint32_t mc__task_state(const mc_task *t)
{
    return atomic_load_explicit(&t->state, memory_order_acquire) & MC_TS_MASK;
}
static inline bool mc__state_is_final(uint32_t state) { return (state & MC_TS_MASK) != MC_TS_PENDING; }

/* A fresh record in a block nobody else can see yet (plain stores; a
   rollback frees the block itself): one reference, no links. */
void mc__record_init(mc_task *t, uint32_t state, uint64_t data_len);
/* References (under the lock, journaled): take one; drop one, the last
   frees the block with its result and the buffers it links. */
void mc__task_ref(mc_header *h, uint64_t task_off);
void mc__task_unref(mc_header *h, uint64_t task_off);
/* Move a record from PENDING to `final` (DONE or FAILED) by CAS, then wake
   the caller sleeping on it (if its WAITER bit was set) and the watchers
   of completions. The outcome fields are written before. false if the
   record was no longer PENDING (the caller cancelled it). */
bool mc__task_finish(mc_header *h, mc_task *t, uint32_t final);
/* The caller's PENDING -> CANCELLED, waking nobody (the group cancelling
   is the only one that waits on its tasks). false if already final. */
bool mc__task_cancel(mc_task *t);

/* ---- wait.c ---------------------------------------------------------- */

int64_t mc__now_ns(void);
/* deadline from a timeout in seconds; INT64_MAX for a negative timeout */
int64_t mc__deadline(double timeout_s);
/* FUTEX_WAIT on a shared word until deadline: MC_OK (woken or value
   changed), MC_ETIMEDOUT or MC_EINTR. */
int mc__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns);
/* FUTEX_WAKE up to n sleepers of a word: how many it woke. */
int mc__futex_wake(_Atomic uint32_t *word, int n);
/* Bump a sequence word and wake up to n of its sleepers. */
int mc__futex_bump_wake(_Atomic uint32_t *seq, int n);
static inline void mc__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}
/* How long a process spins on a word before it sleeps: adaptive, between
   MC_SPIN_MIN_NS and MC_SPIN_NS (mc_spin_*). After the first
   MC_SPIN_YIELD_NS of it, the spinner yields its CPU between rounds: when
   the partner it waits for was just woken on the same CPU (on a 2-vCPU VM
   the scheduler often puts them there), spinning would only delay it. */
#define MC_SPIN_NS 20000
#define MC_SPIN_MIN_NS 5000
#define MC_SPIN_YIELD_NS 2000
/* A spinner's sched_yield() that took this long gave the CPU to another
   task: alone on its CPU, one takes about 0.45 us here (and over 1 us in
   fewer than 1 in 2,000), while a partner spinning on the same CPU keeps
   it MC_SPIN_YIELD_NS at least before it yields back. Two processes that
   wait for each other on one CPU then trade it by yields, about 12 us a
   round trip, and the scheduler may leave them there for tens of
   milliseconds (it does not move a task that keeps running, being "cache
   hot"), and neither ever sleeps: each finds the other's work done when it
   gets the CPU back. So a spinner whose yields keep being crowded,
   MC_SPIN_CROWDED_STREAK of them each within MC_SPIN_CROWDED_GAP_NS of
   the last, sleeps for a moment (a 1 us nanosleep, which the timer slack
   makes about 50 us): the timer's wake-up is where the scheduler places
   it anew, on an idle CPU if there is one. One crowded yield is no
   reason: a worker woken for a task is often put on its caller's CPU
   for that one task, and moving then cost the caller 50 us at every
   wake-up (bench (h) after sleep, measured). At most one move per
   MC_SPIN_MOVE_EVERY_NS, so that on a machine whose CPUs are all busy it
   costs a few per cent at most. */
#define MC_SPIN_CROWDED_NS 2000
#define MC_SPIN_CROWDED_GAP_NS 200000
#define MC_SPIN_CROWDED_STREAK 8
#define MC_SPIN_MOVE_EVERY_NS 2000000
/* Spinner, between rounds: yield the CPU, and move if mc__crowding_note
   says so; *now (the clock just before) is set to the clock after. */
void mc__spin_yield(int64_t *now);
/* The decision, one per thread: note a yield that took from `before` to
   `after`; true if the spinner is to move now (the streak and the time
   since the last move allow it). Zero-initialised is valid. */
typedef struct mc_crowding {
    int64_t crowded_at; /* the last crowded yield's end, 0 = none */
    int64_t moved_at;   /* the last move, 0 = none */
    unsigned streak;    /* crowded yields in a row, each within the gap of the last */
} mc_crowding;
bool mc__crowding_note(mc_crowding *c, int64_t before, int64_t after);
/* How long mc__lock tries the region lock before it sleeps on it, and
   how long it sleeps at most before it looks again: a wake-up taken by a
   process killed while it waited costs one slice (txn.c). Below 1 s. */
#define MC_LOCK_SPIN_NS 2000
#define MC_LOCK_SLICE_NS 50000000
/* How long one wake-up in flight stands for the next tasks (queue.c): a
   submit during that time wakes no second sleeper, because the woken one,
   once it has taken a task, wakes the next if more are queued. Long
   enough for a woken worker to get a CPU on an oversubscribed machine;
   a mark whose worker never came back (killed) only delays the next
   wake-up by this much. */
#define MC_WAKE_PENDING_NS 1000000

/* clock.c: the worker's task clock, CLOCK_MONOTONIC ns from the CPU's
   time-stamp counter where the kernel keeps time with it. One per thread
   that reads it (a worker has one); zero-initialised reads the real clock
   until mc__clock_init. */
#define MC_CLOCK_RESYNC_TICKS ((uint64_t)1 << 24) /* a real read at least this often (~6 ms at 2.6 GHz) */
#define MC_CLOCK_CALIBRATE_NS 10000000            /* the rate's shortest baseline */
#define MC_CLOCK_PAIR_TICKS 2000                  /* a pair's two counter reads at most this far apart (~0.8 us) */
#define MC_CLOCK_PAIR_FAILURES 8                  /* resyncs in a row without a pair: give the counter up */
#define MC_CLOCK_STEP_NS 100000                   /* a real read this far (+ 1/1024) from the extrapolation: new baseline */
typedef struct mc_clock {
    bool use_tsc;
    int64_t ns0, ns1;   /* the first pair read together and the latest */
    uint64_t tsc0, tsc1;
    uint64_t mult;      /* ns per tick, times 2^32; 0 until calibrated */
    unsigned failed_pairs; /* resyncs in a row that could not read a pair */
} mc_clock;
/* Is the kernel's clocksource the TSC (reads sysfs)? */
bool mc__clock_tsc_usable(void);
void mc__clock_init(mc_clock *c, bool use_tsc);
int64_t mc__clock_now(mc_clock *c);

/* One waiter's spin budget. A spin that saw its partner after t ns keeps
   the budget at 4t or more; one that gave up shrinks it by a quarter (down
   to MC_SPIN_MIN_NS, above the 3-5 us a Python caller takes between two
   tasks): a process whose partner comes back within microseconds keeps
   spinning, one whose partner takes milliseconds stops burning 20 us of
   CPU per wait. Every 16th wait spins the whole MC_SPIN_NS, so a change
   back to fast hand-offs is noticed. Zero-initialised is valid. */
typedef struct mc_spin {
    int64_t budget_ns;
    uint32_t waits;
} mc_spin;
int64_t mc__spin_budget(mc_spin *s);
void mc__spin_done(mc_spin *s, bool found, int64_t spun_ns);

/* ---- zygote.c / worker.c --------------------------------------------- */

static inline double mc__stop_grace(const mc_pool_options *o)
{
    return o->stop_grace < 0 ? MC_STOP_GRACE_DEFAULT : o->stop_grace;
}

typedef struct mc_zygote_args {
    mc_header *hdr;
    int memfd;
    int alive_rd;       /* read end of the alive pipe */
    int ctl_fd;         /* eventfd the caller writes to request a stop */
    const mc_pool_options *opts;
} mc_zygote_args;

_Noreturn void mc__zygote_main(mc_zygote_args *z);
_Noreturn void mc__worker_main(mc_header *h, int index, const mc_pool_options *opts,
                              const sigset_t *orig_mask);

/* Under the lock, in its own journal transaction: the slot lets go of the
   task in hand (if any) and of its result: handed to the task if it was
   published, else freed (worker.c). */
void mc__slot_release_task(mc_header *h, mc_worker_slot *slot, bool published);

/* Store a worker's init error message in its slot (takes the lock). */
void mc__slot_set_error(mc_header *h, mc_worker_slot *slot, const char *message);

/* A hold on a record: a task's (mc_group_hold / mc_task_hold) or a
   shared buffer's (mc_buffer_alloc, mc_group_link_hold, mc_task_link_hold). */
struct mc_hold {
    mc_pool *pool;       /* caller side: keeps the mapping; NULL in a worker */
    mc_header *h;
    uint64_t task_off;
    pid_t pid;           /* the process that took it */
};

/* Consecutive start failures of a slot's replacements after which it
   counts as failing (its restarts go on, with back-off). */
#define MC_START_FAILURES_MAX 5

/* The task a crashed worker held fails; its references and pending result
   are released. Under the lock. */
void mc__recover_worker(mc_header *h, mc_worker_slot *slot, pid_t pid, int wstatus);

/* ---- hold.c ---------------------------------------------------------- */

int mc__group_hold_task(mc_pool *pool, uint64_t task_off, mc_hold **hold);
int mc__worker_hold_task(mc_header *h, mc_worker_slot *slot, uint64_t task_off, mc_hold **hold);
/* Under the lock, in the zygote: a dead worker's holds are dropped. */
void mc__release_worker_holds(mc_header *h, mc_worker_slot *slot);
/* The slot of the calling worker process, or NULL outside a worker. */
mc_worker_slot *mc__worker_own_slot(void);
mc_header *mc__worker_own_header(void);
/* Under the lock: make task record task_off keep buffer record buf_off
   alive (once per buffer); its link index, or -1 when all MC_SHARE_MAX
   are taken or the links block cannot be allocated. */
int mc__link_add(mc_header *h, uint64_t task_off, uint64_t buf_off);
/* The buffer record behind link `link` of task record task_off, or 0. */
uint64_t mc__link_get(mc_header *h, uint64_t task_off, unsigned link);
/* Can this hold be linked to a task of the region h (a buffer record,
   taken by this process in this region)? */
bool mc__hold_is_shareable(const mc_hold *hold, const mc_header *h);

/* ---- pool.c ---------------------------------------------------------- */

/* Every public call that touches the region brackets itself with
   enter/leave, so mc_pool_stop() can wait for in-flight calls before it
   unmaps. enter returns MC_OK, or MC_ESTATE once the pool is stopping or
   when called from another process than the one that started the pool. */
int mc__pool_enter(mc_pool *pool);
void mc__pool_leave(mc_pool *pool);
void mc__pool_ref(mc_pool *pool);
void mc__pool_unref(mc_pool *pool);
/* A caller's sleep on a shared word: futex waits in slices, checking that
   the zygote lives and that the pool is not stopping. MC_OK (look again),
   MC_ETIMEDOUT at the deadline, MC_EINTR, MC_EPOOLDIED or MC_ESTATE. */
int mc__pool_wait_word(mc_pool *pool, _Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns);
/* Ask the zygote to stop the workers running cancelled tasks. */
void mc__pool_kick_zygote(mc_pool *pool);

#endif /* MC_INTERNAL_H */
