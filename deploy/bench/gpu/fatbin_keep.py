"""Run with: python3 deploy/bench/gpu/fatbin_keep.py SRC DST --arch 90

Copies a CUDA shared library with the GPU code for every architecture but one zeroed, so that it
compresses to what one GPU needs. onnxruntime-gpu's CUDA provider is 284 MB, 218 MB of it GPU
code for six architectures (sm_75 … sm_120), and the GPU machine takes 64 MiB a transfer: kept for
sm_90 alone it compresses to about 12 MB with xz.

The CUDA driver picks one entry of each fatbinary by its header (kind and architecture) and reads
only that entry's code, so the headers stay as they are and only the other entries' payloads
become zeros. A library made this way runs only on GPUs of the kept architecture: it is a
transfer format for a benchmark machine, never something to ship.

The fatbinary layout (documented by NVIDIA only in part; it matches what `cuobjdump` lists):
a header (magic 0xBA55ED50, u16 version, u16 header size, u64 size of the entries), then entries
of (u16 kind, u16 version, u32 header size, u64 payload size, ..., u32 architecture at byte 28).
"""

import argparse
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50


def fatbin_section(data: bytes):
    """Offset and size of the ELF64 section `.nv_fatbin`."""
    if data[:5] != b"\x7fELF\x02":
        sys.exit("fatbin_keep: not a 64-bit ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    header = lambda i: struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)  # noqa: E731
    names_offset = header(shstrndx)[4]
    for i in range(shnum):
        name, _, _, _, offset, size = header(i)
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name:end] == b".nv_fatbin":
            return offset, size
    sys.exit("fatbin_keep: the library has no .nv_fatbin section")


def keep_one(data: bytearray, arch: int):
    """Zeroes in place the payload of every entry not built for `arch`; returns (kept, zeroed) bytes."""
    start, size = fatbin_section(data)
    kept = zeroed = 0
    position = start
    while position < start + size:
        magic, _, header_size, entries_size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:  # fatbinaries are 8-byte aligned, with padding between them
            position += 8
            continue
        entry, end = position + header_size, position + header_size + entries_size
        while entry < end:
            _, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            entry_arch, = struct.unpack_from("<I", data, entry + 28)
            body = entry + entry_header
            if entry_arch == arch:
                kept += payload
            else:
                data[body:body + payload] = bytes(payload)
                zeroed += payload
            entry = body + payload
        position = end
    return kept, zeroed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--arch", type=int, required=True, help="the SM version to keep, e.g. 90 for H100/H200")
    args = parser.parse_args()
    data = bytearray(open(args.src, "rb").read())
    kept, zeroed = keep_one(data, args.arch)
    if kept == 0:
        sys.exit(f"fatbin_keep: {args.src} has no code for sm_{args.arch}; nothing would run")
    open(args.dst, "wb").write(data)
    print(f"sm_{args.arch}: kept {kept / 1e6:.0f} MB of GPU code, zeroed {zeroed / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
