"""The Basic Compression Library's Huffman format, as PYME's PZF frames use it (``DataCompression`` 1).

A stream is the code tree, written depth first (``0`` = inner node followed by its ``0`` and ``1``
branches, ``1`` = leaf followed by its 8-bit symbol), then every input byte's code, most
significant bit first, zero-padded to a whole byte.  A tree that is a single leaf is read with no
code bits (the output is that symbol repeated; BCL's encoder still writes one bit per byte).  The
stream does not record its decoded length; the PZF header does.

The decoder is table-driven (a 2**12-entry table; longer codes finish with a walk down the tree);
the encoder builds its tree as BCL (zlib licence) does, so its output is byte for byte what PYME
writes.  Inner loops are compiled with numba (wheels for Linux, macOS and Windows: no compiler is
needed on an acquisition PC) and cached on disk after the first call.  pymecompress, PYME's own C
extension, is not used: it builds only with ``numpy.distutils`` (gone from Python 3.12) and a C
compiler, and decodes a third as fast.
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["HuffmanError", "huffman_decode", "huffman_encode"]

TABLE_BITS = 12
MAX_NODES = 511
_PAD = 8  # zero bytes after the stream so the bit reader may look 4 bytes ahead


class HuffmanError(ValueError):
    """A Huffman stream is malformed or shorter than its decoded length needs."""


@njit(cache=True, nogil=True)
def _peek(buf, pos, n):
    """The ``n`` (≤ 25) bits at bit position ``pos`` of ``buf``, most significant first."""
    p = pos >> 3
    word = ((np.uint32(buf[p]) << 24) | (np.uint32(buf[p + 1]) << 16)
            | (np.uint32(buf[p + 2]) << 8) | np.uint32(buf[p + 3]))
    return np.int64((word >> np.uint32(32 - n - (pos & 7))) & np.uint32((1 << n) - 1))


@njit(cache=True, nogil=True)
def _read_tree(buf, limit, child0, child1, symbol):
    """Parse the depth-first tree at the start of ``buf``; return (bit position after it, nodes),
    or (-1, 0) for a malformed tree."""
    pos = 0
    count = 1
    cur = 0
    stack = np.empty(MAX_NODES, np.int32)
    depth = 0
    while True:
        if pos + 9 > limit:
            return -1, 0
        bit = _peek(buf, pos, 1)
        pos += 1
        if bit == 0:
            if count + 2 > MAX_NODES:
                return -1, 0
            symbol[cur] = -1
            child0[cur] = count
            stack[depth] = cur
            depth += 1
            cur = count
            count += 1
        else:
            symbol[cur] = _peek(buf, pos, 8)
            pos += 8
            if depth == 0:
                return pos, count
            depth -= 1
            parent = stack[depth]
            child1[parent] = count
            cur = count
            count += 1


@njit(cache=True, nogil=True)
def _fill_table(child0, child1, symbol, table_sym, table_len, table_node):
    """Table of the first TABLE_BITS bits: the symbol and code length, or the inner node reached."""
    nodes = np.empty(MAX_NODES, np.int32)
    codes = np.empty(MAX_NODES, np.int64)
    depths = np.empty(MAX_NODES, np.int64)
    nodes[0] = 0
    codes[0] = 0
    depths[0] = 0
    top = 1
    while top > 0:
        top -= 1
        node, code, depth = nodes[top], codes[top], depths[top]
        if symbol[node] >= 0 or depth == TABLE_BITS:
            start = code << (TABLE_BITS - depth)
            for k in range(start, start + (1 << (TABLE_BITS - depth))):
                if symbol[node] >= 0:
                    table_sym[k] = symbol[node]
                    table_len[k] = depth
                else:
                    table_sym[k] = -1
                    table_len[k] = TABLE_BITS
                    table_node[k] = node
        else:
            nodes[top], codes[top], depths[top] = child0[node], code << 1, depth + 1
            nodes[top + 1], codes[top + 1], depths[top + 1] = child1[node], (code << 1) | 1, depth + 1
            top += 2


@njit(cache=True, nogil=True)
def _decode(buf, nbytes, out):
    """Decode ``len(out)`` symbols; return 0, -1 (bad tree) or -2 (stream too short)."""
    limit = nbytes * 8
    child0 = np.zeros(MAX_NODES, np.int32)
    child1 = np.zeros(MAX_NODES, np.int32)
    symbol = np.full(MAX_NODES, -1, np.int32)
    pos, count = _read_tree(buf, limit, child0, child1, symbol)
    if pos < 0:
        return -1
    if symbol[0] >= 0:  # a one-leaf tree: every byte is that symbol, no code bits
        out[:] = symbol[0]
        return 0
    table_sym = np.empty(1 << TABLE_BITS, np.int32)
    table_len = np.empty(1 << TABLE_BITS, np.int64)
    table_node = np.zeros(1 << TABLE_BITS, np.int32)
    _fill_table(child0, child1, symbol, table_sym, table_len, table_node)
    # bit reader: ``acc`` holds ``nacc`` unread bits, left-aligned; refilled 32 bits at a time
    p = pos >> 3
    acc = np.uint64(0)
    nacc = 0
    skip = pos & 7
    n = out.shape[0]
    for k in range(n):
        if nacc < 32:
            if p > nbytes + 3:
                return -2
            word = ((np.uint64(buf[p]) << np.uint64(24)) | (np.uint64(buf[p + 1]) << np.uint64(16))
                    | (np.uint64(buf[p + 2]) << np.uint64(8)) | np.uint64(buf[p + 3]))
            acc |= word << np.uint64(32 - nacc)
            p += 4
            nacc += 32
            if skip:
                acc <<= np.uint64(skip)
                nacc -= skip
                skip = 0
        v = np.int64(acc >> np.uint64(64 - TABLE_BITS))
        s = table_sym[v]
        length = table_len[v]
        acc <<= np.uint64(length)
        nacc -= length
        if s < 0:
            node = table_node[v]
            while symbol[node] < 0:
                if nacc == 0:
                    if p > nbytes + 3:
                        return -2
                    word = ((np.uint64(buf[p]) << np.uint64(24)) | (np.uint64(buf[p + 1]) << np.uint64(16))
                            | (np.uint64(buf[p + 2]) << np.uint64(8)) | np.uint64(buf[p + 3]))
                    acc = word << np.uint64(32)
                    p += 4
                    nacc = 32
                node = child1[node] if (acc >> np.uint64(63)) else child0[node]
                acc <<= np.uint64(1)
                nacc -= 1
            s = symbol[node]
        out[k] = s
    if p * 8 - nacc > limit:
        return -2
    return 0


def huffman_decode(stream, size: int) -> np.ndarray:
    """Decode a BCL Huffman ``stream`` (bytes-like) to ``size`` bytes (a uint8 array)."""
    out = np.empty(size, np.uint8)
    if size == 0:
        return out
    raw = np.frombuffer(stream, np.uint8)
    buf = np.zeros(raw.size + _PAD, np.uint8)
    buf[:raw.size] = raw
    status = _decode(buf, raw.size, out)
    if status == -1:
        raise HuffmanError("malformed Huffman code tree at the start of the payload")
    if status == -2:
        raise HuffmanError(f"Huffman payload of {raw.size} bytes ends before {size} bytes "
                           "are decoded (truncated file?)")
    return out


@njit(cache=True, nogil=True)
def _pack(head_codes, head_lens, n_head, data, codes, lens, out):
    """Write the first ``n_head`` head items, then each byte of ``data`` by its code (MSB first);
    return the bytes written.  Codes are at most 48 bits and fewer than 16 bits wait in the
    accumulator before one is added, so it never holds more than 63."""
    acc = np.uint64(0)
    nacc = 0
    o = 0
    for i in range(n_head):
        acc = (acc << np.uint64(head_lens[i])) | head_codes[i]
        nacc += head_lens[i]
        while nacc >= 8:
            nacc -= 8
            out[o] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
            o += 1
    for i in range(data.shape[0]):
        s = data[i]
        length = lens[s]
        acc = (acc << np.uint64(length)) | codes[s]
        nacc += length
        if nacc >= 16:      # flush whole bytes, 2 or more at a time
            while nacc >= 8:
                nacc -= 8
                out[o] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
                o += 1
    while nacc >= 8:
        nacc -= 8
        out[o] = np.uint8((acc >> np.uint64(nacc)) & np.uint64(0xFF))
        o += 1
    if nacc > 0:
        out[o] = np.uint8((acc << np.uint64(8 - nacc)) & np.uint64(0xFF))
        o += 1
    return o


@njit(cache=True, nogil=True)
def _assign_codes(root, child_a, child_b, codes, lens, head_codes, head_lens):
    """Walk the tree depth first, branch 0 before branch 1 (the order the decoder reads): each
    leaf's code and length, and the tree's own items (``0``/1 bit per inner node, ``1`` + symbol/
    9 bits per leaf).  A one-leaf tree still spends one (ignored) bit per byte, as BCL does.
    Returns (number of head items, longest code)."""
    stack_node = np.empty(MAX_NODES, np.int64)
    stack_code = np.empty(MAX_NODES, np.uint64)
    stack_depth = np.empty(MAX_NODES, np.int64)
    stack_node[0], stack_code[0] = root, np.uint64(0)
    stack_depth[0] = 0 if child_a[root] >= 0 else 1
    top = 1
    n_head = 0
    longest = 0
    while top > 0:
        top -= 1
        node, code, depth = stack_node[top], stack_code[top], stack_depth[top]
        if child_a[node] < 0:
            symbol = -1 - child_a[node]
            head_codes[n_head] = np.uint64((1 << 8) | symbol)
            head_lens[n_head] = 9
            codes[symbol], lens[symbol] = code, depth
            longest = max(longest, depth)
        else:
            head_codes[n_head] = np.uint64(0)
            head_lens[n_head] = 1
            stack_node[top], stack_code[top] = child_b[node], (code << np.uint64(1)) | np.uint64(1)
            stack_depth[top] = depth + 1
            stack_node[top + 1], stack_code[top + 1] = child_a[node], code << np.uint64(1)
            stack_depth[top + 1] = depth + 1
            top += 2
        n_head += 1
    return n_head, longest


@njit(cache=True, nogil=True)
def _count(data, counts):
    """How often each byte value occurs (faster than ``np.bincount`` on bytes)."""
    for i in range(data.shape[0]):
        counts[data[i]] += 1


@njit(cache=True, nogil=True)
def _build_tree(counts, child_a, child_b):
    """BCL's tree: leaves are the used symbols in order; each step joins the two lightest nodes
    (ties go to the later node), the lightest becoming branch 0.  Returns the root's index."""
    weight = np.zeros(MAX_NODES, np.int64)
    n = 0
    for s in range(256):
        if counts[s] > 0:
            weight[n] = counts[s]
            child_a[n] = -1 - s  # a leaf: -1 - symbol
            n += 1
    if n == 1:
        return 0
    for nxt in range(n, 2 * n - 1):
        first = -1
        second = -1
        for k in range(nxt):
            if weight[k] > 0:
                if first < 0 or weight[k] <= weight[first]:
                    second = first
                    first = k
                elif second < 0 or weight[k] <= weight[second]:
                    second = k
        child_a[nxt], child_b[nxt] = first, second
        weight[nxt] = weight[first] + weight[second]
        weight[first] = 0
        weight[second] = 0
    return 2 * n - 2


def huffman_encode(data) -> bytes:
    """Encode the bytes of ``data`` (bytes-like or a contiguous array) as a BCL Huffman stream."""
    flat = np.frombuffer(memoryview(data).cast("B"), np.uint8)
    if flat.size == 0:
        return b""
    counts = np.zeros(256, np.int64)
    _count(flat, counts)
    child_a = np.zeros(MAX_NODES, np.int64)
    child_b = np.zeros(MAX_NODES, np.int64)
    root = _build_tree(counts, child_a, child_b)
    codes = np.zeros(256, np.uint64)
    lens = np.zeros(256, np.int64)
    head_codes = np.zeros(MAX_NODES, np.uint64)
    head_lens = np.zeros(MAX_NODES, np.int64)
    n_head, longest = _assign_codes(root, child_a, child_b, codes, lens, head_codes, head_lens)
    if longest > 48:
        raise HuffmanError("Huffman code longer than 48 bits (input too large for one stream)")
    nbits = int(np.dot(counts, lens)) + int(head_lens[:n_head].sum())
    out = np.empty(nbits // 8 + 1, np.uint8)
    n = _pack(head_codes, head_lens, n_head, flat, codes, lens, out)
    return out[:n].tobytes()
