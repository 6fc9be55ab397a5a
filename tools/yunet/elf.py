"""Just enough ELF64 (little-endian, x86-64) to read named float arrays out of a shared library.

libfacedetection compiles YuNet's weights into the library as global float arrays, one symbol per
tensor, and keeps the symbol table; the layer table `param_pConvInfo` points at them through
relocations (a shared library's pointers are only known once it is loaded): R_X86_64_64 against
an exported symbol, or R_X86_64_RELATIVE.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

_SHT_SYMTAB = 2
_SHT_RELA = 4
_SHT_NOBITS = 8
_R_X86_64_64 = 1
_R_X86_64_RELATIVE = 8


class ElfError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Section:
    name: str
    kind: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    addr: int
    size: int


class ElfImage:
    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ElfError("not a little-endian ELF64 file")
        self._data = data
        (shoff,) = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        names = raw[shstrndx]
        self.sections = [Section(self._cstr(names[4] + r[0]), r[1], r[3], r[4], r[5], r[6], r[9]) for r in raw]
        self.symbols = self._read_symbols()
        self.pointers = self._read_pointers()

    def _cstr(self, offset: int) -> str:
        end = self._data.index(b"\0", offset)
        return self._data[offset:end].decode()

    def _read_symbols(self) -> dict[str, Symbol]:
        tables = [s for s in self.sections if s.kind == _SHT_SYMTAB]
        if not tables:
            raise ElfError("no symbol table: the library was stripped")
        table = tables[0]
        strtab = self.sections[table.link]
        out: dict[str, Symbol] = {}
        for off in range(table.offset, table.offset + table.size, 24):
            name_off, _info, _other, _shndx, value, size = struct.unpack_from("<IBBHQQ", self._data, off)
            if name_off and size:
                name = self._cstr(strtab.offset + name_off)
                out[name] = Symbol(name, value, size)
        return out

    def _read_pointers(self) -> dict[int, int]:
        """Where each relocated pointer lives -> the address it points at."""
        out: dict[int, int] = {}
        for sec in self.sections:
            if sec.kind != _SHT_RELA:
                continue
            dynsym = self.sections[sec.link]
            for off in range(sec.offset, sec.offset + sec.size, 24):
                where, info, addend = struct.unpack_from("<QQq", self._data, off)
                kind, sym_index = info & 0xFFFFFFFF, info >> 32
                if kind == _R_X86_64_RELATIVE:
                    out[where] = addend
                elif kind == _R_X86_64_64:
                    (value,) = struct.unpack_from("<Q", self._data, dynsym.offset + sym_index * 24 + 8)
                    out[where] = value + addend
        return out

    def read(self, addr: int, size: int) -> bytes:
        """The initialised bytes at a virtual address."""
        for sec in self.sections:
            if sec.kind != _SHT_NOBITS and sec.addr and sec.addr <= addr and addr + size <= sec.addr + sec.size:
                start = sec.offset + addr - sec.addr
                return self._data[start : start + size]
        raise ElfError(f"address {addr:#x}+{size} is not in an initialised section")

    def floats(self, name: str) -> np.ndarray:
        sym = self.symbols.get(name)
        if sym is None:
            raise ElfError(f"symbol {name!r} not found")
        return np.frombuffer(self.read(sym.addr, sym.size), dtype="<f4").copy()
