/*
 * frame.h — the byte layouts the extension puts in shared memory: the task
 * payload (caller -> worker) and the out-of-band frame (both ways), with
 * the code that writes and validates them (frame.c).
 *
 * No Python here or in frame.c: they are also built into the libFuzzer
 * target tests/fuzz/fuzz_frame.c, which feeds the parsers arbitrary bytes.
 * Those bytes come from another process (a task can write anything into
 * its own result, and past it), so the parsers check every length and
 * offset against the size they are given before anything is read through
 * it. Both ends are the same program image (the workers are forked from
 * the caller), so fields are native-endian.
 */
#ifndef MULTICORE_EXT_FRAME_H
#define MULTICORE_EXT_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------
 * Serialization formats of a task's result (chosen at run()).
 * --------------------------------------------------------------------- */
enum {
    MCX_FMT_PICKLE = 0,
    MCX_FMT_JSON = 1,
    MCX_FMT_STRING = 2
};

/* ---------------------------------------------------------------------
 * Task payload ("the wire"), caller -> worker:
 *
 *   0  u8   magic  MCX_WIRE_MAGIC
 *   1  u8   version MCX_WIRE_VERSION
 *   2  u8   format (MCX_FMT_*)
 *   3  u8   flags  (MCX_WIRE_DILL)
 *   4  u32  offset of the (args, kwargs) frame (64-byte aligned)
 *   8  u64  length of the callable's part
 *  16       callable part; then, from the offset above to the end, the
 *           (args, kwargs) as an out-of-band frame (below)
 * --------------------------------------------------------------------- */
#define MCX_WIRE_MAGIC 0x6du
#define MCX_WIRE_VERSION 2u
#define MCX_WIRE_DILL 0x01u
#define MCX_WIRE_HEADER_SIZE 16u

typedef struct {
    int format;
    int use_dill;
    const char *fn;      /* callable part */
    size_t fn_len;
    const char *args;    /* (args, kwargs) part */
    size_t args_len;
} mcx_wire_task;

/* Where the args frame starts after a callable part of fn_len bytes. */
size_t mcx_wire_args_offset(size_t fn_len);
/* Write the header and the callable part (fn_len bytes) at dst; args_off
   is mcx_wire_args_offset(fn_len), at most UINT32_MAX. */
void mcx_wire_write(void *dst, int format, int use_dill, const void *fn, size_t fn_len,
                    size_t args_off);
/* 0, or -1 if the payload is malformed. */
int mcx_wire_parse(const void *data, size_t len, mcx_wire_task *out);

/* ---------------------------------------------------------------------
 * Out-of-band frame: a pickle whose large buffers are stored beside the
 * stream (oob.c pickles and loads it). The frame starts 64-byte aligned:
 *
 *   0   u64  pickle_len
 *   8   u64  nbuf
 *   16  nbuf x {u64 offset, u64 length}   offsets from the frame start,
 *                                         or MCX_FRAME_LINK | link | offset
 *   ..  pickle stream (pickle_len bytes)
 *   ..  each buffer at a 64-byte aligned offset
 * --------------------------------------------------------------------- */
#define MCX_FRAME_ALIGN 64u

/* A buffer-table entry with this bit set in its offset is not in the
   frame: it is a range of a shared buffer linked to the task, bits 48-55
   naming the link and bits 0-47 the offset in the buffer. */
#define MCX_FRAME_LINK ((uint64_t)1 << 63)
#define MCX_FRAME_LINK_SHIFT 48
#define MCX_FRAME_OFF_MASK (((uint64_t)1 << MCX_FRAME_LINK_SHIFT) - 1)

/* A parsed frame. */
typedef struct {
    const char *pickle;
    size_t pickle_len;
    size_t nbuf;
    const unsigned char *table;   /* nbuf x {u64 offset, u64 length} */
} mcx_frame;

/* Writing: the head (counts and table) takes mcx_frame_head_size(nbuf)
   bytes, the pickle stream follows it, and each buffer in the frame
   starts at mcx_frame_align() of the end of what precedes it. */
