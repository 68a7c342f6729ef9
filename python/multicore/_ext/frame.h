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

#endif /* MULTICORE_EXT_FRAME_H */
