"""Part 1, data: decoding from the image files against the decode-once cache, and against training.

Described with the other parts in study.bench.cli's docstring.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from study.bench.common import Bench, bare_epoch, data_root, train_config

log = logging.getLogger(__name__)


def bench_data(bench: Bench) -> None:
    import torch

    from cxrnets.batches import Batches
    from cxrnets.cache import build_cache
    from cxrnets.data import load_dataset
    from cxrnets.images import load_image
    from cxrnets.training import TrainingRun, prepare_data, select_device, synchronize

    s = bench.settings
    device = select_device(s.device)
    cache_dir = bench.workdir / "cache"
    index = load_dataset(s.dataset, data_root(s))
    paths = index.paths()
    count = min(len(paths), s.decode_images or len(paths))
    details = bench.details.setdefault("data", {"images": count, "decode_workers": s.decode_workers, "sizes": {}})
    for size in s.image_sizes:
        # Decoding from the files, as a loader without the cache would: read, decode, resize, crop
        # (threads, like the cache builder), then the same float conversion, flip and normalisation.
        targets = index.targets()[:count]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=s.decode_workers) as pool:
            decoded = np.stack(list(pool.map(lambda path: load_image(path, size), paths[:count])))
        for _ in Batches(decoded, targets, np.arange(count), s.batch_size, device, train=True, seed=s.seed):
            pass
        synchronize(device)
        decode_seconds = time.perf_counter() - started
        decode_ips = count / decode_seconds

        started = time.perf_counter()
        cache = build_cache(index, size, cache_dir)
        build_seconds = time.perf_counter() - started
        images, cache_targets = cache.images, cache.index.targets()
        rows = np.arange(len(images))
        # Read the cache (a memmap) the way training does, repeating passes for at least half a second.
        read, passes, started = 0, 0, time.perf_counter()
        while passes < 2 or time.perf_counter() - started < 0.5:
            batches = Batches(images, cache_targets, rows, s.batch_size, device, train=True, seed=s.seed)
            batches.set_epoch(passes)
            for pixels, _ in batches:
                read += len(pixels)
            passes += 1
        synchronize(device)
        cache_ips = read / (time.perf_counter() - started)
        # The cache's own share: the uint8 rows gathered from the memmap, nothing else.
        gathered, started = 0, time.perf_counter()
        order = np.random.default_rng(s.seed).permutation(len(images))
        while gathered < 2 * len(images) or time.perf_counter() - started < 0.2:
            for begin in range(0, len(order), s.batch_size):
                gathered += len(images[order[begin:begin + s.batch_size]])
        uint8_ips = gathered / (time.perf_counter() - started)

        models = {}
        data = None
        for model in s.data_models:
            from cxrnets.names import MIN_IMAGE_SIZE

            if size < MIN_IMAGE_SIZE[model]:
                log.info("data: %s skipped at %d px (needs %d px)", model, size, MIN_IMAGE_SIZE[model])
                continue
            config = train_config(s, model, size, cache_dir)
            data = data or prepare_data(config)
            run = TrainingRun(config, data)
            torch.manual_seed(s.seed)
            bare_epoch(run, run.train_batches, limit=1)  # warm-up: first-call allocations, kernel choices
            # model_batches timed batches (passes over the training rows again if it has fewer).
            images_done, seconds, left = 0, 0.0, s.model_batches
            while left > 0:
                done, spent = bare_epoch(run, run.train_batches, limit=left)
                images_done, seconds = images_done + done, seconds + spent
                left -= max(1, -(-done // s.batch_size))
            models[model] = images_done / seconds
            del run
        bench.figure(f"data/decode_images_per_second@{size}", decode_ips)
        bench.figure(f"data/cache_images_per_second@{size}", cache_ips)
        bench.figure(f"data/cache_vs_decode@{size}", cache_ips / decode_ips)
        for model, ips in models.items():
            bench.figure(f"data/model_train_images_per_second@{size}/{model}", ips)
        if models:
            fastest = max(models, key=models.get)
            bench.figure(f"data/cache_vs_fastest_model@{size}", cache_ips / models[fastest])
        else:
            fastest = None
        details["sizes"][str(size)] = {
            "decode_seconds": round(decode_seconds, 3), "cache_build_seconds": round(build_seconds, 3),
            "cache_decoded_images": cache.decoded, "cache_images_read": read, "fastest_model": fastest,
            "cache_uint8_gather_images_per_second": round(uint8_ips, 1),
            "models_images_per_second": {m: round(v, 2) for m, v in models.items()}}