size_t mcx_frame_head_size(size_t nbuf);
size_t mcx_frame_align(size_t at);
void mcx_frame_write_head(void *frame, uint64_t pickle_len, uint64_t nbuf);
void mcx_frame_set_buffer(void *frame, size_t i, uint64_t off, uint64_t len);
/* The table entry of a range of link `link` from `offset` (< 2^48). */
uint64_t mcx_frame_link_entry(unsigned link, uint64_t offset);

/* Reading: 0, or -1 if the frame is malformed (a buffer in the frame
   outside it or over the pickle, counts larger than the frame). Links are
   checked against the linked buffer when resolved (mcx_frame_link_parse,
   then the receiver's range check). */
int mcx_frame_parse(const void *data, size_t len, mcx_frame *out);
void mcx_frame_buffer(const mcx_frame *f, size_t i, uint64_t *off, size_t *len);
/* Does the frame carry buffers of its own (not only links)? */
int mcx_frame_has_inline(const mcx_frame *f);
/* The link and offset a link entry names: 0, or -1 if the link number is
   not below MC_SHARE_MAX. */
int mcx_frame_link_parse(uint64_t entry, unsigned *link, size_t *offset);

/* ---------------------------------------------------------------------
 * Compact frame: a few small atoms in place of a pickle, for the common
 * trivial call (run(f, 3)) and result. Written instead of an out-of-band
 * frame when every value is an atom (below); anything else is pickled as
 * before. The first word cannot be an out-of-band frame's pickle_len (it
 * is larger than any frame), so the two are told apart by it alone:
 *
 *   0  u64  MCX_COMPACT_MARK
 *   8  u8   kind: MCX_COMPACT_VALUE (one atom: a result) or
 *           MCX_COMPACT_CALL (the positional arguments; no keywords)
 *   9  u8   count (VALUE: 1; CALL: 0 to MCX_COMPACT_MAX_ITEMS)
 *  10       count items: u8 type, then
 *             INT: i64, FLOAT: the f64's 8 bytes (NaN payloads and -0.0
 *             kept), STR (UTF-8) / BYTES: u32 length, then the bytes;
 *             NONE, FALSE, TRUE: nothing
 *
 * The frame ends exactly after the last item; MCX_COMPACT_MAX bytes at
 * most. Atoms are exact types only: None, bool, int within 64 bits,
 * float, str that encodes to UTF-8 (no lone surrogates), bytes. Big ints,
 * subclasses and everything else are pickled.
 * --------------------------------------------------------------------- */
#define MCX_COMPACT_MARK ((uint64_t)0xFFFFFFFFFFFF6D43u)
#define MCX_COMPACT_VALUE 1u
#define MCX_COMPACT_CALL 2u
#define MCX_COMPACT_MAX_ITEMS 8u
#define MCX_COMPACT_MAX 512u
#define MCX_COMPACT_HEAD 10u

enum {
    MCX_ATOM_NONE = 0,
    MCX_ATOM_FALSE = 1,
    MCX_ATOM_TRUE = 2,
    MCX_ATOM_INT = 3,
    MCX_ATOM_FLOAT = 4,
    MCX_ATOM_STR = 5,
    MCX_ATOM_BYTES = 6
};

typedef struct {
    unsigned type;       /* MCX_ATOM_* */
    int64_t i;           /* INT */
    double f;            /* FLOAT */
    const char *data;    /* STR, BYTES: in the frame (parsed) or the caller's */
    size_t len;
} mcx_atom;

typedef struct {
    unsigned kind;
    size_t n;
    mcx_atom item[MCX_COMPACT_MAX_ITEMS];
} mcx_compact;

/* Writing into buf (MCX_COMPACT_MAX bytes): begin, put each atom (-1 when
   it does not fit or there are too many: then write a pickle instead),
   end gives the frame's length. */
typedef struct {
    unsigned char *p;
    size_t at;
    unsigned n;
} mcx_compact_writer;

void mcx_compact_begin(mcx_compact_writer *w, void *buf, unsigned kind);
int mcx_compact_put(mcx_compact_writer *w, const mcx_atom *a);
size_t mcx_compact_end(mcx_compact_writer *w);

/* Reading: is it a compact frame (by its first word)? Then parse: 0, or
   -1 if it is malformed. Items' data point into the frame. */
int mcx_compact_is(const void *data, size_t len);
int mcx_compact_parse(const void *data, size_t len, mcx_compact *out);

#endif /* MULTICORE_EXT_FRAME_H */
