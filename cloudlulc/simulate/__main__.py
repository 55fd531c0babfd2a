"""CLI: ``python -m cloudlulc.simulate <out_dir> [--seed N] [--tile-size PX] [--href-base URL]``.

Writes the SIMULATED demo catalog (COGs + STAC JSON) and prints where its pieces are.
"""

from __future__ import annotations

import argparse
import sys
import time

from cloudlulc.simulate.catalog import write_demo_catalog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudlulc.simulate",
        description="Write a SIMULATED Planetary-Computer-shaped STAC catalog (COGs + JSON).",
    )
    parser.add_argument("out_dir", help="directory to write (created if absent)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--tile-size", type=int, default=720, help="S2 tile width in 10 m pixels (multiple of 6)")
    parser.add_argument("--overlap", type=int, default=60, help="columns shared by the two tiles (multiple of 6)")
    parser.add_argument("--margin", type=int, default=30, help="S1/WorldCover extent beyond the tiles (multiple of 6)")
    parser.add_argument("--href-base", default=None, help="URL serving out_dir; asset hrefs use it instead of paths")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        cat = write_demo_catalog(
            args.out_dir,
            seed=args.seed,
            tile_size=args.tile_size,
            overlap=args.overlap,
            margin=args.margin,
            href_base=args.href_base,
        )
    except ValueError as err:
        parser.error(str(err))
    dt = time.perf_counter() - t0
    print(f"SIMULATED catalog written to {cat.root} in {dt:.1f} s (seed {cat.seed}, EPSG:{cat.epsg})")
    for cid in ("sentinel-2-l2a", "sentinel-1-rtc", "esa-worldcover"):
        print(f"  {cid}: {len(cat.items_of(cid))} items")
    print(f"  item collections: {' '.join(str(p) for p in cat.item_collection_paths)}")
    print(f"  AOI crossing both S2 tiles (lon/lat): {','.join(f'{v:.5f}' for v in cat.aoi_bbox_lonlat)}")
    print(f"  S2 dates: {' '.join(d.strftime('%Y-%m-%d') for d in cat.s2_dates)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
