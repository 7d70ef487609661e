/*
 * fx_client.h -- the client's hot path in C: encode a launch and push it, with no Python.
 *
 * The pyACL entry points (flexnpu/_acl_hooks.pyx) resolve handles to ids and then call these;
 * native entry points (threads that never hold the GIL) call the same functions.  Sequence
 * numbers come from the ring (fx_ring_push_message), so they follow ring order; last_seq[s]
 * only grows (a CAS max), whichever thread pushed last.
 */
#ifndef FX_CLIENT_H
#define FX_CLIENT_H

#include "fx_proto.h"

#define FX_MAX_MESSAGE 128u /* records in one message: a head and up to 127 continuations */
#define FX_TENSORS_PER_CONT (FX_CONT_PAYLOAD / 8)
#define FX_MAX_TENSORS (FX_TENSORS_IN_HEAD + FX_NCONT_MASK * FX_TENSORS_PER_CONT)

/* last[s] = max(last[s], seq) */
static inline void fx_note_submitted(fx_au64 *last, uint64_t seq)
{
    uint64_t cur = fx_load_relaxed_u64(last);
    while (cur < seq && !fx_cas_u64(last, &cur, seq))
        ;
}

/* Encode LAUNCH (op, attr, n_in inputs then n_out outputs as desc id | buffer id << 32) on
 * virtual stream vs and push it (waiting for ring space until the deadline).  Returns a ring
 * status (FX_OK, FX_CLOSED, FX_PEER_DEAD, FX_TIMEOUT, FX_INTR, FX_FULL if too many tensors);
 * on FX_OK *seq_out is the launch's seq and last[vs] covers it. */
static inline int fx_client_launch(fx_ring *r, fx_au64 *last, uint32_t vs, uint32_t op_id,
                                   uint32_t attr_id, uint8_t phase, uint32_t n_in, uint32_t n_out,
                                   const uint64_t *pairs, uint64_t submit_ns, uint64_t deadline,
                                   uint64_t spin_ns, uint64_t *seq_out)
{
    fx_record msg[FX_MAX_MESSAGE];
    uint32_t n = n_in + n_out;
    uint32_t ncont = n > FX_TENSORS_IN_HEAD
                         ? (n - FX_TENSORS_IN_HEAD + FX_TENSORS_PER_CONT - 1) / FX_TENSORS_PER_CONT
                         : 0;
    if (ncont > FX_NCONT_MASK || n_in > 0xFFFF || n_out > 0xFFFF)
        return FX_FULL;
    memset(msg, 0, (1 + ncont) * sizeof(fx_record));
    msg[0].opcode = FX_OP_LAUNCH;
    msg[0].flags = (uint8_t)ncont;
    msg[0].phase = phase;
    msg[0].stream = vs;
    msg[0].args[0] = op_id | ((uint64_t)attr_id << 32);
    msg[0].args[1] = n_in | ((uint64_t)n_out << 16) | ((submit_ns & 0xFFFFFFFFull) << 32);
    for (uint32_t i = 0; i < n && i < FX_TENSORS_IN_HEAD; i++)
        msg[0].args[2 + i] = pairs[i];
    if (n > FX_TENSORS_IN_HEAD)
        fx_pack_payload(&msg[1], pairs + FX_TENSORS_IN_HEAD, (uint64_t)(n - FX_TENSORS_IN_HEAD) * 8);
    uint64_t seq;
    int rc = fx_ring_push_message(r, msg, 1 + ncont, deadline, spin_ns, &seq);
    if (rc == FX_OK) {
        fx_note_submitted(&last[vs], seq);
        if (seq_out)
            *seq_out = seq;
    }
    return rc;
}

#endif /* FX_CLIENT_H */
