"""The Zarr v3 LULC mosaic: one store per mapping target (AOI), one ``time`` slice per acquisition.

* :mod:`~cloudlulc.store.schema`: variables, attributes and layout on disk;
* :mod:`~cloudlulc.store.writer`: :func:`write_mosaic` (append, replace, resume), block by block
  (:mod:`~cloudlulc.store.blocks`), with per-slice provenance (:mod:`~cloudlulc.store.provenance`);
* :mod:`~cloudlulc.store.reader`: :func:`open_mosaic`, :func:`mapped_times`, :func:`read_provenance`;
* :mod:`~cloudlulc.store.export`: :func:`export_cog`, :func:`quicklook_png` (through the reader only).
"""

from cloudlulc.store.export import colormap, export_cog, quicklook_png
from cloudlulc.store.lease import LeaseLostError, StoreBusyError, writer_lease
from cloudlulc.store.reader import (
    mapped_times,
    open_mosaic,
    read_provenance,
    read_slots,
    read_unpaired,
    select_time,
    store_chunk_size,
)
from cloudlulc.store.schema import DEFAULT_CHUNK_SIZE, MOSAIC_VARIABLES, MosaicError, MosaicGridError
from cloudlulc.store.writer import (
    DEFAULT_BLOCK_PIXELS,
    WriteSummary,
    annotate_slice,
    auto_block_chunks,
    record_unpaired,
    write_mosaic,
)

__all__ = [
    "DEFAULT_BLOCK_PIXELS",
    "DEFAULT_CHUNK_SIZE",
    "MOSAIC_VARIABLES",
    "MosaicError",
    "MosaicGridError",
    "LeaseLostError",
    "StoreBusyError",
    "WriteSummary",
    "annotate_slice",
    "auto_block_chunks",
    "colormap",
    "export_cog",
    "mapped_times",
    "open_mosaic",
    "quicklook_png",
    "read_provenance",
    "read_slots",
    "read_unpaired",
    "record_unpaired",
    "select_time",
    "store_chunk_size",
    "write_mosaic",
    "writer_lease",
]
