"""Makes hostile copies of an ELF program, as an unprivileged user would.

    hostile_elf.py SRC DIR SECRET

Writes into DIR, one program per attack (named ct-ATTACK), each still running normally (the kernel and
ld.so ignore section headers):
  wrap       .eh_frame's offset + size wraps past 2^64
  inflate    .debug_info marked compressed, claiming 2^50 bytes
  xzbomb     stripped, with a .gnu_debugdata that inflates to 1 GiB
  fifo       a .gnu_debuglink naming a FIFO beside it (and in .debug/)
  abspath    a .gnu_debuglink naming SECRET by absolute path
  dotdot     a .gnu_debuglink reaching SECRET through ../
  symlink    a .gnu_debuglink naming a symlink to SECRET
  dirlink    a .gnu_debuglink found through a .debug symlinked to SECRET's directory
  emptyid    an empty build-ID note
Then prints the names, one a line.
"""

import lzma
import os
import shutil
import struct
import subprocess
import sys

SHF_COMPRESSED = 0x800


def sections(data):
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    str_off, = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)
    for i in range(shnum):
        at = shoff + i * shentsize
        name_off, = struct.unpack_from("<I", data, at)
        end = data.index(b"\0", str_off + name_off)
        yield data[str_off + name_off:end].decode(), at


def header_of(data, name):
    return next(at for n, at in sections(data) if n == name)


def patched(src, dst, patch):
    data = bytearray(open(src, "rb").read())
    patch(data)
    open(dst, "wb").write(data)
    os.chmod(dst, 0o755)


def wrap(data):
    at = header_of(data, ".eh_frame")
    struct.pack_into("<QQ", data, at + 0x18, 2**64 - 16, 64)


def inflate(data):
    at = header_of(data, ".debug_info")
    flags, = struct.unpack_from("<Q", data, at + 0x08)
    struct.pack_into("<Q", data, at + 0x08, flags | SHF_COMPRESSED)
    off, = struct.unpack_from("<Q", data, at + 0x18)
    # Elf64_Chdr: zlib, 2^50 bytes.
    struct.pack_into("<IIQQ", data, off, 1, 0, 2**50, 1)


def emptyid(data):
    at = header_of(data, ".note.gnu.build-id")
    off, = struct.unpack_from("<Q", data, at + 0x18)
    struct.pack_into("<I", data, off + 4, 0)


def debuglink_section(name):
    raw = name.encode() + b"\0"
    raw += b"\0" * (-len(raw) % 4)
    return raw + struct.pack("<I", 0x12345678)


def with_link(src, dst, name):
    link = dst + ".link"
    open(link, "wb").write(debuglink_section(name))
    subprocess.run(["objcopy", "--strip-debug", "--add-section", ".gnu_debuglink=" + link,
                    src, dst], check=True)
    os.unlink(link)


def main():
    src, d, secret = sys.argv[1:4]
    made = []

    def out(name):
        made.append("ct-" + name)
        return os.path.join(d, "ct-" + name)

    patched(src, out("wrap"), wrap)
    patched(src, out("inflate"), inflate)
    patched(src, out("emptyid"), emptyid)

    bomb = os.path.join(d, "bomb.xz")
    c = lzma.LZMACompressor(preset=1)
    with open(bomb, "wb") as f:
        zeros = bytes(1 << 20)
        for _ in range(1024):
            f.write(c.compress(zeros))
        f.write(c.flush())
    subprocess.run(["objcopy", "--strip-all", "--add-section", ".gnu_debugdata=" + bomb,
                    src, out("xzbomb")], check=True)
    os.unlink(bomb)

    with_link(src, out("fifo"), "fifo.debug")
    os.mkfifo(os.path.join(d, "fifo.debug"))
    os.mkdir(os.path.join(d, ".debug"))
    os.mkfifo(os.path.join(d, ".debug", "fifo.debug"))

    with_link(src, out("abspath"), secret)
    with_link(src, out("dotdot"), "../" * 8 + secret.lstrip("/"))
    os.symlink(secret, os.path.join(d, "symlink.debug"))
    with_link(src, out("symlink"), "symlink.debug")

    # A second directory whose .debug points at the secret's directory.
    d2 = os.path.join(d, "d2")
    os.mkdir(d2)
    os.symlink(os.path.dirname(secret), os.path.join(d2, ".debug"))
    with_link(src, os.path.join(d2, "ct-dirlink"), os.path.basename(secret))
    made.append("d2/ct-dirlink")

    for name in made:
        print(name)


main()
